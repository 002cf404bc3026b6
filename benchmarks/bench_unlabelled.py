"""Does depth in training make the RGB model better? Each method against the baselines and its own control.

For every (scene setting, labelled-set size, unlabelled ratio, variant, seed) a slim DeepLab-VGG16 is built once
and one Distiller trains, from exactly those initial weights and on the same data:

* ``BL``: the plain model on the labelled RGB images, CE, for ``student_epochs`` (the student's own steps);
* ``BL@cost``: the same for ``teacher_epochs + student_epochs`` (a baseline given more of the method's cost);
* ``BL@long``: with ``--long-factor k``, the same for ``k · student_epochs`` (a baseline trained to convergence);
* ``TN``: the depth-aware teacher on the labelled RGB-D, ``teacher_epochs``, tested on RGB-D (methods that train
  one: ``Method.trains_teacher``);
* ``SN``: the variant's method (:data:`VARIANTS`; by default ``"unlabelled"``: the student, per step a labelled
  batch (CE) and an unlabelled batch (the teacher's targets, the teacher fed RGB-D, the student RGB),
  ``student_epochs``; ``removal`` / ``removal-one``: the paper's method on its two schedules; ``online``,
  ``aux-depth``, ``consistency``: the other methods);
* ``SN-RGB``: the method's control without depth (for ``"unlabelled"`` the same student with BL@TN as the
  labeller);
* ``SN-RGB@long``: with ``--long-factor``, the unlabelled method's control with BL@long as the labeller (an RGB
  labeller trained as long as the longest baseline: is it the teacher's depth or its training that helps?).

With ``--start-epochs K`` the "initial weights" of every row are those of an RGB model the user already has: BL
trained for K epochs from the seeded initialisation (row ``start``), so BL is that model trained on for the
student's epochs and SN is the method applied to it (does depth add to a converged RGB model?).

BL, BL@cost and BL@long depend on neither the variant nor the ratio: measured once per (setting, size, seed,
epochs) in a file and copied into its other cells. Each row is one JSON line in ``--out`` as soon as it is measured
(with its training seconds and per-class IoU; a rerun skips what the file holds); ``--summarize`` prints, per cell,
mean ± standard deviation over seeds of every row and of the per-seed differences (SN − BL, SN − SN-RGB, …), never
a best seed, and each row's IoU per class; with ``--overview`` one line per cell.

    OMP_NUM_THREADS=1 python benchmarks/bench_unlabelled.py --out unlabelled.jsonl            # the study (hours)
    python benchmarks/bench_unlabelled.py --summarize unlabelled.jsonl                       # the tables
    python benchmarks/bench_unlabelled.py --out /tmp/u.jsonl --seeds 0 --train 8 --ratio 1 --test 4 \\
        --size 32 40 --teacher-epochs 1 --student-epochs 1 --width 0.0625                    # a smoke run
"""

from __future__ import annotations

import argparse
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

from depthdistill import Distiller
from depthdistill.data import SyntheticRGBD, eval_transforms, train_transforms
from depthdistill.data.synthetic import CLASS_NAMES
from depthdistill.distill.methods import METHODS
from depthdistill.models import deeplab_vgg16

