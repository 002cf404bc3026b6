"""Figures of a run, each written as a PNG: training curves from the metrics log, the VTCE temperature, IoU per
class, and a grid of samples with every model's prediction.

Figures are matplotlib ``Figure`` objects rendered by the Agg backend, never pyplot's; the metrics log's schema is
described in :mod:`depthdistill.viz`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from depthdistill.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from depthdistill.distill import EXPERIMENT_ROWS, row_folder
from depthdistill.errors import ConfigError
from depthdistill.losses import DEFAULT_BETA, vtce_temperature
from depthdistill.viz.images import (
    VOID_COLOR,
    VOID_LABEL,
    Array,
    as_numpy,
    check_palette,
    colorize,
    depth_to_image,
    rgb_to_image,
)

__all__ = [
    "DEFAULT_METRICS",
    "plot_per_class_iou",
    "plot_sample_grid",
    "plot_training_curves",
    "plot_vtce_schedule",
    "read_metrics_log",
]

DEFAULT_METRICS = ("mean_iou", "mean_pixel_accuracy", "pixel_accuracy")
_METRIC_TITLES = {"mean_iou": "mIoU", "mean_pixel_accuracy": "mPA", "pixel_accuracy": "pixel accuracy"}
#: Loss parts drawn on panels of their own after the CE panel, when a phase logs them: {key: (title, y label)}.
_LOSS_TERMS = {"vtce": ("training VTCE (the distillation term)", "VTCE, mean over the epoch")}
#: {phase name in the log: experiment row}, the inverse of ``row_folder``, in the results table's order.
_ROW_OF_PHASE = {row_folder(row): row for row in EXPERIMENT_ROWS}
_DPI = 120


def _row_colours(names: Sequence[str]) -> dict[str, tuple[float, float, float, float]]:
    """A colour per name, the same for a row in every figure of a run: an experiment row's is its place in
    :data:`~depthdistill.distill.EXPERIMENT_ROWS` in tab10, whatever else is drawn; other names (a phase or row of
    the caller's own) take the colours left free, in the order given."""
    fixed = {name: EXPERIMENT_ROWS.index(name) % 10 for name in names if name in EXPERIMENT_ROWS}
    free = iter([i for i in range(10) if i not in fixed.values()] + list(range(10)))
    return {name: colormaps["tab10"](fixed[name] if name in fixed else next(free)) for name in names}


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI, format="png")
    return path


def read_metrics_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Reads a JSON-lines metrics log (one JSON object per line; blank lines are skipped).

    Args:
        path: The ``metrics.jsonl`` file.

    Returns:
        The records, in file order.

    Raises:
        ConfigError: If the file is missing or a line is not a JSON object.

    Examples:
        >>> import tempfile, pathlib
        >>> log = pathlib.Path(tempfile.mkdtemp()) / "metrics.jsonl"
        >>> _ = log.write_text('{"phase": "teacher", "epoch": 0, "loss": 1.5}\\n\\n')
        >>> read_metrics_log(log)
        [{'phase': 'teacher', 'epoch': 0, 'loss': 1.5}]
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"metrics log {path} does not exist; training writes it as <run dir>/metrics.jsonl")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}, line {number} is not valid JSON ({error}); a metrics log holds one "
                              "JSON object per line") from error
        if not isinstance(record, dict):
            raise ConfigError(f"{path}, line {number} holds a {type(record).__name__}, not a JSON object")
        records.append(record)
    return records


def _epoch_series(records: Iterable[Mapping[str, Any]], key: str) -> dict[str, tuple[list[int], list[float]]]:
    """``{phase: (epochs, values)}`` of ``key`` from the epoch records, last record per epoch winning."""
    table: dict[str, dict[int, float]] = {}
    for record in records:
        if "step" in record or "test" in record or not isinstance(record.get("phase"), str):
            continue
        epoch, value = record.get("epoch"), record.get(key)
        if isinstance(epoch, int) and isinstance(value, (int, float)) and math.isfinite(value):
            table.setdefault(record["phase"], {})[epoch] = float(value)
    return {phase: (sorted(values), [values[e] for e in sorted(values)]) for phase, values in table.items()}


