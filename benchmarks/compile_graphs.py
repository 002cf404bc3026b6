"""How many graphs ``torch.compile`` makes of a teacher forward: depth context outside vs inside the compiled call.

A three-convolution teacher is compiled two ways: the model itself, called inside ``depth_context``, and a
function that enters ``depth_context`` and calls the model. For each, ``torch._dynamo.explain`` gives the graphs
and graph breaks of one call, and dynamo's counters the unique graphs over three compiled forwards with a new
depth tensor each (each checked against the eager result). docs/performance.md quotes the output.

Run it from the repository root (seconds)::

    OMP_NUM_THREADS=2 python benchmarks/compile_graphs.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch._dynamo as dynamo
from torch._dynamo.utils import counters

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_dconv import machine_description

from depthdistill import convert_to_depth_aware, depth_context


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.b = torch.nn.Conv2d(8, 8, 3, padding=1, stride=2)
        self.head = torch.nn.Conv2d(8, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.b(torch.relu(self.a(x)))))


def main() -> None:
    print("# " + machine_description(torch.device("cpu")))
    torch.manual_seed(0)
    teacher = convert_to_depth_aware(Net()).eval()
    rgb = torch.rand(2, 3, 32, 32)

    def inside(rgb: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        with depth_context(depth):
            return teacher(rgb)

    def outside(compiled, rgb, depth):
        with depth_context(depth):
            return compiled(rgb)

    ways = {"outside": (teacher, outside), "inside": (inside, lambda compiled, rgb, depth: compiled(rgb, depth))}
    print("| depth_context | graphs | graph breaks | unique graphs over 3 steps |")
    print("|---|---|---|---|")
    for name, (target, call) in ways.items():
        depth = torch.rand(2, 1, 32, 32) + 1
        explained = dynamo.explain(target)(rgb, depth) if name == "inside" else _explain_outside(teacher, rgb, depth)
        dynamo.reset()
        counters.clear()
        compiled = torch.compile(target, backend="eager")  # graph capture is dynamo's; the backend does not matter
        with torch.no_grad():
            for _ in range(3):
                depth = torch.rand(2, 1, 32, 32) + 1
                torch.testing.assert_close(call(compiled, rgb, depth), outside(teacher, rgb, depth))
        print(f"| {name} the compiled call | {explained.graph_count} | {explained.graph_break_count} "
              f"| {counters['stats']['unique_graphs']} |")


def _explain_outside(teacher, rgb, depth):
    with depth_context(depth):
        return dynamo.explain(teacher)(rgb)


if __name__ == "__main__":
    main()
