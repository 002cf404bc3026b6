"""Label maps, network inputs and depth maps as RGB images: ``(H, W, 3)`` uint8 NumPy arrays, ready to save or show.

The conventions are :mod:`depthdistill.viz`'s; these functions draw no figure, they return arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps

from depthdistill.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from depthdistill.errors import ConfigError, DepthError
from depthdistill.labels import VOID

__all__ = [
    "HOLE_COLOR",
    "VOID_COLOR",
    "VOID_LABEL",
    "Array",
    "as_numpy",
    "check_palette",
    "colorize",
    "depth_to_image",
    "overlay",
    "rgb_to_image",
]

#: The label value of pixels that belong to no class (:data:`depthdistill.labels.VOID`).
VOID_LABEL = VOID
#: Colour of void pixels in :func:`colorize`.
VOID_COLOR = (0, 0, 0)
#: Colour of missing depth in :func:`depth_to_image`: white is far from both ends of viridis (dark purple near,
#: yellow far), where black would hide among the nearest pixels.
HOLE_COLOR = (255, 255, 255)

Array = Any  # a torch.Tensor or a NumPy array


def as_numpy(value: Array) -> np.ndarray:
    """``value`` as a NumPy array; a tensor is detached and copied to the CPU first.

    Examples:
        >>> import torch
        >>> as_numpy(torch.ones(2)).tolist()
        [1.0, 1.0]
    """
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch here
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def check_palette(palette: Array) -> np.ndarray:
    """``palette`` as an ``(N, 3)`` uint8 array of RGB colours.

    Raises:
        ConfigError: If it is not ``(N, 3)`` with ``N >= 1``, or holds values that are not integers in 0..255.

    Examples:
        >>> check_palette([[255, 0, 0]]).dtype
        dtype('uint8')
    """
    table = as_numpy(palette)
    if table.ndim != 2 or table.shape[1] != 3 or len(table) == 0:
        raise ConfigError(f"a palette is an (N, 3) array of RGB colours, got shape {table.shape}")
    if table.dtype != np.uint8:
        if not np.issubdtype(table.dtype, np.integer) or table.min() < 0 or table.max() > 255:
            raise ConfigError("palette colours must be integers in 0..255 (uint8 RGB), "
                              f"got dtype {table.dtype} with range {table.min()}..{table.max()}")
        table = table.astype(np.uint8)
    return table


def _check_label(label: Array, num_colors: int) -> np.ndarray:
    values = as_numpy(label)
    if values.ndim != 2:
        raise ConfigError(f"a label map is (H, W), got shape {values.shape}")
    if not np.issubdtype(values.dtype, np.integer):
        raise ConfigError(f"a label map holds integer class indices, got dtype {values.dtype}; "
                          "take the argmax of logits first")
    bad = (values != VOID_LABEL) & ((values < 0) | (values >= num_colors))
    if bad.any():
        raise ConfigError(f"label values {sorted(set(values[bad].tolist()))[:5]} have no colour: the palette has "
                          f"{num_colors} colours (classes 0..{num_colors - 1}, {VOID_LABEL} = void)")
    return values


def colorize(label: Array, palette: Array) -> np.ndarray:
    """Paints a label map with a palette; void (255) pixels are black.

    Args:
        label: ``(H, W)`` integer class indices, 255 for void.
        palette: ``(N, 3)`` uint8 RGB colours, one per class (e.g. :func:`label_palette`).

    Returns:
        ``(H, W, 3)`` uint8 RGB image.

    Raises:
        ConfigError: If the label is not a 2-D integer map or has a class without a colour.

    Examples:
        >>> import numpy as np
        >>> palette = np.array([[255, 0, 0], [0, 0, 255]], dtype=np.uint8)
        >>> colorize(np.array([[0, 1, 255]]), palette).tolist()
        [[[255, 0, 0], [0, 0, 255], [0, 0, 0]]]
    """
    table = check_palette(palette)
    values = _check_label(label, len(table))
    image = np.empty((*values.shape, 3), dtype=np.uint8)
    void = values == VOID_LABEL
    image[void] = VOID_COLOR
    image[~void] = table[values[~void]]
    return image


def rgb_to_image(
    rgb: Array,
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
) -> np.ndarray:
    """Turns a network input back into a displayable image.

    Args:
        rgb: ``(3, H, W)`` float, normalised as ``(x - mean) / std`` from [0, 1] values; or ``(H, W, 3)``
            uint8, returned unchanged.
        mean: Per-channel mean used in the normalisation; ``None`` (with ``std=None``) when ``rgb`` is
            already in [0, 1].
        std: Per-channel standard deviation used in the normalisation.

    Returns:
        ``(H, W, 3)`` uint8 RGB (values outside [0, 1] after un-normalising are clipped).

    Examples:
        >>> import numpy as np
        >>> rgb_to_image(np.zeros((3, 1, 1), dtype=np.float32)).tolist()  # the mean colour
        [[[124, 116, 104]]]
        >>> rgb_to_image(np.full((3, 1, 1), 0.5), mean=None, std=None).tolist()
        [[[128, 128, 128]]]
    """
    image = as_numpy(rgb)
    if image.dtype == np.uint8:
        if image.ndim != 3 or image.shape[2] != 3:
            raise ConfigError(f"a uint8 image is (H, W, 3), got shape {image.shape}")
        return image
    if image.ndim != 3 or image.shape[0] != 3 or not np.issubdtype(image.dtype, np.floating):
        raise ConfigError(f"rgb must be a (3, H, W) float tensor or an (H, W, 3) uint8 image, got shape "
                          f"{image.shape} and dtype {image.dtype}")
    if (mean is None) != (std is None):
        raise ConfigError("give both mean and std (the normalisation to undo), or neither for [0, 1] input")
    image = image.astype(np.float64)
    if mean is not None:
        image = image * np.asarray(std, dtype=np.float64)[:, None, None] + np.asarray(mean)[:, None, None]
    return np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8).transpose(1, 2, 0)


def overlay(
    rgb: Array,
    label: Array,
    palette: Array,
    alpha: float = 0.5,
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
) -> np.ndarray:
    """Blends label colours over an image: ``(1 − alpha) · image + alpha · colour``; void pixels stay the image.

    Args:
        rgb: The image, in any form :func:`rgb_to_image` accepts.
        label: ``(H, W)`` class indices (255 = void), the image's size.
        palette: ``(N, 3)`` uint8 RGB colours.
        alpha: Weight of the label colour, in [0, 1].
        mean: Normalisation mean of a float ``rgb`` (see :func:`rgb_to_image`).
        std: Normalisation standard deviation of a float ``rgb``.

    Returns:
        ``(H, W, 3)`` uint8 RGB.

    Examples:
        >>> import numpy as np
        >>> image = np.full((1, 2, 3), 100, dtype=np.uint8)
        >>> overlay(image, np.array([[0, 255]]), np.array([[200, 0, 0]], dtype=np.uint8), alpha=0.5).tolist()
        [[[150, 50, 50], [100, 100, 100]]]
    """
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must be in [0, 1], got {alpha}")
    image = rgb_to_image(rgb, mean, std)
    colors = colorize(label, palette)
    if colors.shape[:2] != image.shape[:2]:
        raise ConfigError(f"label {colors.shape[:2]} and image {image.shape[:2]} differ in size")
    blended = np.round((1.0 - alpha) * image + alpha * colors).astype(np.uint8)
    void = as_numpy(label) == VOID_LABEL
    blended[void] = image[void]
    return blended


def depth_to_image(
    depth: Array,
    min_depth: float | None = None,
    max_depth: float | None = None,
    cmap: str = "viridis",
    hole_color: Sequence[int] = HOLE_COLOR,
) -> np.ndarray:
    """Colours a depth map (near = dark purple, far = yellow with viridis); missing depth gets ``hole_color``.

    Missing means 0, negative or non-finite. The colour range is ``[min_depth, max_depth]``, by default the
    valid pixels' own minimum and maximum. viridis never reaches white, so white holes stand out.

    Args:
        depth: ``(H, W)`` or ``(1, H, W)`` depth in metres.
        min_depth: Depth drawn with the colour map's first colour (default: the nearest valid pixel).
        max_depth: Depth drawn with its last colour (default: the farthest valid pixel).
        cmap: A matplotlib colour map name.
        hole_color: RGB colour of missing pixels.

    Returns:
        ``(H, W, 3)`` uint8 RGB.

    Raises:
        DepthError: If ``depth`` is not one 2-D map.

    Examples:
        >>> import numpy as np
        >>> image = depth_to_image(np.array([[0.0, 1.0, 3.0]]))
        >>> image[0, 0].tolist()  # the hole
        [255, 255, 255]
    """
    values = as_numpy(depth).astype(np.float64)
    if values.ndim == 3 and values.shape[0] == 1:
        values = values[0]
    if values.ndim != 2:
        raise DepthError(f"depth to draw must be (H, W) or (1, H, W), got shape {values.shape}")
    valid = np.isfinite(values) & (values > 0)
    low = min_depth if min_depth is not None else (values[valid].min() if valid.any() else 0.0)
    high = max_depth if max_depth is not None else (values[valid].max() if valid.any() else 1.0)
    scaled = np.clip((np.where(valid, values, low) - low) / max(high - low, 1e-12), 0.0, 1.0)
    image = np.round(colormaps[cmap](scaled)[..., :3] * 255).astype(np.uint8)
    image[~valid] = np.asarray(hole_color, dtype=np.uint8)
    return image

