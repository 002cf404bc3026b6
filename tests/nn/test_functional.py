"""depth_aware_conv2d against Eq. 5–6 written out position by position, gradcheck, and F.conv2d itself."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from depthdistill import DepthError, depth_aware_conv2d, depth_similarity
from depthdistill.nn import _kernels
from depthdistill.nn.functional import IMPLEMENTATIONS

# impl='triton' needs a GPU, or Triton's interpreter on CPU: tests/nn/test_triton.py runs it that way.
CPU_IMPLEMENTATIONS = tuple(impl for impl in IMPLEMENTATIONS if impl != "triton")


def definition(x, depth, w, b, stride, pads, dilation, groups, alpha):
    """Eq. 5–6 by loops over output positions; pads = (top, bottom, left, right), depth padded as missing."""
    x, depth, w = x.double().numpy(), depth.double().numpy()[:, 0], w.double().numpy()
    batch, _, height, width = x.shape
    out_ch, in_per_group, kh, kw = w.shape
    (sh, sw), (dh, dw), (pt, pb, pl, pr) = stride, dilation, pads
    out_h = (height + pt + pb - dh * (kh - 1) - 1) // sh + 1
    out_w = (width + pl + pr - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((batch, out_ch, out_h, out_w))

    def depth_at(n, r, c):
        if 0 <= r < height and 0 <= c < width and math.isfinite(depth[n, r, c]) and depth[n, r, c] > 0:
            return depth[n, r, c]
        return None

    for n, oy, ox in itertools.product(range(batch), range(out_h), range(out_w)):
        d_centre = depth_at(n, oy * sh - pt + (kh - 1) // 2 * dh, ox * sw - pl + (kw - 1) // 2 * dw)
        for oc in range(out_ch):
            g = oc // (out_ch // groups)
            total = 0.0
            for i, j in itertools.product(range(kh), range(kw)):
                r, c = oy * sh - pt + i * dh, ox * sw - pl + j * dw
                if not (0 <= r < height and 0 <= c < width):
                    continue
                d_tap = depth_at(n, r, c)
                h = 1.0 if d_centre is None or d_tap is None else math.exp(-alpha * abs(d_tap - d_centre))
                total += h * float(w[oc, :, i, j] @ x[n, g * in_per_group:(g + 1) * in_per_group, r, c])
            out[n, oc, oy, ox] = total + (0.0 if b is None else float(b[oc]))
    return torch.from_numpy(out)


def depth_with_holes(batch, height, width, dtype=torch.float32):
    depth = torch.rand(batch, 1, height, width, dtype=dtype) * 4 + 0.5
    depth[0, 0, 1, 2] = 0.0
    depth[-1, 0, height // 2, :2] = float("nan")
    depth[-1, 0, 0, -1] = -1.0
    depth[0, 0, -1, -1] = float("inf")
    return depth


CASES = [
    # kernel, stride, padding (as passed), explicit pads (t, b, l, r), dilation, groups, bias, in_ch, out_ch
    ((3, 3), (1, 1), 1, (1, 1, 1, 1), (1, 1), 1, True, 3, 4),
    ((3, 3), (2, 2), 1, (1, 1, 1, 1), (1, 1), 1, False, 4, 2),
    ((3, 3), (1, 1), 2, (2, 2, 2, 2), (2, 2), 2, True, 4, 6),
    ((5, 5), (1, 1), (2, 1), (2, 2, 1, 1), (1, 1), 1, True, 2, 3),
    ((3, 3), (1, 1), "same", (3, 3, 3, 3), (3, 3), 4, True, 4, 4),  # depthwise, dilated
    ((2, 2), (1, 1), "same", (0, 1, 0, 1), (1, 1), 1, True, 3, 2),  # even kernel
    ((4, 3), (1, 2), "valid", (0, 0, 0, 0), (1, 2), 1, False, 3, 2),
    ((3, 1), (2, 1), (1, 0), (1, 1, 0, 0), (1, 1), 1, True, 2, 2),
    ((3, 3), (3, 2), (0, 0, 1, 2), (1, 2, 0, 0), (1, 1), 1, True, 2, 2),  # explicit (l, r, t, b)
]


def skip_unsupported(impl, stride):
    if impl == "stacked" and stride not in (1, (1, 1)):
        pytest.skip("impl='stacked' is for stride 1 (test_stacked_rejects_stride covers the error)")


@pytest.mark.parametrize("impl", CPU_IMPLEMENTATIONS)
@pytest.mark.parametrize("kernel,stride,padding,pads,dilation,groups,bias,in_ch,out_ch", CASES)
def test_matches_definition(impl, kernel, stride, padding, pads, dilation, groups, bias, in_ch, out_ch):
    skip_unsupported(impl, stride)
    x = torch.randn(2, in_ch, 7, 8, dtype=torch.float64)
    depth = depth_with_holes(2, 7, 8, torch.float64)
    w = torch.randn(out_ch, in_ch // groups, *kernel, dtype=torch.float64)
    b = torch.randn(out_ch, dtype=torch.float64) if bias else None
    got = depth_aware_conv2d(x, depth, w, b, stride, padding, dilation, groups, alpha=1.7, impl=impl)
    want = definition(x, depth, w, b, stride, pads, dilation, groups, alpha=1.7)
    assert got.shape == want.shape
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kernel,stride,padding,pads,dilation,groups,bias,in_ch,out_ch", CASES)
def test_constant_depth_is_plain_conv(kernel, stride, padding, pads, dilation, groups, bias, in_ch, out_ch):
    x = torch.randn(2, in_ch, 9, 10)
    w = torch.randn(out_ch, in_ch // groups, *kernel)
    b = torch.randn(out_ch) if bias else None
    got = depth_aware_conv2d(x, torch.full((2, 1, 9, 10), 2.5), w, b, stride, padding, dilation, groups)
    torch.testing.assert_close(got, F.conv2d(F.pad(x, (pads[2], pads[3], pads[0], pads[1])), w, b, stride, 0,
                                             dilation, groups), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", CPU_IMPLEMENTATIONS)
@pytest.mark.parametrize("stride,padding,dilation,groups,bias", [
    (1, 1, 1, 1, True), (2, 2, 2, 2, False), ((1, 2), "valid", 1, 1, True), (1, "same", (2, 1), 4, True),
    (1, (2, 0), (2, 3), 2, False),
])
def test_gradcheck(impl, stride, padding, dilation, groups, bias):
    skip_unsupported(impl, stride)
    x = torch.randn(2, 4, 6, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 4 // groups, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True) if bias else None
    depth = depth_with_holes(2, 6, 7, torch.float64)
    inputs = (x, w, b) if bias else (x, w)

    def fn(*args):
        return depth_aware_conv2d(args[0], depth, args[1], args[2] if bias else None, stride, padding, dilation,
                                  groups, alpha=2.0, impl=impl)

    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("impl", [impl for impl in CPU_IMPLEMENTATIONS if impl != "reference"])
@pytest.mark.parametrize("stride", [1, 2])
def test_gradients_match_reference_and_skip_depth(impl, stride):
    skip_unsupported(impl, stride)
    x = torch.randn(2, 3, 10, 9, requires_grad=True)
    w = torch.randn(5, 3, 3, 3, requires_grad=True)
    b = torch.randn(5, requires_grad=True)
    depth = depth_with_holes(2, 10, 9).requires_grad_()
    grads = []
    for each in (impl, "reference"):
        out = depth_aware_conv2d(x, depth, w, b, stride, 1, 2, impl=each)
        grads.append(torch.autograd.grad(out.square().sum(), (x, w, b)))
    for fast, ref in zip(*grads, strict=True):
        torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-4)
    out = depth_aware_conv2d(x, depth, w, b, padding=1)
    out.sum().backward()
    assert depth.grad is None


def test_padding_modes_match_conv_under_constant_depth():
    x = torch.randn(1, 2, 6, 6)
    w = torch.randn(3, 2, 3, 3)
    for mode in ("reflect", "replicate", "circular"):
        conv = torch.nn.Conv2d(2, 3, 3, padding=1, padding_mode=mode, bias=False)
        conv.weight.data.copy_(w)
        got = depth_aware_conv2d(x, torch.ones(1, 1, 6, 6), w, padding=1, padding_mode=mode)
        torch.testing.assert_close(got, conv(x))


def test_one_by_one_kernel_is_plain_conv():
    x, w = torch.randn(2, 3, 5, 5), torch.randn(4, 3, 1, 1)
    depth = torch.rand(2, 1, 5, 5) * 5
    torch.testing.assert_close(depth_aware_conv2d(x, depth, w, stride=2), F.conv2d(x, w, stride=2))


def test_similarity_of_step_edge():
    depth = torch.ones(1, 1, 1, 3)
    depth[..., 2] = 2.0
    h = depth_similarity(depth, (1, 3), padding=(0, 1), alpha=8.3)
    # output pixel 1 (centre depth 1 m) sees taps 1 m, 1 m, 2 m
    torch.testing.assert_close(h[0, :, 0, 1], torch.tensor([1.0, 1.0, math.exp(-8.3)]))
    # output pixel 0: its left tap lies in the padding (H = 1)
    torch.testing.assert_close(h[0, :, 0, 0], torch.tensor([1.0, 1.0, 1.0]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_close_to_float(dtype):
    x, w = torch.randn(1, 4, 8, 8), torch.randn(4, 4, 3, 3)
    depth = torch.rand(1, 1, 8, 8) + 1
    want = depth_aware_conv2d(x, depth, w, padding=1)
    try:
        got = depth_aware_conv2d(x.to(dtype), depth, w.to(dtype), padding=1)
    except RuntimeError as err:
        if "not implemented for" not in str(err):
            raise
        pytest.skip(f"this build has no {dtype} kernel: {err}")  # e.g. "slow_conv2d_cpu" not implemented for 'Half'
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), want, rtol=0.05, atol=0.1)


def test_autocast_runs_in_lower_precision_close_to_float32():
    x, w, b = torch.randn(1, 3, 8, 8), torch.randn(4, 3, 3, 3), torch.randn(4)
    depth = depth_with_holes(1, 8, 8)
    want = depth_aware_conv2d(x, depth, w, b, padding=1, alpha=2.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = depth_aware_conv2d(x, depth, w, b, padding=1, alpha=2.0)
    assert got.dtype == torch.bfloat16
    # bfloat16 keeps 8 significant bits: relative error about 2**-8 per rounding, 27 products summed
    torch.testing.assert_close(got.float(), want, rtol=0.03, atol=0.05)


@pytest.mark.parametrize("depth,match", [
    (torch.rand(2, 2, 6, 6), "shape"),
    (torch.rand(6, 6), "shape"),
    (torch.randint(1, 5, (2, 1, 6, 6)), "floating-point"),
    (torch.rand(3, 1, 6, 6), "batch size"),
    (torch.rand(2, 1, 5, 6), "resolution"),
])
def test_bad_depth_raises(depth, match):
    with pytest.raises(DepthError, match=match):
        depth_aware_conv2d(torch.randn(2, 3, 6, 6), depth, torch.randn(4, 3, 3, 3))


def test_bad_arguments_raise():
    x, d, w = torch.randn(1, 3, 6, 6), torch.rand(1, 1, 6, 6), torch.randn(4, 3, 3, 3)
    with pytest.raises(ValueError, match="alpha"):
        depth_aware_conv2d(x, d, w, alpha=-1.0)
    with pytest.raises(ValueError, match="channels"):
        depth_aware_conv2d(x, d, torch.randn(4, 2, 3, 3))
    with pytest.raises(ValueError, match="same"):
        depth_aware_conv2d(x, d, w, stride=2, padding="same")
    with pytest.raises(ValueError, match="too small"):
        depth_aware_conv2d(x, d, w, dilation=4)


def test_stacked_rejects_stride():
    x, w, depth = torch.randn(1, 2, 6, 6), torch.randn(3, 2, 3, 3), torch.rand(1, 1, 6, 6) + 1
    with pytest.raises(ValueError, match="stride 1"):
        depth_aware_conv2d(x, depth, w, stride=2, padding=1, impl="stacked")
    with pytest.raises(ValueError, match="impl must be one of"):
        depth_aware_conv2d(x, depth, w, padding=1, impl="fast")


@pytest.mark.parametrize("impl,budget", [("stacked", "_BLOCK_BYTES"), ("cols", "_COLS_TILE_BYTES")])
@pytest.mark.parametrize("stride,dilation,groups", [(1, 1, 1), (1, 3, 2), (1, 6, 1), (2, 2, 1)])
def test_row_blocks_match_definition(monkeypatch, impl, budget, stride, dilation, groups):
    """A budget of one byte forces one output row per block (and dilation 6 on 9 rows puts taps in the padding)."""
    skip_unsupported(impl, stride)
    monkeypatch.setattr(_kernels, budget, 1)
    x = torch.randn(2, 4, 9, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 4 // groups, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    depth = depth_with_holes(2, 9, 8, torch.float64)
    got = depth_aware_conv2d(x, depth, w, b, stride, dilation, dilation, groups, alpha=1.3, impl=impl)
    pads = (dilation,) * 4
    want = definition(x.detach(), depth, w.detach(), b.detach(), (stride, stride), pads, (dilation, dilation),
                      groups, 1.3)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    assert torch.autograd.gradcheck(
        lambda *args: depth_aware_conv2d(*args[:1], depth, *args[1:], stride, dilation, dilation, groups,
                                         alpha=1.3, impl=impl), (x, w, b), fast_mode=True)


@pytest.mark.parametrize("op,stride,groups,bias", [("dconv_stacked", 1, 1, True), ("dconv_stacked", 1, 2, False),
                                                     ("dconv_cols", 2, 1, True), ("dconv_cols", 1, 2, False)])
def test_fast_paths_are_well_formed_custom_ops(op, stride, groups, bias):
    """Schema, fake kernel (shapes and strides), autograd registration: what torch.compile relies on."""
    x = torch.randn(2, 4, 7, 6, requires_grad=True)
    w = torch.randn(6, 4 // groups, 3, 3, requires_grad=True)
    b = torch.randn(6, requires_grad=True) if bias else None
    weights_h = depth_similarity(torch.rand(2, 1, 7, 6) + 1, (3, 3), (stride, stride), (1, 1, 1, 1), (1, 1), 2.0)
    args = (x, weights_h, w, b, [stride, stride], [1, 1, 1, 1], [1, 1], groups)
    torch.library.opcheck(getattr(torch.ops.depthdistill, op).default, args)
    backward_args = (torch.randn(2, 6, *weights_h.shape[-2:]), x.detach(), weights_h, w.detach(), *args[4:], True, True)
    torch.library.opcheck(getattr(torch.ops.depthdistill, f"{op}_backward").default, backward_args)


@pytest.mark.parametrize("impl", ["cols", "stacked"])
def test_backward_saves_only_input_depth_weights_and_kernel(impl):
    """The memory bound of the fast paths: what autograd keeps is x plus k² depth weights per pixel, not k²·x."""
    x = torch.randn(2, 16, 12, 10, requires_grad=True)
    w = torch.randn(8, 16, 3, 3, requires_grad=True)
    depth = torch.rand(2, 1, 12, 10) + 1
    saved = {}

    def pack(tensor):
        saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        depth_aware_conv2d(x, depth, w, padding=1, impl=impl)
    x_bytes, h_bytes = x.numel() * 4, 2 * 9 * 12 * 10 * 4
    assert sum(saved.values()) == x_bytes + h_bytes + w.numel() * 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_cuda_matches_cpu(impl):
    x = torch.randn(2, 8, 11, 9, requires_grad=True)
    w = torch.randn(4, 8, 3, 3, requires_grad=True)
    depth = depth_with_holes(2, 11, 9)
    cpu_impl = "reference" if impl == "triton" else impl  # the kernel runs on CPU only through the interpreter
    cpu = depth_aware_conv2d(x, depth, w, padding=2, dilation=2, impl=cpu_impl)
    grads_cpu = torch.autograd.grad(cpu.square().sum(), (x, w))
    xc, wc = x.detach().cuda().requires_grad_(), w.detach().cuda().requires_grad_()
    gpu = depth_aware_conv2d(xc, depth.cuda(), wc, padding=2, dilation=2, impl=impl)
    grads_gpu = torch.autograd.grad(gpu.square().sum(), (xc, wc))
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-3)
    for got, want in zip(grads_gpu, grads_cpu, strict=True):
        torch.testing.assert_close(got.cpu(), want, rtol=1e-3, atol=1e-3)


def test_auto_dispatch_rule():
    from depthdistill.nn.functional import _choose_impl
    rgb, feats = torch.zeros(1, 3, 8, 8), torch.zeros(1, 16, 8, 8)
    assert _choose_impl(rgb, (2, 2), groups=1) == "cols"       # an RGB stem: the im2col tile is small there
    assert _choose_impl(rgb, (1, 1), groups=1) == "cols"
    assert _choose_impl(feats, (1, 1), groups=1) == "stacked"
    assert _choose_impl(feats, (2, 2), groups=1) == "cols"
    assert _choose_impl(feats, (2, 2), groups=16) == "cols"
    assert _choose_impl(feats, (1, 1), groups=16) == "stacked"  # depthwise
