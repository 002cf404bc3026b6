"""Does depth matter on SyntheticRGBD? The same network trained on RGB (BL) and made depth-aware on RGB-D (TN).

For each seed a slim DeepLab-VGG16 is built once; the Distiller trains a plain copy of it on RGB (``BL``) and the
depth-aware conversion of the very same initial weights on RGB-D (``TN``) for the same epochs, optimiser and
data, and both are tested on the seed's test split (TN with depth, BL without). The table gives mPA, mIoU and
IoU per class for each, and the TN − BL gap; the defaults are those of ``depthdistill demo``'s full preset.

Run it from the repository root::

    OMP_NUM_THREADS=2 python benchmarks/bench_depth_gain.py                  # seeds 0 and 1, ~10 min on 2 cores
    OMP_NUM_THREADS=2 python benchmarks/bench_depth_gain.py --seeds 0 --epochs 5 --train 64   # a smoke run
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_dconv import machine_description

from depthdistill import Distiller
from depthdistill.data import SyntheticRGBD, eval_transforms, train_transforms
from depthdistill.demo import PRESETS
from depthdistill.models import deeplab_vgg16


def run_seed(seed: int, args: argparse.Namespace) -> dict[str, dict]:
    """Trains and tests BL and TN from the same initial weights; returns their metrics and training seconds."""
    size = tuple(args.size)
    augment = train_transforms(size, scale_range=None, color_jitter=0.0)  # as the demo: flips and normalisation
    train = SyntheticRGBD(args.train, size, split="train", seed=seed, transform=augment, cache=True)
    test = SyntheticRGBD(args.test, size, split="test", seed=seed, transform=eval_transforms())
    torch.manual_seed(seed)
    model = deeplab_vgg16(train.num_classes, width=args.width)
    distiller = Distiller(model, train.num_classes, batch_size=args.batch, lr=args.lr, seed=seed, device="cpu",
                          progress=False, log_every=0,
                          optimizer=lambda params: torch.optim.Adam(params, lr=args.lr))
    results = {}
    for name in ("BL", "TN"):
        start = time.perf_counter()
        trained = (distiller.train_baseline(train, args.epochs) if name == "BL"
                   else distiller.train_teacher(train, args.epochs))
        seconds = time.perf_counter() - start
        results[name] = {**distiller.evaluate(trained, test), "seconds": seconds}
    results["class_names"] = train.class_names
    return results


def main() -> None:
    """Parses the options, runs every seed, prints the table."""
    full = PRESETS["full"]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--train", type=int, default=full.train_samples, help="training scenes")
    parser.add_argument("--test", type=int, default=full.test_samples, help="test scenes")
    parser.add_argument("--size", type=int, nargs=2, default=full.size, metavar=("H", "W"))
    parser.add_argument("--width", type=float, default=full.width, help="DeepLab-VGG16 channel multiplier")
    parser.add_argument("--epochs", type=int, default=full.teacher_epochs, help="epochs of BL and of TN")
    parser.add_argument("--batch", type=int, default=full.batch_size)
    parser.add_argument("--lr", type=float, default=full.lr, help="Adam learning rate")
    args = parser.parse_args()

    print(f"# {machine_description(torch.device('cpu'))}; {args.train} / {args.test} scenes at "
          f"{args.size[0]}x{args.size[1]}, DeepLab-VGG16 width {args.width}, {args.epochs} epochs, batch "
          f"{args.batch}, Adam lr {args.lr}")
    rows = []
    for seed in args.seeds:
        result = run_seed(seed, args)
        names = result.pop("class_names")
        for name, metrics in result.items():
            per_class = " ".join(f"{n} {100 * v:.0f}" for n, v in zip(names, metrics["per_class_iou"], strict=True))
            rows.append(f"| {seed} | {name} | {100 * metrics['mean_pixel_accuracy']:.1f} | "
                        f"{100 * metrics['mean_iou']:.1f} | {per_class} | {metrics['seconds']:.0f} |")
        gap_pa = 100 * (result["TN"]["mean_pixel_accuracy"] - result["BL"]["mean_pixel_accuracy"])
        gap_iou = 100 * (result["TN"]["mean_iou"] - result["BL"]["mean_iou"])
        rows.append(f"| {seed} | TN − BL | {gap_pa:+.1f} | {gap_iou:+.1f} | | |")
    print("| seed | row | mPA % | mIoU % | IoU % per class | train s |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
