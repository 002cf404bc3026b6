"""impl='triton' run through Triton's interpreter on CPU tensors, against Eq. 5–6 written out, the unfold
reference and nn.Conv2d; and compiled ahead of time for a GPU that is not there.

Every test here sets ``TRITON_INTERPRET=1`` (an autouse fixture, undone after each test) unless it says
otherwise. The kernels are decorated on first use and cached per mode (``triton_conv._kernels``), so the variable
only has to be set before the call, not before triton is imported; ``test_kernels_run_in_the_interpreter``
checks that the interpreter is what ran. Shapes are tiny: the interpreter executes every program instance in
Python. The interpreter runs the kernels as Python, not through Triton's compiler:
``test_kernels_compile_for_a_gpu_without_one`` covers that.

Why these tests catch a wrong tap offset, a wrong centre tap or a missing hole rule:

* The kernel's own indexing (which input pixel a tap reads, which entry of ``H`` scales it, for forward, dx and dW)
  is checked with *random* depth weights ``H`` (``test_any_depth_weights_match_reference``): every (tap, pixel)
  weight is independent, so reading a neighbouring tap's or pixel's weight, or the wrong input pixel, changes the
  result. Under constant depth (``H ≡ 1``) against ``nn.Conv2d``, the input offsets alone are checked, at
  dilations 2 and 12 and stride 2.
* The centre tap and the hole rule are properties of ``H``, which this path takes from ``depth_similarity`` like
  the others. ``test_matches_definition`` compares the whole of ``impl='triton'`` with Eq. 5–6 written out as
  loops (``definition``, which takes ``D(p0)`` under the centre tap and ``H = 1`` at holes and in the padding on
  its own), on depth with zero, negative, NaN and inf holes, an even kernel (whose centre tap is off-centre) and
  taps in the padding; ``test_perturbed_depth_weights_are_caught`` feeds the kernel H with another centre tap,
  without the hole rule, or shifted by one tap, and shows each moves the output away from the definition.
* With ``DEPTH_WEIGHTS_IN_KERNEL`` the three kernels apply the centre tap and the hole rule themselves: the
  definition and gradient tests run that way too (``weights_source``), the gradient cases including an even
  kernel, so each kernel's centre and hole rule meet an independent truth.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tests.nn.test_functional import CASES, definition, depth_with_holes  # the brute-force Eq. 5–6 and its cases

from depthdistill.errors import ConfigError, DepthDistillError
from depthdistill.nn import functional
from depthdistill.nn._kernels import reference_conv
from depthdistill.nn.functional import _choose_impl, depth_aware_conv2d, depth_similarity

pytest.importorskip("triton")
from depthdistill.nn import triton_conv  # noqa: E402 (needs triton)


@pytest.fixture(autouse=True)
def _interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


@pytest.fixture(params=["H precomputed", "H in kernel"])
def weights_source(request, monkeypatch):
    """Both ways the kernels get H: read from depth_similarity's tensor, or computed from depth themselves."""
    monkeypatch.setattr(triton_conv, "DEPTH_WEIGHTS_IN_KERNEL", request.param == "H in kernel")


def _grads(out, inputs, seed=1):
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.autograd.grad(out, inputs, grad.to(out.dtype))


def _leaves(*tensors, dtype=None):
    return [None if t is None else t.detach().to(dtype or t.dtype).requires_grad_() for t in tensors]


def test_kernels_run_in_the_interpreter():
    x, w, depth = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3), torch.rand(1, 1, 5, 5) + 1
    depth_aware_conv2d(x, depth, w, padding=1, impl="triton")
    assert os.environ["TRITON_INTERPRET"] == "1"
    assert all(type(k).__name__ == "InterpretedFunction" for k in triton_conv._kernels(True))


