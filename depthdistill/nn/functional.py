"""The depth-aware convolution as a function (Eq. 5–6 of the paper).

``Y(p0) = Σ_p W(p) · H(p0, p) · X(p0 + p)`` with ``H(p0, p) = exp(-α · |D(p0 + p) − D(p0)|)``.

Four implementations compute the same thing (``impl="auto"``, the default, picks one by shape, see
:func:`_choose_impl`):

* ``"cols"`` (any stride): per block of output rows, the im2col tile of the input times the depth weights, and
  one GEMM with the kernel; the tile is rebuilt in backward rather than kept.
* ``"stacked"`` (stride 1): the kernels of one kernel row's taps stacked into one GEMM over a block of whole
  input rows (a view of the unpadded input, never a copy), then each tap's product shifted, multiplied by its
  depth weight and accumulated on the output side, block by block so the product is still in cache.

  Both are ``torch.library`` custom ops (``depthdistill::dconv_cols``, ``depthdistill::dconv_stacked``) with
  their own backward: they save only the input, the depth weights and the kernel and recompute the rest, so the
  memory held for backward stays close to ``nn.Conv2d``'s, and ``torch.compile`` calls them as opaque kernels.
* ``"triton"`` (CUDA, any stride): one fused implicit-GEMM Triton kernel per pass, the depth weights applied to
  each input tile as it is loaded (:mod:`depthdistill.nn.triton_conv`, op ``depthdistill::dconv_triton``). Never
  chosen by ``"auto"`` until a GPU benchmark shows it faster; on CPU tensors it runs only through Triton's
  interpreter (``TRITON_INTERPRET=1``), for testing.
* ``"reference"``: the definition through ``F.unfold`` (im2col), differentiated by autograd. Simple and
  obviously right, but it holds k² copies of the input; use it to debug and to check the fast path.

This module checks the arguments, computes the depth weights and picks an implementation; the kernels and their
custom-op registration are in :mod:`depthdistill.nn._kernels`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from depthdistill.errors import ConfigError, DepthError
from depthdistill.nn._kernels import _cols_conv, _output_size, _reference_conv, _stacked_conv

__all__ = ["DEFAULT_ALPHA", "IMPLEMENTATIONS", "depth_aware_conv2d", "depth_similarity", "valid_depth"]

#: α of Eq. 6 for depth in metres (Depth-aware CNN's 1/120 per millimetre-unit equals 8.33 per metre).
DEFAULT_ALPHA = 8.3

#: The selectable implementations of :func:`depth_aware_conv2d` (its ``impl`` argument).
IMPLEMENTATIONS = ("auto", "cols", "stacked", "triton", "reference")

_IntPair = int | tuple[int, int]
_Padding = int | tuple[int, int] | tuple[int, int, int, int] | str
_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _pair(value: _IntPair, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        pair = (value, value)
    else:
        pair = tuple(int(v) for v in value)
        if len(pair) == 1:
            pair = (pair[0], pair[0])
    if len(pair) != 2:
        raise ConfigError(f"{name} must be an int or a pair of ints, got {value!r}")
    return pair  # type: ignore[return-value]


def _resolve_padding(
    padding: _Padding, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]
) -> tuple[int, int, int, int]:
    """Turns any padding spec into explicit ``(left, right, top, bottom)`` amounts, as ``F.pad`` orders them."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ConfigError("padding='same' is not supported for strided convolutions (as in F.conv2d)")
            total_h = dilation[0] * (kernel[0] - 1)
            total_w = dilation[1] * (kernel[1] - 1)
            # F.conv2d puts the odd pixel of 'same' padding at the end (right/bottom); so do we.
            return (total_w // 2, total_w - total_w // 2, total_h // 2, total_h - total_h // 2)
        raise ConfigError(f"padding must be an int, a tuple, 'same' or 'valid', got {padding!r}")
    if isinstance(padding, int):
        return (padding, padding, padding, padding)
    pads = tuple(int(p) for p in padding)
    if len(pads) == 2:
        return (pads[1], pads[1], pads[0], pads[0])
    if len(pads) == 4:
        return pads  # type: ignore[return-value]
    raise ConfigError(f"padding must have 2 (h, w) or 4 (left, right, top, bottom) entries, got {padding!r}")


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


def _as_depth_map(depth: Tensor) -> Tensor:
    """Depth as a detached ``(B, 1, H, W)`` float tensor, or a DepthError saying what is wrong with it."""
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
    return depth.detach()  # depth is data: no gradient reaches it, whichever implementation runs


def _check_depth(x: Tensor, depth: Tensor, op: str = "depth_aware_conv2d") -> Tensor:
    if x.dim() != 4:
        raise ConfigError(f"{op} expects x of shape (B, C, H, W), got {tuple(x.shape)}")
    depth = _as_depth_map(depth)
    if depth.shape[0] != x.shape[0]:
        raise DepthError(f"depth has batch size {depth.shape[0]} but the features have {x.shape[0]}")
    if depth.shape[-2:] != x.shape[-2:]:
        raise DepthError(
            f"depth is {tuple(depth.shape[-2:])} but the features are {tuple(x.shape[-2:])}; the functional op "
            "needs depth at the input's resolution (the depth-aware layers resize it for you)"
        )
    return depth


def _check_alpha(alpha: float) -> None:
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha >= 0):
        raise ConfigError(f"alpha must be a finite number >= 0, got {alpha!r}")


