"""Training-step time of a DeepLab-VGG16 teacher (D-Conv), its student and the plain baseline, in one run.

* ``baseline``: the plain model, RGB only (forward, cross-entropy, backward, SGD step).
* ``teacher``: the same model converted with ``convert_to_depth_aware`` and run inside ``depth_context``.
* ``student``: the plain model trained by distillation; its network *is* the baseline's, so its step is the
  baseline's step plus the VTCE loss on logits the frozen teacher produced beforehand. The ratio of its network
  cost to the baseline's is 1.0 by construction; what the row measures is the loss on top.

With ``--compile`` the baseline and the teacher also run through ``torch.compile`` (rows ``baseline+compile``,
``teacher+compile``), and the number of graph breaks dynamo reports for the teacher is printed.

Candidates are interleaved in every round (the order rotates) and the medians are reported, because the machine
may be shared. Run it from the repository root::

    OMP_NUM_THREADS=2 python benchmarks/bench_train_step.py                   # CPU, slim width
    OMP_NUM_THREADS=2 python benchmarks/bench_train_step.py --compile
    python benchmarks/bench_train_step.py --device cuda --width 1 --batch 8 --input 480 640
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_dconv import machine_description

from depthdistill import convert_to_depth_aware, depth_context, vtce_loss
from depthdistill.models import deeplab_vgg16

NUM_CLASSES = 13


def make_batch(batch: int, hw: tuple[int, int], device: torch.device) -> dict[str, torch.Tensor]:
    """A random RGB-D batch with a room-like depth ramp (metres) and a few holes."""
    gen = torch.Generator().manual_seed(0)
    depth = torch.linspace(1.0, 6.0, hw[1]).expand(batch, 1, *hw) + 0.3 * torch.rand(batch, 1, *hw, generator=gen)
    depth = torch.where(torch.rand(batch, 1, *hw, generator=gen) < 0.05, torch.zeros_like(depth), depth)
    return {"rgb": torch.rand(batch, 3, *hw, generator=gen).to(device), "depth": depth.to(device),
            "label": torch.randint(0, NUM_CLASSES, (batch, *hw), generator=gen).to(device)}


def make_step(model: torch.nn.Module, batch: dict[str, torch.Tensor], *, depth: bool = False,
              teacher_logits: torch.Tensor | None = None, forward: Callable | None = None) -> Callable[[], None]:
    """One SGD step of ``model`` (optionally through a compiled ``forward``) on ``batch``."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    run = model if forward is None else forward

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        if depth:
            with depth_context(batch["depth"]):
                logits = run(batch["rgb"])
        else:
            logits = run(batch["rgb"])
        loss = F.cross_entropy(logits, batch["label"], ignore_index=255)
        if teacher_logits is not None:
            loss = loss + vtce_loss(logits, teacher_logits, temperature=0.5)
        loss.backward()
        optimizer.step()

    return step


def count_graph_breaks(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> str:
    """Dynamo's graph count and break reasons for the teacher's forward inside a depth context."""
    import torch._dynamo

    def teacher_forward(rgb: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        with depth_context(depth):
            return model(rgb)

    explanation = torch._dynamo.explain(teacher_forward)(batch["rgb"], batch["depth"])
    reasons = sorted({str(b.reason).splitlines()[0][:120] for b in explanation.break_reasons})
    return f"{explanation.graph_count} graph(s), {explanation.graph_break_count} break(s): {reasons}"


def main() -> None:
    """Builds the models, interleaves their steps, prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=float, default=0.25, help="channel multiplier of DeepLab-VGG16")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--input", type=int, nargs=2, default=(240, 320), metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (plus two warm-up rounds)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd baseline and teacher")
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    batch = make_batch(args.batch, tuple(args.input), device)
    baseline = deeplab_vgg16(NUM_CLASSES, width=args.width).to(device)
    student = copy.deepcopy(baseline)
    teacher = convert_to_depth_aware(copy.deepcopy(baseline))
    with torch.no_grad(), depth_context(batch["depth"]):
        teacher_logits = teacher(batch["rgb"]).detach()
    steps = {
        "baseline": make_step(baseline, batch),
        "student": make_step(student, batch, teacher_logits=teacher_logits),
        "teacher": make_step(teacher, batch, depth=True),
    }
    if args.compile:
        print(f"# dynamo on the teacher: {count_graph_breaks(teacher, batch)}")
        compiled_baseline, compiled_teacher = copy.deepcopy(baseline), copy.deepcopy(teacher)
        steps["baseline+compile"] = make_step(compiled_baseline, batch, forward=torch.compile(compiled_baseline))
        steps["teacher+compile"] = make_step(compiled_teacher, batch, depth=True,
                                             forward=torch.compile(compiled_teacher))

    names = list(steps)
    times: dict[str, list[float]] = {name: [] for name in names}
    first_step: dict[str, float] = {}
    for rep in range(args.repeats + 2):  # two warm-up rounds: the first compiles
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            steps[name]()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if rep >= 2:
                times[name].append(time.perf_counter() - start)
            elif rep == 0:
                first_step[name] = time.perf_counter() - start

    print(f"# {machine_description(device)}; DeepLab-VGG16 width {args.width}, batch {args.batch}, input "
          f"{args.input[0]}x{args.input[1]}, {NUM_CLASSES} classes, median of {args.repeats} interleaved steps")
    base = statistics.median(times["baseline"])
    print("| step | ms | × baseline |")
    print("|---|---|---|")
    for name in names:
        median = statistics.median(times[name])
        print(f"| {name} | {median * 1e3:.0f} | {median / base:.2f} |")
    if args.compile:
        print("# first step, compilation included: " + ", ".join(
            f"{name} {first_step[name]:.1f} s" for name in names if name.endswith("+compile")))


if __name__ == "__main__":
    main()