#: Student variants: Distiller settings of the SN row (the key names the variant in the records); ``method``
#: defaults to ``"unlabelled"``.
VARIANTS: dict[str, dict[str, Any]] = {
    # No depth dropout: the teacher here labels frames with depth, it is never run without it (dropout prepares the
    # shared weights for the switch to plain convolutions, which a student from the initial weights never makes).
    "soft-init": {"student_start": "initial", "unlabelled_targets": "soft", "unlabelled_temperature": 2.0,
                  "vtce": False, "depth_dropout": 0.0},
    "soft-tn": {"student_start": "teacher", "unlabelled_targets": "soft", "unlabelled_temperature": 2.0,
                "vtce": False, "depth_dropout": 0.5},
    "hard-init": {"student_start": "initial", "unlabelled_targets": "hard", "unlabelled_confidence": 0.7,
                  "vtce": False, "depth_dropout": 0.0},
    # the soft targets sharper or softer than T = 2
    "soft-init-t1": {"student_start": "initial", "unlabelled_targets": "soft", "unlabelled_temperature": 1.0,
                     "vtce": False, "depth_dropout": 0.0},
    "soft-init-t4": {"student_start": "initial", "unlabelled_targets": "soft", "unlabelled_temperature": 4.0,
                     "vtce": False, "depth_dropout": 0.0},
    # Method "online" (no unlabelled frames): teacher and student trained together for the student's epochs, the
    # soft-target weight ramped up over the first 5; no depth dropout, as the teacher always runs with depth.
    "online": {"method": "online", "online_weight": 1.0, "online_temperature": 2.0, "online_ramp_epochs": 5,
               "depth_dropout": 0.0},
    # the sweep of the screen: a smaller soft-target weight; the full weight reached at half the student's epochs,
    # when the co-trained teacher is better than at epoch 5
    "online-w0.3": {"method": "online", "online_weight": 0.3, "online_temperature": 2.0, "online_ramp_epochs": 5,
                    "depth_dropout": 0.0},
    "online-ramp15": {"method": "online", "online_weight": 1.0, "online_temperature": 2.0, "online_ramp_epochs": 15,
                      "depth_dropout": 0.0},
    # Depth as an auxiliary target (no teacher, no unlabelled frames): CE plus a depth head on fc7 (the default
    # layer), scale-invariant log loss at weight 0.5; SN-RGB trains against another image's depth.
    "aux-depth": {"method": "aux_depth", "aux_depth_weight": 0.5},
    "aux-depth-w0.1": {"method": "aux_depth", "aux_depth_weight": 0.1},  # is the loss at 0.5 only too strong?
    # the sweep: smaller still, and the head on conv4_3 (DeepLab-VGG16's features.21), where geometry is nearer
    "aux-depth-w0.02": {"method": "aux_depth", "aux_depth_weight": 0.02},
    "aux-depth-conv4": {"method": "aux_depth", "aux_depth_weight": 0.1, "aux_depth_layer": "features.21"},
    # Method "consistency" (no teacher, no unlabelled frames): a depth pass teaches the plain pass in the same
    # weights; the SN-RGB of these two is the depth pass on another image's depth. No depth dropout: the plain pass
    # already is the pass without depth.
    "consistency": {"method": "consistency", "consistency_weight": 1.0, "consistency_control": "shuffled_depth",
                    "depth_dropout": 0.0},
    # the same without the depth pass's own CE: only the plain pass learns from the labels
    "consistency-noce": {"method": "consistency", "consistency_weight": 1.0, "consistency_depth_ce": False,
                         "consistency_control": "shuffled_depth", "depth_dropout": 0.0},
    # the sweep: a lighter consistency term, and T = 1 (the raw distributions)
    "consistency-w0.3": {"method": "consistency", "consistency_weight": 0.3, "consistency_control": "shuffled_depth",
                         "depth_dropout": 0.0},
    "consistency-t1": {"method": "consistency", "consistency_weight": 1.0, "consistency_temperature": 1.0,
                       "consistency_control": "shuffled_depth", "depth_dropout": 0.0},
    # The paper's method on its two schedules (no unlabelled frames: they are generated but not used), each with
    # its control SN-RGB (BL@TN as the teacher, on the same schedule).
    "removal": {"method": "removal"},
    "removal-one": {"method": "removal", "schedule": "one"},
}
ROWS = ("start", "BL", "BL@cost", "BL@long", "TN", "SN", "SN-RGB", "SN-RGB@long")
#: Rows that need ``--long-factor``.
LONG_ROWS = ("BL@long", "SN-RGB@long")
#: Rows that depend on neither the variant nor the unlabelled ratio: measured once per (setting, size, seed,
#: epochs) and copied into the other cells (training is deterministic at one thread).
SHARED_ROWS = ("BL", "BL@cost", "BL@long")


def _settings(variant: str) -> dict[str, Any]:
    return {"method": "unlabelled", **VARIANTS[variant]}


def _trains_teacher(variant: str) -> bool:
    """Whether the variant's SN continues from the TN row's teacher: TN is trained for it, its cost includes TN's."""
    return METHODS[_settings(variant)["method"]].trains_teacher


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _key(r: dict[str, Any]) -> tuple:
    return (r["setting"], r["n_train"], r["ratio"], r["seed"], r["variant"], r["row"], r["teacher_epochs"],
            r["student_epochs"], r.get("epochs"), r.get("start_epochs", 0))


def _row(base: dict[str, Any], row: str, args: argparse.Namespace) -> dict[str, Any]:
    """The fields naming one row of a cell (BL@long also names its epochs, SN-RGB@long its labeller's)."""
    return {**base, "row": row, **({"epochs": args.long_factor * args.student_epochs} if row in LONG_ROWS else {})}


