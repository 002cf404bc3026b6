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

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from depthdistill.errors import ConfigError, DepthError
from depthdistill.nn._kernels import cols_conv, reference_conv, stacked_conv
from depthdistill.nn.arguments import (
    IntPair,
    Padding,
    check_alpha,
    check_groups,
    check_padding_mode,
    output_size,
    pair,
    resolve_padding,
)
from depthdistill.nn.depth import as_depth_map, valid_depth

__all__ = ["DEFAULT_ALPHA", "IMPLEMENTATIONS", "cached_similarity", "check_depth", "depth_aware_conv2d",
           "depth_similarity"]

#: α of Eq. 6 for depth in metres (Depth-aware CNN's 1/120 per millimetre-unit equals 8.33 per metre).
DEFAULT_ALPHA = 8.3

#: The selectable implementations of :func:`depth_aware_conv2d` (its ``impl`` argument).
IMPLEMENTATIONS = ("auto", "cols", "stacked", "triton", "reference")

def check_depth(x: Tensor, depth: Tensor, op: str) -> Tensor:
    """``depth`` checked against the features ``x`` a functional operator takes: same batch and resolution.

    Args:
        x: Features ``(B, C, H, W)``.
        depth: Depth ``(B, 1, H, W)`` or ``(B, H, W)``.
        op: The operator's name, for messages.

    Returns:
        Depth as ``(B, 1, H, W)``, detached.

    Raises:
        ConfigError: If ``x`` is not 4-D.
        DepthError: If depth is malformed or does not fit ``x``.

    Examples:
        >>> check_depth(torch.zeros(1, 3, 4, 4), torch.ones(1, 4, 4), "example").shape
        torch.Size([1, 1, 4, 4])
    """
    if not isinstance(x, Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else x
        raise ConfigError(f"{op} expects x of shape (B, C, H, W), got {shape!r}")
    depth = as_depth_map(depth)
    if depth.shape[0] != x.shape[0]:
        raise DepthError(f"depth has batch size {depth.shape[0]} but the features have {x.shape[0]}")
    if depth.shape[-2:] != x.shape[-2:]:
        raise DepthError(
            f"depth is {tuple(depth.shape[-2:])} but the features are {tuple(x.shape[-2:])}; the functional op "
            "needs depth at the input's resolution (the depth-aware layers resize it for you)"
        )
    return depth


def depth_similarity(
    depth: Tensor,
    kernel_size: IntPair,
    stride: IntPair = 1,
    padding: Padding = 0,
    dilation: IntPair = 1,
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

    Raises:
        DepthError: If depth is not a float ``(B, 1, H, W)`` or ``(B, H, W)`` tensor.
        ConfigError: For a kernel size, stride or dilation below 1, a negative or unknown padding, a negative or
            non-finite α, or a depth map smaller than the window (``ConfigTypeError`` for wrong types).

    Examples:
        >>> depth = torch.full((1, 1, 4, 4), 2.0)
        >>> depth_similarity(depth, 3, padding=1).shape
        torch.Size([1, 9, 4, 4])
    """
    depth = as_depth_map(depth)
    kernel = pair(kernel_size, "kernel_size")
    stride_, dilation_ = pair(stride, "stride"), pair(dilation, "dilation")
    left, right, top, bottom = resolve_padding(padding, kernel, stride_, dilation_)
    alpha = check_alpha(alpha)
    out_h = output_size(depth.shape[-2], top + bottom, kernel[0], stride_[0], dilation_[0])
    out_w = output_size(depth.shape[-1], left + right, kernel[1], stride_[1], dilation_[1])
    if out_h <= 0 or out_w <= 0:
        raise ConfigError(f"depth_similarity: depth {tuple(depth.shape[-2:])} is smaller than the window {kernel} "
                          f"(dilation {dilation_}, padding {(left, right, top, bottom)})")
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
    return weights.view(depth.shape[0], kernel[0] * kernel[1], out_h, out_w).to(dtype or depth.dtype)


def cached_similarity(
    depth: Tensor, kernel: tuple[int, int], stride: tuple[int, int], pads: tuple[int, int, int, int],
    dilation: tuple[int, int], alpha: float, dtype: torch.dtype, cache: dict | None,
) -> Tensor:
    """:func:`depth_similarity`, memoised in ``cache`` by geometry: every depth-aware layer of one forward (a
    convolution or a pool) with the same resolution and window computes its depth weights once.

    Args:
        depth: Checked depth ``(B, 1, H, W)``.
        kernel: Kernel size pair.
        stride: Stride pair.
        pads: ``(left, right, top, bottom)``.
        dilation: Dilation pair.
        alpha: Checked α.
        dtype: The weights' dtype.
        cache: The memo (``None``: no memo).

    Returns:
        ``(B, kh*kw, H_out, W_out)``, as :func:`depth_similarity`.

    Examples:
        >>> memo = {}
        >>> depth = torch.ones(1, 1, 4, 4)
        >>> a = cached_similarity(depth, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 8.3, torch.float32, memo)
        >>> a is cached_similarity(depth, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 8.3, torch.float32, memo)
        True
    """
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
    layers need ``'cols'``. The rule is the same on every device: on CUDA both paths run on cuBLAS. The fused
    Triton kernel (``impl='triton'``, :mod:`depthdistill.nn.triton_conv`) is chosen only when asked for, until a
    GPU benchmark shows it faster (docs/performance.md).
    """
    if stride == (1, 1) and (groups > 1 or x.shape[1] > _FEW_CHANNELS):
        return "stacked"
    return "cols"


def depth_aware_conv2d(
    x: Tensor,
    depth: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntPair = 1,
    padding: Padding = 0,
    dilation: IntPair = 1,
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
        ConfigError: If a convolution argument is invalid (a ValueError too): stride, dilation or kernel size
            below 1, negative padding or an unknown padding string, ``groups`` below 1 or not dividing the
            channels, α negative or not finite, an unknown ``padding_mode`` or ``impl``; or if ``impl='triton'``
            cannot run here (no triton, a CPU tensor without the interpreter, an unsupported or mixed dtype).
        ConfigTypeError: If one of them has the wrong type (a float stride, a string α; a TypeError too).

    Examples:
        >>> x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
        >>> depth = torch.rand(2, 1, 8, 8) + 0.5
        >>> depth_aware_conv2d(x, depth, w, padding=1).shape
        torch.Size([2, 4, 8, 8])
        >>> torch.allclose(depth_aware_conv2d(x, torch.ones(2, 1, 8, 8), w, padding=1),
        ...                F.conv2d(x, w, padding=1), atol=1e-5)
        True
    """
    depth = check_depth(x, depth, "depth_aware_conv2d")
    alpha = check_alpha(alpha)
    check_padding_mode(padding_mode)
    if impl not in IMPLEMENTATIONS:
        raise ConfigError(f"impl must be one of {IMPLEMENTATIONS}, got {impl!r}")
    if not isinstance(weight, Tensor) or weight.dim() != 4:
        raise ConfigError(f"weight must be a (C_out, C_in / groups, kh, kw) tensor, got "
                          f"{getattr(weight, 'shape', weight)!r}")
    groups = check_groups(groups, x.shape[1], weight.shape[0])
    if x.shape[1] != weight.shape[1] * groups:
        raise ConfigError(
            f"x has {x.shape[1]} channels but weight {tuple(weight.shape)} with groups={groups} expects "
            f"{weight.shape[1] * groups}"
        )
    kernel = pair(tuple(weight.shape[-2:]), "kernel_size")
    stride_, dilation_ = pair(stride, "stride"), pair(dilation, "dilation")
    pads = resolve_padding(padding, kernel, stride_, dilation_)
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        # Run in the autocast dtype, as F.conv2d would, but with autocast off so the pieces don't re-cast.
        dtype = torch.get_autocast_dtype(device_type)
        with torch.autocast(device_type, enabled=False):
            return depth_aware_conv2d(
                x.to(dtype), depth, weight.to(dtype), None if bias is None else bias.to(dtype), stride, padding,
                dilation, groups, alpha, padding_mode=padding_mode, impl=impl, cache=cache,
            )

    if padding_mode != "zeros" and any(pads):
        x = F.pad(x, pads, mode=padding_mode)
        # Depth keeps the border: pad it as missing so the window centre still lines up with the output pixel.
        depth = F.pad(depth, pads)
        pads = (0, 0, 0, 0)
        cache = None  # the padded depth is a fresh tensor: its address is no key
    out_h = output_size(x.shape[-2], pads[2] + pads[3], kernel[0], stride_[0], dilation_[0])
    out_w = output_size(x.shape[-1], pads[0] + pads[1], kernel[1], stride_[1], dilation_[1])
    if out_h <= 0 or out_w <= 0:
        raise ConfigError(f"input {tuple(x.shape[-2:])} is too small for kernel {kernel} with this padding/dilation")

    if impl == "triton":
        from depthdistill.nn import triton_conv  # imports triton: only when asked for

        triton_conv.check_usable(x, weight, bias)
    if kernel == (1, 1) or alpha == 0:
        # H ≡ 1: a plain convolution, at a plain convolution's cost.
        return F.conv2d(F.pad(x, pads) if any(pads) else x, weight, bias, stride_, 0, dilation_, groups)

    if impl == "triton" and triton_conv.DEPTH_WEIGHTS_IN_KERNEL:
        return triton_conv.dconv_triton_depth(x, depth, weight, bias, list(stride_), list(pads), list(dilation_),
                                               groups, float(alpha))
    weights_h = cached_similarity(depth, kernel, stride_, pads, dilation_, alpha, x.dtype, cache)
    if impl == "auto":
        impl = _choose_impl(x, stride_, groups)
    if impl == "reference":
        return reference_conv(F.pad(x, pads), weights_h, weight, bias, stride_, dilation_, groups)
    if impl == "stacked" and stride_ != (1, 1):
        raise ConfigError(f"impl='stacked' needs stride 1, got stride {stride_}; use impl='cols' or 'auto'")
    if impl == "triton":
        fast_path = triton_conv.dconv_triton
    else:
        fast_path = cols_conv if impl == "cols" else stacked_conv
    return fast_path(x, weights_h, weight, bias, list(stride_), list(pads), list(dilation_), groups)
