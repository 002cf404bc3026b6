"""The depth context: how depth reaches depth-aware layers without changing a model's forward signature.

``with depth_context(depth): logits = teacher(rgb)`` makes ``depth`` visible to every depth-aware layer called
inside the block, in this thread or task only (a :mod:`contextvars` variable), so concurrent forwards and nested
contexts never see each other's depth.
"""

from __future__ import annotations

import contextvars
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from depthdistill.errors import ConfigError, DepthError, DepthUnitsWarning
from depthdistill.nn.depth import as_depth_map, check_depth_size, valid_depth
from depthdistill.nn.units import depth_units_problem

__all__ = ["DEPTH_RESIZE_MODES", "DepthResize", "check_depth_resize", "current_depth", "depth_at", "depth_context",
           "resize_depth"]

DepthResize = Literal["nearest", "bilinear", "area", "avgpool"]
#: The ways depth can be brought to a layer's resolution (see :func:`depth_context`).
DEPTH_RESIZE_MODES = ("nearest", "bilinear", "area", "avgpool")


def check_depth_resize(mode: object, name: str = "resize") -> str:
    """``mode`` checked against :data:`DEPTH_RESIZE_MODES`.

    Args:
        mode: The value given.
        name: The argument's name, for the message.

    Returns:
        ``mode``.

    Raises:
        ConfigError: If it is not one of the modes (a ValueError too).

    Examples:
        >>> check_depth_resize("avgpool")
        'avgpool'
    """
    if not isinstance(mode, str) or mode not in DEPTH_RESIZE_MODES:
        raise ConfigError(f"{name} must be one of {DEPTH_RESIZE_MODES}, got {mode!r} (see depthdistill.depth_context "
                          "for what each does)")
    return mode


@dataclass
class _DepthState:
    depth: Tensor
    resize: str | None
    resized: dict = field(default_factory=dict)
    similarity_cache: dict = field(default_factory=dict)


_STATE: contextvars.ContextVar[_DepthState | None] = contextvars.ContextVar("depthdistill_depth", default=None)

# The units check reads a median back from the device, so only a process's first few contexts pay for it.
_UNITS_CHECKS = 8
_units_checks_left = _UNITS_CHECKS


def _warn_units_once(depth: Tensor) -> None:
    global _units_checks_left
    if _units_checks_left <= 0 or torch.compiler.is_compiling():
        return
    if depth.is_cuda and torch.cuda.is_current_stream_capturing():
        return  # reading a value back is not allowed while a CUDA graph is being captured
    _units_checks_left -= 1
    problem = depth_units_problem(depth)
    if problem is not None:
        _units_checks_left = 0
        warnings.warn(f"depth_context: {problem}; D-Conv's alpha is per metre", DepthUnitsWarning, stacklevel=4)


@contextmanager
def depth_context(depth: Tensor, *, resize: DepthResize | None = None) -> Iterator[Tensor]:
    """Makes ``depth`` visible to every depth-aware layer called inside the ``with`` block.

    Depth has the size of the image the model takes (the one rule, :func:`~depthdistill.nn.depth.check_depth_size`);
    each layer takes it at its own input's resolution. Where a layer's features are smaller than the depth map, the
    depth is resized once per resolution and mode (and memoised for the rest of the block), by the layer's own
    :attr:`~depthdistill.DepthAwareModule.depth_resize` (set by :func:`~depthdistill.convert_to_depth_aware`), or by
    ``resize`` for every layer when it is given:

    * ``"nearest"`` (the layers' default): picks one real depth value per feature pixel, the one under the pixel that a
      stride-``s`` convolution or pooling window is centred on. Never blends across object edges, keeps holes as
      holes.
    * ``"bilinear"`` / ``"area"``: averages neighbouring valid depths (holes are left out of the average, and a
      pixel with no valid neighbour stays missing). Smoother, but blurs depth across object edges, which weakens
      exactly the edges that D-Conv exploits.
    * ``"avgpool"``: Depth-aware CNN's rule. Depth follows the network down by repeated 3×3 / stride 2 / pad 1
      average pooling of valid depths (holes left out), the pooling a VGG block ends with, so each halving of the
      features sees the depth averaged over the window its max pool covered. Where the layer's size is not reached
      by halvings (an upsampled decoder, an odd stride), the last halving at or above it is brought there by
      ``"area"``.

    A teacher carries its mode: ``convert_to_depth_aware(model, depth_resize="avgpool")`` and a bare
    ``depth_context(depth)`` resize as it was trained; ``resize="nearest"`` overrides every layer.

    Depth whose median valid value lies outside :data:`depthdistill.nn.units.DEPTH_RANGE` (0.1..20 m) is almost
    certainly not in metres (millimetres, most often): the first few contexts of a process check it and issue
    one :class:`~depthdistill.DepthUnitsWarning` per process, naming the likely unit and the fix.

    Contexts nest: the inner one wins and the outer one is back after it. The variable is a
    :class:`contextvars.ContextVar`, so threads and asyncio tasks each see their own depth.

    Args:
        depth: Depth in metres, ``(B, 1, H, W)`` or ``(B, H, W)``, any float dtype; ≤ 0 or non-finite = missing.
        resize: How to bring depth to every layer's resolution: ``"nearest"``, ``"bilinear"``, ``"area"`` or
            ``"avgpool"``; ``None`` (default): each layer's own ``depth_resize``.

    Yields:
        The validated depth, ``(B, 1, H, W)``.

    Raises:
        DepthError: If depth is not a float tensor of shape (B, 1, H, W) or (B, H, W), or (when a layer uses it)
            its height and width are smaller than the layer's input or not one scale of it (transposed depth,
            another image's, depth at a fraction of the image's size).
        ConfigError: If ``resize`` is not ``None`` or one of the modes above (a ValueError too).

    Examples:
        >>> import depthdistill
        >>> model = depthdistill.convert_to_depth_aware(torch.nn.Conv2d(3, 4, 3, padding=1))
        >>> rgb, depth = torch.randn(1, 3, 8, 8), torch.rand(1, 1, 8, 8) + 1
        >>> with depthdistill.depth_context(depth):
        ...     out = model(rgb)
        >>> out.shape
        torch.Size([1, 4, 8, 8])
    """
    if resize is not None:
        check_depth_resize(resize)
    state = _DepthState(as_depth_map(depth), resize)
    _warn_units_once(state.depth)
    token = _STATE.set(state)
    try:
        yield state.depth
    finally:
        _STATE.reset(token)


