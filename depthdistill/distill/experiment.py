"""The paper's experiment: the baseline, the teacher, the student and the ablations and controls around it, each
row trained by composing the phase pieces, then tested on one test set.

========  =============================  =========================  ===================
row       starts from                    loss, input                epochs
========  =============================  =========================  ===================
BL        initial weights                CE, RGB                    ``baseline_epochs``
BL@TN     initial weights                CE, RGB                    ``teacher_epochs``
TN        initial weights, depth-aware   CE, RGB-D                  ``teacher_epochs``
TN→RGB    TN's weights, plain convs      (not trained), RGB         0
SN        the settings' method           (the method's), RGB        ``student_epochs``
BL+VTCE   initial weights                student loss (TN), RGB     ``baseline_epochs``
BL+PS     TN's weights (a copy)          CE, RGB                    ``student_epochs``
BL@TN+PS  BL@TN's weights (a copy)       CE, RGB                    ``student_epochs``
SN-RGB    the method's control           (the method's), RGB        ``student_epochs``
========  =============================  =========================  ===================

With the default method (``"removal"``) SN is TN's weights (the same ones) trained with CE + VTCE against TN.
``baseline_epochs`` defaults to ``teacher_epochs + student_epochs``, the training SN gets in total, so a gain of SN
over BL is not merely more training. BL@TN+PS is the control for SN: the same two schedules with no depth anywhere,
so SN − BL@TN+PS is what the depth-trained teacher adds, and BL@TN+PS − BL what splitting training in two costs.
SN-RGB is the control a method defines for itself (:meth:`~depthdistill.distill.methods.Method.train_control`):
for ``"removal"``, SN's pipeline with BL@TN as the teacher (CE + the student loss against its own frozen copy, RGB
in, on SN's schedule); for ``"unlabelled"``, the same student with BL@TN as the labeller of the unlabelled frames;
so SN − SN-RGB is what depth adds. With ``schedule="one"`` SN (and BL+PS, SN without VTCE) and SN-RGB go on with
their teacher's optimiser and learning-rate decay; every other row decays over its own epochs.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch.nn as nn

from depthdistill.convert import convert_to_plain
from depthdistill.distill import student, switch
from depthdistill.distill.results import ResultRow, ResultsTable
from depthdistill.engine.distributed import barrier, is_main_process
from depthdistill.errors import ConfigError

if TYPE_CHECKING:
    from depthdistill.distill.distiller import Data, Distiller
    from depthdistill.distill.methods import Method

__all__ = ["EXPERIMENT_ROWS", "DEFAULT_ROWS", "ABLATION_ROWS", "ROW_NOTES", "evaluate_row", "run_experiment",
           "row_folder", "row_note"]

#: Rows :func:`run_experiment` knows, in the order it reports them.
EXPERIMENT_ROWS = ("BL", "BL@TN", "TN", "TN→RGB", "SN", "SN-RGB", "BL+VTCE", "BL+PS", "BL@TN+PS")
#: The rows trained when none are asked for, and those ``ablations=True`` adds (the paper's Table 3).
DEFAULT_ROWS = ("BL", "TN", "TN→RGB", "SN")
ABLATION_ROWS = ("BL+VTCE", "BL+PS")


#: Each row in one line (the module's table in words, for reports; SN as the default method trains it) and the
#: schedule whose epochs it trains (``"teacher"``, ``"student"``, ``"baseline"``; ``None``: trains nothing).
#: ``{epochs}`` is the row's own, ``{teacher_epochs}`` TN's.
ROW_NOTES: dict[str, tuple[str | None, str]] = {
    "BL": ("baseline", "the baseline: the plain network from its initial weights, trained with cross-entropy (CE) on "
                       "RGB for {epochs}, as many as TN and SN together, so that a gain of SN is not merely more "
                       "training"),
    "BL@TN": ("teacher", "the baseline at the teacher's epochs: BL trained for {epochs} only, as many as TN, so that "
                         "TN's gain from depth is seen at equal training"),
    "TN": ("teacher", "the teacher network: the same network with depth-aware convolutions (D-Conv), from the "
                      "initial weights, trained with CE on RGB-D for {epochs}"),
    "TN→RGB": (None, "TN's trained weights run as plain convolutions on RGB, not trained further: what removing "
                     "depth costs before the student trains"),
    "SN": ("student", "the student network: TN's weights themselves (parameter sharing, PS) as plain convolutions, "
                      "trained on RGB with CE plus variable-temperature cross-entropy (VTCE) against the frozen "
                      "teacher for {epochs} after TN's {teacher_epochs}: the paper's method"),
    "SN-RGB": ("student", "the control of a method without depth (the method's own: for the paper's, SN's training "
                          "with BL@TN as the teacher; for \"unlabelled\", the same student with BL@TN labelling the "
                          "unlabelled frames) for {epochs}: SN − SN-RGB is what depth adds"),
    "BL+VTCE": ("baseline", "ablation (the paper's Table 3): the plain network from its initial weights, trained on "
                            "RGB with SN's loss (CE + VTCE against TN) for {epochs}: VTCE without parameter sharing"),
    "BL+PS": ("student", "ablation (the paper's Table 3): a copy of TN's weights as plain convolutions, trained with "
                         "CE alone on RGB for {epochs}: parameter sharing without VTCE"),
    "BL@TN+PS": ("student", "the control for SN without depth: a copy of BL@TN trained on with CE on RGB for "
                            "{epochs}, SN's two schedules with no depth anywhere (SN − BL@TN+PS is what the "
                            "depth-trained teacher adds)"),
}


def row_note(row: str, method: Method | None = None) -> tuple[str | None, str]:
    """A row's schedule and one-line description (:data:`ROW_NOTES`), ``SN`` and ``SN-RGB`` as ``method`` trains
    them (:attr:`~depthdistill.distill.methods.Method.row_notes`).

    Examples:
        >>> row_note("BL@TN")[0]
        'teacher'
    """
    schedule, note = ROW_NOTES[row]
    return schedule, (method.row_notes.get(row, note) if method is not None else note)


def row_folder(row: str) -> str:
    """The folder under ``out_dir`` of a row's phase (also the phase's name in logs): the row's name in lower
    case with ``@``, ``+`` and ``-`` as ``_`` (``BL@TN+PS`` → ``bl_tn_ps``); TN→RGB has none (it trains nothing).

    Examples:
        >>> [row_folder(r) for r in ("BL", "TN", "SN", "BL@TN+PS", "BL+VTCE", "SN-RGB")]
        ['bl', 'tn', 'sn', 'bl_tn_ps', 'bl_vtce', 'sn_rgb']
    """
    return re.sub(r"[@+-]", "_", row).lower()


@dataclass
class _Trained:
    model: nn.Module
    epochs: int
    phase: str


@dataclass
class _Plan:
    """What one :func:`run_experiment` call trains: the data and the epochs of each schedule."""

    distiller: Distiller
    train_data: Data
    val_data: Data | None
    teacher_epochs: int
    student_epochs: int
    baseline_epochs: int
    unlabelled_data: Data | None


def _plain_row(plan: _Plan, start: nn.Module, row: str, epochs: int, *, use_teacher: bool = False,
               from_teacher: bool = False, lr_scale: float = 1.0) -> _Trained:
    name = row_folder(row)
    model = student.train_plain(plan.distiller, start, plan.train_data, epochs, plan.val_data,
                                use_teacher=use_teacher, from_teacher=from_teacher, name=name, lr_scale=lr_scale)
    return _Trained(model, epochs, name)


def _teacher(plan: _Plan, trained: dict[str, _Trained]) -> _Trained:
    d = plan.distiller
    d.train_teacher(plan.train_data, plan.teacher_epochs, plan.val_data, name=row_folder("TN"),
                    student_epochs=plan.student_epochs)
    return _Trained(d.teacher, plan.teacher_epochs, row_folder("TN"))


def _method_row(row: str) -> Callable[[_Plan, dict[str, _Trained]], _Trained]:
    """SN (the settings' method) or SN-RGB (its control)."""

    def train(plan: _Plan, trained: dict[str, _Trained]) -> _Trained:
        d = plan.distiller
        run = d.train if row == "SN" else d.train_control
        model = run(plan.train_data, teacher_epochs=plan.teacher_epochs, student_epochs=plan.student_epochs,
                    val_data=plan.val_data, unlabelled_data=plan.unlabelled_data)
        return _Trained(model, plan.student_epochs, row_folder(row))

    return train


#: How each row is trained, in training order (a row may use the rows before it), and the rows it needs.
_ROWS: dict[str, tuple[tuple[str, ...], Callable[[_Plan, dict[str, _Trained]], _Trained]]] = {
    "BL": ((), lambda p, t: _plain_row(p, p.distiller.initial_copy(), "BL", p.baseline_epochs)),
    # Through train_baseline, so that a method's control needing the same model (the unlabelled method's RGB
    # labeller) reuses it.
    "BL@TN": ((), lambda p, t: _Trained(p.distiller.train_baseline(p.train_data, p.teacher_epochs, p.val_data,
                                                                   name=row_folder("BL@TN")),
                                        p.teacher_epochs, row_folder("BL@TN"))),
    "BL@TN+PS": (("BL@TN",), lambda p, t: _plain_row(p, copy.deepcopy(t["BL@TN"].model), "BL@TN+PS",
                                                     p.student_epochs,
                                                     lr_scale=p.distiller.settings.student_lr_scale)),
    "TN": ((), _teacher),
    "TN→RGB": (("TN",), lambda p, t: _Trained(convert_to_plain(copy.deepcopy(p.distiller.teacher)), 0,
                                              row_folder("TN"))),
    "BL+VTCE": (("TN",), lambda p, t: _plain_row(p, p.distiller.initial_copy(), "BL+VTCE", p.baseline_epochs,
                                                 use_teacher=True)),
    # A copy of the live teacher (trainable, unlike the frozen one), before SN makes it the student.
    "BL+PS": (("TN",), lambda p, t: _plain_row(p, switch.remove_depth(p.distiller, copy.deepcopy(p.distiller.model),
                                                                      p.train_data),
                                               "BL+PS", p.student_epochs, from_teacher=True)),
    # The method trains (or reuses) whatever teacher it needs itself; its control trains after it (it may reuse
    # the live model's folders otherwise).
    "SN": ((), _method_row("SN")),
    "SN-RGB": ((), _method_row("SN-RGB")),
}


def evaluate_row(distiller: Distiller, name: str, model: nn.Module, test_data: Data, *, epochs: int, phase: str,
                 use_depth: bool = False) -> ResultRow:
    """Tests a model ``distiller`` trained and makes its table row; the test metrics also go to the run's log.

    Args:
        distiller: The Distiller that trained ``model`` (its phase ``phase`` gives the row's training seconds).
        name: The row's name.
        model: The trained model.
        test_data: RGB-D test samples.
        epochs: Epochs the row's own phase trained (0: none, and no training seconds).
        phase: The phase that trained it (:func:`row_folder` of the row for the experiment's rows).
        use_depth: Test on RGB-D (a depth-aware model) rather than RGB.

    Returns:
        The row: mPA, mIoU, pixel accuracy, IoU per class, epochs and training seconds.

    Examples:
        >>> from depthdistill import Distiller
        >>> from depthdistill.data import SyntheticRGBD
        >>> data = SyntheticRGBD(num_samples=4, size=(16, 16), split="train")
        >>> d = Distiller(nn.Conv2d(3, data.num_classes, 3, padding=1), data.num_classes, device="cpu",
        ...               progress=False, log_every=0, log_echo=False)
        >>> model = d.train_baseline(data, 1, name="mine")
        >>> row = evaluate_row(d, "mine", model, data, epochs=1, phase="mine")
        >>> row.name, row.input, row.epochs, len(row.per_class_iou) == data.num_classes
        ('mine', 'RGB', 1, True)
    """
    metrics = distiller.evaluate(model, test_data, use_depth=use_depth)
    distiller.log.write({"phase": phase, "row": name,
                         "test": {k: v for k, v in metrics.items() if k != "confusion_matrix"}})
    return ResultRow(name=name, input="RGB-D" if use_depth else "RGB",
                     mean_pixel_accuracy=metrics["mean_pixel_accuracy"], mean_iou=metrics["mean_iou"],
                     pixel_accuracy=metrics["pixel_accuracy"], epochs=epochs,
                     seconds=round(distiller.fits[phase].seconds, 3) if epochs else 0.0,
                     per_class_iou=metrics["per_class_iou"])


def run_experiment(distiller: Distiller, train_data: Data, test_data: Data, *, teacher_epochs: int,
                   student_epochs: int, baseline_epochs: int | None = None, val_data: Data | None = None,
                   ablations: bool = False, rows: Sequence[str] | None = None,
                   unlabelled_data: Data | None = None) -> ResultsTable:
    """Trains BL, TN and SN (and, with ``ablations``, BL+VTCE and BL+PS, or the ``rows`` asked for) and tests each.

    See the module's table for every row. TN is tested on RGB-D, every other row on RGB. The table is written to
    ``out_dir/results.json`` (rank 0). With ``resume`` finished rows are loaded, not retrained.

    Args:
        distiller: The Distiller whose model and settings train every row.
        train_data: RGB-D training samples.
        test_data: RGB-D test samples.
        teacher_epochs: Epochs of TN and BL@TN.
        student_epochs: Epochs of SN, BL+PS and BL@TN+PS.
        baseline_epochs: Epochs of BL and BL+VTCE (default ``teacher_epochs + student_epochs``).
        val_data: Optional validation set for every phase.
        ablations: Add BL+VTCE and BL+PS to the default rows (:data:`DEFAULT_ROWS`).
        rows: Explicit rows instead (any of :data:`EXPERIMENT_ROWS`).
        unlabelled_data: Unlabelled RGB-D frames for a method that uses them (SN and SN-RGB).

    Returns:
        The :class:`~depthdistill.distill.results.ResultsTable`, rows in the order of :data:`EXPERIMENT_ROWS`.

    Raises:
        ConfigError: For an unknown row.
    """
    wanted = list(rows) if rows is not None else [*DEFAULT_ROWS, *(ABLATION_ROWS if ablations else ())]
    unknown = sorted(set(wanted) - set(EXPERIMENT_ROWS))
    if unknown or not wanted:
        raise ConfigError(f"unknown experiment row(s) {unknown or wanted}; choose from {list(EXPERIMENT_ROWS)}")
    plan = _Plan(distiller, train_data, val_data, teacher_epochs, student_epochs,
                 teacher_epochs + student_epochs if baseline_epochs is None else baseline_epochs, unlabelled_data)
    needed = set(wanted)
    for row in reversed(_ROWS):  # a row's needs come before it, so one pass backwards collects them all
        if row in needed:
            needed.update(_ROWS[row][0])
    trained: dict[str, _Trained] = {}
    for row, (_, train_row) in _ROWS.items():
        if row in needed:
            trained[row] = train_row(plan, trained)

    distiller.models = {row: done.model for row, done in trained.items() if row in wanted}
    table_rows = []
    for row in (r for r in EXPERIMENT_ROWS if r in wanted):
        done = trained[row]
        table_rows.append(evaluate_row(distiller, row, done.model, test_data, epochs=done.epochs, phase=done.phase,
                                       use_depth=row == "TN"))
    table = ResultsTable(table_rows, info={
        "num_classes": distiller.num_classes, "distill": distiller.settings.to_dict(),
        "beta": getattr(distiller.student_loss, "beta", None), "depth_aware_layers": distiller.depth_aware_layers,
        "teacher_epochs": teacher_epochs, "student_epochs": student_epochs, "baseline_epochs": plan.baseline_epochs,
        "settings": distiller.train_settings.to_dict(),
        "note": "seconds: training time of this call (a resumed row counts only what it trained now)",
    })
    if distiller.out_dir is not None and is_main_process():
        table.save_json(distiller.out_dir / "results.json")
    barrier()
    return table
