"""Depth-aware convolution against nn.Conv2d and the naive unfold implementation, per DeepLab-VGG16 layer shape.

For every layer shape and every implementation this measures forward + backward wall time (median of interleaved
repeats) and the bytes autograd saves for backward, and prints both as ratios against ``nn.Conv2d`` (the floor)
and against ``impl="reference"`` (the naive im2col/unfold definition) measured in the same run.

Saved memory is counted with :func:`torch.autograd.graph.saved_tensors_hooks`: every tensor autograd packs for
backward during one forward is recorded by the identity of its storage, and the bytes of the unique storages are
summed. Parameters (the kernel and bias, which live anyway) are left out, so the figure is the activation memory
a layer adds to a training step; the input ``x`` counts for every implementation (``nn.Conv2d`` saves it too).

Run it from the repository root::

    OMP_NUM_THREADS=2 python benchmarks/bench_dconv.py            # CPU, and CUDA too when there is one
    python benchmarks/bench_dconv.py --quick --repeats 3           # half the side length, for a smoke run
    python benchmarks/bench_dconv.py --layers conv4_3 fc6 --device cuda --dtype bfloat16
    OMP_NUM_THREADS=2 python benchmarks/bench_dconv.py --width 0.25 --batch 2 --input 240 320   # a slim teacher
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from depthdistill.nn.functional import IMPLEMENTATIONS, depth_aware_conv2d

NYU_HW = (480, 640)


@dataclass(frozen=True)
class Layer:
    """One convolution of DeepLab-VGG16 (LargeFOV): 3×3, stride 1, padding = dilation."""

    name: str
    in_ch: int
    out_ch: int
    dilation: int
    downsample: int  # the layer's resolution is the input's / downsample


# conv1_2 really runs at full resolution; at 480×640 that alone takes ~1 min per repeat of the unfold baseline
# on 2 cores, so it is measured at 1/2 resolution (its shape for a 240×320 input) and the table says so.
LAYERS = (
    Layer("conv1_2", 64, 64, 1, 2),
    Layer("conv2_2", 128, 128, 1, 2),
    Layer("conv3_3", 256, 256, 1, 4),
    Layer("conv4_3", 512, 512, 1, 8),
    Layer("conv5_3", 512, 512, 2, 8),
    Layer("fc6", 512, 1024, 12, 8),
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
        text += f", GPU {torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}"
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_layer(layer: Layer, hw: tuple[int, int], batch: int, impls: list[str], repeats: int,
                device: torch.device, dtype: torch.dtype) -> dict[str, tuple[float, int]]:
    """Median forward+backward seconds and saved bytes per candidate, candidates interleaved in every repeat."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, layer.in_ch, *hw, generator=gen).to(device, dtype).requires_grad_()
    # A room-like depth: a ramp plus noise in metres, with some holes, so the weights are not trivially 1.
    depth = (torch.linspace(1.0, 6.0, hw[1]).expand(batch, 1, *hw) + 0.3 * torch.rand(batch, 1, *hw, generator=gen))
    depth = torch.where(torch.rand(batch, 1, *hw, generator=gen) < 0.05, torch.zeros_like(depth), depth).to(device)
    conv = torch.nn.Conv2d(layer.in_ch, layer.out_ch, 3, padding=layer.dilation, dilation=layer.dilation)
    conv = conv.to(device, dtype)
    grad = torch.randn(batch, layer.out_ch, *hw, generator=gen).to(device, dtype)

    def forward(name: str) -> torch.Tensor:
        if name == "nn.Conv2d":
            return conv(x)
        return depth_aware_conv2d(x, depth, conv.weight, conv.bias, 1, layer.dilation, layer.dilation,
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
    return {name: (statistics.median(times[name]), saved_bytes(lambda n=name: forward(n), params))
            for name in candidates}


def main() -> None:
    """Parses the options, runs every layer on every device, prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", nargs="*", default=[layer.name for layer in LAYERS],
                        choices=[layer.name for layer in LAYERS])
    parser.add_argument("--impls", nargs="*", default=[impl for impl in IMPLEMENTATIONS if impl != "auto"],
                        choices=list(IMPLEMENTATIONS), help="'auto' is left out by default: it picks 'stacked' here")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per layer (plus one warm-up)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--input", type=int, nargs=2, default=NYU_HW, metavar=("H", "W"),
                        help="network input size; each layer runs at its own fraction of it")
    parser.add_argument("--quick", action="store_true", help="halve the input side (a smoke run)")
    parser.add_argument("--width", type=float, default=1.0,
                        help="channel multiplier, as deeplab_vgg16(width=...): the slim models of CPU runs")
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's, OMP_NUM_THREADS)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if "reference" not in args.impls:
        args.impls.append("reference")  # the unfold baseline every row is compared with
    devices = [torch.device("cpu")] if args.device in ("cpu", "all") else []
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    dtype = getattr(torch, args.dtype)
    scale = 2 if args.quick else 1
    layers = [Layer(layer.name, max(1, round(layer.in_ch * args.width)), max(1, round(layer.out_ch * args.width)),
                    layer.dilation, layer.downsample) for layer in LAYERS if layer.name in args.layers]
    for device in devices:
        print(f"# {machine_description(device)}; device {device.type}, {args.dtype}, batch {args.batch}, "
              f"input {args.input[0] // scale}x{args.input[1] // scale}, width {args.width}, "
              f"median of {args.repeats} interleaved fwd+bwd rounds")
        print("| layer | C_in→C_out | dil | H×W | impl | fwd+bwd ms | × nn.Conv2d | unfold × | saved MiB "
              "| saved × nn.Conv2d |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for layer in layers:
            hw = (args.input[0] // (layer.downsample * scale), args.input[1] // (layer.downsample * scale))
            result = bench_layer(layer, hw, args.batch, args.impls, args.repeats, device, dtype)
            base_t, base_m = result["nn.Conv2d"]
            ref_t = result["reference"][0]
            for name, (seconds, saved) in result.items():
                label = "unfold (reference)" if name == "reference" else name
                print(f"| {layer.name} | {layer.in_ch}→{layer.out_ch} | {layer.dilation} | {hw[0]}×{hw[1]} "
                      f"| {label} | {seconds * 1e3:.0f} | {seconds / base_t:.2f} | {ref_t / seconds:.2f} "
                      f"| {saved / 2**20:.1f} | {saved / base_m:.2f} |", flush=True)


if __name__ == "__main__":
    main()
