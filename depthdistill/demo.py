"""``depthdistill demo``: the library's default end to end on the built-in synthetic RGB-D data, in minutes on a CPU.

The synthetic data has labelled scenes and three times as many unlabelled RGB-D frames, so the Distiller's
default is the unlabelled-data method, applied as docs/fidelity.md measured it to pay: to an RGB model trained to
convergence. A slim DeepLab-VGG16 is first trained on RGB (row ``start``: the model a user already has); from its
weights are trained the baseline (BL for the teacher's and the student's epochs together, BL@TN for the teacher's
only: as many steps as the student), the depth-aware teacher (TN), the RGB student that also learns from TN's
targets on the unlabelled frames (SN) and its control without depth (SN-RGB, BL@TN labelling the frames). With
``removal=True`` it runs the paper's depth removal instead, from the initialisation, with TN→RGB, the two ablations
of the paper's Table 3 (BL+VTCE, BL+PS) and SN's control without depth (BL@TN+PS). Every row is tested and the
table printed in the paper's form. The first line printed says what will be trained and for
how long (:func:`demo_plan`); figures and a one-page report, with a line on every row, go to the output folder.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from depthdistill.distill import EXPERIMENT_ROWS, Distiller, ResultRow, ResultsTable
from depthdistill.distill.experiment import evaluate_row, row_note
from depthdistill.distill.methods import Method

__all__ = ["DemoPreset", "PRESETS", "demo_plan", "run_demo"]


@dataclass(frozen=True)
class DemoPreset:
    """Sizes and schedule of one demo run.

    Attributes:
        train_samples: Synthetic training scenes (labelled).
        unlabelled_samples: Unlabelled synthetic RGB-D frames (``SyntheticRGBD(split="unlabelled")``); 0 runs the
            paper's depth removal, which uses none.
        test_samples: Synthetic test scenes.
        size: Image ``(height, width)``.
        width: Channel multiplier of DeepLab-VGG16 (1.0 is the paper's model).
        teacher_epochs: Epochs of TN; BL and BL+VTCE train ``teacher_epochs + student_epochs``.
        student_epochs: Epochs of SN and BL+PS.
        batch_size: Images per step.
        lr: Learning rate of Adam (the demo's choice for a short schedule from scratch; the paper's SGD at
            2.5e-4 with batch 1 needs far more steps than a demo can spend).
        start_epochs: Epochs of BL trained first (row ``start``), whose weights every other row starts from: the
            converged RGB model a user hands the Distiller; 0: every row starts from the seeded initialisation.
    """

    train_samples: int
    unlabelled_samples: int
    test_samples: int
    size: tuple[int, int]
    width: float
    teacher_epochs: int
    student_epochs: int
    batch_size: int
    lr: float
    start_epochs: int = 0


#: ``"full"``: the default method with unlabelled frames applied to a converged RGB model (docs/demo.md; the
#: setting of the unlabelled-data study from a converged start in docs/fidelity.md, 150 epochs being where BL stops
#: gaining at 192 labelled images); ``"quick"``: a smoke run; ``"removal"`` and ``"removal-quick"``: the paper's
#: depth removal (``--removal``), from the initialisation as the paper trains it.
PRESETS = {
    "full": DemoPreset(train_samples=192, unlabelled_samples=576, test_samples=96, size=(72, 96), width=0.125,
                       teacher_epochs=30, student_epochs=30, batch_size=8, lr=2e-3, start_epochs=150),
    "quick": DemoPreset(train_samples=24, unlabelled_samples=48, test_samples=12, size=(48, 64), width=0.0625,
                        teacher_epochs=2, student_epochs=1, batch_size=8, lr=2e-3, start_epochs=2),
    "removal": DemoPreset(train_samples=384, unlabelled_samples=0, test_samples=96, size=(96, 128), width=0.125,
                          teacher_epochs=25, student_epochs=10, batch_size=8, lr=2e-3),
    "removal-quick": DemoPreset(train_samples=24, unlabelled_samples=0, test_samples=12, size=(48, 64),
                                width=0.0625, teacher_epochs=2, student_epochs=1, batch_size=8, lr=2e-3),
}
#: How long a whole run of each preset takes on a 2-core CPU, as measured (docs/demo.md): the full preset
#: 7 min 38 s and the removal preset 9 min 15 s, one after the other on the same idle machine (2026-12-07); the
#: quick ones under 10 s idle, 15–27 s on a busy machine (Python's start-up included).
_DURATIONS = {"full": "about 8 minutes", "quick": "under a minute", "removal": "about 9 minutes",
              "removal-quick": "under a minute"}

#: The rows each demo trains after ``start`` (a preset's ``start_epochs``). With unlabelled frames: the baselines,
#: the teacher, the method and its control. The paper's method: every row but SN-RGB (its control without depth is
#: BL@TN+PS).
DEMO_ROWS = ("BL", "BL@TN", "TN", "SN", "SN-RGB")
REMOVAL_ROWS = tuple(row for row in EXPERIMENT_ROWS if row != "SN-RGB")


def _preset_name(quick: bool, removal: bool) -> str:
    return ("removal" if removal else "full") if not quick else ("removal-quick" if removal else "quick")


def _epochs(count: int) -> str:
    return f"{count} epoch" if count == 1 else f"{count} epochs"


def demo_plan(quick: bool = False, removal: bool = False) -> str:
    """The first line ``depthdistill demo`` prints: what it will train, on what, and how long the run takes.

    Args:
        quick: Describe the smoke run instead of the full one.
        removal: Describe the paper's depth removal instead of the default with unlabelled frames.

    Returns:
        One line: the preset and its measured duration, every row with its epochs, the data, the model and the
        optimiser.

    Examples:
        >>> line = demo_plan(removal=True)
        >>> line.startswith("depthdistill demo --removal, full preset: about 9 minutes on a 2-core CPU")
        True
        >>> "BL (35), BL@TN (25), TN (25), TN→RGB (0), SN (10)" in line
        True
        >>> "start (150), BL (60)" in demo_plan()
        True
    """
    name = _preset_name(quick, removal)
    preset = PRESETS[name]
    # BL and BL+VTCE keep run_experiment's default baseline_epochs, the teacher's and the student's together.
    epochs = {"teacher": preset.teacher_epochs, "student": preset.student_epochs,
              "baseline": preset.teacher_epochs + preset.student_epochs, None: 0}
    demo_rows = REMOVAL_ROWS if removal else DEMO_ROWS
    rows = ", ".join([f"start ({preset.start_epochs})"] * bool(preset.start_epochs)
                     + [f"{row} ({epochs[row_note(row)[0]]})" for row in demo_rows])
    command = "depthdistill demo" + (" --removal" if removal else "")
    full = _preset_name(False, removal)
    head = (f"{command} --quick, a smoke run of seconds ({_DURATIONS[name]} on a 2-core CPU; the full "
            f"preset takes {_DURATIONS[full]})" if quick
            else f"{command}, full preset: {_DURATIONS[full]} on a 2-core CPU (--quick: a smoke run of seconds)")
    method = (" the paper's depth removal;" if removal else
              " the unlabelled-data method (the default when unlabelled frames are given), "
              f"{preset.unlabelled_samples} unlabelled frames;")
    if preset.start_epochs:
        method += " every row after start continues from start's weights (a converged RGB model);"
    height, width = preset.size
    return (f"{head}. Trains and tests {len(demo_rows) + bool(preset.start_epochs)} rows, epochs in "
            f"parentheses: {rows};{method} data: built-in synthetic RGB-D scenes, {preset.train_samples} train / "
            f"{preset.test_samples} test at {height}x{width}; model: DeepLab-VGG16 at width {preset.width:g}; "
            f"batch {preset.batch_size}, Adam at lr {preset.lr:g}. TN is tested on RGB-D, every other row on RGB; "
            "the report says what each row is.")


#: The report's line on row ``start``, which is not one of run_experiment's: the demo trains it first and builds the
#: Distiller on its weights, as a user hands the Distiller the RGB model they have.
_START_NOTE = ("the RGB model a user already has: the plain network trained with CE on RGB for {epochs} from the "
               "seeded initialisation; the Distiller is built on it, so every other row starts from its weights "
               "(their \"initial weights\")")


def _row_note(row: ResultRow, teacher_epochs: int, method: Method) -> str:
    """The report's line on ``row``: what it is (:func:`~depthdistill.distill.experiment.row_note`, SN as
    ``method`` trains it, or :data:`_START_NOTE`), with its epochs and test input."""
    template = _START_NOTE if row.name == "start" else row_note(row.name, method)[1]
    what = template.format(epochs=_epochs(row.epochs), teacher_epochs=_epochs(teacher_epochs))
    return f"{what}; tested on {row.input}."


def run_demo(out_dir: str | Path = "runs/demo", *, quick: bool = False, removal: bool = False, seed: int = 0,
             device: str = "auto", progress: bool | None = None) -> ResultsTable:
    """Trains and tests every row of :data:`DEMO_ROWS` (:data:`REMOVAL_ROWS` with ``removal``) on synthetic data,
    after row ``start`` where the preset has ``start_epochs``; writes results, figures and a report.

    Prints :func:`demo_plan` first, then each phase's epoch lines.

    Args:
        out_dir: Output folder: ``results.json``, ``metrics.jsonl``, the figures, ``report.md`` /
            ``report.html`` and each phase's checkpoints.
        quick: A smoke run (preset ``"quick"`` / ``"removal-quick"``) instead of the full one.
        removal: The paper's depth removal (presets ``"removal"``, ``"removal-quick"``, no unlabelled frames)
            instead of the library's default with unlabelled frames.
        seed: Seed of the data and of every phase.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        progress: Progress bars (``None``: only on a terminal).

    Returns:
        The measured table (never edited).

    Examples:
        >>> table = run_demo(tmp_path, quick=True, progress=False)  # doctest: +SKIP
        >>> [row.name for row in table]  # doctest: +SKIP
        ['start', 'BL', 'BL@TN', 'TN', 'SN', 'SN-RGB']
    """
    from depthdistill.data import SyntheticRGBD, eval_transforms, train_transforms
    from depthdistill.models import deeplab_vgg16

    # First, before anything is rendered or trained: what this will cost the user, and what they will get.
    print(demo_plan(quick, removal), flush=True)
    preset = PRESETS[_preset_name(quick, removal)]
    out = Path(out_dir)
    # Flips and ImageNet normalisation only: the scenes already vary in layout, scale and colour.
    augment = train_transforms(preset.size, scale_range=None, color_jitter=0.0)
    # Cached: every row trains on the same scenes for many epochs; rendering them was ~40 % of an epoch.
    # Realistic shading: the method removes depth at test time, which only makes sense where RGB can carry what
    # depth taught (shading, shadows, visible sides), as in photographs (docs/data.md).
    train = SyntheticRGBD(num_samples=preset.train_samples, size=preset.size, split="train", seed=seed,
                          transform=augment, cache=True, realistic=True)
    test = SyntheticRGBD(num_samples=preset.test_samples, size=preset.size, split="test", seed=seed,
                         transform=eval_transforms(), cache=True, realistic=True)
    unlabelled = None if removal else SyntheticRGBD(
        num_samples=preset.unlabelled_samples, size=preset.size, split="unlabelled", seed=seed, transform=augment,
        cache=True, realistic=True)
    torch.manual_seed(seed)

    def distiller_of(model: torch.nn.Module) -> Distiller:
        # No settings: the Distiller's default for the data given, the unlabelled-data method when frames are given.
        return Distiller(
            model, train.num_classes, out_dir=out, batch_size=preset.batch_size, lr=preset.lr, seed=seed,
            device=device, progress=progress, log_every=0,
            optimizer=lambda params: torch.optim.Adam(params, lr=preset.lr),
            meta={"demo_preset": asdict(preset), "model": {"name": "deeplab_vgg16", "args": {"width": preset.width}}},
        )

    distiller = distiller_of(deeplab_vgg16(train.num_classes, width=preset.width))
    started = time.perf_counter()
    start_rows = []
    if preset.start_epochs:
        # The recipe docs/fidelity.md measured to pay: a converged RGB model, handed to the Distiller with the frames.
        model = distiller.train_baseline(train, preset.start_epochs, name="start")
        start_rows.append(evaluate_row(distiller, "start", model, test, epochs=preset.start_epochs, phase="start"))
        distiller = distiller_of(model)
    table = distiller.run_experiment(train, test, teacher_epochs=preset.teacher_epochs,
                                     student_epochs=preset.student_epochs,
                                     rows=REMOVAL_ROWS if removal else DEMO_ROWS, unlabelled_data=unlabelled)
    table = ResultsTable([*start_rows, *table], info=table.info)
    table.info.update({"preset": asdict(preset), "total_seconds": round(time.perf_counter() - started, 1),
                       "class_names": list(train.class_names), "quick": quick, "removal": removal})
    table.save_json(out / "results.json")
    _write_figures(out, distiller, table, test)
    return table


def _write_figures(out: Path, distiller: Distiller, table: ResultsTable, test) -> dict[str, Path]:
    from depthdistill import viz
    from depthdistill.data import collate_rgbd
    from depthdistill.nn import depth_context
    from depthdistill.removal import removal_report

    removal = bool(table.info.get("removal"))
    images = {"Training curves": viz.plot_training_curves(out / "metrics.jsonl", out / "training_curves.png")}
    if removal:  # the other method has no VTCE
        images["VTCE temperature (Eq. 10)"] = viz.plot_vtce_schedule(out / "vtce_temperature.png")
    images["IoU per class"] = viz.plot_per_class_iou({row.name: row.per_class_iou for row in table},
                                                     out / "per_class_iou.png", class_names=test.class_names)
    samples = [test[i] for i in range(min(4, len(test)))]
    batch = collate_rgbd(samples)
    predictions = {}
    for name in ("BL", "TN", "SN"):
        model = distiller.models[name].eval()
        device = next(model.parameters()).device
        with torch.no_grad(), depth_context(batch["depth"].to(device)):
            # Only TN has depth-aware layers: the context is simply unused by the plain rows.
            predictions[name] = list(model(batch["rgb"].to(device)).argmax(1).cpu())
    images["Test samples: RGB | depth | ground truth | BL | TN | SN"] = viz.plot_sample_grid(
        samples, predictions, out / "samples.png", palette=test.palette, class_names=test.class_names)
    info = table.info
    notes = (f"Synthetic RGB-D scenes, {info['preset']['train_samples']} train / {info['preset']['test_samples']} test "
             f"at {info['preset']['size'][0]}x{info['preset']['size'][1]}, DeepLab-VGG16 at width "
             f"{info['preset']['width']}, TN {info['teacher_epochs']} epochs, SN {info['student_epochs']}, BL "
             f"{info['baseline_epochs']}; the Distiller's {distiller.settings.preset!r} preset "
             f"({len(distiller.depth_aware_layers)} depth-aware layers, depth resized by "
             f"{distiller.settings.depth_resize!r}, depth dropout "
             f"{distiller.settings.depth_dropout:g}); {info['total_seconds']} s of training and testing on "
             f"{distiller.device}.")
    if info.get("quick"):
        notes = ("**A smoke run** (`--quick`): it checks that everything runs; too short for the numbers to say "
                 "anything about the method (run without `--quick` for that). " + notes)
    tables = {}
    if removal:  # the student of the paper's method is the teacher with depth removed
        head = ("layer", "mean H", "RMS D-Conv, RGB-D", "RMS plain, RGB", "plain / D-Conv")
        body = [(r.name, f"{r.mean_h:.3f}", f"{r.rms_depth_aware:.4g}", f"{r.rms_plain:.4g}", f"{r.ratio:.2f}")
                for r in removal_report(distiller.teacher, batch).layers]
        tables["What removing depth changes in the teacher (depthdistill.removal_report, "
               f"{len(samples)} test images)"] = (head, body)
    else:
        notes += (f" SN also learned from TN's targets on {info['preset']['unlabelled_samples']} unlabelled RGB-D "
                  "frames (their RGB only), each of its steps a labelled and an unlabelled batch; "
                  + ("BL@TN trained as many steps as SN, " if info["teacher_epochs"] == info["student_epochs"] else "")
                  + "BL as many epochs as TN and SN together.")
        if info["preset"]["start_epochs"]:
            notes += (f" Every row but start began from start's weights (BL trained {info['preset']['start_epochs']} "
                      "epochs from the initialisation): the method applied to a converged RGB model, as "
                      "docs/fidelity.md measured it to pay.")
    viz.write_report(out, table, images, title="depthdistill demo", notes=notes,
                     row_notes={row.name: _row_note(row, info["teacher_epochs"], distiller.method) for row in table},
                     tables=tables)
    return images