def plot_training_curves(
    log: str | os.PathLike | Sequence[Mapping[str, Any]],
    out_path: str | os.PathLike,
    metrics: Sequence[str] = DEFAULT_METRICS,
) -> Path:
    """Plots the training losses and validation metrics of every phase against the epoch.

    One panel for the training cross-entropy of every phase, one per other loss part logged (VTCE), then one per
    metric found in the log; losses of different kinds never share an axis. The legend names each phase by its
    experiment row (BL, TN, SN, BL+VTCE …). See :mod:`depthdistill.viz` for the schema.

    Args:
        log: Path of a JSON-lines metrics log, or its records already read.
        out_path: The PNG to write.
        metrics: Metric names to plot when present (as ``val_<name>`` or ``<name>``).

    Returns:
        ``out_path`` as a ``Path``.

    Raises:
        ConfigError: If the log has no epoch record with a loss.

    Examples:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "curves.png"
        >>> records = [{"phase": "tn", "epoch": e, "loss": 1.0 / (e + 1), "val_mean_iou": 0.1 * e}
        ...            for e in range(3)]
        >>> records.append({"phase": "sn", "epoch": 0, "loss": 0.9, "ce": 0.5, "vtce": 0.4})
        >>> plot_training_curves(records, out).stat().st_size > 0
        True
    """
    records = read_metrics_log(log) if isinstance(log, (str, os.PathLike)) else list(log)
    losses, ce_parts = _epoch_series(records, "loss"), _epoch_series(records, "ce")
    if not losses:
        raise ConfigError("the metrics log has no epoch record with a loss (need 'phase', 'epoch' and 'loss' "
                          "on one line)")
    # A total of CE + VTCE is not comparable with a CE, so a phase's CE part stands in for its total here.
    panels = [("training cross-entropy (CE)", "CE with the labels, mean over the epoch",
               {phase: ce_parts.get(phase, series) for phase, series in losses.items()}, 1.0)]
    for key, (title, ylabel) in _LOSS_TERMS.items():
        if series := _epoch_series(records, key):
            panels.append((title, ylabel, series, 1.0))
    for metric in metrics:
        series = _epoch_series(records, f"val_{metric}") or _epoch_series(records, metric)
        if series:
            panels.append((_METRIC_TITLES.get(metric, metric), "%", series, 100.0))

    fig = Figure(figsize=(4.2 * len(panels) + 1.2, 3.4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    # Rows in the results table's order and with plot_per_class_iou's colours; other phases follow in log order.
    table_order = {phase: index for index, phase in enumerate(_ROW_OF_PHASE)}
    phases = sorted(dict.fromkeys(phase for _, _, series, _ in panels for phase in series),
                    key=lambda phase: table_order.get(phase, len(table_order)))
    labels = {phase: _ROW_OF_PHASE.get(phase, phase) for phase in phases}
    by_label = _row_colours(list(labels.values()))
    colors = {phase: by_label[label] for phase, label in labels.items()}
    style = {"marker": "o", "markersize": 3}
    for ax, (title, ylabel, series, scale) in zip(axes, panels, strict=True):
        for phase, (epochs, values) in series.items():
            ax.plot([e + 1 for e in epochs], [scale * v for v in values], color=colors[phase],
                    label=labels[phase], **style)
        ax.set_title(title)
        ax.set_xlabel("epoch of the phase (each from its own start)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles = [Line2D([], [], color=colors[phase], label=labels[phase], **style)
               for phase in phases]
    fig.legend(handles=handles, title="row" if set(phases) <= set(_ROW_OF_PHASE) else "phase", fontsize="small",
               loc="outside right upper")
    return _save(fig, out_path)


def plot_vtce_schedule(
    out_path: str | os.PathLike,
    betas: Sequence[float] = (0.1, 0.3, 0.5, 0.9, 1.0),
    epochs: int = 8,
) -> Path:
    """Plots the VTCE temperature ``T(e) = exp(−β (e² − e + 2) / 2)`` (Eq. 10) for several β.

    Two panels, linear and logarithmic, since T spans many orders of magnitude within a few epochs.

    Args:
        out_path: The PNG to write.
        betas: The β values, one curve each (the paper's sensitivity study used 0.1 … 1; 0.9 is its default).
        epochs: Number of epochs shown, ``e = 0 … epochs − 1``.

    Returns:
        ``out_path`` as a ``Path``.

    Examples:
        >>> import tempfile, pathlib
        >>> plot_vtce_schedule(pathlib.Path(tempfile.mkdtemp()) / "vtce.png").suffix
        '.png'
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"epochs must be a positive int, got {epochs!r}")
    if not betas:
        raise ConfigError("give at least one beta")
    fig = Figure(figsize=(9.0, 3.4), layout="constrained")
    linear, logarithmic = fig.subplots(1, 2)
    steps = list(range(epochs))
    for beta in betas:
        temps = [vtce_temperature(e, beta) for e in steps]
        paper = beta == DEFAULT_BETA
        style = {"marker": "o", "markersize": 3, "label": f"β = {beta:g}" + (" (paper)" if paper else ""),
                 "linewidth": 2.2 if paper else 1.2}
        linear.plot(steps, temps, **style)
        logarithmic.semilogy(steps, temps, **style)
    for ax, scale in ((linear, "linear"), (logarithmic, "log")):
        ax.set_title(f"VTCE temperature T(e), {scale} scale")
        ax.set_xlabel("epoch e (0-based)")
        ax.set_ylabel("T")
        ax.grid(alpha=0.3, which="both")
        ax.xaxis.get_major_locator().set_params(integer=True)
    linear.legend(fontsize="small")
    return _save(fig, out_path)


def plot_per_class_iou(
    rows: Mapping[str, Sequence[float]],
    out_path: str | os.PathLike,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Grouped bars of IoU per class, one colour per row (BL, TN, SN …, each row's colour that of its training
    curve in :func:`plot_training_curves`); the legend gives each row's mIoU.

    A NaN IoU (class absent from the test set) draws no bar and is left out of the row's mean; a class with no
    IoU in any row is marked "n/a".

    Args:
        rows: ``{row name: per-class IoU as fractions}``, every row with the same number of classes
            (``{r.name: r.per_class_iou for r in results_table}``).
        out_path: The PNG to write.
        class_names: Tick labels (default: class indices).

    Returns:
        ``out_path`` as a ``Path``.

    Examples:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "iou.png"
        >>> plot_per_class_iou({"BL": [0.5, 0.2], "SN": [0.6, float("nan")]}, out).exists()
        True
    """
    if not rows:
        raise ConfigError("no rows to plot; give {row name: per-class IoU}")
    values = {name: np.asarray(as_numpy(ious), dtype=np.float64) for name, ious in rows.items()}
    shapes = {name: v.shape for name, v in values.items()}
    if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 1 or not next(iter(shapes.values()))[0]:
        raise ConfigError(f"every row needs the same non-empty list of per-class IoUs, got shapes {shapes}")
    num_classes = next(iter(shapes.values()))[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ConfigError(f"{len(names)} class names for {num_classes} classes")

    fig = Figure(figsize=(max(6.0, 0.22 * num_classes * len(values) + 2.0), 3.8), layout="constrained")
    ax = fig.subplots()
    step = 0.8 / len(values)
    colours = _row_colours(list(values))
    for index, (name, ious) in enumerate(values.items()):
        positions = np.arange(num_classes) - 0.4 + step * (index + 0.5)
        present = ~np.isnan(ious)
        mean = 100 * ious[present].mean() if present.any() else math.nan
        ax.bar(positions[present], 100 * ious[present], width=step, label=f"{name} (mIoU {mean:.1f}%)",
               color=colours[name])
    ax.set_xticks(np.arange(num_classes), names, rotation=45 if num_classes > 8 else 0,
                  ha="right" if num_classes > 8 else "center")
    for index in np.flatnonzero(np.isnan(np.stack(list(values.values()))).all(axis=0)):
        ax.text(index, 1, "n/a", ha="center", va="bottom", fontsize="small", color="0.4")
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.set_title("IoU per class")
    ax.grid(axis="y", alpha=0.3)
    fig.legend(fontsize="small", loc="outside right upper")
    return _save(fig, out_path)


def _as_label_map(prediction: Array) -> np.ndarray:
    values = as_numpy(prediction)
    return values.argmax(axis=0) if values.ndim == 3 else values


def plot_sample_grid(
    samples: Sequence[Mapping[str, Any]],
    predictions: Mapping[str, Sequence[Array]],
    out_path: str | os.PathLike,
    palette: Array,
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
    class_names: Sequence[str] | None = None,
) -> Path:
    """A grid with one sample per row: RGB | depth | ground truth | one column per model, and a colour key.

    Depth is coloured per sample over its own range (written under it), holes white; void labels are black. The
    key beside the grid names the colour of every class that appears in a drawn label or prediction (and void).

    Args:
        samples: Sample dicts (``"rgb"``, ``"depth"``, ``"label"``, optional ``"id"`` shown as the row title).
        predictions: ``{column title (e.g. "BL"): one prediction per sample}``, each ``(H, W)`` class indices
            or ``(C, H, W)`` logits (drawn as their argmax).
        out_path: The PNG to write.
        palette: ``(N, 3)`` uint8 label colours (void is black).
        mean: Normalisation mean of the samples' RGB (see :func:`rgb_to_image`).
        std: Normalisation standard deviation of the samples' RGB.
        class_names: Names for the key, one per palette colour (default: class indices).

    Returns:
        ``out_path`` as a ``Path``.

    Examples:
        >>> import tempfile, pathlib, numpy as np
        >>> from depthdistill.viz import label_palette
        >>> sample = {"rgb": np.zeros((3, 4, 4), np.float32), "depth": np.ones((1, 4, 4), np.float32),
        ...           "label": np.zeros((4, 4), np.int64), "id": "a"}
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "grid.png"
        >>> plot_sample_grid([sample], {"BL": [np.zeros((4, 4), np.int64)]}, out, label_palette(2)).exists()
        True
    """
    if not samples:
        raise ConfigError("no samples to draw")
    for name, predicted in predictions.items():
        if len(predicted) != len(samples):
            raise ConfigError(f"{name!r} has {len(predicted)} predictions for {len(samples)} samples")
    table = check_palette(palette)
    names = [str(c) for c in range(len(table))] if class_names is None else [str(n) for n in class_names]
    if len(names) != len(table):
        raise ConfigError(f"{len(names)} class names for a palette of {len(table)} colours")
    titles = ["RGB", "depth (white: none)", "ground truth", *predictions]
    fig = Figure(figsize=(2.0 * len(titles) + 1.5, 1.7 * len(samples) + 0.4), layout="constrained")
    axes = fig.subplots(len(samples), len(titles), squeeze=False)
    shown: set[int] = set()
    for row, sample in enumerate(samples):
        missing = {"rgb", "depth", "label"} - set(sample)
        if missing:
            raise ConfigError(f"sample {row} lacks {sorted(missing)}; samples are dicts with rgb, depth, label")
        depth = as_numpy(sample["depth"]).astype(np.float64)
        valid = depth[np.isfinite(depth) & (depth > 0)]
        labels = [sample["label"], *(_as_label_map(predicted[row]) for predicted in predictions.values())]
        shown.update(int(v) for label in labels for v in np.unique(as_numpy(label)))
        images = [rgb_to_image(sample["rgb"], mean, std), depth_to_image(depth)]
        images += [colorize(label, palette) for label in labels]
        for col, image in enumerate(images):
            ax = axes[row, col]
            ax.imshow(image, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(titles[col], fontsize="medium")
        if "id" in sample:
            axes[row, 0].set_ylabel(str(sample["id"]), fontsize="small")
        # Each depth image spans its own range, so say which.
        axes[row, 1].set_xlabel(f"{valid.min():.1f}–{valid.max():.1f} m" if valid.size else "no depth",
                                fontsize="small")
    key = [(names[c], np.asarray(table[c]) / 255) for c in sorted(shown - {VOID_LABEL})]
    if VOID_LABEL in shown:
        key.append(("void", np.asarray(VOID_COLOR) / 255))
    fig.legend(handles=[Patch(facecolor=colour, edgecolor="grey", label=name) for name, colour in key],
               title="classes", fontsize="small", loc="outside right upper")
    return _save(fig, out_path)
