"""Does the depth-trained teacher pay off for the RGB student? The paper's Table 3 over seeds, sizes and remedies.

For every (scene setting, training-set size, seed) a slim DeepLab-VGG16 is built once and the Distiller trains,
from exactly those initial weights and on the same data:

* ``BL`` on RGB for ``teacher_epochs + student_epochs`` (every RGB row gets the same total epochs);
* for each *teacher recipe* (which layers are depth-aware, how depth reaches them, depth dropout; ``nodepth`` is
  the control without depth) a teacher ``TN`` on RGB-D, tested on RGB-D and, reverted to plain convolutions before
  any student training, on RGB (``TN→RGB``);
* from each teacher, one student ``SN`` (PS + VTCE) per *student recipe* (fresh or carried optimiser, learning-rate
  scale, calibrated removal, or CE alone), ``student_epochs`` on RGB;
* for the paper's recipe also the ablations ``BL+PS`` and ``BL+VTCE``.

Every trained row is one JSON line in ``--out`` (written as soon as it is measured, so a cut-off run still
reports; a rerun skips what the file already holds). ``--summarize`` turns the file into the Markdown tables
(mean ± standard deviation over seeds, never a best seed) and the plot of docs/fidelity.md.

Run it from the repository root::

    OMP_NUM_THREADS=2 python benchmarks/bench_fidelity.py --out fidelity.jsonl           # the study (hours)
    python benchmarks/bench_fidelity.py --summarize fidelity.jsonl --plot fidelity.png  # tables, plot
    python benchmarks/bench_fidelity.py --out /tmp/f.jsonl --seeds 0 --train 16 --test 8 --size 32 40 \\
        --teacher-epochs 1 --student-epochs 1 --width 0.0625 --variants all14/fresh      # a smoke run
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_dconv import machine_description

from depthdistill import Distiller, convert_to_plain
from depthdistill.data import SyntheticRGBD, eval_transforms, train_transforms
from depthdistill.models import DEPTH_AWARE_CNN_LAYERS, deeplab_vgg16

#: Teacher recipes: which convolutions are depth-aware, how depth is resized, depth dropout.
TEACHERS: dict[str, dict[str, Any]] = {
    # "*", not None: under the Distiller's default preset None means the model's own six layers
    "all14": {"include": "*", "depth_resize": "nearest", "depth_dropout": 0.0},
    "dacnn6": {"include": DEPTH_AWARE_CNN_LAYERS, "depth_resize": "avgpool", "depth_dropout": 0.0},
    "dacnn6+drop": {"include": DEPTH_AWARE_CNN_LAYERS, "depth_resize": "avgpool", "depth_dropout": 0.5},
    "all14+drop": {"include": "*", "depth_resize": "nearest", "depth_dropout": 0.5},
    # A control without depth: dropout 1 makes every H = 1, so this "teacher" is the plain network trained on RGB,
    # and its student measures what the two-phase pipeline (schedule restart, self-distillation) costs by itself.
    "nodepth": {"include": DEPTH_AWARE_CNN_LAYERS, "depth_resize": "avgpool", "depth_dropout": 1.0},
}
#: Student recipes: the switch and the student phase's optimisation.
STUDENTS: dict[str, dict[str, Any]] = {
    "fresh": {"student_optimizer": "fresh", "student_lr_scale": 1.0, "calibrate_removal": False},
    "carry": {"student_optimizer": "carry", "student_lr_scale": 1.0, "calibrate_removal": False},
    "calib": {"student_optimizer": "fresh", "student_lr_scale": 1.0, "calibrate_removal": True},
    "lr0.3": {"student_optimizer": "fresh", "student_lr_scale": 0.3, "calibrate_removal": False},
    "lr0.1": {"student_optimizer": "fresh", "student_lr_scale": 0.1, "calibrate_removal": False},
    "lr3": {"student_optimizer": "fresh", "student_lr_scale": 3.0, "calibrate_removal": False},
    # CE alone, no VTCE (as the BL+PS ablation, but from any teacher recipe)
    "ce": {"student_optimizer": "fresh", "student_lr_scale": 1.0, "calibrate_removal": False, "vtce": False},
}
#: The paper's recipe: every spatial convolution, nearest depth, no dropout, a fresh student optimiser.
PAPER = ("all14", "fresh")
#: The Distiller's default recipe on DeepLab-VGG16: Depth-aware CNN's six layers, avgpool depth, depth dropout 0.5.
DEFAULT = ("dacnn6+drop", "fresh")
#: The (teacher, student) pairs the study trains by default: the paper, then one remedy or two at a time.
VARIANTS = ("all14/fresh", "all14/calib", "dacnn6/fresh", "dacnn6/carry", "dacnn6+drop/fresh", "dacnn6+drop/carry")


def _done(path: Path, args: argparse.Namespace) -> set[tuple]:
    """``(setting, n_train, seed, teacher, student, row)`` of the rows ``path`` holds for this run's protocol."""
    if not path.is_file():
        return set()
    protocol = (args.optim, args.teacher_epochs, args.student_epochs)
    records = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return {(r["setting"], r["n_train"], r["seed"], r["teacher"], r["student"], r["row"]) for r in records
            if (r["optim"], r["teacher_epochs"], r["student_epochs"]) == protocol}


