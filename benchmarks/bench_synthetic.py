"""Speed of SyntheticRGBD: samples per second on one core, against a baseline in the same run.

The baseline is the cheapest possible sample of the same size (numpy random arrays through the same sample dict
builder), so the ratio says how much the rendering costs on top of producing the tensors at all.

With ``--realistic`` each difficulty is timed also with ``realistic=True`` (shadow rays, contact shadows), in the
same run, and the ratio of the two times is printed.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_synthetic.py [--size 96 128] [--samples 300] [--realistic]``
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from depthdistill.data import SyntheticRGBD
from depthdistill.data._io import make_sample


def _rate(make, count: int) -> float:
    make(0)  # warm-up
    start = time.perf_counter()
    for index in range(count):
        make(index)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=(96, 128), metavar=("H", "W"))
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--realistic", action="store_true", help="also time realistic=True against the default")
    args = parser.parse_args()
    torch.set_num_threads(1)
    height, width = args.size
    print(f"machine: {platform.machine()} {platform.processor() or ''} | {os.cpu_count()} logical CPUs | "
          f"python {platform.python_version()} | numpy {np.__version__} | torch {torch.__version__} | "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    rng = np.random.default_rng(0)

    def baseline(index: int) -> dict:
        return make_sample(rng.random((height, width, 3)), rng.random((height, width)),
                           rng.integers(0, 8, (height, width)), str(index))

    base = _rate(baseline, args.samples)
    print(f"baseline (random arrays -> sample dict) {height}x{width}: {base:9.1f} samples/s")
    for difficulty in (0.0, 0.5, 1.0):
        ds = SyntheticRGBD(num_samples=args.samples, size=(height, width), difficulty=difficulty)
        rate = _rate(ds.__getitem__, args.samples)
        print(f"SyntheticRGBD {height}x{width} difficulty={difficulty}: {rate:9.1f} samples/s "
              f"({base / rate:5.1f}x the baseline's time per sample)")
        if args.realistic:
            lit = SyntheticRGBD(num_samples=args.samples, size=(height, width), difficulty=difficulty, realistic=True)
            lit_rate = _rate(lit.__getitem__, args.samples)
            print(f"SyntheticRGBD {height}x{width} difficulty={difficulty} realistic=True: {lit_rate:9.1f} samples/s "
                  f"({rate / lit_rate:4.2f}x the default's time per sample)")


if __name__ == "__main__":
    main()