def current_depth() -> Tensor | None:
    """The depth set by the innermost active :func:`depth_context`, or ``None`` outside any.

    Examples:
        >>> current_depth() is None
        True
    """
    state = _STATE.get()
    return None if state is None else state.depth


def _average_valid(depth: Tensor, resample: Callable[[Tensor], Tensor]) -> Tensor:
    """``resample`` (a linear average: pooling, bilinear or area interpolation) of the valid depths alone.

    Holes are left out of every average by resampling the hole-free depth and the validity mask alike and
    dividing; a pixel with no valid depth under it stays missing (0).
    """
    valid = valid_depth(depth).to(depth.dtype)
    clean = torch.where(valid > 0, depth, torch.zeros_like(depth))
    total, weight = resample(clean), resample(valid)
    return torch.where(weight > 1e-6, total / weight.clamp_min(1e-6), torch.zeros_like(total))


def _halve_valid(depth: Tensor) -> Tensor:
    """One 3×3 / stride 2 / pad 1 average pool over valid depths; windows without any stay missing (0)."""
    return _average_valid(depth, lambda t: F.avg_pool2d(t, 3, stride=2, padding=1, count_include_pad=False))


def resize_depth(depth: Tensor, size: tuple[int, int], mode: DepthResize) -> Tensor:
    """``(B, 1, H, W)`` depth brought to ``size`` by a :func:`depth_context` resize mode, holes left out of any
    average (``"bilinear"``, ``"area"``, ``"avgpool"``): the layers' resize, which the data transforms use too.

    Args:
        depth: Depth in metres, ``(B, 1, H, W)``.
        size: The ``(H, W)`` wanted.
        mode: One of :data:`DEPTH_RESIZE_MODES` (checked by the caller).

    Returns:
        ``(B, 1, *size)``; a pixel with no valid depth under it stays missing (0).

    Examples:
        >>> depth = torch.tensor([[[[1.0, 0.0], [3.0, 0.0]]]])  # the right column is a hole
        >>> resize_depth(depth, (1, 1), "area")  # the hole is left out of the average
        tensor([[[[2.]]]])
    """
    if mode == "nearest":
        return F.interpolate(depth, size=size, mode="nearest")
    if mode == "avgpool":
        while all((s + 1) // 2 >= t for s, t in zip(depth.shape[-2:], size, strict=True)) and \
                tuple(depth.shape[-2:]) != size:
            depth = _halve_valid(depth)
        if tuple(depth.shape[-2:]) == size:
            return depth
        mode = "area"
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    return _average_valid(depth, lambda t: F.interpolate(t, size=size, mode=mode, **kwargs))


def depth_at(x: Tensor, layer_resize: DepthResize, layer_name: str) -> tuple[Tensor, dict]:
    """The innermost context's depth at ``x``'s resolution and device, plus the block's similarity memo.

    What :meth:`~depthdistill.DepthAwareModule.depth_for` returns; the removal diagnostics read depth as the layers
    do through it too.

    Args:
        x: A layer's input ``(B, C, H, W)``.
        layer_resize: The layer's own resize mode, used when the context names none.
        layer_name: The layer's name, for messages.

    Returns:
        ``(depth (B, 1, H, W), memo dict)``.

    Raises:
        DepthError: Outside any context, or when the depth does not fit ``x`` (batch size, or size by
            :func:`~depthdistill.nn.depth.check_depth_size`).
    """
    state = _STATE.get()
    if state is None:
        raise DepthError(
            f"{layer_name} is depth-aware but no depth is set: run the forward inside "
            "`with depthdistill.depth_context(depth):`, or call depthdistill.convert_to_plain(model) for RGB-only use"
        )
    depth = state.depth
    if depth.shape[0] != x.shape[0]:
        raise DepthError(
            f"{layer_name}: depth has batch size {depth.shape[0]} but the features have {x.shape[0]}; "
            "give depth_context one depth map per image of the batch"
        )
    mode = state.resize if state.resize is not None else layer_resize
    key = (tuple(x.shape[-2:]), x.device, mode)
    resized = state.resized.get(key)
    if resized is None:
        resized = depth.to(x.device)
        if resized.shape[-2:] != x.shape[-2:]:
            check_depth_size(resized.shape[-2:], x.shape[-2:], layer_name)
            resized = resize_depth(resized, tuple(x.shape[-2:]), mode)
        state.resized[key] = resized
    return resized, state.similarity_cache