def _record(path: Path, **fields: Any) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(fields) + "\n")
    print(f"  {fields['row']:8s} teacher={fields['teacher']:12s} student={fields['student']:10s} "
          f"mIoU {100 * fields['miou']:5.1f}  mPA {100 * fields['mpa']:5.1f}  ({fields['seconds']:.0f} s)", flush=True)


def run_one(setting: str, n_train: int, seed: int, args: argparse.Namespace, out: Path) -> None:
    """Trains and tests every row of one (setting, size, seed) that ``out`` does not hold yet."""
    done = _done(out, args)
    size = tuple(args.size)
    realistic = setting == "realistic"
    augment = train_transforms(size, scale_range=None, color_jitter=0.0)
    scene_kwargs = {"realistic": True} if realistic else {}
    train = SyntheticRGBD(n_train, size, split="train", seed=seed, transform=augment, cache=True, **scene_kwargs)
    test = SyntheticRGBD(args.test, size, split="test", seed=seed, transform=eval_transforms(), cache=True,
                         **scene_kwargs)
    torch.manual_seed(seed)
    model = deeplab_vgg16(train.num_classes, width=args.width)
    if args.optim == "adam":
        optimizer = lambda params: torch.optim.Adam(params, lr=args.lr)  # noqa: E731
    else:  # the paper's protocol: SGD, momentum 0.9, weight decay 5e-4 (the Distiller's default)
        optimizer = None
    common = dict(batch_size=args.batch, lr=args.lr, seed=seed, device="cpu", progress=False, log_every=0,
                  log_echo=False, optimizer=optimizer)
    total = args.teacher_epochs + args.student_epochs
    base = {"setting": setting, "n_train": n_train, "seed": seed, "optim": args.optim, "lr": args.lr,
            "batch": args.batch, "size": list(size),
            "width": args.width, "teacher_epochs": args.teacher_epochs, "student_epochs": args.student_epochs}

    def record(row: str, teacher: str, student: str, metrics: dict, seconds: float, epochs: int, **extra) -> None:
        _record(out, **base, row=row, teacher=teacher, student=student, epochs=epochs, seconds=round(seconds, 1),
                miou=metrics["mean_iou"], mpa=metrics["mean_pixel_accuracy"],
                per_class_iou=[None if math.isnan(v) else v for v in metrics["per_class_iou"]], **extra)

    if (setting, n_train, seed, "-", "-", "BL") not in done:
        d = Distiller(model, train.num_classes, **common)
        began = time.perf_counter()
        bl = d.train_baseline(train, total)
        record("BL", "-", "-", d.evaluate(bl, test), time.perf_counter() - began, total)

    pairs = [tuple(v.split("/")) for v in args.variants]
    for teacher_name in dict.fromkeys(t for t, _ in pairs):
        students = [s for t, s in pairs
                    if t == teacher_name and (setting, n_train, seed, teacher_name, s, "SN") not in done]
        wanted_abl = [r for r in args.ablations if teacher_name == PAPER[0] and
                      (setting, n_train, seed, teacher_name, "fresh", r) not in done]
        if not students and not wanted_abl and (setting, n_train, seed, teacher_name, "-", "TN") in done:
            continue
        d = Distiller(copy.deepcopy(model), train.num_classes, **common, **TEACHERS[teacher_name],
                      **STUDENTS["carry"])  # carry: keeps the teacher's optimiser state for the students that want it
        began = time.perf_counter()
        d.train_teacher(train, args.teacher_epochs)
        seconds = time.perf_counter() - began
        if (setting, n_train, seed, teacher_name, "-", "TN") not in done:
            record("TN", teacher_name, "-", d.evaluate(d.teacher, test, use_depth=True), seconds, args.teacher_epochs,
                   depth_aware_layers=len(d.depth_aware_layers))
            record("TN→RGB", teacher_name, "-", d.evaluate(convert_to_plain(copy.deepcopy(d.teacher)), test), 0.0, 0)
        for student_name in students:
            s = copy.deepcopy(d)
            s.settings = s.settings.replace(**STUDENTS[student_name])  # the same teacher, another student recipe
            began = time.perf_counter()
            sn = s.train_student(train, args.student_epochs, share_parameters=True,
                                 vtce=STUDENTS[student_name].get("vtce", True))
            start = s.fits["sn"].history[0]
            record("SN", teacher_name, student_name, s.evaluate(sn, test), time.perf_counter() - began,
                   args.student_epochs, first_epoch_ce=start.get("ce"))
        for row in wanted_abl:
            s = copy.deepcopy(d)
            s.settings = s.settings.replace(**STUDENTS["fresh"])
            began = time.perf_counter()
            if row == "BL+PS":
                trained = s.train_student(train, args.student_epochs, share_parameters=True, vtce=False)
                epochs = args.student_epochs
            else:
                trained = s.train_baseline(train, total, vtce=True)
                epochs = total
            record(row, teacher_name, "fresh", s.evaluate(trained, test), time.perf_counter() - began, epochs)


