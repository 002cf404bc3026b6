"""Tiny RGB-D data and models for the Distiller, engine and CLI tests (no dependency on depthdistill.data).

In ``TinyRGBD`` the depth determines the label: two boxes stand in front of the background at known depths, and
the label is the box index. The RGB carries the same boxes only faintly under noise, so a depth-aware teacher has
an easy job and an RGB-only model a harder one.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.data import Dataset

NUM_CLASSES = 3


class TinyRGBD(Dataset):
    """``n`` samples of ``size``×``size``; deterministic from ``seed`` (``split="test"`` shifts the seed by 1)."""

    num_classes = NUM_CLASSES

    def __init__(self, n: int = 8, size: int = 16, seed: int = 0, *, split: str = "train", with_depth: bool = True,
                 bad_label: int | None = None, void: bool = True, rgb_signal: float = 0.3,
                 labelled: bool = True) -> None:
        self.n, self.size, self.seed = n, size, seed + (split != "train")
        self.labelled = labelled  # False: unlabelled frames, samples without "label"
        self.with_depth, self.bad_label, self.void, self.rgb_signal = with_depth, bad_label, void, rgb_signal
        self.poison = False  # when set, rgb becomes NaN (to make the loss NaN)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        g = torch.Generator().manual_seed(self.seed * 1000 + index)
        s = self.size
        label = torch.zeros(s, s, dtype=torch.long)
        depth = torch.full((1, s, s), 3.0)
        for cls, z in ((1, 1.0), (2, 2.0)):
            y, x = torch.randint(0, s // 2, (2,), generator=g).tolist()
            h, w = torch.randint(s // 4, s // 2, (2,), generator=g).tolist()
            label[y:y + h, x:x + w] = cls
            depth[0, y:y + h, x:x + w] = z
        rgb = torch.randn(3, s, s, generator=g) + self.rgb_signal * label.float().unsqueeze(0)
        if self.void:
            label[0, 0] = 255
        if self.bad_label is not None:
            label[1, 1] = self.bad_label
        if self.poison:
            rgb = rgb * float("nan")
        sample = {"rgb": rgb, "id": f"tiny{index}"}
        if self.labelled:
            sample["label"] = label
        if self.with_depth:
            sample["depth"] = depth
        return sample


class TinySegmenter(nn.Module):
    """Conv 3×3 → BN → ReLU → Dropout → Conv 3×3 (stride 2) → ReLU → Conv 1×1 → upsample to the input size."""

    def __init__(self, num_classes: int = NUM_CLASSES, width: int = 8, dropout: float = 0.1, norm: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width) if norm else nn.Identity()
        self.drop = nn.Dropout2d(dropout)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, stride=2)
        self.head = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.drop(torch.relu(self.bn(self.conv1(x))))
        y = self.head(torch.relu(self.conv2(y)))
        return nn.functional.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


def tiny_segmenter(num_classes: int = NUM_CLASSES, **kwargs) -> TinySegmenter:
    """Factory used by the CLI tests through ``model: {name: "tests.tiny_rgbd:tiny_segmenter"}``."""
    return TinySegmenter(num_classes, **kwargs)


def sample_logits(student: nn.Module, teacher: nn.Module, sample: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The student's logits on one sample's RGB and the depth-aware teacher's on its RGB-D, without gradients."""
    from depthdistill import depth_context

    with torch.no_grad():
        student_logits = student(sample["rgb"][None])
        with depth_context(sample["depth"][None]):
            return student_logits, teacher(sample["rgb"][None])