def depth_similarity(
    depth: Tensor,
    kernel_size: _IntPair,
    stride: _IntPair = 1,
    padding: _Padding = 0,
    dilation: _IntPair = 1,
    alpha: float = DEFAULT_ALPHA,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Depth weights ``H(p0, p)`` of Eq. 6 for every output position and kernel tap.

    ``D(p0)`` is the depth under the centre tap of the kernel window, ``(⌊(kh−1)/2⌋, ⌊(kw−1)/2⌋)``, which for odd
    kernels is the window's centre and for even kernels matches where ``padding='same'`` puts the output pixel.
    Where the depth at either end is missing (≤ 0 or not finite), or lies in the padding, ``H = 1``: the layer
    falls back to a plain convolution there instead of treating a hole as a real distance.

    Args:
        depth: Depth in metres, ``(B, 1, H, W)``, at the resolution of the convolution's input.
        kernel_size: Kernel size ``k`` or ``(kh, kw)``.
        stride: Convolution stride.
        padding: Padding as accepted by :func:`depth_aware_conv2d`.
        dilation: Convolution dilation.
        alpha: α of Eq. 6, per metre.
        dtype: Dtype of the result (default: the depth's).

    Returns:
        ``(B, kh*kw, H_out, W_out)``; channel ``i*kw + j`` holds the weight of tap ``(i, j)``.

    Examples:
        >>> depth = torch.full((1, 1, 4, 4), 2.0)
        >>> depth_similarity(depth, 3, padding=1).shape
        torch.Size([1, 9, 4, 4])
    """
    kernel = _pair(kernel_size, "kernel_size")
    stride_, dilation_ = _pair(stride, "stride"), _pair(dilation, "dilation")
    left, right, top, bottom = _resolve_padding(padding, kernel, stride_, dilation_)
    work = depth.to(torch.float64 if depth.dtype == torch.float64 else torch.float32)
    valid = valid_depth(work)
    work = F.pad(torch.where(valid, work, torch.zeros_like(work)), (left, right, top, bottom))
    valid = F.pad(valid.to(work.dtype), (left, right, top, bottom))
    taps = F.unfold(work, kernel, dilation=dilation_, stride=stride_)
    taps_valid = F.unfold(valid, kernel, dilation=dilation_, stride=stride_) > 0
    centre = ((kernel[0] - 1) // 2) * kernel[1] + (kernel[1] - 1) // 2
    weights = torch.exp(-float(alpha) * (taps - taps[:, centre : centre + 1]).abs())
    both_valid = taps_valid & taps_valid[:, centre : centre + 1]
    weights = torch.where(both_valid, weights, torch.ones_like(weights))
    out_h = _output_size(depth.shape[-2], top + bottom, kernel[0], stride_[0], dilation_[0])
    out_w = _output_size(depth.shape[-1], left + right, kernel[1], stride_[1], dilation_[1])
    return weights.view(depth.shape[0], kernel[0] * kernel[1], out_h, out_w).to(dtype or depth.dtype)


def _cached_similarity(
    depth: Tensor, kernel: tuple[int, int], stride: tuple[int, int], pads: tuple[int, int, int, int],
    dilation: tuple[int, int], alpha: float, dtype: torch.dtype, cache: dict | None,
) -> Tensor:
    """:func:`depth_similarity`, memoised in ``cache`` by geometry: every depth-aware layer of one forward (a
    convolution or a pool) with the same resolution and window computes its depth weights once."""
    # The memo is keyed by the depth tensor's address, which dynamo cannot trace (it would guard on it and
    # recompile): under torch.compile the weights are recomputed, which inductor fuses cheaply.
    use_cache = cache is not None and not torch.compiler.is_compiling()
    weights_h = None
    if use_cache:
        key = (depth.data_ptr(), depth.shape, depth.device, dtype, kernel, stride, pads, dilation, float(alpha))
        weights_h = cache.get(key)
    if weights_h is None:
        weights_h = depth_similarity(depth, kernel, stride, pads, dilation, alpha, dtype=dtype)
        if use_cache:
            cache[key] = weights_h
    return weights_h


#: Input channels (ungrouped convolutions) up to which ``impl='auto'`` uses ``'cols'`` even at stride 1: with so
#: few channels (an RGB stem) the GEMM is tiny and the stacked path's per-tap products cost more than the im2col
#: tile (conv1_1, 3→64 at 240×320, batch 2: 0.95× nn.Conv2d for cols, 2.34× for stacked; docs/performance.md).
_FEW_CHANNELS = 4


def _choose_impl(x: Tensor, stride: tuple[int, int], groups: int) -> str:
    """``impl='auto'``: stacked taps for stride 1, blocked im2col for strided convolutions and RGB stems.

    Measured on CPU (docs/performance.md): at stride 1 ``'stacked'`` is the fastest path from 16 channels up
    (0.99–1.28× ``nn.Conv2d`` at DeepLab-VGG16's 128–512-channel layers); strided convolutions and RGB input
    layers need ``'cols'``. The rule is the same on every device: on CUDA both paths run on cuBLAS and no fused
    kernel exists yet.
    """
    if stride == (1, 1) and (groups > 1 or x.shape[1] > _FEW_CHANNELS):
        return "stacked"
    return "cols"


def depth_aware_conv2d(
    x: Tensor,
    depth: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: _IntPair = 1,
    padding: _Padding = 0,
    dilation: _IntPair = 1,
    groups: int = 1,
    alpha: float = DEFAULT_ALPHA,
    *,
    padding_mode: str = "zeros",
    impl: Literal["auto", "cols", "stacked", "triton", "reference"] = "auto",
    cache: dict | None = None,
) -> Tensor:
    """Depth-aware 2-D convolution, Eq. 5–6 of the paper.

    ``Y(p0) = Σ_p W(p) · exp(-α·|D(p0+p) − D(p0)|) · X(p0+p)`` where ``D(p0)`` is the depth under the centre of
    the kernel window (see :func:`depth_similarity`). Arguments mirror :func:`torch.nn.functional.conv2d`; with a
    constant depth, or a 1×1 kernel, the result is exactly ``F.conv2d``. Gradients flow to ``x``, ``weight`` and
    ``bias``; depth is data and gets none.

    Args:
        x: Input features ``(B, C_in, H, W)``.
        depth: Depth in metres, ``(B, 1, H, W)`` or ``(B, H, W)``, at the resolution of ``x``. Values ≤ 0 or not
            finite are missing: the weight there is 1 (a plain convolution), never NaN.
        weight: Kernel ``(C_out, C_in / groups, kh, kw)``.
        bias: Optional bias ``(C_out,)``.
        stride: Stride, an int or ``(sh, sw)``.
        padding: An int, ``(ph, pw)``, explicit ``(left, right, top, bottom)``, ``'same'`` or ``'valid'``.
        dilation: Dilation, an int or ``(dh, dw)``.
        groups: Number of groups (``groups == C_in`` is a depthwise convolution).
        alpha: α of Eq. 6 per metre (the paper's 8.3 by default); 0 gives a plain convolution.
        padding_mode: How ``x`` is padded: ``'zeros'``, ``'reflect'``, ``'replicate'`` or ``'circular'``
            (as ``nn.Conv2d``). Depth is always padded as missing.
        impl: ``'auto'`` (``'stacked'`` for stride 1, ``'cols'`` for strided convolutions and ungrouped ones on
            ≤ 4 input channels), ``'stacked'`` (stride 1 only: one GEMM per kernel row over blocks of the
            unpadded input, the shift and depth weights on the output side), ``'cols'`` (any stride: per block
            of output rows, the depth-weighted im2col tile and one GEMM), ``'triton'`` (CUDA: one fused Triton
            kernel applying the depth weights as it loads each input tile; never chosen by ``'auto'`` yet; on
            CPU only under ``TRITON_INTERPRET=1``) or ``'reference'`` (the unfold definition, for debugging).
            All but ``'reference'`` save only ``x``, the depth weights and the kernel for backward. See
            docs/performance.md for what each costs.
        cache: Optional dict in which depth weights are memoised by geometry, so layers that share a resolution
            and kernel geometry compute them once (the depth context passes its own, alive for one forward).

    Returns:
        Output features ``(B, C_out, H_out, W_out)``, sized as ``F.conv2d`` would size them.

    Raises:
        DepthError: If depth has the wrong rank, channels, dtype, batch size or resolution.
        ConfigError: If ``impl='triton'`` cannot run here (no triton, a CPU tensor without the interpreter, an
            unsupported or mixed dtype).
        ConfigError: If a convolution argument is invalid (a ValueError too).

    Examples:
        >>> x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
        >>> depth = torch.rand(2, 1, 8, 8) + 0.5
        >>> depth_aware_conv2d(x, depth, w, padding=1).shape
        torch.Size([2, 4, 8, 8])
        >>> torch.allclose(depth_aware_conv2d(x, torch.ones(2, 1, 8, 8), w, padding=1),
        ...                F.conv2d(x, w, padding=1), atol=1e-5)
        True
    """
    depth = _check_depth(x, depth)
    _check_alpha(alpha)
    if padding_mode not in _PADDING_MODES:
        raise ConfigError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
    if impl not in IMPLEMENTATIONS:
        raise ConfigError(f"impl must be one of {IMPLEMENTATIONS}, got {impl!r}")
    if x.shape[1] != weight.shape[1] * groups:
        raise ConfigError(
            f"x has {x.shape[1]} channels but weight {tuple(weight.shape)} with groups={groups} expects "
            f"{weight.shape[1] * groups}"
        )
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        # Run in the autocast dtype, as F.conv2d would, but with autocast off so the pieces don't re-cast.
        dtype = torch.get_autocast_dtype(device_type)
        with torch.autocast(device_type, enabled=False):
            return depth_aware_conv2d(
                x.to(dtype), depth, weight.to(dtype), None if bias is None else bias.to(dtype), stride, padding,
                dilation, groups, alpha, padding_mode=padding_mode, impl=impl, cache=cache,
            )

    kernel = (weight.shape[-2], weight.shape[-1])
    stride_, dilation_ = _pair(stride, "stride"), _pair(dilation, "dilation")
    pads = _resolve_padding(padding, kernel, stride_, dilation_)
    if padding_mode != "zeros" and any(pads):
        x = F.pad(x, pads, mode=padding_mode)
        # Depth keeps the border: pad it as missing so the window centre still lines up with the output pixel.
        depth = F.pad(depth, pads)
        pads = (0, 0, 0, 0)
        cache = None  # the padded depth is a fresh tensor: its address is no key
    out_h = _output_size(x.shape[-2], pads[2] + pads[3], kernel[0], stride_[0], dilation_[0])
    out_w = _output_size(x.shape[-1], pads[0] + pads[1], kernel[1], stride_[1], dilation_[1])
    if out_h <= 0 or out_w <= 0:
        raise ConfigError(f"input {tuple(x.shape[-2:])} is too small for kernel {kernel} with this padding/dilation")

    if impl == "triton":
        from depthdistill.nn import triton_conv  # imports triton: only when asked for

        triton_conv._check_usable(x, weight, bias)
    if kernel == (1, 1) or alpha == 0:
        # H ≡ 1: a plain convolution, at a plain convolution's cost.
        return F.conv2d(F.pad(x, pads) if any(pads) else x, weight, bias, stride_, 0, dilation_, groups)

    if impl == "triton" and triton_conv.DEPTH_WEIGHTS_IN_KERNEL:
        return triton_conv._dconv_triton_depth(x, depth, weight, bias, list(stride_), list(pads), list(dilation_),
                                               groups, float(alpha))
    weights_h = _cached_similarity(depth, kernel, stride_, pads, dilation_, alpha, x.dtype, cache)
    if impl == "auto":
        impl = _choose_impl(x, stride_, groups)
    if impl == "reference":
        return _reference_conv(F.pad(x, pads), weights_h, weight, bias, stride_, dilation_, groups)
    if impl == "stacked" and stride_ != (1, 1):
        raise ConfigError(f"impl='stacked' needs stride 1, got stride {stride_}; use impl='cols' or 'auto'")
    if impl == "triton":
        fast_path = triton_conv._dconv_triton
    else:
        fast_path = _cols_conv if impl == "cols" else _stacked_conv
    return fast_path(x, weights_h, weight, bias, list(stride_), list(pads), list(dilation_), groups)
