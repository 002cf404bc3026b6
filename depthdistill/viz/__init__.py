"""Pictures of a run: label colours, overlays, depth images, training plots and a one-page report (written by
:mod:`depthdistill._report`, re-exported here).

Everything draws on matplotlib ``Figure`` objects rendered by the Agg backend: nothing opens a window, nothing
touches pyplot's global state, and it works on a headless server. Plot functions write a PNG and return its path.

Inputs may be ``torch.Tensor`` s or NumPy arrays. Conventions are the library's: RGB ``(3, H, W)`` float
(normalised with the ImageNet mean and std of :mod:`depthdistill.data.transforms` unless told otherwise) or
``(H, W, 3)`` uint8, depth ``(H, W)`` or ``(1, H, W)`` in metres with 0 (or non-finite) for missing, labels
``(H, W)`` int with 255 = void.

The metrics log read by :func:`plot_training_curves` is JSON lines, one object per line, as
:class:`~depthdistill.engine.run_log.RunLog` writes it. The minimal schema read:

* A record is an *epoch record* when it has ``"phase"`` (str) and ``"epoch"`` (int, 0-based) and neither
  ``"step"`` (a per-step record) nor ``"test"`` (a final evaluation); other records are ignored.
* Losses of different kinds get panels of their own, never one axis: the first panel is each phase's training
  cross-entropy with the labels, its ``"ce"`` part where it logs one (a student trained with CE + VTCE) and else
  its ``"loss"``: a phase that logs no ``"ce"`` is taken to train with CE alone, as the library's teacher and plain
  phases do (a student loss of your own should log its CE part as ``"ce"``, as
  :class:`~depthdistill.losses.CEPlusVTCE` does). A ``"vtce"`` part gets a panel of its own. Values are plotted
  against the epoch (shown 1-based, like the console lines).
* Phases are named in the legend by their experiment row (``bl_vtce`` → ``BL+VTCE``, the inverse of
  :func:`depthdistill.distill.row_folder`) and drawn in the results table's order; other phase names are kept.
* Each metric in ``metrics`` (default ``mean_iou``, ``mean_pixel_accuracy``, ``pixel_accuracy``) is taken from
  ``"val_<metric>"`` or, failing that, ``"<metric>"``, as a fraction in [0, 1]; it is plotted in %.
* ``null`` values are skipped; when an epoch of a phase appears twice (a resumed run), the last record wins.

Images (:mod:`depthdistill.viz.images`: colours, overlays, depth) and figures (:mod:`depthdistill.viz.plots`: the
plots above) are modules of their own; every name is re-exported here.
"""

from depthdistill._report import write_report
from depthdistill.labels import label_palette
from depthdistill.viz.images import HOLE_COLOR, VOID_COLOR, VOID_LABEL, colorize, depth_to_image, overlay, rgb_to_image
from depthdistill.viz.plots import (
    DEFAULT_METRICS,
    plot_per_class_iou,
    plot_sample_grid,
    plot_training_curves,
    plot_vtce_schedule,
    read_metrics_log,
)

__all__ = [
    "DEFAULT_METRICS",
    "HOLE_COLOR",
    "VOID_COLOR",
    "VOID_LABEL",
    "colorize",
    "depth_to_image",
    "label_palette",
    "overlay",
    "plot_per_class_iou",
    "plot_sample_grid",
    "plot_training_curves",
    "plot_vtce_schedule",
    "read_metrics_log",
    "rgb_to_image",
    "write_report",
]