def _shared(records: list[dict[str, Any]], wanted: dict[str, Any]) -> dict[str, Any] | None:
    """A record of the same shared row in another cell (any ratio, any variant), if one was measured."""
    same = ("setting", "n_train", "seed", "teacher_epochs", "student_epochs", "row")
    return next((r for r in records if r.get("epochs") == wanted.get("epochs")
                 and r.get("start_epochs", 0) == wanted.get("start_epochs", 0)
                 and all(r[k] == wanted[k] for k in same)), None)


def run_one(setting: str, n_train: int, ratio: float, seed: int, variant: str, args: argparse.Namespace) -> None:
    """Trains and tests every row of one cell that ``args.out`` does not hold yet."""
    base = {"setting": setting, "n_train": n_train, "ratio": ratio, "seed": seed, "variant": variant,
            "teacher_epochs": args.teacher_epochs, "student_epochs": args.student_epochs,
            **({"start_epochs": args.start_epochs} if args.start_epochs else {})}
    records = _records(args.out)
    done = {_key(r) for r in records}
    settings = _settings(variant)
    skip = {"TN"} if not _trains_teacher(variant) else set()
    skip |= {"SN-RGB@long"} if settings["method"] != "unlabelled" else set()
    skip |= {"start"} if not args.start_epochs else set()
    wanted = tuple(r for r in ROWS if r not in skip and r in args.rows and (r not in LONG_ROWS or args.long_factor))
    todo = [row for row in wanted if _key(_row(base, row, args)) not in done]
    for row in [r for r in todo if r in SHARED_ROWS]:
        measured = _shared(records, _row(base, row, args))
        if measured is not None:
            with open(args.out, "a", encoding="utf-8") as f:
                f.write(json.dumps({**measured, **_row(base, row, args), "copied": True}) + "\n")
            todo.remove(row)
    if not set(todo) - {"start"}:  # the start model alone is only the other rows' initial weights
        return
    size = tuple(args.size)
    scenes = {"realistic": True} if setting == "realistic" else {}
    augment = train_transforms(size, scale_range=None, color_jitter=0.0)
    train = SyntheticRGBD(n_train, size, split="train", seed=seed, transform=augment, cache=True, **scenes)
    unlabelled = SyntheticRGBD(round(n_train * ratio), size, split="unlabelled", seed=seed, transform=augment,
                               cache=True, **scenes)
    test = SyntheticRGBD(args.test, size, split="test", seed=seed, transform=eval_transforms(), cache=True, **scenes)
    torch.manual_seed(seed)
    model = deeplab_vgg16(train.num_classes, width=args.width)

    def distiller(start: torch.nn.Module, **more: Any) -> Distiller:
        return Distiller(start, train.num_classes, "default", **settings, **more, batch_size=args.batch, lr=args.lr,
                         seed=seed, device="cpu", progress=False, log_every=0, log_echo=False,
                         optimizer=lambda params: torch.optim.Adam(params, lr=args.lr))

    d = distiller(model)

    def record(row: str, trained: torch.nn.Module, began: float, *, depth: bool = False) -> None:
        metrics = d.evaluate(trained, test, use_depth=depth)
        fields = {**_row(base, row, args), "miou": metrics["mean_iou"], "mpa": metrics["mean_pixel_accuracy"],
                  "seconds": round(time.perf_counter() - began, 2),
                  "per_class_iou": [None if math.isnan(v) else v for v in metrics["per_class_iou"]]}
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(fields) + "\n")
        print(f"  {row:8s} {variant:10s} mIoU {100 * fields['miou']:5.1f}  ({fields['seconds']:.0f} s)", flush=True)

    if args.start_epochs:
        # BL trained for the start epochs becomes the initial weights of every row (deterministic at one thread,
        # so a rerun that needs other rows trains the same start model again)
        began = time.perf_counter()
        model = d.train_baseline(train, args.start_epochs, name="start")
        if "start" in todo:
            record("start", model, began)
        d = distiller(model)
    epochs = {"BL": args.student_epochs, "BL@cost": args.teacher_epochs + args.student_epochs,
              "BL@long": args.long_factor * args.student_epochs}
    for row in SHARED_ROWS:
        if row in todo:
            began = time.perf_counter()
            record(row, d.train_baseline(train, epochs[row], name=row.lower().replace("@", "_")), began)
    extra = {"unlabelled_data": unlabelled} if d.method.uses_unlabelled else {}
    if {"TN", "SN"} & set(todo):
        if "TN" in wanted:
            began = time.perf_counter()
            d.train_teacher(train, args.teacher_epochs, student_epochs=args.student_epochs)
            record("TN", d.teacher, began, depth=True)
        if "SN" in todo:
            began = time.perf_counter()
            sn = d.train(train, teacher_epochs=args.teacher_epochs, student_epochs=args.student_epochs, **extra)
            record("SN", sn, began)
    if "SN-RGB" in todo:
        began = time.perf_counter()
        control = d.train_control(train, teacher_epochs=args.teacher_epochs, student_epochs=args.student_epochs,
                                  **extra)
        record("SN-RGB", control, began)
    if "SN-RGB@long" in todo:
        began = time.perf_counter()
        # a Distiller of its own, from the same initial weights: the labeller's epochs are a setting
        longer = distiller(d.initial_copy(), control_labeller_epochs=epochs["BL@long"])
        control = longer.train_control(train, teacher_epochs=args.teacher_epochs,
                                       student_epochs=args.student_epochs, **extra)
        record("SN-RGB@long", control, began)


