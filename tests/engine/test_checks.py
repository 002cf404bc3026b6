"""Sample-batch checks: what is refused, and what the message says."""

from __future__ import annotations

import pytest
import torch

from depthdistill.engine import check_batch, check_dataset
from depthdistill.errors import DatasetError, DepthError


def _batch(**overrides):
    batch = {"rgb": torch.zeros(2, 3, 4, 4), "depth": torch.ones(2, 1, 4, 4),
             "label": torch.zeros(2, 4, 4, dtype=torch.long), "id": ["a", "b"]}
    batch.update(overrides)
    return {k: v for k, v in batch.items() if v is not None}


def test_valid_batch_passes_including_void():
    label = torch.zeros(2, 4, 4, dtype=torch.long)
    label[0, 0, 0] = 255
    check_batch(_batch(label=label), num_classes=1, needs_depth=True)


@pytest.mark.parametrize("overrides, error, message", [
    ({"label": torch.full((2, 4, 4), 3)}, DatasetError, r"labels \[3\] are >= num_classes=3.*\['a', 'b'\]"),
    ({"label": torch.full((2, 4, 4), -1)}, DatasetError, r"labels \[-1\]"),
    ({"label": torch.zeros(2, 4, 4)}, DatasetError, "integer"),
    ({"label": torch.zeros(2, 4, 5, dtype=torch.long)}, DatasetError, "matching rgb"),
    ({"rgb": torch.zeros(2, 1, 4, 4)}, DatasetError, r"\(B,3,H,W\)"),
    ({"rgb": None}, DatasetError, "no tensor 'rgb'"),
    ({"rgb": torch.full((2, 3, 4, 4), 128.0)}, DatasetError, r"'rgb' looks like 0\.\.255 \(min 128, max 128\).*255"),
    ({"depth": None}, DepthError, "no 'depth'"),
    ({"depth": torch.zeros(2, 1, 4, 4)}, DepthError, "no valid pixel"),
    ({"depth": torch.ones(2, 1, 2, 2)}, DepthError, r"'depth': depth is 2x2 \(HxW\) but the image is 4x4"),
    ({"depth": torch.ones(2, 1, 8, 8)}, DepthError, r"depth is 8x8 \(HxW\) but the image is 4x4"),
    ({"depth": torch.ones(1, 1, 4, 4)}, DepthError, "matching rgb"),
    ({"depth": torch.ones(2, 1, 4, 4, dtype=torch.int32)}, DepthError, "float metres"),
])
def test_bad_batches(overrides, error, message):
    with pytest.raises(error, match=message):
        check_batch(_batch(**overrides), num_classes=3, needs_depth=True)


def test_rgb_in_0_to_1_or_normalised_passes_and_0_to_255_is_refused_before_training():
    from tests.tiny_rgbd import NUM_CLASSES, TinyRGBD, TinySegmenter

    from depthdistill.data import Normalize
    from depthdistill.distill import Distiller

    image = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    for rgb in (image, image * 1.5, Normalize()({"rgb": image[0]})["rgb"][None].expand(2, 3, 4, 4), image * 255 - 128):
        check_batch(_batch(rgb=rgb), num_classes=1)
    with pytest.raises(DatasetError, match=r"looks like 0\.\.255.*\['a', 'b'\]"):
        check_batch(_batch(rgb=image * 255), num_classes=1)

    class Times255(TinyRGBD):
        def __getitem__(self, index):
            sample = super().__getitem__(index)
            rgb = sample["rgb"]
            return {**sample, "rgb": (rgb - rgb.min()) / (rgb.max() - rgb.min()) * 255}

    d = Distiller(TinySegmenter(), NUM_CLASSES, progress=False, log_echo=False, device="cpu")
    with pytest.raises(DatasetError, match="looks like 0..255"):
        d.train_baseline(Times255(2), epochs=1)


def test_only_the_bad_sample_is_named_and_depth_only_when_needed():
    label = torch.zeros(2, 4, 4, dtype=torch.long)
    label[1, 2, 2] = 9
    with pytest.raises(DatasetError, match=r"\['b'\]"):
        check_batch(_batch(label=label), num_classes=3)
    check_batch(_batch(depth=None), num_classes=3)


def test_check_dataset_spreads_over_the_set():
    good = {"rgb": torch.zeros(3, 2, 2), "label": torch.zeros(2, 2, dtype=torch.long), "id": "x"}
    bad = {**good, "label": torch.full((2, 2), 7), "id": "last"}
    with pytest.raises(DatasetError, match="last"):
        check_dataset([good] * 99 + [bad], num_classes=3, samples=3)  # the last sample is always among them
    with pytest.raises(DatasetError, match="empty"):
        check_dataset([], num_classes=3)
    with pytest.raises(DatasetError, match="expected a dict"):
        check_dataset([torch.zeros(3)], num_classes=3)


def test_check_dataset_refuses_depth_that_is_not_metres_on_one_median():
    from torch.utils.data import DataLoader

    def sample(depth):
        return {"rgb": torch.zeros(3, 4, 4), "depth": torch.full((1, 4, 4), depth),
                "label": torch.zeros(4, 4, dtype=torch.long), "id": "x"}

    # one close-up among ordinary rooms does not make the set wrong; the median over the checked samples decides
    check_dataset([sample(2.0), sample(0.05), sample(3.0)], num_classes=1, needs_depth=True)
    mm = [sample(2500.0)] * 3
    with pytest.raises(DepthError, match=r"depth of train: median valid depth is 2500 .*depth / 1000"):
        check_dataset(mm, num_classes=1, needs_depth=True, where="train")
    with pytest.raises(DepthError, match="millimetres"):
        check_dataset(DataLoader(mm, batch_size=2), num_classes=1, needs_depth=True)
    check_dataset(mm, num_classes=1, needs_depth=True, depth_range=(100.0, 5000.0))
    check_dataset(DataLoader([{k: v for k, v in sample(1.0).items() if k != "depth"}]), num_classes=1)


def test_half_resolution_depth_is_refused_by_the_data_check_and_the_context_alike():
    """One rule, one function: depth has the image's size, both where the Distiller checks data and where a bare
    depth_context meets a teacher's first layer."""
    from depthdistill import DepthAwareConv2d, depth_context

    batch = _batch(depth=torch.full((2, 1, 2, 2), 2.0))
    with pytest.raises(DepthError, match="the size of the image the model takes") as data_check:
        check_batch(batch, num_classes=3, needs_depth=True)
    with depth_context(batch["depth"]):
        with pytest.raises(DepthError, match="the size of the image the model takes") as context:
            DepthAwareConv2d(3, 1, 3, padding=1)(batch["rgb"])
    assert "depth is 2x2 (HxW)" in str(data_check.value) and "depth is 2x2 (HxW)" in str(context.value)
