"""RGB-D datasets (synthetic, NYUv2, SUN RGB-D, user folders) and joint RGB/depth/label transforms.

Every dataset yields ``{"rgb": float32 (3,H,W) in 0..1, "depth": float32 (1,H,W) metres (0 = missing),
"label": int64 (H,W) (255 = void), "id": str}``; the transforms in :mod:`depthdistill.data.transforms` take and
return that dict. Unlabelled samples are the same dict without ``"label"`` (see :mod:`depthdistill.data.unlabelled`).
"""

from depthdistill.data.folder import RGBDFolder
from depthdistill.data.nyuv2 import NYUv2
from depthdistill.data.nyuv2_raw import NYUv2Raw
from depthdistill.data.prepare import export_to_folder, prepare_dataset
from depthdistill.data.sunrgbd import SUNRGBD
from depthdistill.data.synthetic import SyntheticRGBD
from depthdistill.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ColorJitter,
    Compose,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScale,
    Resize,
    collate_rgbd,
    eval_transforms,
    resize_sample,
    rgb_normalization,
    train_transforms,
)
from depthdistill.data.unlabelled import UnlabelledView, is_unlabelled, without_labels

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ColorJitter",
    "Compose",
    "NYUv2",
    "NYUv2Raw",
    "Normalize",
    "RGBDFolder",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomScale",
    "Resize",
    "SUNRGBD",
    "SyntheticRGBD",
    "UnlabelledView",
    "collate_rgbd",
    "eval_transforms",
    "export_to_folder",
    "is_unlabelled",
    "prepare_dataset",
    "resize_sample",
    "rgb_normalization",
    "train_transforms",
    "without_labels",
]
