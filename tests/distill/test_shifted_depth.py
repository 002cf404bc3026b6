"""Another image's depth, the data of the aux_depth and consistency controls."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from depthdistill.distill.methods.shifted_depth import ShiftedDepth
from depthdistill.errors import ConfigError, DepthError
from tests.tiny_rgbd import TinyRGBD


class _Augmented(TinyRGBD):
    """TinyRGBD with a random draw in every read, as a data transform makes."""

    def __getitem__(self, index):
        sample = super().__getitem__(index)
        return {**sample, "rgb": sample["rgb"] + torch.rand(())}


def test_each_image_gets_the_next_images_depth_and_keeps_its_own_draws():
    data = _Augmented(5)
    shifted = ShiftedDepth(data)
    assert len(shifted) == 5
    for i in range(5):
        torch.manual_seed(i)
        own = data[i]
        torch.manual_seed(i)
        got = shifted[i]
        donor = data[(i + 1) % 5]
        assert torch.equal(got["depth"], donor["depth"]) and not torch.equal(got["depth"], own["depth"])
        # the sample's own RGB (with its own random draw), label and id
        assert torch.equal(got["rgb"], own["rgb"]) and torch.equal(got["label"], own["label"])
        assert got["id"] == own["id"]


def test_bad_data_is_refused_naming_the_control():
    with pytest.raises(ConfigError, match="the aux_depth control needs at least two"):
        ShiftedDepth(TinyRGBD(1), control="the aux_depth control")
    with pytest.raises(ConfigError, match="not a DataLoader"):
        ShiftedDepth(DataLoader(TinyRGBD(4)))
    with pytest.raises(DepthError, match="needs depth"):
        ShiftedDepth(TinyRGBD(2, with_depth=False))[0]
