"""What depth is, in one place: where it is missing, the shape it must have, and the size it must have.

Every part of the package that reads depth (the operators, the depth context, the units check, the data
transforms and the data checks) reads holes through :func:`valid_depth`, shapes through :func:`as_depth_map` and
sizes through :func:`check_depth_size`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from depthdistill.errors import DepthError

__all__ = ["as_depth_map", "check_depth_size", "valid_depth"]


def valid_depth(depth: Tensor) -> Tensor:
    """Where depth was measured: finite and > 0. Everything else (0, negative, NaN, ±inf) is a hole.

    The one rule of the package: D-Conv's weights, the depth resizing, the units check, the data transforms and
    the batch checks all read holes through it.

    Args:
        depth: Depth of any shape.

    Returns:
        A bool tensor of the same shape.

    Examples:
        >>> valid_depth(torch.tensor([1.5, 0.0, -1.0, float("nan"), float("inf")])).tolist()
        [True, False, False, False, False]
    """
    return torch.isfinite(depth) & (depth > 0)


def as_depth_map(depth: Tensor) -> Tensor:
    """Depth as a detached ``(B, 1, H, W)`` float tensor, or a :class:`~depthdistill.DepthError` saying what is
    wrong with it.

    Args:
        depth: Depth in metres, ``(B, 1, H, W)`` or ``(B, H, W)``, any float dtype.

    Returns:
        ``(B, 1, H, W)``, detached: depth is data, no gradient reaches it.

    Raises:
        DepthError: If it is not a float tensor of one of those shapes.

    Examples:
        >>> as_depth_map(torch.ones(2, 4, 4)).shape
        torch.Size([2, 1, 4, 4])
    """
    if not isinstance(depth, Tensor):
        raise DepthError(f"depth must be a torch.Tensor, got {type(depth).__name__}")
    if depth.dim() == 3:
        depth = depth.unsqueeze(1)
    if depth.dim() != 4 or depth.shape[1] != 1:
        raise DepthError(
            f"depth must have shape (B, 1, H, W) or (B, H, W), got {tuple(depth.shape)}; "
            "pass one depth channel in metres"
        )
    if not depth.is_floating_point():
        raise DepthError(
            f"depth must be a floating-point tensor in metres, got dtype {depth.dtype}; "
            "convert it, e.g. depth_mm.float() / 1000"
        )
    return depth.detach()


def check_depth_size(depth_hw: tuple[int, int], hw: tuple[int, int], where: str, *, image: bool = False) -> None:
    """The one rule for depth's size: depth has the size of the image at the model's input.

    Every feature map a model computes from that image is then the depth map shrunk by one common factor (or the
    same size), which is what a depth-aware layer can check, knowing its input alone: ``hw`` may be smaller than
    depth by one scale for both axes (to within the pixel that strided layers round off per axis), never larger
    (depth would have to be invented between measured pixels) and never of another shape (transposed depth,
    another image's). Where the image is known (``image=True``, the data checks), depth must have its size
    exactly.

    Args:
        depth_hw: Depth's ``(H, W)``.
        hw: The image's (``image=True``) or a layer's input features' ``(H, W)``.
        where: Who checks, for the message.
        image: ``hw`` is the image's: sizes must be equal.

    Raises:
        DepthError: Naming both sizes and the fix.

    Examples:
        >>> check_depth_size((480, 640), (60, 80), "conv5")  # 1/8 scale: fine
        >>> check_depth_size((240, 320), (480, 640), "conv1")
        Traceback (most recent call last):
        ...
        depthdistill.errors.DepthError: conv1: depth is 240x320 (HxW) but the input features are 480x640, ...
    """
    depth_hw, hw = tuple(int(s) for s in depth_hw), tuple(int(s) for s in hw)
    if depth_hw == hw:
        return
    fix = ("Give depth at the size of the image the model takes, (B, 1, H, W) like the RGB (resize both with "
           "depthdistill.data.resize_sample, or crop them alike)")
    what = "the image is" if image else "the input features are"
    if image:
        raise DepthError(f"{where}: depth is {depth_hw[0]}x{depth_hw[1]} (HxW) but {what} {hw[0]}x{hw[1]}. {fix}")
    # Strided layers round their output sizes (ceil or floor of H / s, a few pixels less without padding), so the
    # exact ratios differ a little; the factors each axis allows (D / (F ± 1)) must still overlap.
    low, high = 0.0, float("inf")
    for d, f in zip(depth_hw, hw):
        low = max(low, d / (f + 1))
        if f > 1:
            high = min(high, d / (f - 1))
    if low > high:
        raise DepthError(
            f"{where}: depth is {depth_hw[0]}x{depth_hw[1]} (HxW) but {what} {hw[0]}x{hw[1]}: not one scale of "
            f"each other, so depth cannot be resized to them. Is the depth transposed (H and W swapped) or from "
            f"another image size? {fix}"
        )
    if any(f > d for d, f in zip(depth_hw, hw)):
        raise DepthError(f"{where}: depth is {depth_hw[0]}x{depth_hw[1]} (HxW) but {what} {hw[0]}x{hw[1]}, larger "
                         f"than depth, so depth is smaller than the image. {fix}")