# ------------------------------------------------------------------------------------------------- summary
def _stats(values: list[float]) -> str:
    mean = 100 * statistics.fmean(values)
    spread = 100 * statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{mean:.1f} ± {spread:.1f}" if len(values) > 1 else f"{mean:.1f}"


def load_records(paths: list[Path]) -> list[dict[str, Any]]:
    """The rows of the result files, each counted once: a row measured again in another file (a later study that
    retrains its baseline and teachers) keeps its first record of each (protocol, cell, seed, recipe, row)."""
    unique: dict[tuple, dict] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                key = (r["setting"], r["optim"], r["teacher_epochs"], r["student_epochs"], r["n_train"], r["seed"],
                       r["teacher"], r["student"], r["row"])
                unique.setdefault(key, r)
    return list(unique.values())


def summarize(paths: list[Path], plot: Path | None) -> str:
    """Markdown tables (mean ± std over seeds) of every (setting, size) and, with ``plot``, the BL-vs-SN figure."""
    records = load_records(paths)
    out = []
    def group(r: dict) -> tuple:
        return r["setting"], r["optim"], r["teacher_epochs"], r["student_epochs"], r["n_train"]

    for key in sorted({group(r) for r in records}):
        setting, optim, teacher_epochs, student_epochs, n = key
        rs = [r for r in records if group(r) == key]
        seeds = sorted({r["seed"] for r in rs})
        first = rs[0]
        out.append(f"\n### {setting} scenes, {optim}, TN {teacher_epochs} + SN {student_epochs} epochs, {n} training "
                   f"images ({len(seeds)} seeds: {seeds})\n")
        out.append(f"{first['size'][0]}×{first['size'][1]}, width {first['width']}, lr {first.get('lr', '?')}, batch "
                   f"{first.get('batch', '?')}, TN "
                   f"{first['teacher_epochs']} / SN {first['student_epochs']} epochs; RGB rows without SN get "
                   f"{first['teacher_epochs'] + first['student_epochs']}. mIoU and mPA in %, mean ± std over seeds; "
                   "SN − BL is the mean of the per-seed differences.\n")
        out.append("| row | teacher | student | n | mIoU % | mPA % | SN − BL mIoU |")
        out.append("|---|---|---|---|---|---|---|")
        bl = {r["seed"]: r["miou"] for r in rs if r["row"] == "BL"}
        order = {"BL": 0, "TN": 1, "TN→RGB": 2, "SN": 3, "BL+PS": 4, "BL+VTCE": 5}
        keys = sorted({(r["row"], r["teacher"], r["student"]) for r in rs},
                      key=lambda k: (order.get(k[0], 9), list(TEACHERS).index(k[1]) if k[1] in TEACHERS else -1,
                                     list(STUDENTS).index(k[2]) if k[2] in STUDENTS else -1))
        for row, teacher, student in keys:
            sel = [r for r in rs if (r["row"], r["teacher"], r["student"]) == (row, teacher, student)]
            gap = ""
            if row in ("SN", "BL+PS", "BL+VTCE"):
                diffs = [r["miou"] - bl[r["seed"]] for r in sel if r["seed"] in bl]
                gap = _stats(diffs) if diffs else ""
            out.append(f"| {row} | {teacher} | {student} | {len(sel)} | {_stats([r['miou'] for r in sel])} | "
                       f"{_stats([r['mpa'] for r in sel])} | {gap} |")
    if plot is not None:
        # The plot compares sizes, so it takes the protocol most rows were trained with
        protocol = statistics.mode((r["optim"], r["teacher_epochs"], r["student_epochs"]) for r in records)
        _plot([r for r in records if (r["optim"], r["teacher_epochs"], r["student_epochs"]) == protocol], plot)
    return "\n".join(out)


