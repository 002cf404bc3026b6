"""Speed of SyntheticRGBD: samples per second on one core, against a baseline in the same run.

The baseline is the cheapest possible sample of the same size (numpy random arrays through the same sample dict
builder), so the ratio says how much the rendering costs on top of producing the tensors at all.

With ``--realistic`` each difficulty is timed also with ``realistic=True`` (shadow rays, contact shadows), the two
interleaved sample by sample so that a busy machine slows both alike, and the ratio of their times is printed.

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


def _rates(makers, count: int) -> list[float]:
    """Samples per second of each maker, calling them in turn on each index."""
    for make in makers:
        make(0)  # warm-up
    seconds = [0.0] * len(makers)
    for index in range(count):
        for which, make in enumerate(makers):
            start = time.perf_counter()
            make(index)
            seconds[which] += time.perf_counter() - start
    return [count / total for total in seconds]


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

    (base,) = _rates([baseline], args.samples)
    print(f"baseline (random arrays -> sample dict) {height}x{width}: {base:9.1f} samples/s")
    for difficulty in (0.0, 0.5, 1.0):
        variants = (False, True) if args.realistic else (False,)
        sets = [SyntheticRGBD(num_samples=args.samples, size=(height, width), difficulty=difficulty, realistic=lit)
                for lit in variants]
        rate, *lit_rate = _rates([ds.__getitem__ for ds in sets], args.samples)
        print(f"SyntheticRGBD {height}x{width} difficulty={difficulty}: {rate:9.1f} samples/s "
              f"({base / rate:5.1f}x the baseline's time per sample)")
        if lit_rate:
            print(f"SyntheticRGBD {height}x{width} difficulty={difficulty} realistic=True: {lit_rate[0]:9.1f} "
                  f"samples/s ({rate / lit_rate[0]:4.2f}x the default's time per sample)")


if __name__ == "__main__":
    main()
