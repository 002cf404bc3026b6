"""What removing depth does to a depth-aware teacher, and the calibrated removal that undoes its loudness.

At the switch from teacher to student the same weights stop seeing depth: every ``H(p0, p)`` of Eq. 6 becomes 1,
so each layer sums taps that the teacher had damped. :func:`removal_report` shows, layer by layer, how much the
teacher damped them (the mean ``H``) and how much louder the plain network is on RGB than the teacher on RGB-D.
:func:`calibrate_removal` folds into each layer the scale that makes those two output levels equal.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from depthdistill.convert import convert_to_plain
from depthdistill.errors import ConfigError, DatasetError, DepthError
from depthdistill.nn.arguments import pair, resolve_padding
from depthdistill.nn.base import DepthAwareModule
from depthdistill.nn.context import DepthResize, depth_at, depth_context
from depthdistill.nn.conv import DepthAwareConv2d
from depthdistill.nn.depth import valid_depth
from depthdistill.nn.functional import depth_similarity
from depthdistill.serialization import jsonable

__all__ = ["RemovalReport", "RemovalRow", "calibrate_removal", "removal_report"]

Batch = Mapping[str, Any]


@dataclass(frozen=True)
class RemovalRow:
    """One depth-aware layer of a :class:`RemovalReport`.

    Attributes:
        name: Qualified name of the layer (as in ``named_modules()``).
        mean_h: Mean depth weight ``H`` over the off-centre taps and output pixels where both ends have valid
            depth (``nan`` if there are none, e.g. a 1×1 kernel or no valid depth).
        rms_depth_aware: RMS of the layer's output, teacher on RGB-D.
        rms_plain: RMS of the layer's output, whole network plain on RGB.
        ratio: ``rms_plain / rms_depth_aware``.
    """

    name: str
    mean_h: float
    rms_depth_aware: float
    rms_plain: float
    ratio: float


@dataclass
class RemovalReport:
    """Per depth-aware layer, in forward order: how much the teacher leans on depth. See :func:`removal_report`.

    Examples:
        >>> r = RemovalReport([RemovalRow("conv1", 0.5, 2.0, 3.0, 1.5)])
        >>> print(r.to_markdown().splitlines()[2])
        | conv1 | 0.500 | 2 | 3 | 1.50 |
        >>> r.to_dict()["layers"][0]["ratio"]
        1.5
    """

    layers: list[RemovalRow]

    def to_markdown(self) -> str:
        """A Markdown table: layer, mean H, output RMS as D-Conv on RGB-D and plain on RGB, their ratio."""
        lines = ["| layer | mean H | RMS D-Conv, RGB-D | RMS plain, RGB | plain / D-Conv |", "|---|---|---|---|---|"]
        for r in self.layers:
            mean_h = "–" if math.isnan(r.mean_h) else f"{r.mean_h:.3f}"
            lines.append(f"| {r.name} | {mean_h} | {r.rms_depth_aware:.4g} | {r.rms_plain:.4g} | {r.ratio:.2f} |")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """``{"layers": [row as dict, ...]}``, JSON-safe (NaN as ``None``, see
        :func:`depthdistill.serialization.jsonable`)."""
        return jsonable({"layers": [asdict(r) for r in self.layers]})

    def __str__(self) -> str:
        return self.to_markdown()


class _Stats:
    """Sums over every call of one layer: squared outputs, and depth weights over valid off-centre taps."""

    def __init__(self) -> None:
        self.sum_sq, self.count = 0.0, 0
        self.h_sum, self.h_count = 0.0, 0
        self.h_all_one = True
        self.calls = 0

    @property
    def rms(self) -> float:
        return math.sqrt(self.sum_sq / self.count) if self.count else float("nan")

    @property
    def mean_h(self) -> float:
        return self.h_sum / self.h_count if self.h_count else float("nan")


class _Stop(Exception):
    """Ends a forward early once the measured layer has run."""


def _depth_aware_layers(model: nn.Module, where: str) -> dict[str, DepthAwareConv2d]:
    # The convolutions only: they hold the weights a calibration scales (a depth-aware pool has none, and its
    # effect shows in the convolutions after it).
    layers = {name: m for name, m in model.named_modules() if isinstance(m, DepthAwareConv2d)}
    if not layers:
        raise ConfigError(f"{where}: {type(model).__name__} has no depth-aware layer; it must be the teacher: "
                          "convert it first with depthdistill.convert_to_depth_aware(model)")
    return layers


def _as_batches(batch: Batch | Iterable[Batch], where: str) -> list[Batch]:
    if isinstance(batch, Mapping):
        batches = [batch]
    else:
        try:
            batches = list(batch)
        except TypeError:
            raise ConfigError(f"{where} takes a batch dict or an iterable of them, "
                              f"got {type(batch).__name__}") from None
    if not batches:
        raise ConfigError(f"{where} got no batch; give it at least one dict with 'rgb' and 'depth'")
    for i, b in enumerate(batches):
        if not isinstance(b, Mapping) or not isinstance(b.get("rgb"), Tensor):
            raise DatasetError(f"{where}: batch {i} is not a dict with a tensor 'rgb' (B,3,H,W); give batches as "
                               "depthdistill.data.collate_rgbd makes them")
        if not isinstance(b.get("depth"), Tensor):
            raise DepthError(f"{where}: batch {i} has no tensor 'depth' (B,1,H,W) in metres; the teacher's side of "
                             "the comparison needs RGB-D batches")
    return batches


@contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    """Eval mode and no grad; every module's own training flag is restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training