@pytest.mark.parametrize("kernel,stride,padding,pads,dilation,groups,bias,in_ch,out_ch", CASES)
def test_matches_definition(weights_source, kernel, stride, padding, pads, dilation, groups, bias, in_ch, out_ch):
    x = torch.randn(2, in_ch, 7, 8, dtype=torch.float64)
    depth = depth_with_holes(2, 7, 8, torch.float64)
    w = torch.randn(out_ch, in_ch // groups, *kernel, dtype=torch.float64)
    b = torch.randn(out_ch, dtype=torch.float64) if bias else None
    # α = 1.75 is exact in float32, the type the kernels take it in when they compute H themselves.
    got = depth_aware_conv2d(x, depth, w, b, stride, padding, dilation, groups, alpha=1.75, impl="triton")
    want = definition(x, depth, w, b, stride, pads, dilation, groups, alpha=1.75)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


GRAD_CASES = [
    # in_ch, out_ch, kernel, stride, padding, dilation, groups, bias, (H, W)
    (3, 4, 3, 1, 1, 1, 1, True, (7, 9)),            # odd sizes
    (4, 5, 3, 2, 1, 1, 1, False, (9, 7)),           # stride 2
    (3, 4, 3, (2, 1), (2, 1), (2, 1), 1, True, (8, 7)),  # dilation 2, rectangular stride
    (2, 3, 3, 1, 12, 12, 1, True, (6, 7)),          # fc6's dilation 12: most taps in the padding
    (4, 4, 3, 2, 1, 1, 4, True, (9, 8)),            # depthwise, strided
    (4, 6, 3, 1, 2, 2, 2, False, (6, 6)),           # general groups
    (3, 4, 7, 2, 3, 1, 1, True, (5, 6)),            # a 7×7 stem kernel larger than the input
    (36, 34, 3, 1, 1, 1, 1, True, (4, 5)),          # more channels than one tile: several K and N blocks
    (3, 2, 2, 1, "same", 1, 1, True, (5, 6)),       # even kernel: the centre tap off-centre, padding uneven
]


@pytest.mark.parametrize("in_ch,out_ch,kernel,stride,padding,dilation,groups,bias,hw", GRAD_CASES)
def test_forward_and_gradients_match_reference(weights_source, in_ch, out_ch, kernel, stride, padding, dilation,
                                               groups, bias, hw):
    x = torch.randn(2, in_ch, *hw, dtype=torch.float64)
    w = torch.randn(out_ch, in_ch // groups, kernel, kernel, dtype=torch.float64)
    b = torch.randn(out_ch, dtype=torch.float64) if bias else None
    depth = depth_with_holes(2, *hw, torch.float64)
    results = []
    for impl in ("triton", "reference"):
        leaves = [t for t in _leaves(x, w, b) if t is not None]
        out = depth_aware_conv2d(leaves[0], depth, *leaves[1:2], leaves[2] if bias else None, stride, padding,
                                 dilation, groups, alpha=2.0, impl=impl)
        results.append((out, *_grads(out, leaves)))
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("stride,padding,dilation,groups", [(1, 1, 1, 1), (2, 2, 2, 1), (1, 12, 12, 3)])
def test_constant_depth_is_nn_conv2d(stride, padding, dilation, groups):
    conv = torch.nn.Conv2d(3, 6, 3, stride, padding, dilation, groups).double()
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64, requires_grad=True)
    got = depth_aware_conv2d(x, torch.full((2, 1, 9, 8), 3.0), conv.weight, conv.bias, stride, padding, dilation,
                             groups, impl="triton")
    grads = _grads(got, (x, conv.weight, conv.bias))
    want = conv(x)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    for g, r in zip(grads, _grads(want, (x, conv.weight, conv.bias)), strict=True):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("stride,pads,dilation,groups", [((1, 1), (1, 1, 1, 1), (1, 1), 1),
                                                         ((2, 1), (0, 2, 1, 0), (1, 2), 2)])
def test_any_depth_weights_match_reference(stride, pads, dilation, groups):
    """H drawn at random, independently per (tap, pixel): any mix-up of taps or pixels shows in every output."""
    x = torch.randn(2, 4, 7, 6, dtype=torch.float64)
    w = torch.randn(4, 4 // groups, 3, 3, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64)
    out_hw = [(size + pads[2 * (1 - k)] + pads[2 * (1 - k) + 1] - dilation[k] * 2 - 1) // stride[k] + 1
              for k, size in enumerate((7, 6))]
    weights_h = torch.rand(2, 9, *out_hw, dtype=torch.float64)
    results = []
    for impl in ("triton", "reference"):
        xl, wl, bl = _leaves(x, w, b)
        if impl == "triton":
            out = triton_conv.dconv_triton(xl, weights_h, wl, bl, list(stride), list(pads), list(dilation), groups)
        else:
            out = reference_conv(F.pad(xl, pads), weights_h, wl, bl, stride, dilation, groups)
        results.append((out, *_grads(out, (xl, wl, bl))))
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def _similarity(depth, centre, hole_rule=True, alpha=1.7):
    """H of a 3×3 kernel, padding 1, with the centre tap and the hole rule as parameters (unfold, as written)."""
    valid = torch.isfinite(depth) & (depth > 0)
    taps = F.unfold(F.pad(torch.where(valid, depth, 0.0), (1, 1, 1, 1)), 3)
    taps_valid = F.unfold(F.pad(valid.double(), (1, 1, 1, 1)), 3) > 0
    weights = torch.exp(-alpha * (taps - taps[:, centre : centre + 1]).abs())
    if hole_rule:
        weights = torch.where(taps_valid & taps_valid[:, centre : centre + 1], weights, 1.0)
    return weights.view(depth.shape[0], 9, *depth.shape[-2:])


def test_perturbed_depth_weights_are_caught():
    """A wrong centre tap, no hole rule or H read one tap off all move the output away from Eq. 5–6."""
    x, w = torch.randn(2, 3, 7, 8, dtype=torch.float64), torch.randn(4, 3, 3, 3, dtype=torch.float64)
    depth = depth_with_holes(2, 7, 8, torch.float64)
    want = definition(x, depth, w, None, (1, 1), (1, 1, 1, 1), (1, 1), 1, alpha=1.7)
    right = _similarity(depth, centre=4)
    torch.testing.assert_close(right, depth_similarity(depth, 3, 1, 1, 1, 1.7))  # the helper is the rule
    wrong = {"centre tap": _similarity(depth, centre=0), "hole rule": _similarity(depth, 4, hole_rule=False),
             "tap offset": right.roll(1, dims=1)}
    for name, weights_h in {"right": right, **wrong}.items():
        got = triton_conv.dconv_triton(x, weights_h, w, None, [1, 1], [1, 1, 1, 1], [1, 1], 1)
        assert torch.isfinite(got).all(), name
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-10) == (name == "right"), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_lower_precision_close_to_float64(dtype):
    x, w, b = torch.randn(2, 5, 7, 6), torch.randn(6, 5, 3, 3), torch.randn(6)
    depth = depth_with_holes(2, 7, 6)
    results = []
    for impl, as_type in (("triton", dtype), ("reference", torch.float64)):
        leaves = _leaves(x, w, b, dtype=as_type)
        out = depth_aware_conv2d(leaves[0], depth, leaves[1], leaves[2], 2, 1, 1, impl=impl)
        results.append((out, *_grads(out, leaves)))
    tol = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 4e-2}[dtype]
    for got, want in zip(*results, strict=True):
        assert got.dtype == dtype
        torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol * want.abs().max().item())


