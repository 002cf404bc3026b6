"""The fused Triton depth-aware convolution behind ``depth_aware_conv2d(..., impl="triton")``.

An implicit-GEMM convolution: a program computes a tile of ``BLOCK_M`` output pixels × ``BLOCK_N`` output
channels, and its reduction runs over ``(tap, input-channel block)``. Each input tile it loads is scaled by that
tap's depth weight for the tile's output pixels (a per-row scale of the A operand) before the dot product, so
neither the im2col tile nor the depth-weighted input is ever written to memory: the only traffic beyond a plain
convolution's is reading ``H``. Backward is two more kernels: ``dx`` is the same implicit GEMM over input pixels
with ``dY`` rows scaled by ``H`` and the kernel transposed; ``dW`` reduces ``dY`` against the ``H``-scaled input
over all output pixels, split into independent chunks whose partial sums are added afterwards (no atomics, so
the result is deterministic).

The three kernels are wrapped as the ``torch.library`` custom op ``depthdistill::dconv_triton`` (and its
``_backward``), with the same schema and autograd as the other fast paths, so ``torch.compile`` calls it as an
opaque kernel. Behind the flag :data:`DEPTH_WEIGHTS_IN_KERNEL` the same kernels compute ``H`` themselves from the
depth map (``depthdistill::dconv_triton_depth``, which takes depth and ``alpha`` in place of ``H``).

Triton compiles for GPUs; with ``TRITON_INTERPRET=1`` in the environment it instead runs the same kernels on CPU
tensors through its interpreter (numpy, one program at a time: slow, but exact enough to test against the
definition). The kernels are decorated when first used, not at import, and separately for each mode, so a
process can switch the interpreter on after importing this module. Accumulation is in float32 (float64 for
float64 input). Under the interpreter every tile is upcast to the accumulator's type before the dot, because
the interpreter multiplies bfloat16 tiles as their raw integer bits; on a GPU half-precision tiles go to the
tensor cores as they are.

``impl="auto"`` does not choose this path yet: its speed has not been measured on a GPU (docs/performance.md).
"""

from __future__ import annotations

import os
from functools import cache

import torch
from torch import Tensor

from depthdistill.errors import ConfigError
from depthdistill.nn._kernels import register_fast_path
from depthdistill.nn.arguments import output_size
from depthdistill.nn.depth import valid_depth

try:  # optional: only impl="triton" needs it, and it raises a ConfigError saying so when it is missing
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton ships with torch's Linux wheels
    triton = tl = None

__all__ = ["DEPTH_WEIGHTS_IN_KERNEL", "check_usable", "dconv_triton", "dconv_triton_depth"]

#: With ``True``, ``impl="triton"`` computes the depth weights inside the kernels from the depth map (the op
#: ``depthdistill::dconv_triton_depth``) instead of reading the precomputed ``H`` that the other paths share:
#: no ``(B, k², H_out, W_out)`` tensor is made or kept for backward, at the cost of two depth reads and an ``exp``
#: per tap and pixel in each kernel, and of ``α`` rounded to float32. Off until a GPU shows which is faster
#: (docs/performance.md).
DEPTH_WEIGHTS_IN_KERNEL = False

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

#: The dW kernel splits its reduction over output pixels into chunks of at least this many pixels, so that it
#: runs about _DW_PROGRAMS programs (a few per streaming multiprocessor) even where the kernel is small. A guess
#: until measured on a GPU.
_SPLIT_PIXELS = 4096
_DW_PROGRAMS = 512