@contextmanager
def _plain(model: nn.Module) -> Iterator[None]:
    """The model as the student (plain layers), then each layer back to its own depth-aware class, α and resize."""
    own = ("alpha", "depth_resize")
    saved = [(m, type(m), {k: m.__dict__[k] for k in own if k in m.__dict__})
             for m in model.modules() if isinstance(m, DepthAwareModule)]
    convert_to_plain(model)
    try:
        yield
    finally:
        for m, cls, options in saved:
            m.__class__ = cls
            m.__dict__.update(options)


def _accumulate_h(stats: _Stats, layer: DepthAwareConv2d, x: Tensor, name: str) -> None:
    """Adds the layer's depth weights, as the layer computes them, over valid off-centre (tap, pixel) pairs."""
    depth, _ = depth_at(x, layer.depth_resize, name)
    kernel = pair(layer.kernel_size, "kernel_size")
    stride, dilation = pair(layer.stride, "stride"), pair(layer.dilation, "dilation")
    h = depth_similarity(depth, kernel, stride, layer.padding, dilation, layer.alpha, dtype=torch.float64)
    stats.h_all_one = stats.h_all_one and bool((h == 1).all())
    # H is set to 1 in the padding and at missing depth, by convention rather than measurement: leave those out.
    valid = valid_depth(depth).to(torch.float64)
    valid = F.pad(valid, resolve_padding(layer.padding, kernel, stride, dilation))
    taps = F.unfold(valid, kernel, dilation=dilation, stride=stride) > 0
    centre = ((kernel[0] - 1) // 2) * kernel[1] + (kernel[1] - 1) // 2
    counted = taps & taps[:, centre : centre + 1]
    counted[:, centre] = False  # the centre tap's H is always exactly 1
    stats.h_sum += float(h.flatten(2)[counted].sum())
    stats.h_count += int(counted.sum())


def _measure(
    model: nn.Module,
    layers: Mapping[str, DepthAwareConv2d],
    batches: list[Batch],
    *,
    with_depth: bool,
    depth_resize: DepthResize | None = None,
    stop_after: int | None = None,
) -> dict[str, _Stats]:
    """One forward per batch with hooks; returns the layers' statistics in the order they first ran.

    ``with_depth=False`` runs the model on RGB alone; otherwise inside a depth context with ``depth_resize``
    (``None``: each layer's own). With ``stop_after`` (one layer in ``layers``), each forward
    stops once that layer has run ``stop_after`` times.
    """
    stats: dict[str, _Stats] = {}
    device = next(model.parameters()).device

    def hook(name: str, layer: DepthAwareConv2d):
        def record(module: nn.Module, inputs: tuple, output: Tensor) -> None:
            s = stats.setdefault(name, _Stats())
            s.calls += 1
            s.sum_sq += float(output.double().square().sum())
            s.count += output.numel()
            if with_depth:
                _accumulate_h(s, layer, inputs[0], name)
            if stop_after is not None and s.calls % stop_after == 0:
                raise _Stop
        return record

    handles = [layer.register_forward_hook(hook(name, layer)) for name, layer in layers.items()]
    try:
        for b in batches:
            rgb = b["rgb"].to(device)
            try:
                if not with_depth:
                    model(rgb)
                else:
                    with depth_context(b["depth"].to(device), resize=depth_resize):
                        model(rgb)
            except _Stop:
                pass
    finally:
        for handle in handles:
            handle.remove()
    for s in stats.values():
        s.calls = max(1, s.calls // len(batches))
    return stats


def removal_report(
    teacher: nn.Module, batch: Batch | Iterable[Batch], *, depth_resize: DepthResize | None = None
) -> RemovalReport:
    """Per depth-aware layer: how much the teacher leans on depth, and how much louder the plain network is.

    Two forwards per batch, both in eval mode under ``torch.no_grad()``: the teacher on RGB-D, then the same
    weights as plain convolutions on RGB (the student at the switch, before any training). For each depth-aware
    layer, in the order the forward first calls it (layers the forward never calls are left out):

    * ``mean_h``: the mean depth weight ``H(p0, p)`` of Eq. 6 as the layer computes it (its own kernel, stride,
      padding, dilation, α and resized depth), over the off-centre taps (the centre tap's ``H`` is always 1 and
      is left out) and the output pixels where both ends of the tap have valid depth (padding and missing depth,
      where ``H`` is 1 by convention, are left out). Near 1: the layer barely uses depth; near 0: it only uses
      its centre tap. ``nan`` where no off-centre tap reaches valid depth (fc6's dilation 12 on an 8×8 map).
      For convolution subclasses that pad inside their own forward (timm's ``Conv2dSame``), windows reaching
      into that padding are left out.
    * ``rms_depth_aware`` / ``rms_plain``: the root mean square of the layer's output over every element of
      every batch, the teacher on RGB-D and the plain network on RGB (so a layer's plain input already carries
      the earlier layers' change). ``ratio`` is ``rms_plain / rms_depth_aware``.

    Several batches are pooled (sums of squares and of ``H`` over all of them), not averaged per batch. The model
    is left as it came: same layer classes and α, every module's training mode, no gradients.

    Args:
        teacher: A model converted by :func:`~depthdistill.convert_to_depth_aware`.
        batch: A batch dict with ``"rgb"`` ``(B,3,H,W)`` and ``"depth"`` ``(B,1,H,W)`` in metres (as
            :func:`~depthdistill.data.collate_rgbd` makes it), or an iterable of them.
        depth_resize: How depth is brought to each layer's resolution, as in
            :func:`~depthdistill.depth_context`; ``None`` (default): each layer's own, as the teacher was
            converted.

    Returns:
        A :class:`RemovalReport`; ``print`` it for a Markdown table.

    Raises:
        ConfigError: If the model has no depth-aware layer (convert it first), or no batch is given.
        DatasetError: If a batch is not a dict with a tensor ``"rgb"``.
        DepthError: If a batch has no ``"depth"``, or its depth does not fit the images.

    Examples:
        >>> import torch, depthdistill
        >>> _ = torch.manual_seed(0)
        >>> teacher = depthdistill.convert_to_depth_aware(torch.nn.Sequential(
        ...     torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3, padding=1)))
        >>> depth = torch.ones(1, 1, 8, 8)
        >>> depth[..., 4:] = 3.0  # two planes 2 m apart: H ≈ 0 across the edge
        >>> report = removal_report(teacher, {"rgb": torch.randn(1, 3, 8, 8), "depth": depth})
        >>> [row.name for row in report.layers]
        ['0', '2']
        >>> round(report.layers[0].mean_h, 3)  # 44 of the 420 valid (pixel, off-centre tap) pairs cross it
        0.895
        >>> report.layers[0].ratio > 1  # without depth the first layer also sums the taps across the edge
        True
    """
    layers = _depth_aware_layers(teacher, "removal_report")
    batches = _as_batches(batch, "removal_report")
    with _inference(teacher):
        depth_aware = _measure(teacher, layers, batches, with_depth=True, depth_resize=depth_resize)
        with _plain(teacher):
            plain = _measure(teacher, layers, batches, with_depth=False)
    rows = []
    for name, s in depth_aware.items():
        rms_plain = plain[name].rms
        rows.append(RemovalRow(name, s.mean_h, s.rms, rms_plain, rms_plain / s.rms if s.rms else float("nan")))
    return RemovalReport(rows)


def calibrate_removal(
    teacher: nn.Module,
    batches: Batch | Iterable[Batch],
    *,
    depth_resize: DepthResize | None = None,
    bn: bool = True,
) -> dict[str, float]:
    """Calibrated removal: scales each depth-aware layer so the plain network on RGB is as loud as the teacher.

    Call it at the switch from teacher to student, on a few training batches. First the teacher runs on RGB-D and
    each depth-aware layer's output RMS is recorded (the reference, taken before anything changes). Then, with the
    network plain on RGB, layer by layer in forward order: the layer's output RMS is measured (earlier layers
    already calibrated, so it sees calibrated inputs) and its weight and bias are multiplied in place by
    ``scale = RMS_teacher / RMS_plain`` (``param.data.mul_`` under ``torch.no_grad()``: the same Parameter objects,
    so an optimizer or the Distiller holding them sees the change). Afterwards each layer's plain output RMS on
    these batches equals its teacher's.

    While every depth-aware layer so far has ``H ≡ 1`` on these batches (constant depth, α = 0), the plain
    network computes exactly the teacher's function up to there, so those layers get a scale of exactly 1 and are
    not touched (a measured ratio would differ from 1 by rounding only).

    With ``bn=True``, the running statistics of every BatchNorm layer (with ``track_running_stats``) are then
    re-estimated with the calibrated plain network on the RGB of these batches (``reset_running_stats``, a
    cumulative average with ``momentum=None``, the momentum restored afterwards; other layers in eval mode). A
    BatchNorm after a calibrated convolution then normalises that convolution's scale away, and the output RMS of
    the layers after it no longer match the teacher's exactly: ``bn`` chooses re-estimated statistics over
    matched levels there.

    The batches are held in memory for the passes (one reference pass, about half a pass per layer, one for
    BatchNorm), so give a few. The model is left **depth-aware**, as it came (revert it with
    :func:`~depthdistill.convert_to_plain`, as the Distiller's student phase does), with every module's training
    mode restored and no gradients.

    Args:
        teacher: A model converted by :func:`~depthdistill.convert_to_depth_aware`, with the trained weights.
        batches: A batch dict with ``"rgb"`` and ``"depth"`` (as :func:`~depthdistill.data.collate_rgbd` makes
            it), or an iterable of them (a ``DataLoader`` is read once).
        depth_resize: How depth is brought to each layer's resolution; ``None`` (default): each layer's own, as
            the teacher was converted.
        bn: Re-estimate the BatchNorm running statistics on RGB afterwards.

    Returns:
        ``{layer name: scale folded into it}``, in forward order.

    Raises:
        ConfigError: If the model has no depth-aware layer (convert it first), or no batch is given.
        DatasetError: If a batch is not a dict with a tensor ``"rgb"``.
        DepthError: If a batch has no ``"depth"``, or its depth does not fit the images.

    Examples:
        >>> import torch, depthdistill
        >>> _ = torch.manual_seed(0)
        >>> teacher = depthdistill.convert_to_depth_aware(torch.nn.Sequential(
        ...     torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3, padding=1)))
        >>> depth = torch.ones(2, 1, 8, 8)
        >>> depth[..., 4:] = 3.0
        >>> batch = {"rgb": torch.randn(2, 3, 8, 8), "depth": depth}
        >>> before = removal_report(teacher, batch)
        >>> scales = calibrate_removal(teacher, [batch])
        >>> list(scales), scales["0"] < 1  # the first layer is louder without depth: scaled down
        (['0', '2'], True)
        >>> after = removal_report(teacher, batch)  # the plain network now as loud as the teacher was
        >>> [round(a.rms_plain / b.rms_depth_aware, 4) for a, b in zip(after.layers, before.layers)]
        [1.0, 1.0]
    """
    layers = _depth_aware_layers(teacher, "calibrate_removal")
    batches = _as_batches(batches, "calibrate_removal")
    scales: dict[str, float] = {}
    with _inference(teacher):
        reference = _measure(teacher, layers, batches, with_depth=True, depth_resize=depth_resize)
        with _plain(teacher):
            unchanged = True
            for name, ref in reference.items():
                unchanged = unchanged and ref.h_all_one
                scale = 1.0
                if not unchanged:
                    plain = _measure(teacher, {name: layers[name]}, batches, with_depth=False,
                                     stop_after=ref.calls)[name]
                    scale = ref.rms / plain.rms if plain.rms > 0 else 1.0
                    layers[name].weight.data.mul_(scale)
                    if layers[name].bias is not None:
                        layers[name].bias.data.mul_(scale)
                scales[name] = scale
            if bn:
                _reestimate_batchnorm(teacher, batches)
    return scales


def _reestimate_batchnorm(model: nn.Module, batches: list[Batch]) -> None:
    """BatchNorm running statistics as the cumulative average over ``batches`` of the model on RGB."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    device = next(model.parameters()).device
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        for b in batches:
            model(b["rgb"].to(device))
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
            m.eval()