def _plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = sorted({r["setting"] for r in records})
    fig, axes = plt.subplots(1, len(settings), figsize=(5.2 * len(settings), 3.8), squeeze=False)
    for ax, setting in zip(axes[0], settings, strict=True):
        rs = [r for r in records if r["setting"] == setting]
        sizes = sorted({r["n_train"] for r in rs})
        # The baseline and the students of the two recipes the Distiller names; the tables have every recipe
        lines = [("BL", "-", "-"), ("SN", *PAPER), ("SN", *DEFAULT)]
        for row, teacher, student in lines:
            xs, ys, es = [], [], []
            for n in sizes:
                v = [100 * r["miou"] for r in rs if (r["row"], r["teacher"], r["student"], r["n_train"]) ==
                     (row, teacher, student, n)]
                if v:
                    xs.append(n), ys.append(statistics.fmean(v)), es.append(statistics.stdev(v) if len(v) > 1 else 0)
            label = "BL" if row == "BL" else (f"SN, preset 'paper' ({teacher}/{student})" if (teacher, student) == PAPER
                                              else f"SN, preset 'default' ({teacher}/{student})")
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=label, lw=2.5 if row == "BL" else 1.2,
                        color="black" if row == "BL" else None)
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.set_xlabel("training images")
        ax.set_ylabel("test mIoU % (RGB)")
        ax.set_title(f"{setting} scenes: BL vs SN (mean ± std over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    """Parses the options; runs the study, or summarises a finished one."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="JSON-lines file the rows are appended to")
    parser.add_argument("--summarize", type=Path, nargs="+", help="print the tables of these JSON-lines files, exit")
    parser.add_argument("--plot", type=Path, help="with --summarize: write the BL-vs-SN plot here")
    parser.add_argument("--settings", nargs="+", default=["depth-only"], choices=["depth-only", "realistic"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train", type=int, nargs="+", default=[64, 192], help="training-set sizes")
    parser.add_argument("--test", type=int, default=96, help="test scenes")
    parser.add_argument("--size", type=int, nargs=2, default=[64, 80], metavar=("H", "W"))
    parser.add_argument("--width", type=float, default=0.125, help="DeepLab-VGG16 channel multiplier")
    parser.add_argument("--teacher-epochs", type=int, default=20)
    parser.add_argument("--student-epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--optim", choices=["adam", "sgd"], default="adam")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), metavar="TEACHER/STUDENT",
                        help=f"SN recipes, teacher one of {list(TEACHERS)}, student one of {list(STUDENTS)}")
    parser.add_argument("--ablations", nargs="*", default=["BL+PS", "BL+VTCE"], choices=["BL+PS", "BL+VTCE"],
                        help="Table 3's ablation rows, trained from the paper's teacher (none: skip them)")
    args = parser.parse_args()
    if args.summarize:
        print(summarize(args.summarize, args.plot))
        return
    if args.out is None:
        parser.error("--out is required to run the study")
    for variant in args.variants:
        teacher, _, student = variant.partition("/")
        if teacher not in TEACHERS or student not in STUDENTS:
            parser.error(f"unknown variant {variant!r}: TEACHER/STUDENT with TEACHER in {list(TEACHERS)} and "
                         f"STUDENT in {list(STUDENTS)}")
    print(f"# {machine_description(torch.device('cpu'))}; {time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    # Seeds outermost: a study cut off early still has every size and setting, at fewer seeds.
    for seed in args.seeds:
        for setting in args.settings:
            for n in args.train:
                print(f"## {setting}, {n} training images, seed {seed}", flush=True)
                run_one(setting, n, seed, args, args.out)


if __name__ == "__main__":
    main()