def test_channels_last_and_strided_views():
    """The kernels index NCHW memory: other layouts are made contiguous first, not misread."""
    x = torch.randn(2, 6, 7, 5, dtype=torch.float64).to(memory_format=torch.channels_last)
    w = torch.randn(4, 6, 3, 3, dtype=torch.float64)[:, ::2]  # every other input channel: a strided view
    depth = depth_with_holes(2, 7, 5, torch.float64)
    got = depth_aware_conv2d(x[:, :3], depth, w, None, 1, 1, impl="triton")
    want = depth_aware_conv2d(x[:, :3], depth, w, None, 1, 1, impl="reference")
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_weight_gradient_split_over_pixels(monkeypatch):
    """On a GPU dW's pixel reduction is split into chunks summed afterwards; force several chunks here."""
    monkeypatch.setattr(triton_conv, "_SPLIT_PIXELS", 16)
    x = torch.randn(2, 3, 9, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    depth = depth_with_holes(2, 9, 7, torch.float64)
    grads = [_grads(depth_aware_conv2d(x, depth, w, None, 1, 1, impl=impl), (w,))[0]
             for impl in ("triton", "reference")]
    torch.testing.assert_close(*grads, rtol=1e-10, atol=1e-10)


def test_is_a_well_formed_custom_op():
    """Schema, fake kernel, autograd registration: what torch.compile relies on to call it as an opaque kernel."""
    x = torch.randn(2, 4, 5, 6, requires_grad=True)
    w = torch.randn(6, 2, 3, 3, requires_grad=True)
    b = torch.randn(6, requires_grad=True)
    weights_h = depth_similarity(torch.rand(2, 1, 5, 6) + 1, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 2.0)
    args = (x, weights_h, w, b, [2, 2], [1, 1, 1, 1], [1, 1], 2)
    torch.library.opcheck(torch.ops.depthdistill.dconv_triton.default, args)
    backward_args = (torch.randn(2, 6, *weights_h.shape[-2:]), x.detach(), weights_h, w.detach(), *args[4:], True,
                     True)
    torch.library.opcheck(torch.ops.depthdistill.dconv_triton_backward.default, backward_args)
    depth = depth_with_holes(2, 5, 6)
    torch.library.opcheck(torch.ops.depthdistill.dconv_triton_depth.default, (x, depth, *args[2:], 2.0))


def test_compiles_as_one_graph(weights_source):
    """torch.compile traces through the dispatch (the lazy import included) and calls the op as one opaque node."""
    x = torch.randn(1, 3, 6, 6, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    depth = depth_with_holes(1, 6, 6)
    torch._dynamo.reset()
    compiled = torch.compile(lambda x, w: depth_aware_conv2d(x, depth, w, padding=1, impl="triton"),
                             backend="aot_eager", fullgraph=True)
    got = compiled(x, w)
    want = depth_aware_conv2d(x, depth, w, padding=1, impl="reference")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for g, r in zip(_grads(got, (x, w)), _grads(want, (x, w)), strict=True):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)


def test_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    x, w, depth = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3), torch.rand(1, 1, 5, 5) + 1
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(ConfigError, match="CUDA tensors.*TRITON_INTERPRET=1") as err:
        depth_aware_conv2d(x, depth, w, padding=1, impl="triton")
    assert isinstance(err.value, DepthDistillError)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(ConfigError, match="one dtype"):
        depth_aware_conv2d(x, depth, w.double(), padding=1, impl="triton")
    monkeypatch.setattr(triton_conv, "triton", None)
    with pytest.raises(ConfigError, match="pip install triton"):
        depth_aware_conv2d(x, depth, w, padding=1, impl="triton")