def _stats(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:+.1f}" if values else "-"
    return f"{statistics.fmean(values):+.1f} ± {statistics.stdev(values):.1f}"


def _seconds(rows: dict[str, dict[str, Any]], row: str, variant: str) -> float:
    """A row's training time; SN of a method that continues from TN's teacher includes the teacher's."""
    teacher = rows["TN"]["seconds"] if row == "SN" and _trains_teacher(variant) else 0.0
    return rows[row]["seconds"] + teacher


def _cells(paths: list[Path]) -> list[tuple[tuple, dict[int, dict[str, dict[str, Any]]]]]:
    """Every cell (setting, labelled, ratio, variant, TN epochs, SN epochs, start epochs: 0 from the
    initialisation) with its records by seed and row."""
    cells: dict[tuple, dict[int, dict[str, dict[str, Any]]]] = {}
    for r in (r for p in paths for r in _records(p)):
        key = (r["setting"], r["n_train"], r["ratio"], r["variant"], r["teacher_epochs"], r["student_epochs"],
               r.get("start_epochs", 0))
        cells.setdefault(key, {}).setdefault(r["seed"], {}).setdefault(r["row"], r)  # a row's first record counts
    return sorted(cells.items())


def _diffs(rs: dict[int, dict[str, dict[str, Any]]], a: str, b: str) -> list[float]:
    return [100 * (rows[a]["miou"] - rows[b]["miou"]) for _, rows in sorted(rs.items()) if a in rows and b in rows]


def overview(paths: list[Path]) -> str:
    """One line per cell that has SN: what it trains on and for how long, its per-seed gains over BL, over its
    control and over the longer baselines (mean ± std), and its training time relative to BL (the median over
    seeds: a seed timed on a busier machine does not move it)."""
    lines = ["| SN (variant) | scenes | labelled | unlabelled | TN + SN epochs | seeds | SN − BL | SN − SN-RGB "
             "| SN − BL@cost | SN − BL@long | time (× BL) |", "|---" * 11 + "|"]
    for (setting, n, ratio, variant, te, se, start), rs in _cells(paths):
        have = [s for s in sorted(rs) if "SN" in rs[s]]
        if not have:
            continue
        method = _settings(variant)["method"]
        teacher = te if _trains_teacher(variant) else 0
        cost = [_seconds(rs[s], "SN", variant) / rs[s]["BL"]["seconds"] for s in have if "BL" in rs[s]]
        long = [rs[s]["BL@long"]["epochs"] for s in have if "BL@long" in rs[s]]
        cells = [_stats(_diffs(rs, "SN", b)) for b in ("BL", "SN-RGB", "BL@cost", "BL@long")]
        cells[3] += f" ({long[0]} ep)" if long else ""
        schedule = (f"BL {start} → " if start else "") + f"{teacher} + {se}"
        lines.append(f"| {method} ({variant}) | {setting} | {n} | {ratio:g}× | {schedule} | {len(have)} | "
                     + " | ".join(cells) + (f" | {statistics.median(cost):.1f} |" if cost else " | - |"))
    return "\n".join(lines)