def _interpreting() -> bool:
    """Whether Triton runs kernels through its CPU interpreter (``TRITON_INTERPRET=1`` in the environment)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on")


def check_usable(x: Tensor, weight: Tensor, bias: Tensor | None) -> None:
    """Raises a ConfigError saying what to do if ``impl='triton'`` cannot run on these operands.

    Args:
        x: The input.
        weight: The kernel.
        bias: The bias, or ``None``.

    Raises:
        ConfigError: No triton, a CPU tensor without ``TRITON_INTERPRET=1``, an unsupported or mixed dtype, or
            a tensor too large for 32-bit indexing.
    """
    if triton is None:
        raise ConfigError("impl='triton' needs the triton package (pip install triton); use impl='auto' instead")
    if x.device.type != "cuda" and not _interpreting():
        raise ConfigError(
            f"impl='triton' runs on CUDA tensors, got a {x.device.type} tensor; use impl='auto' on CPU, or set "
            "TRITON_INTERPRET=1 in the environment to run the kernel through Triton's (slow) CPU interpreter"
        )
    if x.dtype not in _DTYPES:
        raise ConfigError(f"impl='triton' supports {', '.join(map(str, _DTYPES))}, got {x.dtype}")
    if weight.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
        raise ConfigError(f"impl='triton' needs x, weight and bias of one dtype, got {x.dtype} and {weight.dtype}"
                          f"{'' if bias is None else f' and {bias.dtype}'}; cast them, or run under autocast")
    if max(x[0].numel(), x.shape[0] * x.shape[2] * x.shape[3]) >= 2**31:
        # Offsets inside one image, and pixel indices over the batch, are 32-bit in the kernels.
        raise ConfigError(f"impl='triton' indexes with 32 bits: input {tuple(x.shape)} is too large; split the batch")


# The kernels are plain functions, decorated by _kernels() on first use: triton.jit decides at decoration time
# whether a kernel is compiled or interpreted. Their annotations stay strings (``from __future__ import
# annotations``), which Triton reads as it reads the objects, and which keep this module importable without it.
# They call only Triton's builtins (tl.full, not tl.zeros; no tl.cdiv): its library functions are themselves
# jit functions, decorated for the mode in force when triton was first imported (torch._dynamo imports it), and
# the interpreter refuses compiled ones.


def _dconv_fwd_kernel(
    x_ptr, h_ptr, d_ptr, alpha, w_ptr, b_ptr, y_ptr,
    batch, in_ch, in_h, in_w, out_ch, out_h, out_w, in_per_group, out_per_group,
    stride_h, stride_w, pad_top, pad_left, dil_h, dil_w,
    KH: tl.constexpr, KW: tl.constexpr, HAS_BIAS: tl.constexpr, FROM_DEPTH: tl.constexpr, ACC: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """``Y[n, o, p0] = Σ_(tap, c) W[o, c, tap] · H[n, tap, p0] · X[n, c, p0·s + tap·d − pad] (+ b[o])``.

    ``H`` is read from ``h_ptr``, or with ``FROM_DEPTH`` computed from the depth at ``d_ptr`` (0 where missing).
    """
    pid_m, pid_n, group = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    out_hw = out_h * out_w
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # output pixels, flattened over (n, oy, ox)
    m_ok = offs_m < batch * out_hw
    n = offs_m // out_hw
    oy = (offs_m % out_hw) // out_w
    ox = offs_m % out_w
    offs_o = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    o_ok = offs_o < out_per_group
    out_c = group * out_per_group + offs_o
    x_img = x_ptr + n.to(tl.int64) * (in_ch * in_h * in_w) + (group * in_per_group) * (in_h * in_w)
    h_img = h_ptr + n.to(tl.int64) * (KH * KW * out_hw) + oy * out_w + ox
    if FROM_DEPTH:  # D(p0), under the centre tap; 0 (missing) where that lies in the padding
        d_img = d_ptr + n.to(tl.int64) * (in_h * in_w)
        cy = oy * stride_h - pad_top + (KH - 1) // 2 * dil_h
        cx = ox * stride_w - pad_left + (KW - 1) // 2 * dil_w
        d_centre = tl.load(d_img + cy * in_w + cx, mask=m_ok & (cy >= 0) & (cy < in_h) & (cx >= 0) & (cx < in_w),
                           other=0.0).to(ACC)
    acc = tl.full((BLOCK_M, BLOCK_N), 0, dtype=ACC)
    for tap in range(KH * KW):
        i = tap // KW
        j = tap % KW
        iy = oy * stride_h - pad_top + i * dil_h
        ix = ox * stride_w - pad_left + j * dil_w
        in_ok = m_ok & (iy >= 0) & (iy < in_h) & (ix >= 0) & (ix < in_w)
        if FROM_DEPTH:  # Eq. 6, and H = 1 where either depth is missing (a tap in the padding reads 0)
            d_tap = tl.load(d_img + iy * in_w + ix, mask=in_ok, other=0.0).to(ACC)
            h = tl.where((d_tap > 0) & (d_centre > 0), tl.exp(-alpha * tl.abs(d_tap - d_centre)), 1.0)
        else:
            h = tl.load(h_img + tap * out_hw, mask=m_ok, other=0.0).to(ACC)
        for c0 in range(0, in_per_group, BLOCK_K):
            offs_c = c0 + tl.arange(0, BLOCK_K)
            c_ok = offs_c < in_per_group
            a = tl.load(x_img[:, None] + offs_c[None, :] * (in_h * in_w) + (iy * in_w + ix)[:, None],
                        mask=in_ok[:, None] & c_ok[None, :], other=0.0)
            a = (a.to(ACC) * h[:, None]).to(x_ptr.dtype.element_ty)  # the tap's depth weight, per pixel
            w = tl.load(w_ptr + (tap * in_per_group + offs_c[:, None]) * out_ch + out_c[None, :],
                        mask=c_ok[:, None] & o_ok[None, :], other=0.0)
            if UPCAST:
                a = a.to(ACC)
                w = w.to(ACC)
            acc = tl.dot(a, w, acc, input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(b_ptr + out_c, mask=o_ok, other=0.0).to(ACC)[None, :]
    y = y_ptr + n.to(tl.int64)[:, None] * (out_ch * out_hw) + out_c[None, :] * out_hw + (oy * out_w + ox)[:, None]
    tl.store(y, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & o_ok[None, :])


def _dconv_dx_kernel(
    g_ptr, h_ptr, d_ptr, alpha, w_ptr, dx_ptr,
    batch, in_ch, in_h, in_w, out_ch, out_h, out_w, in_per_group, out_per_group,
    stride_h, stride_w, pad_top, pad_left, dil_h, dil_w,
    KH: tl.constexpr, KW: tl.constexpr, FROM_DEPTH: tl.constexpr, ACC: tl.constexpr, UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """``dX[n, c, p] = Σ_(tap, o) W[o, c, tap] · H[n, tap, p0] · dY[n, o, p0]`` over the ``p0`` that read ``p``."""
    pid_m, pid_n, group = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    in_hw, out_hw = in_h * in_w, out_h * out_w
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # input pixels, flattened over (n, y, x)
    m_ok = offs_m < batch * in_hw
    n = offs_m // in_hw
    iy = (offs_m % in_hw) // in_w
    ix = offs_m % in_w
    offs_c = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    c_ok = offs_c < in_per_group
    in_c = group * in_per_group + offs_c
    g_img = g_ptr + n.to(tl.int64) * (out_ch * out_hw) + (group * out_per_group) * out_hw
    h_img = h_ptr + n.to(tl.int64) * (KH * KW * out_hw)
    if FROM_DEPTH:  # every tap that reaches this input pixel reads its depth
        d_img = d_ptr + n.to(tl.int64) * in_hw
        d_tap = tl.load(d_img + iy * in_w + ix, mask=m_ok, other=0.0).to(ACC)
    acc = tl.full((BLOCK_M, BLOCK_N), 0, dtype=ACC)
    for tap in range(KH * KW):
        i = tap // KW
        j = tap % KW
        # The output pixel whose tap (i, j) reads input pixel (iy, ix), if any: p0·s = p + pad − tap·d.
        ty = iy + pad_top - i * dil_h
        tx = ix + pad_left - j * dil_w
        ok = m_ok & (ty >= 0) & (tx >= 0)
        ty = tl.where(ok, ty, 0)  # divide non-negative numbers only (the rows are masked anyway)
        tx = tl.where(ok, tx, 0)
        oy = ty // stride_h
        ox = tx // stride_w
        ok = ok & (ty % stride_h == 0) & (tx % stride_w == 0) & (oy < out_h) & (ox < out_w)
        pix = oy * out_w + ox
        if FROM_DEPTH:
            cy = oy * stride_h - pad_top + (KH - 1) // 2 * dil_h
            cx = ox * stride_w - pad_left + (KW - 1) // 2 * dil_w
            d_centre = tl.load(d_img + cy * in_w + cx, mask=ok & (cy >= 0) & (cy < in_h) & (cx >= 0) & (cx < in_w),
                               other=0.0).to(ACC)
            h = tl.where((d_tap > 0) & (d_centre > 0), tl.exp(-alpha * tl.abs(d_tap - d_centre)), 1.0)
        else:
            h = tl.load(h_img + tap * out_hw + pix, mask=ok, other=0.0).to(ACC)
        for o0 in range(0, out_per_group, BLOCK_K):
            offs_o = o0 + tl.arange(0, BLOCK_K)
            o_ok = offs_o < out_per_group
            a = tl.load(g_img[:, None] + offs_o[None, :] * out_hw + pix[:, None],
                        mask=ok[:, None] & o_ok[None, :], other=0.0)
            a = (a.to(ACC) * h[:, None]).to(g_ptr.dtype.element_ty)
            w = tl.load(w_ptr + (tap * in_per_group + offs_c[None, :]) * out_ch + group * out_per_group
                        + offs_o[:, None], mask=o_ok[:, None] & c_ok[None, :], other=0.0)
            if UPCAST:
                a = a.to(ACC)
                w = w.to(ACC)
            acc = tl.dot(a, w, acc, input_precision=PRECISION)
    dx = dx_ptr + n.to(tl.int64)[:, None] * (in_ch * in_hw) + in_c[None, :] * in_hw + (iy * in_w + ix)[:, None]
    tl.store(dx, acc.to(dx_ptr.dtype.element_ty), mask=m_ok[:, None] & c_ok[None, :])


def _dconv_dw_kernel(
    x_ptr, g_ptr, h_ptr, d_ptr, alpha, dw_ptr,
    batch, in_ch, in_h, in_w, out_ch, out_h, out_w, in_per_group, out_per_group,
    stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, pixels_per_split,
    KH: tl.constexpr, KW: tl.constexpr, FROM_DEPTH: tl.constexpr, ACC: tl.constexpr, UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """One split's share of ``dW[o, c, tap] = Σ_p0 dY[n, o, p0] · H[n, tap, p0] · X[n, c, p0·s + tap·d − pad]``."""
    pid, split, group = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    blocks_o = (out_per_group + BLOCK_M - 1) // BLOCK_M
    blocks_c = (in_per_group + BLOCK_N - 1) // BLOCK_N
    tap = pid // (blocks_o * blocks_c)
    pid_o = (pid // blocks_c) % blocks_o
    pid_c = pid % blocks_c
    i = tap // KW
    j = tap % KW
    offs_o = pid_o * BLOCK_M + tl.arange(0, BLOCK_M)
    o_ok = offs_o < out_per_group
    offs_c = pid_c * BLOCK_N + tl.arange(0, BLOCK_N)
    c_ok = offs_c < in_per_group
    in_hw, out_hw = in_h * in_w, out_h * out_w
    start = split * pixels_per_split
    stop = tl.minimum(start + pixels_per_split, batch * out_hw)
    acc = tl.full((BLOCK_M, BLOCK_N), 0, dtype=ACC)
    for p0 in range(start, stop, BLOCK_K):
        offs_p = p0 + tl.arange(0, BLOCK_K)  # output pixels, flattened over (n, oy, ox)
        p_ok = offs_p < stop
        n = (offs_p // out_hw).to(tl.int64)
        oy = (offs_p % out_hw) // out_w
        ox = offs_p % out_w
        iy = oy * stride_h - pad_top + i * dil_h
        ix = ox * stride_w - pad_left + j * dil_w
        in_ok = p_ok & (iy >= 0) & (iy < in_h) & (ix >= 0) & (ix < in_w)
        if FROM_DEPTH:
            d_img = d_ptr + n * in_hw
            cy = oy * stride_h - pad_top + (KH - 1) // 2 * dil_h
            cx = ox * stride_w - pad_left + (KW - 1) // 2 * dil_w
            d_centre = tl.load(d_img + cy * in_w + cx, mask=p_ok & (cy >= 0) & (cy < in_h) & (cx >= 0) & (cx < in_w),
                               other=0.0).to(ACC)
            d_tap = tl.load(d_img + iy * in_w + ix, mask=in_ok, other=0.0).to(ACC)
            h = tl.where((d_tap > 0) & (d_centre > 0), tl.exp(-alpha * tl.abs(d_tap - d_centre)), 1.0)
        else:
            h = tl.load(h_ptr + n * (KH * KW * out_hw) + tap * out_hw + oy * out_w + ox, mask=p_ok,
                        other=0.0).to(ACC)
        a = tl.load(g_ptr + (n * (out_ch * out_hw) + oy * out_w + ox)[None, :]
                    + (group * out_per_group + offs_o)[:, None] * out_hw,
                    mask=o_ok[:, None] & p_ok[None, :], other=0.0)
        b = tl.load(x_ptr + (n * (in_ch * in_hw) + iy * in_w + ix)[:, None]
                    + (group * in_per_group + offs_c)[None, :] * in_hw,
                    mask=in_ok[:, None] & c_ok[None, :], other=0.0)
        b = (b.to(ACC) * h[:, None]).to(x_ptr.dtype.element_ty)
        if UPCAST:
            a = a.to(ACC)
            b = b.to(ACC)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    dw = (dw_ptr + split.to(tl.int64) * (out_ch * in_per_group * KH * KW)
          + ((group * out_per_group + offs_o)[:, None] * in_per_group + offs_c[None, :]) * (KH * KW) + tap)
    tl.store(dw, acc, mask=o_ok[:, None] & c_ok[None, :])


@cache
def _kernels(interpret: bool) -> tuple:
    """The three kernels, decorated for the interpreter or the compiler (``interpret`` only keys the cache)."""
    return tuple(triton.jit(fn) for fn in (_dconv_fwd_kernel, _dconv_dx_kernel, _dconv_dw_kernel))


def _block(size: int, low: int, high: int) -> int:
    """A power-of-two tile side for ``size`` elements: at least ``low`` (``tl.dot``'s minimum), at most ``high``."""
    return max(low, min(high, triton.next_power_of_2(size)))


def _pixel_block(size: int) -> int:
    """The tile side along pixels: ``size`` on a GPU; 128 in the interpreter, which pays per program and step."""
    return 128 if _interpreting() else size


def _launch_config(x: Tensor) -> dict:
    """Compile-time options shared by the kernels: accumulator type, how the dot multiplies, warps on a GPU."""
    interpret = _interpreting()
    # float32 follows torch's matmul setting, like the cuBLAS-based paths: exact unless TF32 is allowed. The
    # setting means nothing for half-precision tiles; they keep Triton's default.
    exact = x.dtype == torch.float64 or (x.dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32)
    precision = "ieee" if exact else "tf32"
    accumulate = tl.float64 if x.dtype == torch.float64 else tl.float32
    config = {"ACC": accumulate, "UPCAST": interpret, "PRECISION": precision}
    if not interpret:
        config["num_warps"] = 4
    return config


def _taps_major(weight: Tensor) -> Tensor:
    """The kernel as ``(kh·kw, C_in/groups, C_out)``: a tap's tile of it is contiguous along the output channels."""
    return weight.permute(2, 3, 1, 0).contiguous()


def _geometry(x: Tensor, weight: Tensor, stride: list[int], pads: list[int], dilation: list[int],
              groups: int) -> tuple:
    """The integer arguments every kernel takes, in its order."""
    batch, in_ch, in_h, in_w = x.shape
    out_ch, in_per_group, kh, kw = weight.shape
    left, right, top, bottom = pads
    out_h = output_size(in_h, top + bottom, kh, stride[0], dilation[0])
    out_w = output_size(in_w, left + right, kw, stride[1], dilation[1])
    return (batch, in_ch, in_h, in_w, out_ch, out_h, out_w, in_per_group, out_ch // groups,
            stride[0], stride[1], top, left, dilation[0], dilation[1])


def _depth_weights_source(weights_h: Tensor | None, depth: Tensor | None) -> tuple[Tensor, Tensor, bool]:
    """``(h_ptr, d_ptr, FROM_DEPTH)`` for the kernels: exactly one of the two is given, the other slot a dummy.

    Depth is passed with its holes (≤ 0 or not finite) set to 0, which the kernels read as missing.
    """
    if depth is None:
        weights_h = weights_h.contiguous()
        return weights_h, weights_h, False
    depth = torch.where(valid_depth(depth), depth, 0.0).contiguous()
    return depth, depth, True


def _forward(
    x: Tensor, weights_h: Tensor | None, depth: Tensor | None, alpha: float, weight: Tensor, bias: Tensor | None,
    stride: list[int], pads: list[int], dilation: list[int], groups: int,
) -> Tensor:
    """The forward kernel on contiguous operands; bias added in the kernel."""
    x = x.contiguous()
    geometry = _geometry(x, weight, stride, pads, dilation, groups)
    h_source, d_source, from_depth = _depth_weights_source(weights_h, depth)
    batch, out_ch, out_h, out_w, in_per_group, out_per_group = (geometry[0], *geometry[4:9])
    out = x.new_empty(batch, out_ch, out_h, out_w)
    block_m, block_n, block_k = _pixel_block(64), _block(out_per_group, 16, 128), _block(in_per_group, 16, 32)
    grid = (triton.cdiv(batch * out_h * out_w, block_m), triton.cdiv(out_per_group, block_n), groups)
    forward, _, _ = _kernels(_interpreting())
    forward[grid](x, h_source, d_source, float(alpha), _taps_major(weight), bias if bias is not None else weight,
                  out, *geometry, KH=weight.shape[2], KW=weight.shape[3], HAS_BIAS=bias is not None,
                  FROM_DEPTH=from_depth, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, **_launch_config(x))
    return out


def _backward(
    grad_out: Tensor, x: Tensor, weights_h: Tensor | None, depth: Tensor | None, alpha: float, weight: Tensor,
    stride: list[int], pads: list[int], dilation: list[int], groups: int, need_x: bool, need_w: bool,
) -> tuple[Tensor, Tensor]:
    """``dx`` (transposed implicit GEMM) and ``dW`` (split reduction over output pixels), empty where not needed."""
    grad_out, x = grad_out.contiguous(), x.contiguous()
    geometry = _geometry(x, weight, stride, pads, dilation, groups)
    h_source, d_source, from_depth = _depth_weights_source(weights_h, depth)
    batch, (kh, kw) = x.shape[0], weight.shape[2:]
    out_h, out_w, in_per_group, out_per_group = geometry[5:9]
    _, backward_x, backward_w = _kernels(_interpreting())
    config = {"KH": kh, "KW": kw, "FROM_DEPTH": from_depth, **_launch_config(x)}
    grad_x, grad_w = x.new_empty(0), weight.new_empty(0)
    if need_x:
        grad_x = torch.empty_like(x)
        block_m, block_n, block_k = _pixel_block(64), _block(in_per_group, 16, 128), _block(out_per_group, 16, 32)
        grid = (triton.cdiv(x.numel() // x.shape[1], block_m), triton.cdiv(in_per_group, block_n), groups)
        backward_x[grid](grad_out, h_source, d_source, float(alpha), _taps_major(weight), grad_x, *geometry,
                         BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, **config)
    if need_w:
        block_m, block_n, block_k = _block(out_per_group, 16, 64), _block(in_per_group, 16, 64), _pixel_block(32)
        pixels = batch * out_h * out_w
        tiles = kh * kw * triton.cdiv(out_per_group, block_m) * triton.cdiv(in_per_group, block_n)
        # Split the pixel reduction until the GPU has a few programs per streaming multiprocessor (or a split is
        # down to _SPLIT_PIXELS); each split writes its own partial sum, added up below.
        splits = max(1, min(triton.cdiv(pixels, _SPLIT_PIXELS), triton.cdiv(_DW_PROGRAMS, tiles * groups)))
        per_split = triton.cdiv(triton.cdiv(pixels, splits), block_k) * block_k
        splits = triton.cdiv(pixels, per_split)
        partial = x.new_empty(splits, *weight.shape, dtype=torch.float64 if x.dtype == torch.float64 else
                              torch.float32)
        backward_w[(tiles, splits, groups)](x, grad_out, h_source, d_source, float(alpha), partial, *geometry,
                                            per_split, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, **config)
        grad_w = partial.sum(0).to(weight.dtype)
    return grad_x, grad_w


def _triton_forward(
    x: Tensor, weights_h: Tensor, weight: Tensor, bias: Tensor | None, stride: list[int], pads: list[int],
    dilation: list[int], groups: int,
) -> Tensor:
    return _forward(x, weights_h, None, 0.0, weight, bias, stride, pads, dilation, groups)


def _triton_backward(
    grad_out: Tensor, x: Tensor, weights_h: Tensor, weight: Tensor, stride: list[int], pads: list[int],
    dilation: list[int], groups: int, need_x: bool, need_w: bool,
) -> tuple[Tensor, Tensor]:
    return _backward(grad_out, x, weights_h, None, 0.0, weight, stride, pads, dilation, groups, need_x, need_w)


def _triton_depth_forward(
    x: Tensor, depth: Tensor, weight: Tensor, bias: Tensor | None, stride: list[int], pads: list[int],
    dilation: list[int], groups: int, alpha: float,
) -> Tensor:
    return _forward(x, None, depth, alpha, weight, bias, stride, pads, dilation, groups)


def _triton_depth_backward(
    grad_out: Tensor, x: Tensor, depth: Tensor, weight: Tensor, stride: list[int], pads: list[int],
    dilation: list[int], groups: int, alpha: float, need_x: bool, need_w: bool,
) -> tuple[Tensor, Tensor]:
    return _backward(grad_out, x, None, depth, alpha, weight, stride, pads, dilation, groups, need_x, need_w)


#: ``impl="triton"`` on precomputed depth weights: ``dconv_triton(x, weights_h, weight, bias, stride, pads,
#: dilation, groups)``.
dconv_triton = register_fast_path("dconv_triton", _triton_forward, _triton_backward)
#: ``impl="triton"`` with :data:`DEPTH_WEIGHTS_IN_KERNEL`: the same, taking the depth map and ``alpha``.
dconv_triton_depth = register_fast_path("dconv_triton_depth", _triton_depth_forward, _triton_depth_backward,
                                          from_depth=True)
