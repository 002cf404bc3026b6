"""Depth-aware average pooling (Depth-aware CNN, Wang & Neumann 2018), the second member of the layer family.

``y(p0) = Σ_p H(p0, p) · x(p0 + p) / Σ_p H(p0, p)`` over the pooling window, with the convolution's depth weights
``H(p0, p) = exp(-α·|D(p0 + p) − D(p0)|)`` (:func:`~depthdistill.depth_similarity`): the window's average, weighted
by how close each tap's depth is to the depth under the window's centre. Taps across a depth edge barely count,
so the pool does not blur one surface into another.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from depthdistill.errors import ConfigError
from depthdistill.nn.arguments import IntPair, check_alpha, output_size, pair
from depthdistill.nn.base import DepthAwareModule
from depthdistill.nn.context import DepthResize
from depthdistill.nn.functional import DEFAULT_ALPHA, cached_similarity, check_depth

__all__ = ["DepthAwareAvgPool2d", "depth_aware_avg_pool2d"]


def _pool_geometry(
    kernel_size: IntPair, stride: IntPair | None, padding: IntPair, ceil_mode: bool,
    divisor_override: int | None, where: str,
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """``(kernel, stride, padding)`` as pairs, or a ConfigError for the options the depth-aware pool lacks."""
    if ceil_mode:
        raise ConfigError(f"{where}: ceil_mode=True is not supported by depth-aware average pooling; use "
                          "ceil_mode=False (pad the input instead) or leave this pool plain")
    if divisor_override is not None:
        raise ConfigError(f"{where}: divisor_override={divisor_override} is not supported by depth-aware average "
                          "pooling (its divisor is the sum of the depth weights); leave this pool plain")
    kernel = pair(kernel_size, "kernel_size")
    # nn.AvgPool2d keeps stride=None as the kernel size, F.avg_pool2d takes None or [] for it
    no_stride = stride is None or (not isinstance(stride, int) and len(stride) == 0)
    stride_ = kernel if no_stride else pair(stride, "stride")
    pad = pair(padding, "padding", minimum=0)
    if any(p > k // 2 for p, k in zip(pad, kernel)):
        raise ConfigError(f"{where}: padding {pad} is more than half the kernel {kernel} (as F.avg_pool2d refuses)")
    return kernel, stride_, pad


def depth_aware_avg_pool2d(
    x: Tensor,
    depth: Tensor,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
    alpha: float = DEFAULT_ALPHA,
    *,
    cache: dict | None = None,
) -> Tensor:
    """Depth-aware average pooling: each window's average weighted by depth similarity to its centre.

    ``y(p0) = Σ_p H(p0, p) · x(p0 + p) / Σ_p H(p0, p)``, ``H`` exactly as in the convolution
    (:func:`~depthdistill.depth_similarity`, ``D(p0)`` the depth under the window's centre tap): where the depth at
    either end of a tap is missing (≤ 0 or not finite), ``H = 1``. Padding follows ``F.avg_pool2d``:

    * ``count_include_pad=True`` (default): a padded tap is a zero input with weight ``H = 1`` (depth in the
      padding counts as missing), so it pulls the average towards 0 as in the plain pool;
    * ``count_include_pad=False``: padded taps are left out of both sums.

    With a constant depth (or α = 0) every ``H`` is 1 and the result is exactly ``F.avg_pool2d``. Gradients flow
    to ``x``; depth is data and gets none.

    Args:
        x: Input features ``(B, C, H, W)``.
        depth: Depth in metres, ``(B, 1, H, W)`` or ``(B, H, W)``, at the resolution of ``x``.
        kernel_size: Window size ``k`` or ``(kh, kw)``.
        stride: Stride; ``None``: the kernel size (as ``F.avg_pool2d``).
        padding: Implicit zero padding on each side, at most half the kernel.
        ceil_mode: Must be ``False`` (not supported).
        count_include_pad: Whether padded taps count, as above.
        divisor_override: Must be ``None`` (the divisor is the sum of the depth weights).
        alpha: α of Eq. 6 per metre.
        cache: Optional memo of depth weights by geometry (the depth context passes its own); a convolution of
            the same window geometry at the same resolution shares them.

    Returns:
        ``(B, C, H_out, W_out)``, sized as ``F.avg_pool2d`` sizes it.

    Raises:
        ConfigError: For ``ceil_mode=True``, a ``divisor_override``, a kernel size or stride below 1, a negative
            padding or one over half the kernel, α negative or not finite, or an input smaller than the window
            (``ConfigTypeError`` for wrong types).
        DepthError: If depth has the wrong rank, channels, dtype, batch size or resolution.

    Examples:
        >>> import torch
        >>> x = torch.tensor([[[[1.0, 1.0, 9.0]]]])
        >>> depth = torch.tensor([[[[1.0, 1.0, 3.0]]]])  # the 9 lies 2 m behind the rest
        >>> depth_aware_avg_pool2d(x, depth, (1, 3), stride=1, padding=0, alpha=8.3)  # ≈ (1 + 1) / 2
        tensor([[[[1.0000]]]])
        >>> depth_aware_avg_pool2d(x, torch.ones_like(depth), (1, 3), stride=1)  # constant depth: the plain pool
        tensor([[[[3.6667]]]])
    """
    depth = check_depth(x, depth, "depth_aware_avg_pool2d")
    alpha = check_alpha(alpha)
    kernel, stride_, pad = _pool_geometry(kernel_size, stride, padding, ceil_mode, divisor_override,
                                          "depth_aware_avg_pool2d")
    out_h = output_size(x.shape[-2], 2 * pad[0], kernel[0], stride_[0], 1)
    out_w = output_size(x.shape[-1], 2 * pad[1], kernel[1], stride_[1], 1)
    if out_h <= 0 or out_w <= 0:
        raise ConfigError(f"depth_aware_avg_pool2d: input {tuple(x.shape[-2:])} is smaller than the window {kernel}")
    if alpha == 0:
        return F.avg_pool2d(x, kernel, stride_, pad, False, count_include_pad)
    pads = (pad[1], pad[1], pad[0], pad[0])
    weights_h = cached_similarity(depth, kernel, stride_, pads, (1, 1), alpha, x.dtype, cache)
    if not count_include_pad:
        inside = F.pad(x.new_ones(1, 1, *x.shape[-2:]), pads)
        inside = F.unfold(inside, kernel, stride=stride_).view(1, -1, out_h, out_w)
        weights_h = weights_h * inside
    xp = F.pad(x, pads) if any(pads) else x
    # Taps are summed one after another in F.avg_pool2d's order, so a constant depth gives its result bit for bit.
    total = None
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            tap = i * kernel[1] + j
            window = xp[..., i : i + stride_[0] * (out_h - 1) + 1 : stride_[0],
                        j : j + stride_[1] * (out_w - 1) + 1 : stride_[1]]
            term = window * weights_h[:, tap : tap + 1]
            total = term if total is None else total + term
    return total / weights_h.sum(dim=1, keepdim=True)


class DepthAwareAvgPool2d(DepthAwareModule, nn.AvgPool2d):
    """An ``nn.AvgPool2d`` that averages each window weighted by depth similarity to its centre.

    Computes :func:`depth_aware_avg_pool2d` with depth from the innermost :func:`~depthdistill.depth_context`,
    resized to this layer's input. No parameters; it reverts to ``nn.AvgPool2d``. Conversion leaves pools plain
    unless asked (:attr:`opt_in`): ``convert_to_depth_aware(model, pooling=True)``, or an ``include`` that names
    the pool. Depth-aware CNN uses it once, as ``pool5a`` after ``pool5`` (docs/method.md).

    ``ceil_mode=True`` and ``divisor_override`` are not supported (a :class:`~depthdistill.ConfigError`, at
    construction and at conversion).

    Args:
        *args: As ``nn.AvgPool2d``.
        alpha: α of Eq. 6 per metre of depth difference.
        depth_resize: How depth is brought to this layer's input when the depth context names no mode (see
            :func:`~depthdistill.depth_context`).
        **kwargs: As ``nn.AvgPool2d``.

    Raises:
        ConfigError: For an argument out of range or unsupported (see :func:`depth_aware_avg_pool2d`), or an
            unknown ``depth_resize``.

    Examples:
        >>> import torch, depthdistill
        >>> pool = DepthAwareAvgPool2d(3, stride=1, padding=1)
        >>> with depthdistill.depth_context(torch.rand(2, 1, 8, 8) + 0.5):
        ...     y = pool(torch.randn(2, 4, 8, 8))
        >>> y.shape
        torch.Size([2, 4, 8, 8])
    """

    plain_class = nn.AvgPool2d
    opt_in = True

    def __init__(self, *args: Any, alpha: float = DEFAULT_ALPHA, depth_resize: DepthResize = "nearest",
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.set_depth_options(alpha, depth_resize)
        type(self).check_convertible(self, type(self).__name__)

    @classmethod
    def same_as_plain(cls, module: nn.Module) -> bool:
        """A 1×1 window has a single tap: the average is the tap itself, with or without depth."""
        return pair(module.kernel_size, "kernel_size") == (1, 1)

    @classmethod
    def check_convertible(cls, module: nn.Module, name: str) -> None:
        """Refuses ``ceil_mode``, ``divisor_override`` and subclasses with their own ``forward``."""
        own_forward = type(module).forward
        if own_forward is not nn.AvgPool2d.forward and own_forward is not DepthAwareAvgPool2d.forward:
            raise ConfigError(f"{name}: {type(module).__name__} overrides AvgPool2d.forward, which depth-aware "
                              "pooling would skip; exclude it (exclude=...) or leave pooling off")
        _pool_geometry(module.kernel_size, module.stride, module.padding, module.ceil_mode, module.divisor_override,
                       f"{name} ({type(module).__name__})")

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 - nn.AvgPool2d's own argument name
        depth, cache = self.depth_for(input)
        return depth_aware_avg_pool2d(input, depth, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                                      self.count_include_pad, self.divisor_override, self.alpha, cache=cache)