def summarize(paths: list[Path]) -> str:
    """Markdown tables: each row's mIoU (mean ± std over seeds) and training time relative to BL (median over
    seeds), the per-seed differences (mean ± std) and each row's IoU per class."""
    lines = []
    for (setting, n, ratio, variant, te, se, start), rs in _cells(paths):
        seeds = sorted(rs)
        lines += [(f"### {setting}, {n} labelled, {ratio:g}x unlabelled, {variant} ("
                   + (f"every row from BL trained {start} epochs; " if start else "") + f"TN {te}, SN {se} epochs; "
                   f"seeds {seeds})"), "", "| row | mIoU % | time (× BL) |", "|---|---|---|"]
        for row in ROWS:
            have = [s for s in seeds if row in rs[s]]
            if not have:
                continue
            miou = [100 * rs[s][row]["miou"] for s in have]
            cost = [_seconds(rs[s], row, variant) / rs[s]["BL"]["seconds"] for s in have
                    if "BL" in rs[s] and rs[s]["BL"]["seconds"]]
            mean = statistics.fmean(miou)
            spread = f" ± {statistics.stdev(miou):.1f}" if len(miou) > 1 else ""
            label = {"BL@long": f"{row} ({rs[have[0]][row].get('epochs')} epochs)",
                     "SN-RGB@long": f"{row} (labeller {rs[have[0]][row].get('epochs')} epochs)"}.get(row, row)
            lines.append(f"| {label} | {mean:.1f}{spread} | {statistics.median(cost):.1f} |" if cost else
                         f"| {label} | {mean:.1f}{spread} | - |")
        lines += ["", "| difference (per seed) | mIoU points | per seed |", "|---|---|---|"]
        for a, b in (("SN", "BL"), ("SN", "SN-RGB"), ("SN-RGB", "BL"), ("SN", "BL@cost"), ("SN", "BL@long"),
                     ("SN", "SN-RGB@long"), ("SN-RGB@long", "BL@long"), ("TN", "BL"), ("BL", "start"),
                     ("SN", "start")):
            diffs = _diffs(rs, a, b)
            if not diffs:
                continue
            lines.append(f"| {a} − {b} | {_stats(diffs)} | {', '.join(f'{v:+.1f}' for v in diffs)} |")
        lines += ["", *_per_class(rs, seeds), ""]
    return "\n".join(lines)


def _per_class(rs: dict[int, dict[str, dict[str, Any]]], seeds: list[int]) -> list[str]:
    """Per-class IoU (%), mean over the seeds where the class occurs in the test scenes, for every row."""
    rows = [row for row in ROWS if any(row in rs[s] for s in seeds)]
    lines = ["| class | " + " | ".join(rows) + " |", "|---" * (len(rows) + 1) + "|"]
    n_classes = len(next(iter(rs[seeds[0]].values()))["per_class_iou"])
    for c in range(n_classes):
        cells = []
        for row in rows:
            values = [100 * rs[s][row]["per_class_iou"][c] for s in seeds
                      if row in rs[s] and rs[s][row]["per_class_iou"][c] is not None]
            cells.append(f"{statistics.fmean(values):.1f}" if values else "-")
        lines.append(f"| {CLASS_NAMES[c]} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    """Parses the options; runs the study, or summarises a finished one."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="JSON-lines file the rows are appended to")
    parser.add_argument("--summarize", type=Path, nargs="+", help="print the tables of these files and exit")
    parser.add_argument("--overview", action="store_true", help="with --summarize: one line per cell only")
    parser.add_argument("--settings", nargs="+", default=["realistic"], choices=["depth-only", "realistic"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train", type=int, nargs="+", default=[192], help="labelled-set sizes")
    parser.add_argument("--ratio", type=float, nargs="+", default=[3.0], help="unlabelled frames per labelled image")
    parser.add_argument("--variants", nargs="+", default=["soft-init"], choices=list(VARIANTS))
    parser.add_argument("--test", type=int, default=96, help="test scenes")
    parser.add_argument("--size", type=int, nargs=2, default=[72, 96], metavar=("H", "W"))
    parser.add_argument("--width", type=float, default=0.125, help="DeepLab-VGG16 channel multiplier")
    parser.add_argument("--teacher-epochs", type=int, default=30)
    parser.add_argument("--student-epochs", type=int, default=30)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS, help="the rows to measure")
    parser.add_argument("--long-factor", type=int, default=0,
                        help="also train BL@long, BL for this many times the student's epochs (0: not)")
    parser.add_argument("--start-epochs", type=int, default=0,
                        help="start every row from BL trained for this many epochs (0: from the initialisation)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam's learning rate (poly decay per phase)")
    args = parser.parse_args()
    if args.summarize:
        print(overview(args.summarize) if args.overview else summarize(args.summarize))
        return
    if args.out is None:
        parser.error("--out is required to run the study")
    print(f"# {machine_description(torch.device('cpu'))}; {time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    for seed in args.seeds:  # seeds outermost: a study cut off early still has every cell, at fewer seeds
        for setting in args.settings:
            for n in args.train:
                for ratio in args.ratio:
                    for variant in args.variants:
                        print(f"## {setting}, {n} labelled, {ratio:g}x unlabelled, {variant}, seed {seed}", flush=True)
                        run_one(setting, n, ratio, seed, variant, args)


if __name__ == "__main__":
    main()