def test_auto_does_not_choose_triton():
    """Until a GPU benchmark shows it faster (docs/performance.md), 'auto' keeps the cuBLAS-based paths."""
    for x in (torch.zeros(1, 3, 8, 8), torch.zeros(1, 64, 8, 8)):
        for stride in ((1, 1), (2, 2)):
            assert _choose_impl(x, stride, groups=1) in ("cols", "stacked")
    assert "triton" in functional.IMPLEMENTATIONS


@pytest.mark.parametrize("dtype,from_depth", [(torch.float32, False), (torch.bfloat16, True)])
def test_kernels_compile_for_a_gpu_without_one(monkeypatch, tmp_path, dtype, from_depth):
    """What the interpreter cannot check: Triton's typed compilation, down to a cubin for sm_90 (H100/H200),
    with the options the host code launches them with, and shared memory that fits an sm_86 GPU (99 KiB)."""
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if "nvidia" not in triton.backends.backends:
        pytest.skip("this triton has no NVIDIA backend")
    monkeypatch.delenv("TRITON_INTERPRET")
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))  # compile for real, not from a cache
    config = triton_conv._launch_config(torch.empty(0, dtype=dtype))
    options = {"num_warps": config.pop("num_warps")}
    element = {torch.float32: "fp32", torch.bfloat16: "bf16"}[dtype]
    blocks = ({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 32, "HAS_BIAS": True},
              {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 32}, {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32})
    for kernel, constexprs in zip(triton_conv._kernels(False), blocks, strict=True):
        constexprs = {**constexprs, **config, "KH": 3, "KW": 3, "FROM_DEPTH": from_depth}
        signature = {name: "constexpr" if name.isupper() else "fp32" if name == "alpha"
                     else "*fp32" if name in ("d_ptr", "dw_ptr") else f"*{element}" if name.endswith("_ptr")
                     else "i32" for name in kernel.arg_names}
        compiled = triton.compile(ASTSource(kernel, signature, constexprs), target=GPUTarget("cuda", 90, 32),
                                  options=options)
        assert compiled.asm["cubin"] and compiled.metadata.shared <= 99 * 1024, kernel.__name__


def test_benchmark_runs_the_kernel():
    """bench_dconv.py's triton row, end to end at a toy size through the interpreter (on a GPU it runs as is)."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, str(root / "benchmarks" / "bench_dconv.py"), "--layers", "conv4_3",
                           "--input", "32", "48", "--width", "0.03", "--repeats", "1", "--device", "cpu",
                           "--impls", "triton"], cwd=root, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split("|")[5].strip() for line in done.stdout.splitlines() if line.startswith("| conv4_3")]
    assert rows == ["nn.Conv2d", "triton", "triton (H in kernel)", "unfold (reference)"]
