"""Depth-aware convolution against nn.Conv2d and the naive unfold implementation, per DeepLab-VGG16 layer shape.

Besides the VGG layers, ``--layers`` takes shapes from other encoders that decide ``impl="auto"``: a ResNet RGB
stem (``stem7x7s2``) and a strided depthwise convolution (``dw3x3s2``).

For every layer shape and every implementation this measures forward + backward wall time (median of interleaved
repeats) and the bytes autograd saves for backward, and prints both as ratios against ``nn.Conv2d`` (the floor)
and against ``impl="reference"`` (the naive im2col/unfold definition) measured in the same run. On CUDA it adds
the peak memory one forward + backward allocates (``torch.cuda.max_memory_allocated`` above what was allocated
before it) and runs ``impl="triton"``, the fused kernel, which is left out on CPU: once reading the precomputed
depth weights, and once computing them in the kernel (``triton_conv.DEPTH_WEIGHTS_IN_KERNEL``).

Saved memory is counted with :func:`torch.autograd.graph.saved_tensors_hooks`: every tensor autograd packs for
backward during one forward is recorded by the identity of its storage, and the bytes of the unique storages are
summed. Parameters (the kernel and bias, which live anyway) are left out, so the figure is the activation memory
a layer adds to a training step; the input ``x`` counts for every implementation (``nn.Conv2d`` saves it too).

Run it from the repository root::

    OMP_NUM_THREADS=2 python benchmarks/bench_dconv.py            # CPU, and CUDA too when there is one
    python benchmarks/bench_dconv.py --quick --repeats 3           # half the side length, for a smoke run
    python benchmarks/bench_dconv.py --layers conv4_3 fc6 --device cuda --dtype bfloat16
    python benchmarks/bench_dconv.py --device cuda --batch 8 --input 240 320 --layers conv1_1 conv1_2 conv2_2 \
        conv3_3 conv4_3 conv5_3 fc6 stem7x7s2 --dtype bfloat16          # the GPU table of docs/performance.md
    OMP_NUM_THREADS=2 python benchmarks/bench_dconv.py --width 0.25 --batch 2 --input 240 320   # a slim teacher
    OMP_NUM_THREADS=2 python benchmarks/bench_dconv.py --stride 2                 # every VGG shape at stride 2
    OMP_NUM_THREADS=2 python benchmarks/bench_dconv.py --batch 2 --layers conv1_1 stem7x7s2 dw3x3s2
    OMP_NUM_THREADS=2 python benchmarks/bench_dconv.py --layers conv1_2 --impls stacked --profile --block-mib 2
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from depthdistill.nn import _kernels
from depthdistill.nn.functional import IMPLEMENTATIONS, depth_aware_conv2d

NYU_HW = (480, 640)

#: The row of impl="triton" with the depth weights computed inside the kernels rather than read.
TRITON_DEPTH = "triton (H in kernel)"


@dataclass(frozen=True)
class Layer:
    """One convolution to measure; padding keeps the size at stride 1 (``dilation · (kernel − 1) / 2``)."""

    name: str
    in_ch: int
    out_ch: int
    dilation: int
    downsample: int  # the layer's input resolution is the network input's / downsample
    kernel: int = 3
    stride: int = 1
    depthwise: bool = False

    def scaled(self, width: float, stride: int | None) -> "Layer":
        """The layer with ``width`` times the channels (an RGB input keeps its 3) and, when given, another stride."""
        in_ch = self.in_ch if self.in_ch == 3 else max(1, round(self.in_ch * width))
        return replace(self, in_ch=in_ch, out_ch=max(1, round(self.out_ch * width)),
                       stride=self.stride if stride is None else stride)


# conv1_1 and conv1_2 really run at full resolution; at 480×640 conv1_2 alone takes ~1 min per repeat of the
# unfold baseline on 2 cores, so both are measured at 1/2 resolution (their shape for a 240×320 input).
LAYERS = (
    Layer("conv1_1", 3, 64, 1, 2),
    Layer("conv1_2", 64, 64, 1, 2),
    Layer("conv2_2", 128, 128, 1, 2),
    Layer("conv3_3", 256, 256, 1, 4),
    Layer("conv4_3", 512, 512, 1, 8),
    Layer("conv5_3", 512, 512, 2, 8),
    Layer("fc6", 512, 1024, 12, 8),
)

# Not in DeepLab-VGG16, but shapes that decide impl='auto' for other segmenters: a ResNet 7×7 stride-2 stem on
# RGB (3 input channels make the GEMM tiny) and a strided depthwise convolution (MobileNet-style encoders of
# smp / timm). Chosen with --layers.
OTHER_LAYERS = (
    Layer("stem7x7s2", 3, 64, 1, 1, kernel=7, stride=2),
    Layer("dw3x3s2", 96, 96, 1, 4, stride=2, depthwise=True),
)


def machine_description(device: torch.device) -> str:
    """One line naming the CPU (or GPU), the thread count and the torch version."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"CPU {cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    if device.type == "cuda":
        tf32 = "on" if torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32 else "off"
        text += f", GPU {torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}, TF32 {tf32}"
        try:
            import triton

            text += f", triton {triton.__version__}"
        except ImportError:
            pass
    return text


def saved_bytes(step: Callable[[], torch.Tensor], params: tuple[torch.Tensor, ...]) -> int:
    """Bytes of the unique storages autograd saves for backward in one forward, parameters excluded."""
    skip = {p.untyped_storage().data_ptr() for p in params}
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in skip:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = step()
    del out
    return sum(seen.values())


def peak_bytes(step: Callable[[], None], device: torch.device) -> int:
    """Peak CUDA memory ``step`` allocates above what was allocated before it."""
    _sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step()
    _sync(device)
    return torch.cuda.max_memory_allocated(device) - before


def top_ops(step: Callable[[], None], count: int = 6) -> str:
    """The ``count`` operators with the most self time in one run of ``step`` (``torch.profiler``), in ms."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    ops = sorted(prof.key_averages(), key=lambda op: op.self_cpu_time_total, reverse=True)[:count]
    return ", ".join(f"{op.key} {op.self_cpu_time_total / 1e3:.1f}" for op in ops)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_layer(layer: Layer, hw: tuple[int, int], batch: int, impls: list[str], repeats: int,
                device: torch.device, dtype: torch.dtype,
                profile: bool = False) -> dict[str, tuple[float, int, int | None, str]]:
    """Per candidate: median fwd+bwd seconds, saved bytes, peak bytes (CUDA) and top operators (``profile``).

    Candidates are interleaved in every repeat.
    """
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, layer.in_ch, *hw, generator=gen).to(device, dtype).requires_grad_()
    # A room-like depth: a ramp plus noise in metres, with some holes, so the weights are not trivially 1.
    depth = (torch.linspace(1.0, 6.0, hw[1]).expand(batch, 1, *hw) + 0.3 * torch.rand(batch, 1, *hw, generator=gen))
    depth = torch.where(torch.rand(batch, 1, *hw, generator=gen) < 0.05, torch.zeros_like(depth), depth).to(device)
    padding = layer.dilation * (layer.kernel - 1) // 2
    groups = layer.in_ch if layer.depthwise else 1
    conv = torch.nn.Conv2d(layer.in_ch, layer.out_ch, layer.kernel, layer.stride, padding, layer.dilation, groups)
    conv = conv.to(device, dtype)
    with torch.no_grad():
        out_shape = conv(x).shape
    grad = torch.randn(out_shape, generator=gen).to(device, dtype)

    def forward(name: str) -> torch.Tensor:
        if name == "nn.Conv2d":
            return conv(x)
        if name == TRITON_DEPTH:
            from depthdistill.nn import triton_conv

            triton_conv.DEPTH_WEIGHTS_IN_KERNEL = True
            try:
                return depth_aware_conv2d(x, depth, conv.weight, conv.bias, layer.stride, padding, layer.dilation,
                                          groups, impl="triton")
            finally:
                triton_conv.DEPTH_WEIGHTS_IN_KERNEL = False
        return depth_aware_conv2d(x, depth, conv.weight, conv.bias, layer.stride, padding, layer.dilation, groups,
                                  impl=name)

    candidates = ["nn.Conv2d", *impls]
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for rep in range(repeats + 1):  # the first round warms up and is dropped
        # Rotate the order each round so no candidate always runs right after another's cache footprint.
        order = candidates[rep % len(candidates):] + candidates[:rep % len(candidates)]
        for name in order:
            x.grad = None
            conv.zero_grad(set_to_none=True)
            _sync(device)
            start = time.perf_counter()
            forward(name).backward(grad)
            _sync(device)
            if rep:
                times[name].append(time.perf_counter() - start)
    params = (conv.weight, conv.bias)

    def step(name: str) -> None:
        x.grad = None
        conv.zero_grad(set_to_none=True)
        forward(name).backward(grad)

    return {name: (statistics.median(times[name]), saved_bytes(lambda n=name: forward(n), params),
                   peak_bytes(lambda n=name: step(n), device) if device.type == "cuda" else None,
                   top_ops(lambda n=name: step(n)) if profile else "")
            for name in candidates}


def main() -> None:
    """Parses the options, runs every layer on every device, prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", nargs="*", default=[layer.name for layer in LAYERS],
                        choices=[layer.name for layer in LAYERS + OTHER_LAYERS])
    parser.add_argument("--impls", nargs="*", default=[impl for impl in IMPLEMENTATIONS if impl != "auto"],
                        choices=list(IMPLEMENTATIONS), help="'auto' is left out by default: it is one of the others")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per layer (plus one warm-up)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--input", type=int, nargs=2, default=NYU_HW, metavar=("H", "W"),
                        help="network input size; each layer runs at its own fraction of it")
    parser.add_argument("--quick", action="store_true", help="halve the input side (a smoke run)")
    parser.add_argument("--stride", type=int, default=None,
                        help="run every layer with this stride (VGG's have 1; ResNet-like stems and stages have 2)")
    parser.add_argument("--width", type=float, default=1.0,
                        help="channel multiplier, as deeplab_vgg16(width=...): the slim models of CPU runs")
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's, OMP_NUM_THREADS)")
    parser.add_argument("--tf32", action="store_true",
                        help="CUDA float32: let cuDNN and cuBLAS/Triton use TF32 (default: exact float32 for all)")
    parser.add_argument("--block-mib", type=float, default=None,
                        help="override impl='stacked''s block size (_kernels._BLOCK_BYTES), to sweep it")
    parser.add_argument("--profile", action="store_true",
                        help="after each layer, the operators with the most self time per candidate (ms, one run)")
    args = parser.parse_args()
    if args.block_mib:
        _kernels._BLOCK_BYTES = int(args.block_mib * 2**20)
    if args.threads:
        torch.set_num_threads(args.threads)
    # One setting for every candidate: cuDNN allows TF32 by default, cuBLAS (and so the Triton kernel) does not.
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32

    # Triton's CPU interpreter runs the kernel at toy sizes only (the tests' smoke run); otherwise it is CUDA only.
    triton_interpreter = os.environ.get("TRITON_INTERPRET") == "1"
    if "reference" not in args.impls:
        args.impls.append("reference")  # the unfold baseline every row is compared with
    devices = [torch.device("cpu")] if args.device in ("cpu", "all") else []
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    dtype = getattr(torch, args.dtype)
    scale = 2 if args.quick else 1
    layers = [layer.scaled(args.width, args.stride) for layer in LAYERS + OTHER_LAYERS if layer.name in args.layers]
    for device in devices:
        print(f"# {machine_description(device)}; device {device.type}, {args.dtype}, batch {args.batch}, "
              f"input {args.input[0] // scale}x{args.input[1] // scale}, width {args.width}, "
              f"stacked blocks {_kernels._BLOCK_BYTES / 2**20:.3g} MiB, median of {args.repeats} interleaved "
              "fwd+bwd rounds")
        cuda = device.type == "cuda"
        print("| layer | C_in→C_out | k/s/dil | H×W in | impl | fwd+bwd ms | × nn.Conv2d | unfold × | saved MiB "
              "| saved × nn.Conv2d |" + (" peak MiB | peak × nn.Conv2d |" if cuda else ""))
        print("|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if cuda else ""))
        profiles = []
        for layer in layers:
            hw = (args.input[0] // (layer.downsample * scale), args.input[1] // (layer.downsample * scale))
            impls = [impl for impl in args.impls
                     if (impl != "stacked" or layer.stride == 1)  # stacked: stride 1 only
                     and (impl != "triton" or cuda or triton_interpreter)]  # triton: a GPU kernel
            if "triton" in impls:
                impls.insert(impls.index("triton") + 1, TRITON_DEPTH)
            result = bench_layer(layer, hw, args.batch, impls, args.repeats, device, dtype, args.profile)
            base_t, base_m, base_peak, _ = result["nn.Conv2d"]
            ref_t = result["reference"][0]
            for name, (seconds, saved, peak, ops) in result.items():
                label = "unfold (reference)" if name == "reference" else name
                groups = " dw" if layer.depthwise else ""
                print(f"| {layer.name} | {layer.in_ch}→{layer.out_ch}{groups} | "
                      f"{layer.kernel}/{layer.stride}/{layer.dilation} | {hw[0]}×{hw[1]} "
                      f"| {label} | {seconds * 1e3:.0f} | {seconds / base_t:.2f} | {ref_t / seconds:.2f} "
                      f"| {saved / 2**20:.1f} | {saved / base_m:.2f} |"
                      + (f" {peak / 2**20:.1f} | {peak / base_peak:.2f} |" if cuda else ""), flush=True)
                if ops:
                    profiles.append(f"# profile {layer.name} {label}, self ms: {ops}")
        print("\n".join(profiles))


if __name__ == "__main__":
    main()
