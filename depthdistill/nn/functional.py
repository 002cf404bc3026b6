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
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from depthdistill.errors import ConfigError, DepthError

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


def _output_size(size: int, pad: int, kernel: int, stride: int, dilation: int) -> int:
    return (size + pad - dilation * (kernel - 1) - 1) // stride + 1


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


#: Bytes of the transient GEMM product (forward) or gradient (backward) one chunk of stacked taps may hold. The
#: output is processed in blocks of rows so that this product is still in cache when the shifted weighted sum
#: reads it: with 64 or 128 channels that sum, not the GEMM, would otherwise set the pace (memory-bound).
_BLOCK_BYTES = 4 * 2**20


class _Tap(NamedTuple):
    """One kernel tap of a stride-1 convolution: the output region it reaches inside the unpadded input."""

    index: int  # i * kw + j, the channel of the depth weights
    out_rows: slice
    out_cols: slice
    in_cols: slice  # its rows in the input are the chunk's in_rows


class _Chunk(NamedTuple):
    """Taps of one kernel row, computed by one GEMM over the input rows they read."""

    in_rows: slice
    taps: list[_Tap]


def _stack_plan(
    x: Tensor, weight: Tensor, out_hw: tuple[int, int], pads: tuple[int, int, int, int], dilation: tuple[int, int],
) -> list[_Chunk]:
    """Stride 1: per block of output rows and per kernel row, the taps that touch the input and where.

    A tap whose window lies in the zero padding adds nothing, so only the part of the output where it lands inside
    the input is computed, and only the input rows it reads enter the GEMM: neither padding nor its products are
    ever made (this matters for fc6, whose dilation 12 puts a fifth of every side in the padding at 1/8 scale).
    Blocks hold as many output rows as keep one chunk's product within :data:`_BLOCK_BYTES`.
    """
    left, _, top, _ = pads
    (in_h, in_w), (kh, kw) = x.shape[-2:], weight.shape[-2:]
    row_bytes = x.shape[0] * kw * weight.shape[0] * in_w * x.element_size()
    block = max(1, _BLOCK_BYTES // row_bytes)
    chunks = []
    for b0 in range(0, out_hw[0], block):
        b1 = min(out_hw[0], b0 + block)
        for i in range(kh):
            shift_y = i * dilation[0] - top
            oy0, oy1 = max(b0, -shift_y), min(b1, in_h - shift_y)
            if oy0 >= oy1:
                continue
            taps = []
            for j in range(kw):
                shift_x = j * dilation[1] - left
                ox0, ox1 = max(0, -shift_x), min(out_hw[1], in_w - shift_x)
                if ox0 < ox1:
                    taps.append(_Tap(i * kw + j, slice(oy0, oy1), slice(ox0, ox1),
                                     slice(ox0 + shift_x, ox1 + shift_x)))
            if taps:
                chunks.append(_Chunk(slice(oy0 + shift_y, oy1 + shift_y), taps))
    return chunks


def _stacked_kernel(weight: Tensor, groups: int) -> Tensor:
    """``(groups, kh*kw * C_out/groups, C_in/groups)``: row ``tap * C_out/groups + o`` is tap ``tap``'s kernel.

    A chunk's taps are consecutive taps of one kernel row, so its kernel is a slice of rows of this: a view.
    """
    out_ch, in_per_group, kh, kw = weight.shape
    per_tap = weight.reshape(groups, out_ch // groups, in_per_group, kh * kw)
    return per_tap.permute(0, 3, 1, 2).reshape(groups, -1, in_per_group)


def _chunk_rows(taps: list[_Tap], out_per_group: int) -> slice:
    """The rows of :func:`_stacked_kernel` that belong to ``taps`` (consecutive tap indices)."""
    return slice(taps[0].index * out_per_group, (taps[-1].index + 1) * out_per_group)


def _stacked_forward(
    x: Tensor, weights_h: Tensor, weight: Tensor, bias: Tensor | None, stride: list[int], pads: list[int],
    dilation: list[int], groups: int,
) -> Tensor:
    """Stride 1: ``Z = [W_t for all taps] @ x`` as GEMMs, then ``Y = Σ_t H_t ⊙ shift_t(Z_t)``.

    The GEMMs run over the unpadded input as it lies in memory (a block of whole rows is a strided matrix BLAS
    reads directly), so no shifted copy of ``x`` is ever made; the shift, the padding and the depth weights act on
    the output side as strided views. Plain BLAS is used rather than a 1×1 convolution: on CPU, oneDNN's 1×1
    convolution with ``9·C_out`` output channels ran ~1.3× slower than the same GEMM. ``stride`` is always 1
    here; it is in the signature so that both fast paths share one op schema.
    """
    x = x.contiguous()
    batch, out_ch, in_hw = x.shape[0], weight.shape[0], x.shape[-2:]
    out_hw, out_per_group = tuple(weights_h.shape[-2:]), out_ch // groups
    out = x.new_zeros(batch, out_ch, *out_hw)
    out_groups = out.view(batch, groups, out_per_group, *out_hw)
    x_rows = x.view(batch, groups, -1, *in_hw)
    kernel = _stacked_kernel(weight, groups)
    for rows, taps in _stack_plan(x, weight, out_hw, pads, dilation):
        z = torch.matmul(kernel[:, _chunk_rows(taps, out_per_group)], x_rows[..., rows, :].flatten(-2))
        z = z.view(batch, groups, len(taps), out_per_group, -1, in_hw[1])
        for k, tap in enumerate(taps):
            h = weights_h[:, None, tap.index : tap.index + 1, tap.out_rows, tap.out_cols]
            out_groups[..., tap.out_rows, tap.out_cols].addcmul_(z[:, :, k, ..., tap.in_cols], h)
    if bias is not None:
        out.add_(bias.view(1, -1, 1, 1))
    return out


def _stacked_backward(
    grad_out: Tensor, x: Tensor, weights_h: Tensor, weight: Tensor, stride: list[int], pads: list[int],
    dilation: list[int], groups: int, need_x: bool, need_w: bool,
) -> tuple[Tensor, Tensor]:
    """``dx`` and ``dW`` of :func:`_stacked_forward` (empty where not needed).

    Writes ``shift_tᵀ(H_t ⊙ dY)`` for a chunk of taps into one buffer and accumulates ``dx`` and ``dW`` with two
    GEMMs straight into their destinations.
    """
    x, grad_out = x.contiguous(), grad_out.contiguous()
    batch, out_ch, in_hw = x.shape[0], weight.shape[0], x.shape[-2:]
    out_hw, out_per_group = tuple(weights_h.shape[-2:]), out_ch // groups
    grad_groups = grad_out.view(batch, groups, out_per_group, *out_hw)
    x_rows = x.view(batch, groups, -1, *in_hw)
    kernel = _stacked_kernel(weight, groups)
    grad_x = x.new_zeros(x.shape) if need_x else x.new_empty(0)
    grad_kernel = torch.zeros_like(kernel) if need_w else None
    for rows, taps in _stack_plan(x, weight, out_hw, pads, dilation):
        grad_z = x.new_empty(batch, groups, len(taps), out_per_group, rows.stop - rows.start, in_hw[1])
        for k, tap in enumerate(taps):
            h = weights_h[:, None, tap.index : tap.index + 1, tap.out_rows, tap.out_cols]
            grad_z[:, :, k, ..., tap.in_cols].copy_(grad_groups[..., tap.out_rows, tap.out_cols] * h)
            grad_z[:, :, k, ..., : tap.in_cols.start].zero_()  # columns this tap never reaches
            grad_z[:, :, k, ..., tap.in_cols.stop :].zero_()
        grad_z = grad_z.view(batch, groups, len(taps) * out_per_group, -1)
        chunk = _chunk_rows(taps, out_per_group)
        for n in range(batch):
            x_block = x_rows[n, ..., rows, :].flatten(-2)
            if need_x:
                grad_x.view_as(x_rows)[n, ..., rows, :].flatten(-2).baddbmm_(
                    kernel[:, chunk].transpose(-1, -2), grad_z[n])
            if need_w:
                grad_kernel[:, chunk].baddbmm_(grad_z[n], x_block.transpose(-1, -2))
    if not need_w:
        return grad_x, weight.new_empty(0)
    in_per_group, kh, kw = weight.shape[1:]
    grad_w = grad_kernel.view(groups, kh * kw, out_per_group, in_per_group).permute(0, 2, 3, 1)
    return grad_x, grad_w.reshape(weight.shape).contiguous()


#: Bytes of the depth-weighted im2col tile ``impl='cols'`` builds at a time: output rows are taken in blocks that
#: keep it this small, so the transient memory stays bounded whatever the image size, while each block's GEMM is
#: still large enough to run at full BLAS speed.
_COLS_TILE_BYTES = 16 * 2**20


def _cols_blocks(x: Tensor, kernel: tuple[int, int], out_hw: tuple[int, int]) -> list[tuple[int, int]]:
    """Blocks ``[r0, r1)`` of output rows whose im2col tile stays within :data:`_COLS_TILE_BYTES`."""
    row_bytes = x.shape[0] * x.shape[1] * kernel[0] * kernel[1] * out_hw[1] * x.element_size()
    rows = max(1, _COLS_TILE_BYTES // row_bytes)
    return [(r0, min(out_hw[0], r0 + rows)) for r0 in range(0, out_hw[0], rows)]


def _block_in_rows(
    rows: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]
) -> slice:
    """The padded input rows that output rows ``[r0, r1)`` read."""
    return slice(rows[0] * stride[0], (rows[1] - 1) * stride[0] + dilation[0] * (kernel[0] - 1) + 1)


def _weighted_cols(
    xp: Tensor, weights_h: Tensor, rows: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
    dilation: tuple[int, int],
) -> Tensor:
    """im2col of the padded input for output rows ``rows``, times the depth weights: ``(B, C_in·k², L)``."""
    cols = F.unfold(xp[:, :, _block_in_rows(rows, kernel, stride, dilation)], kernel, dilation=dilation,
                    stride=stride)
    taps = kernel[0] * kernel[1]
    cols = cols.view(xp.shape[0], -1, taps, cols.shape[-1]).mul_(_block_weights(weights_h, rows))
    return cols.view(xp.shape[0], -1, cols.shape[-1])


def _block_weights(weights_h: Tensor, rows: tuple[int, int]) -> Tensor:
    """The depth weights of output rows ``rows`` as ``(B, 1, k², L)``, to broadcast over input channels."""
    return weights_h[:, :, rows[0] : rows[1]].reshape(weights_h.shape[0], 1, weights_h.shape[1], -1)


def _cols_forward(
    x: Tensor, weights_h: Tensor, weight: Tensor, bias: Tensor | None, stride: list[int], pads: list[int],
    dilation: list[int], groups: int,
) -> Tensor:
    """Any stride: per block of output rows, ``Y = W @ (H ⊙ im2col(x))`` with one GEMM.

    The same arithmetic as the unfold reference, but the im2col tile lives only for its block (forward and
    backward), and each block is four large operations (unfold, multiply, GEMM, copy) rather than a few small ones
    per tap: few fork/joins for the thread pool.
    """
    xp = F.pad(x, pads) if any(pads) else x
    batch, out_ch, kernel = x.shape[0], weight.shape[0], tuple(weight.shape[-2:])
    out_hw = tuple(weights_h.shape[-2:])
    kernel_g = weight.reshape(groups, out_ch // groups, -1)
    out = x.new_empty(batch, out_ch, *out_hw)
    for r0, r1 in _cols_blocks(x, kernel, out_hw):
        cols = _weighted_cols(xp, weights_h, (r0, r1), kernel, stride, dilation)
        block = torch.matmul(kernel_g, cols.view(batch, groups, kernel_g.shape[-1], -1))
        out[:, :, r0:r1].copy_(block.view(batch, out_ch, r1 - r0, out_hw[1]))
    if bias is not None:
        out.add_(bias.view(1, -1, 1, 1))
    return out


def _cols_backward(
    grad_out: Tensor, x: Tensor, weights_h: Tensor, weight: Tensor, stride: list[int], pads: list[int],
    dilation: list[int], groups: int, need_x: bool, need_w: bool,
) -> tuple[Tensor, Tensor]:
    """``dx`` and ``dW`` of :func:`_cols_forward` (empty where not needed), the im2col tile rebuilt per block."""
    batch, out_ch, kernel = x.shape[0], weight.shape[0], tuple(weight.shape[-2:])
    out_hw = tuple(weights_h.shape[-2:])
    xp = F.pad(x, pads) if any(pads) else x
    kernel_g = weight.reshape(groups, out_ch // groups, -1)
    grad_xp = torch.zeros_like(xp) if need_x else None
    grad_kernel = torch.zeros_like(kernel_g) if need_w else None
    for r0, r1 in _cols_blocks(x, kernel, out_hw):
        grad_block = grad_out[:, :, r0:r1].reshape(batch, groups, out_ch // groups, -1)
        if need_w:
            cols = _weighted_cols(xp, weights_h, (r0, r1), kernel, stride, dilation)
            cols = cols.view(batch, groups, kernel_g.shape[-1], -1)
            grad_kernel.add_(torch.matmul(grad_block, cols.transpose(-1, -2)).sum(0))
        if need_x:
            grad_cols = torch.matmul(kernel_g.transpose(-1, -2), grad_block)
            grad_cols = grad_cols.view(batch, -1, kernel[0] * kernel[1], grad_cols.shape[-1])
            grad_cols.mul_(_block_weights(weights_h, (r0, r1)))
            in_rows = _block_in_rows((r0, r1), kernel, stride, dilation)
            rows_hw = (in_rows.stop - in_rows.start, xp.shape[-1])
            grad_xp[:, :, in_rows] += F.fold(grad_cols.view(batch, -1, grad_cols.shape[-1]), rows_hw, kernel,
                                             dilation=dilation, stride=stride)
    grad_x = x.new_empty(0)
    if need_x:
        left, right, top, bottom = pads
        grad_x = grad_xp[:, :, top : grad_xp.shape[-2] - bottom, left : grad_xp.shape[-1] - right].contiguous()
    return grad_x, grad_kernel.view(weight.shape) if need_w else weight.new_empty(0)


# The fast paths are torch.library custom ops with their own autograd, not autograd.Functions, so torch.compile
# calls them as opaque kernels. Traced through as autograd.Functions, inductor turned their strided GEMM outputs
# and shifted multiply-adds into generated loops that made a compiled teacher step 4x slower (docs/performance.md).
_CONV_SCHEMA = ("(Tensor x, Tensor {weights}, Tensor weight, Tensor? bias, int[] stride, int[] pads, "
                "int[] dilation, int groups{extra}) -> Tensor")
_BACKWARD_SCHEMA = ("(Tensor grad_out, Tensor x, Tensor {weights}, Tensor weight, int[] stride, int[] pads, "
                    "int[] dilation, int groups{extra}, bool need_x, bool need_w) -> (Tensor, Tensor)")


def _register_fast_path(
    name: str, forward: Callable[..., Tensor], backward: Callable[..., tuple[Tensor, Tensor]],
    from_depth: bool = False,
) -> Callable[..., Tensor]:
    """``depthdistill::{name}``: ``forward`` as a custom op whose autograd calls ``backward``, itself an op.

    The op takes the depth weights ``weights_h``, or with ``from_depth`` the depth map and a trailing ``alpha``
    instead (a kernel that computes the weights itself).
    """
    fields = {"weights": "depth", "extra": ", float alpha"} if from_depth else {"weights": "weights_h", "extra": ""}
    forward_op = torch.library.custom_op(f"depthdistill::{name}", forward, mutates_args=(),
                                         schema=_CONV_SCHEMA.format(**fields))
    backward_op = torch.library.custom_op(f"depthdistill::{name}_backward", backward, mutates_args=(),
                                          schema=_BACKWARD_SCHEMA.format(**fields))

    @forward_op.register_fake
    def _(x, weights_h, weight, bias, stride, pads, dilation, groups, *alpha):
        out_h = _output_size(x.shape[-2], pads[2] + pads[3], weight.shape[-2], stride[0], dilation[0])
        out_w = _output_size(x.shape[-1], pads[0] + pads[1], weight.shape[-1], stride[1], dilation[1])
        return x.new_empty(x.shape[0], weight.shape[0], out_h, out_w)

    @backward_op.register_fake
    def _(grad_out, x, weights_h, weight, stride, pads, dilation, groups, *rest):
        need_x, need_w = rest[-2:]
        return (x.new_empty(x.shape) if need_x else x.new_empty(0),
                weight.new_empty(weight.shape) if need_w else weight.new_empty(0))

    def setup_context(ctx, inputs, output):
        x, weights_h, weight, bias, *conf = inputs
        ctx.save_for_backward(x, weights_h, weight)
        ctx.conf, ctx.has_bias = conf, bias is not None

    def differentiate(ctx, grad_out):
        x, weights_h, weight = ctx.saved_tensors
        need_x, _, need_w, need_b = ctx.needs_input_grad[:4]
        grad_x = grad_w = None
        if need_x or need_w:
            grad_x, grad_w = backward_op(grad_out, x, weights_h, weight, *ctx.conf, need_x, need_w)
        grad_b = grad_out.sum(dim=(0, 2, 3)) if (need_b and ctx.has_bias) else None
        return (grad_x if need_x else None), None, (grad_w if need_w else None), grad_b, *(None,) * len(ctx.conf)

    forward_op.register_autograd(differentiate, setup_context=setup_context)
    return forward_op


_stacked_conv = _register_fast_path("dconv_stacked", _stacked_forward, _stacked_backward)
_cols_conv = _register_fast_path("dconv_cols", _cols_forward, _cols_backward)


def _reference_conv(
    xp: Tensor,
    weights_h: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
) -> Tensor:
    batch, in_ch = xp.shape[:2]
    out_ch, _, kh, kw = weight.shape
    out_h, out_w = weights_h.shape[-2:]
    cols = F.unfold(xp, (kh, kw), dilation=dilation, stride=stride)
    cols = cols.view(batch, in_ch, kh * kw, -1) * weights_h.view(batch, 1, kh * kw, -1)
    cols = cols.view(batch, groups, (in_ch // groups) * kh * kw, -1)
    out = torch.einsum("gok,bgkl->bgol", weight.reshape(groups, out_ch // groups, -1), cols)
    out = out.reshape(batch, out_ch, out_h, out_w)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


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
