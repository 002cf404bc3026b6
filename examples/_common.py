"""What every example shares: its command line, its data (real or the built-in synthetic set) and the run."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import depthdistill
from depthdistill.data import SyntheticRGBD, eval_transforms, train_transforms


def parser(description: str) -> argparse.ArgumentParser:
    """The options every example takes; each example adds its own."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--synthetic", action="store_true",
                   help="a smoke run on a few built-in synthetic scenes instead of the real data")
    p.add_argument("--out", default=None, help="output folder (default: runs/<example>)")
    p.add_argument("--teacher-epochs", type=int, default=None, help="epochs of the teacher")
    p.add_argument("--student-epochs", type=int, default=None, help="epochs of the student")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--preset", default="default", choices=["default", "paper"],
                   help="the method's settings: 'paper' (every spatial conv, nearest depth, no depth dropout) or "
                        "'default' (the model's own depth-aware layers, average-pooled depth, depth dropout 0.5)")
    return p


def synthetic_splits(size: tuple[int, int] = (32, 48), train: int = 8, test: int = 4):
    """A handful of synthetic scenes, normalised like real images: enough to run every phase once."""
    return (SyntheticRGBD(num_samples=train, size=size, split="train", transform=train_transforms(
                size, scale_range=None, color_jitter=0.0)),
            SyntheticRGBD(num_samples=test, size=size, split="test", transform=eval_transforms()))


def folder_or_synthetic(args: argparse.Namespace, crop: tuple[int, int], synthetic_size: tuple[int, int] = (64, 64)):
    """``(train, test, num_classes)``: an RGBDFolder at ``--root``, or synthetic scenes with ``--synthetic``."""
    if args.synthetic or not args.root:
        train, test = synthetic_splits(size=synthetic_size)
    else:
        from depthdistill.data import RGBDFolder
        train = RGBDFolder(args.root, "train", transform=train_transforms(crop))
        test = RGBDFolder(args.root, "test", transform=eval_transforms())
    return train, test, args.num_classes or train.num_classes


def distill(model: torch.nn.Module, num_classes: int, train, test, args: argparse.Namespace, name: str, *,
            teacher_epochs: int, student_epochs: int, model_name: str, model_args: dict | None = None,
            **settings) -> depthdistill.ResultsTable:
    """Trains BL, TN and SN with the Distiller, prints the table in the paper's form and returns it.

    ``model_name`` / ``model_args`` name the model as a run file would, so that ``depthdistill evaluate / predict /
    export`` rebuild it from the checkpoints.
    """
    out = Path(args.out or f"runs/{name}")
    meta = {"model": {"name": model_name, "args": model_args or {}}}
    distiller = depthdistill.Distiller(model, num_classes, args.preset, out_dir=out, device=args.device, meta=meta,
                                       **settings)
    table = distiller.run_experiment(train, test, teacher_epochs=args.teacher_epochs or teacher_epochs,
                                     student_epochs=args.student_epochs or student_epochs)
    print(table.to_markdown())
    print(f"checkpoints and results.json in {out}; the student is {out / 'sn' / 'model.pt'}")
    return table
