"""Another image's depth: the data of the controls that keep depth's form but take away the image's own
(``aux_depth``'s target, ``consistency``'s depth pass with ``consistency_control="shuffled_depth"``)."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from depthdistill.errors import ConfigError, DepthError

__all__ = ["ShiftedDepth"]


class ShiftedDepth(Dataset):
    """Sample ``i`` of ``data`` with the depth map of sample ``(i + 1) mod n``.

    Every image trains against another image's depth, whatever the batch size (1 included) and the shuffling. The
    other sample is read with torch's random generator forked (the one the data transforms draw from), so sample
    ``i``'s own augmentation draws (its RGB, label and crop) are those it gets in ``data``; the borrowed depth gets
    the same draws (a transform that flips the image flips the borrowed depth too).

    Args:
        data: A map-style dataset of RGB-D samples of one size, at least two.
        control: The control that reads it, as its errors name it.

    Raises:
        ConfigError: If ``data`` is a DataLoader or has fewer than two samples.

    Examples:
        >>> data = [{"rgb": torch.zeros(3, 2, 2), "depth": torch.full((1, 2, 2), float(i)), "id": str(i)}
        ...         for i in range(1, 4)]
        >>> [float(ShiftedDepth(data)[i]["depth"][0, 0, 0]) for i in range(3)]
        [2.0, 3.0, 1.0]
    """

    def __init__(self, data: Any, *, control: str = "the control with another image's depth") -> None:
        if isinstance(data, DataLoader):
            raise ConfigError(f"{control} shifts depth between samples of a dataset: pass the training dataset "
                              "itself, not a DataLoader")
        if len(data) < 2:
            raise ConfigError(f"{control} needs at least two training images (each trains with another's depth), "
                              f"got {len(data)}")
        #: The wrapped data (also where the Distiller finds its palette and RGB normalisation).
        self.dataset = data
        self._control = control

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        other = (index + 1) % len(self.dataset)
        # The forked generators make the borrowed read draw what this sample's own read draws next, and leave the
        # stream as if it had not happened: the control sees the same images as SN.
        with torch.random.fork_rng(devices=[]):
            donor = self.dataset[other]
        sample = dict(self.dataset[index])
        for s, i in ((sample, index), (donor, other)):
            if "depth" not in s:
                raise DepthError(f"{self._control} needs depth in every training sample; sample {i} "
                                 f"({s.get('id', i)!r}) has none")
        if donor["depth"].shape != sample["depth"].shape:
            raise DepthError(f"{self._control} trains sample {sample.get('id', index)!r} with the depth of "
                             f"{donor.get('id', other)!r}, but their depth maps are {tuple(sample['depth'].shape)} "
                             f"and {tuple(donor['depth'].shape)}: give images of one size (crop or resize them "
                             "alike)")
        sample["depth"] = donor["depth"]
        return sample
