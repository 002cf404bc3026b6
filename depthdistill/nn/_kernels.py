"""The kernels behind :func:`~depthdistill.nn.functional.depth_aware_conv2d`, and their registration as custom ops.

* ``"stacked"`` (stride 1): the kernels of one kernel row's taps stacked into one GEMM over a block of whole input
  rows (a view of the unpadded input, never a copy), then each tap's product shifted, multiplied by its depth
  weight and accumulated on the output side, block by block so the product is still in cache.
* ``"cols"`` (any stride): per block of output rows, the im2col tile of the input times the depth weights, and one
  GEMM with the kernel; the tile is rebuilt in backward rather than kept.
* ``"reference"``: the definition through ``F.unfold``, differentiated by autograd.

The two fast paths are ``torch.library`` custom ops (``depthdistill::dconv_stacked``, ``depthdistill::dconv_cols``)
with their own backward; :func:`register_fast_path` also registers the Triton op of
:mod:`depthdistill.nn.triton_conv`. Every function here takes checked arguments: shapes, padding and depth are
validated by :mod:`depthdistill.nn.functional`, which is the public entry point.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from depthdistill.nn.arguments import output_size

__all__ = ["cols_conv", "reference_conv", "register_fast_path", "stacked_conv"]


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


def register_fast_path(
    name: str, forward: Callable[..., Tensor], backward: Callable[..., tuple[Tensor, Tensor]],
    from_depth: bool = False,
) -> Callable[..., Tensor]:
    """``depthdistill::{name}``: ``forward`` as a custom op whose autograd calls ``backward``, itself an op.

    The op takes the depth weights ``weights_h``, or with ``from_depth`` the depth map and a trailing ``alpha``
    instead (a kernel that computes the weights itself).

    Args:
        name: The op's name in the ``depthdistill`` namespace.
        forward: ``(x, weights_h, weight, bias, stride, pads, dilation, groups[, alpha]) -> out``.
        backward: ``(grad_out, x, weights_h, weight, stride, pads, dilation, groups[, alpha], need_x, need_w)
            -> (grad_x, grad_w)``.
        from_depth: The op takes the depth map and α instead of the weights.

    Returns:
        The op, callable with ``forward``'s arguments.
    """
    fields = {"weights": "depth", "extra": ", float alpha"} if from_depth else {"weights": "weights_h", "extra": ""}
    forward_op = torch.library.custom_op(f"depthdistill::{name}", forward, mutates_args=(),
                                         schema=_CONV_SCHEMA.format(**fields))
    backward_op = torch.library.custom_op(f"depthdistill::{name}_backward", backward, mutates_args=(),
                                          schema=_BACKWARD_SCHEMA.format(**fields))

    @forward_op.register_fake
    def _(x, weights_h, weight, bias, stride, pads, dilation, groups, *alpha):
        out_h = output_size(x.shape[-2], pads[2] + pads[3], weight.shape[-2], stride[0], dilation[0])
        out_w = output_size(x.shape[-1], pads[0] + pads[1], weight.shape[-1], stride[1], dilation[1])
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


#: ``impl="stacked"``: ``stacked_conv(x, weights_h, weight, bias, stride, pads, dilation, groups)``, stride 1.
stacked_conv = register_fast_path("dconv_stacked", _stacked_forward, _stacked_backward)
#: ``impl="cols"``: ``cols_conv(x, weights_h, weight, bias, stride, pads, dilation, groups)``, any stride.
cols_conv = register_fast_path("dconv_cols", _cols_forward, _cols_backward)


def reference_conv(
    xp: Tensor,
    weights_h: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
) -> Tensor:
    """``impl="reference"``: the definition through ``F.unfold`` on the padded input ``xp``, autograd's backward.

    Args:
        xp: The input, already padded.
        weights_h: Depth weights ``(B, kh*kw, H_out, W_out)``.
        weight: Kernel ``(C_out, C_in / groups, kh, kw)``.
        bias: Optional ``(C_out,)``.
        stride: Stride pair.
        dilation: Dilation pair.
        groups: Groups.

    Returns:
        ``(B, C_out, H_out, W_out)``.
    """
    batch, in_ch = xp.shape[:2]
    out_ch, _, kh, kw = weight.shape
    out_h, out_w = weights_h.shape[-2:]
    cols = F.unfold(xp, (kh, kw), dilation=dilation, stride=stride)
    cols = cols.view(batch, in_ch, kh * kw, -1) * weights_h.view(batch, 1, kh * kw, -1)
    cols = cols.view(batch, groups, (in_ch // groups) * kh * kw, -1)
    out = torch.einsum("gok,bgkl->bgol", weight.reshape(groups, out_ch // groups, -1), cols)
    out = out.reshape(batch, out_ch, out_h, out_w)
    return out if bias is None else out + bias.view(1, -1, 1, 1)
