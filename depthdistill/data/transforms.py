"""Joint transforms of RGB-D samples: geometry applied to rgb, depth and label together, appearance to rgb only.

Every transform takes and returns the sample dict ``{"rgb": (3,H,W) float, "depth": (1,H,W) metres,
"label": (H,W) int64, "id": str}``. A sample without ``label`` (an unlabelled sample, see
:mod:`depthdistill.data.unlabelled`) or without ``depth`` is transformed all the same: the same random crop, flip
and scale reach rgb and depth, so they stay pixel-aligned. Randomness
comes from torch's global generator, which ``DataLoader`` seeds per worker, so runs are reproducible under
``torch.manual_seed``.

Resampling rules: RGB is resized bilinearly (antialiased when shrinking); labels always take the nearest pixel
(an interpolated class id is meaningless); depth takes the nearest pixel by default, because blending depth
across an object's edge invents surfaces that exist nowhere (flying pixels) and blending with holes (0) invents
near surfaces. ``depth_mode="bilinear"`` interpolates depth among valid pixels only, when a user prefers it.
Depth values are not rescaled when the image is: scaling an image changes the focal length, not the distances.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from depthdistill.errors import ConfigError, DatasetError
from depthdistill.labels import VOID
from depthdistill.nn.arguments import pair
from depthdistill.nn.context import resize_depth

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Compose", "Resize", "RandomScale", "RandomCrop", "RandomHorizontalFlip",
           "ColorJitter", "Normalize", "resize_sample", "collate_rgbd", "train_transforms", "eval_transforms",
           "rgb_normalization"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
Sample = dict[str, Any]
_DEPTH_MODES = ("nearest", "bilinear")


def _check_depth_mode(depth_mode: str) -> str:
    if depth_mode not in _DEPTH_MODES:
        raise ConfigError(f"depth_mode must be one of {_DEPTH_MODES}, got {depth_mode!r}")
    return depth_mode


def resize_sample(sample: Sample, size: tuple[int, int], depth_mode: str = "nearest") -> Sample:
    """Resizes a sample to ``size = (height, width)``: rgb bilinear, label nearest, depth per ``depth_mode``.

    Examples:
        >>> s = {"rgb": torch.rand(3, 4, 4), "depth": torch.ones(1, 4, 4), "label": torch.zeros(4, 4, dtype=torch.long)}
        >>> out = resize_sample(s, (8, 6))
        >>> out["rgb"].shape, out["depth"].shape, out["label"].shape
        (torch.Size([3, 8, 6]), torch.Size([1, 8, 6]), torch.Size([8, 6]))
    """
    _check_depth_mode(depth_mode)
    out = dict(sample)
    rgb = sample["rgb"]
    if tuple(rgb.shape[-2:]) == tuple(size):
        return out
    shrinking = size[0] < rgb.shape[-2] or size[1] < rgb.shape[-1]
    out["rgb"] = F.interpolate(rgb[None], size=size, mode="bilinear", align_corners=False, antialias=shrinking)[0]
    if "label" in sample:
        label = sample["label"][None, None].float()
        out["label"] = F.interpolate(label, size=size, mode="nearest-exact")[0, 0].to(sample["label"].dtype)
    if "depth" in sample:
        depth = sample["depth"][None]
        if depth_mode == "nearest":
            out["depth"] = F.interpolate(depth, size=size, mode="nearest-exact")[0]
        else:
            out["depth"] = resize_depth(depth, size, "bilinear")[0]
    return out


class Compose:
    """Applies transforms one after another.

    Examples:
        >>> t = Compose([RandomHorizontalFlip(p=1.0), Normalize()])
        >>> t({"rgb": torch.rand(3, 2, 2)})["rgb"].shape
        torch.Size([3, 2, 2])
    """

    def __init__(self, transforms: Sequence[Callable[[Sample], Sample]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample) -> Sample:
        for transform in self.transforms:
            sample = transform(sample)
        return sample

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


class Resize:
    """Resizes to a fixed ``(height, width)`` (see :func:`resize_sample` for how each part is resampled).

    Examples:
        >>> Resize((3, 5))({"rgb": torch.rand(3, 6, 10)})["rgb"].shape
        torch.Size([3, 3, 5])
    """

    def __init__(self, size: int | Sequence[int], depth_mode: str = "nearest") -> None:
        self.size = pair(size, "size")
        self.depth_mode = _check_depth_mode(depth_mode)

    def __call__(self, sample: Sample) -> Sample:
        return resize_sample(sample, self.size, self.depth_mode)

    def __repr__(self) -> str:
        return f"Resize(size={self.size}, depth_mode={self.depth_mode!r})"


class RandomScale:
    """Scales the sample by a factor drawn uniformly from ``scale_range`` (0.76–1.75 as in the paper's lineage).

    Examples:
        >>> out = RandomScale((2.0, 2.0))({"rgb": torch.rand(3, 4, 5)})
        >>> out["rgb"].shape
        torch.Size([3, 8, 10])
    """

    def __init__(self, scale_range: tuple[float, float] = (0.76, 1.75), depth_mode: str = "nearest") -> None:
        if not 0 < scale_range[0] <= scale_range[1]:
            raise ConfigError(f"scale_range must be (low, high) with 0 < low <= high, got {scale_range}")
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.depth_mode = _check_depth_mode(depth_mode)

    def __call__(self, sample: Sample) -> Sample:
        low, high = self.scale_range
        scale = low + (high - low) * float(torch.rand(()))
        h, w = sample["rgb"].shape[-2:]
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        return resize_sample(sample, size, self.depth_mode)

    def __repr__(self) -> str:
        return f"RandomScale(scale_range={self.scale_range}, depth_mode={self.depth_mode!r})"


class RandomCrop:
    """Crops a random ``(height, width)`` window; a smaller sample is first padded at the bottom and right with
    rgb 0, depth 0 (missing) and label 255 (void), so padding never counts as data.

    Examples:
        >>> out = RandomCrop((4, 4))({"rgb": torch.rand(3, 2, 3), "label": torch.zeros(2, 3, dtype=torch.long)})
        >>> out["rgb"].shape, int(out["label"][3, 3])
        (torch.Size([3, 4, 4]), 255)
    """

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = pair(size, "size")

    def __call__(self, sample: Sample) -> Sample:
        ch, cw = self.size
        sample = _pad_to(sample, ch, cw)
        h, w = sample["rgb"].shape[-2:]
        top = int(torch.randint(0, h - ch + 1, ()))
        left = int(torch.randint(0, w - cw + 1, ()))
        out = dict(sample)
        for key in ("rgb", "depth", "label"):
            if key in sample:
                out[key] = sample[key][..., top:top + ch, left:left + cw]
        return out

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size})"


def _pad_to(sample: Sample, height: int, width: int) -> Sample:
    h, w = sample["rgb"].shape[-2:]
    pad_h, pad_w = max(0, height - h), max(0, width - w)
    if not pad_h and not pad_w:
        return sample
    out = dict(sample)
    for key, value in (("rgb", 0.0), ("depth", 0.0), ("label", VOID)):
        if key in sample:
            out[key] = F.pad(sample[key], (0, pad_w, 0, pad_h), value=value)
    return out


class RandomHorizontalFlip:
    """Mirrors rgb, depth and label left-right with probability ``p``.

    Examples:
        >>> RandomHorizontalFlip(p=1.0)({"rgb": torch.arange(3.).expand(3, 1, 3)})["rgb"][0, 0].tolist()
        [2.0, 1.0, 0.0]
    """

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"p must be in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, sample: Sample) -> Sample:
        if float(torch.rand(())) >= self.p:
            return sample
        out = dict(sample)
        for key in ("rgb", "depth", "label"):
            if key in sample:
                out[key] = sample[key].flip(-1)
        return out

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class ColorJitter:
    """Random brightness, contrast, saturation (factors in ``[1 - x, 1 + x]``) and hue (shift in ``[-hue, hue]``)
    on rgb only (values in 0..1, before :class:`Normalize`); depth and label are untouched.

    Examples:
        >>> s = {"rgb": torch.rand(3, 4, 4), "depth": torch.ones(1, 4, 4)}
        >>> out = ColorJitter(0.4, 0.4, 0.4, 0.1)(s)
        >>> bool((out["depth"] == s["depth"]).all()), bool(out["rgb"].min() >= 0)
        (True, True)
    """

    def __init__(self, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2,
                 hue: float = 0.0) -> None:
        if min(brightness, contrast, saturation) < 0 or not 0 <= hue <= 0.5:
            raise ConfigError("brightness, contrast and saturation must be >= 0 and hue in [0, 0.5], got "
                              f"{brightness}, {contrast}, {saturation}, {hue}")
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    def __call__(self, sample: Sample) -> Sample:
        rgb = sample["rgb"]

        def factor(x: float) -> float:
            return 1.0 + x * (2.0 * float(torch.rand(())) - 1.0)

        if self.brightness:
            rgb = TF.adjust_brightness(rgb, factor(self.brightness))
        if self.contrast:
            rgb = TF.adjust_contrast(rgb, factor(self.contrast))
        if self.saturation:
            rgb = TF.adjust_saturation(rgb, factor(self.saturation))
        if self.hue:
            rgb = TF.adjust_hue(rgb, self.hue * (2.0 * float(torch.rand(())) - 1.0))
        return {**sample, "rgb": rgb.clamp(0.0, 1.0)}

    def __repr__(self) -> str:
        return (f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, saturation={self.saturation}, "
                f"hue={self.hue})")


class Normalize:
    """``rgb = (rgb - mean) / std`` per channel; ImageNet statistics by default (rgb must be in 0..1).

    Examples:
        >>> Normalize(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))({"rgb": torch.ones(3, 1, 1)})["rgb"].flatten().tolist()
        [1.0, 1.0, 1.0]
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ConfigError(f"mean and std need 3 values each and std > 0, got mean={mean}, std={std}")
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, sample: Sample) -> Sample:
        return {**sample, "rgb": (sample["rgb"] - self.mean) / self.std}

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


def collate_rgbd(samples: Sequence[Sample]) -> Sample:
    """Stacks samples into a batch; samples of different sizes are padded at the bottom and right to the largest
    (rgb 0, depth 0 = missing, label 255 = void), so evaluation at native resolution needs no resizing. ``id``
    becomes a list. A batch of unlabelled samples (no ``"label"``) has no ``"label"`` either.

    Raises:
        ConfigError: If ``samples`` is empty.
        DatasetError: If the batch mixes labelled and unlabelled samples: a label for some and none for others has
            no batch form (a void map would hide the mistake), so the two kinds need separate loaders.

    Examples:
        >>> a = {"rgb": torch.rand(3, 2, 2), "label": torch.zeros(2, 2, dtype=torch.long), "id": "a"}
        >>> b = {"rgb": torch.rand(3, 3, 1), "label": torch.zeros(3, 1, dtype=torch.long), "id": "b"}
        >>> batch = collate_rgbd([a, b])
        >>> batch["rgb"].shape, batch["label"][0, 2, 0].item(), batch["id"]
        (torch.Size([2, 3, 3, 2]), 255, ['a', 'b'])
    """
    if not samples:
        raise ConfigError("collate_rgbd needs at least one sample")
    unlabelled = [s.get("id", i) for i, s in enumerate(samples) if "label" not in s]
    if unlabelled and len(unlabelled) < len(samples):
        raise DatasetError(f"collate_rgbd got a batch that mixes {len(samples) - len(unlabelled)} labelled and "
                           f"{len(unlabelled)} unlabelled samples (unlabelled: {unlabelled[:3]}); load labelled and "
                           "unlabelled data with separate DataLoaders (or drop the labels of all with "
                           "depthdistill.data.without_labels)")
    height = max(s["rgb"].shape[-2] for s in samples)
    width = max(s["rgb"].shape[-1] for s in samples)
    padded = [_pad_to(s, height, width) for s in samples]
    batch: Sample = {}
    for key in padded[0]:
        values = [s[key] for s in padded]
        batch[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else list(values)
    return batch


def train_transforms(crop_size: int | Sequence[int], scale_range: tuple[float, float] | None = (0.76, 1.75),
                     flip: bool = True, color_jitter: float = 0.2, mean: Sequence[float] = IMAGENET_MEAN,
                     std: Sequence[float] = IMAGENET_STD, depth_mode: str = "nearest") -> Compose:
    """The training preset: random scale → random crop (padded) → flip → colour jitter → normalise.

    Args:
        crop_size: Output size, int or ``(height, width)``.
        scale_range: Random scale range, ``None`` for no scaling.
        flip: Random horizontal flips.
        color_jitter: Brightness/contrast/saturation strength (0 disables jitter).
        mean: RGB normalisation mean.
        std: RGB normalisation standard deviation.
        depth_mode: How depth is resampled when scaling (``"nearest"`` or ``"bilinear"``).

    Examples:
        >>> t = train_transforms(crop_size=(32, 32))
        >>> t({"rgb": torch.rand(3, 40, 50), "depth": torch.ones(1, 40, 50),
        ...    "label": torch.zeros(40, 50, dtype=torch.long)})["label"].shape
        torch.Size([32, 32])
    """
    steps: list[Callable[[Sample], Sample]] = []
    if scale_range is not None:
        steps.append(RandomScale(scale_range, depth_mode))
    steps.append(RandomCrop(crop_size))
    if flip:
        steps.append(RandomHorizontalFlip())
    if color_jitter:
        steps.append(ColorJitter(color_jitter, color_jitter, color_jitter))
    steps.append(Normalize(mean, std))
    return Compose(steps)


def eval_transforms(size: int | Sequence[int] | None = None, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD) -> Compose:
    """The evaluation preset: optional resize to ``size`` (label and depth nearest), then normalise. Without a
    size samples keep their resolution; :func:`collate_rgbd` pads mixed sizes in a batch.

    Examples:
        >>> eval_transforms(size=(8, 8))({"rgb": torch.rand(3, 16, 16)})["rgb"].shape
        torch.Size([3, 8, 8])
    """
    steps: list[Callable[[Sample], Sample]] = [] if size is None else [Resize(size)]
    steps.append(Normalize(mean, std))
    return Compose(steps)



def rgb_normalization(data: Any) -> tuple[list[float], list[float]] | None:
    """The ``(mean, std)`` a dataset's transform normalises RGB with, or ``None`` when it applies no
    :class:`Normalize` (RGB stays in 0..1).

    Looks at ``data.transform`` (and through a ``DataLoader``'s or ``Subset``'s ``dataset``) for a
    :class:`Normalize`, inside :class:`Compose` too; a dataset may also state it as an ``rgb_normalization``
    attribute. Checkpoints record it so that evaluation and prediction feed RGB as training did.

    Examples:
        >>> class Data:
        ...     transform = eval_transforms()
        >>> [round(v, 3) for v in rgb_normalization(Data())[0]]
        [0.485, 0.456, 0.406]
        >>> rgb_normalization([]) is None
        True
    """
    while hasattr(data, "dataset") and not hasattr(data, "transform"):
        data = data.dataset
    stated = getattr(data, "rgb_normalization", None)
    if stated is not None:
        mean, std = stated
        return [float(v) for v in mean], [float(v) for v in std]
    pending = [getattr(data, "transform", None)]
    while pending:
        transform = pending.pop(0)
        if isinstance(transform, Normalize):
            return transform.mean.flatten().tolist(), transform.std.flatten().tolist()
        if isinstance(transform, Compose):
            pending.extend(transform.transforms)
    return None
