"""The one settings object of the method: every choice that changes what the Distiller computes, its checks, its
named presets and its identity (what a checkpoint records so that a run is never resumed with other choices).

Adding a setting is one field here (with its check in :meth:`DistillSettings.__post_init__`) plus its use; the
Distiller, the run file's ``distill:`` section, the command line and the resume check all read it from here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any, get_args

from depthdistill.convert import LayerFilter
from depthdistill.engine.registry import resolve
from depthdistill.errors import ConfigError, ConfigTypeError
from depthdistill.losses import DEFAULT_BETA, CEPlusVTCE, StudentLoss
from depthdistill.nn import DEFAULT_ALPHA, DepthResize

__all__ = ["DistillSettings", "PRESETS", "default_preset", "TEACHER_SOURCES", "STUDENT_OPTIMIZERS", "STUDENT_STARTS",
           "UNLABELLED_TARGETS", "CONSISTENCY_CONTROLS", "LAYER_CHOICES", "SCHEDULES", "qualified_name"]

#: Where the student's soft targets come from: a frozen copy of the trained teacher, or the live shared weights.
TEACHER_SOURCES = ("frozen", "live")
#: How the student phase's optimiser starts: a new one, or the teacher's per-parameter state carried on.
STUDENT_OPTIMIZERS = ("fresh", "carry")
#: Where the unlabelled-data method's student starts: the teacher's weights as plain convolutions, or the initial
#: weights.
STUDENT_STARTS = ("teacher", "initial")
#: What the student learns on unlabelled frames: the labeller's softened distribution, or its confident arg-max.
UNLABELLED_TARGETS = ("soft", "hard")
#: The consistency method's control (row ``SN-RGB``): its depth pass replaced by a plain pass on the horizontally
#: flipped image, or run on another image's depth.
CONSISTENCY_CONTROLS = ("augment", "shuffled_depth")
#: Which layers the teacher makes depth-aware when ``include`` is not given: the model's own list
#: (``model.depth_aware_layers``, e.g. Depth-aware CNN's six for ``deeplab_vgg16``; every spatial convolution
#: when the model names none), or every spatial convolution.
LAYER_CHOICES = ("model", "all")
#: How the learning rate decays over a method's phases: each phase its own decay, or one optimiser and one decay
#: over the teacher's and the student's epochs together.
SCHEDULES = ("per_phase", "one")

#: Named starting points. ``"default"`` is the depth-removal recipe whose student measured best in
#: docs/fidelity.md: the model's own depth-aware layers, depth brought to each layer by average pooling, depth
#: dropout 0.5. ``"paper"`` is the paper to the letter as we read it: every spatial convolution, nearest depth, no
#: dropout. ``"unlabelled"`` is the recipe measured with unlabelled RGB-D frames (docs/fidelity.md): the depth
#: teacher (no depth dropout: it always labels with depth) gives soft targets at T = 2 on the frames, the RGB student
#: starts from the initial weights with CE on the labelled images. The other fields take their dataclass defaults.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {"layers": "model", "depth_resize": "avgpool", "depth_dropout": 0.5},
    "paper": {"layers": "all", "depth_resize": "nearest", "depth_dropout": 0.0},
    "unlabelled": {"method": "unlabelled", "layers": "model", "depth_resize": "avgpool", "depth_dropout": 0.0,
                   "vtce": False, "student_start": "initial", "unlabelled_targets": "soft",
                   "unlabelled_temperature": 2.0},
}


def default_preset(has_unlabelled: bool) -> str:
    """The preset a run gets when it names neither a preset nor a method: ``"unlabelled"`` when it has unlabelled
    RGB-D frames (the one method measured to lift the RGB model above a baseline trained for as many steps, with a
    control showing that depth is why; docs/fidelity.md), else ``"default"``.

    Examples:
        >>> default_preset(True), default_preset(False)
        ('unlabelled', 'default')
    """
    return "unlabelled" if has_unlabelled else "default"


def qualified_name(obj: Any) -> str:
    """``module:QualName`` of a function or class, or of the class of a callable object (the form run files use).

    Examples:
        >>> qualified_name(CEPlusVTCE)
        'depthdistill.losses:CEPlusVTCE'
    """
    named = obj if hasattr(obj, "__qualname__") else type(obj)
    return f"{named.__module__}:{named.__qualname__}"


@dataclass(frozen=True)
class DistillSettings:
    """Every setting of the method, checked when made; frozen, so one object describes one run.

    Start from a preset (:meth:`from_preset`, :data:`PRESETS`) and change fields with :meth:`replace`; a run file's
    ``distill:`` section is read by :meth:`from_dict`. The dataclass defaults are the ``"default"`` preset.

    Attributes:
        preset: Name of the preset the values started from (recorded in logs; not part of the identity).
        method: How the deployable RGB model is trained: a name of :data:`~depthdistill.distill.methods.METHODS`
            (``"removal"``: the paper's depth removal, teacher then shared-weight student).
        alpha: α of the depth-aware convolution (Eq. 6), per metre.
        layers: Which layers become depth-aware when ``include`` is not given (:data:`LAYER_CHOICES`).
        include: Which layers become depth-aware (see :func:`~depthdistill.convert_to_depth_aware`), overriding
            ``layers``: a glob, several globs (``"*"``: every spatial convolution) or a predicate.
        exclude: Which stay plain.
        depth_resize: How depth is brought to each layer's resolution (see :func:`~depthdistill.depth_context`);
            recorded on the teacher's layers, so the teacher runs the same way outside the Distiller.
        depth_dropout: Probability, per training sample, that the teacher sees no depth in that step (a constant
            map, so every ``H = 1`` and each D-Conv computes the plain convolution).
        calibrate_removal: At the switch to the student, rescale each reverted layer so its plain output on RGB has
            the RMS its depth-aware output had on RGB-D (:func:`~depthdistill.calibrate_removal`).
        calibration_batches: Training batches used by ``calibrate_removal``.
        share_parameters: Default of :meth:`~depthdistill.Distiller.train_student`: the student is the teacher's
            own weights (PS); ``False`` starts it from the initial weights.
        vtce: Default of :meth:`~depthdistill.Distiller.train_student`: learn from the teacher with the student
            loss (``False``: CE on the labels only).
        teacher_source: Where the soft targets come from (:data:`TEACHER_SOURCES`): ``"frozen"``, a frozen copy of
            the trained teacher; ``"live"``, the shared weights as they train, run depth-aware in eval mode.
        beta: β of the VTCE temperature (Eq. 10), for the default student loss.
        vtce_schedule: ``epoch -> T`` replacing Eq. 10 for the default student loss; a callable or
            ``"package.module:name"``.
        student_loss: The loss of every phase that learns from the teacher,
            ``(student_logits, teacher_logits, labels, epoch) -> {"loss": …, **parts}``
            (:data:`~depthdistill.losses.StudentLoss`); a callable or ``"package.module:name"`` (a class named
            so is built without arguments). ``None``: :class:`~depthdistill.losses.CEPlusVTCE` with ``beta`` and
            ``vtce_schedule``, the paper's ``CE + VTCE``.
        student_lr_scale: The student phase's learning rate relative to the teacher's.
        student_optimizer: ``"fresh"``: the student phase starts a new optimiser; ``"carry"``: it carries the
            teacher's per-parameter optimiser state on (:data:`STUDENT_OPTIMIZERS`). ``schedule="one"`` always
            carries it.
        student_start: Method ``"unlabelled"``: the student starts from the teacher's weights as plain
            convolutions (``"teacher"``) or from the initial weights (``"initial"``) (:data:`STUDENT_STARTS`).
        unlabelled_targets: Method ``"unlabelled"``: ``"soft"`` (KL to the labeller's distribution at
            ``unlabelled_temperature``) or ``"hard"`` (CE to its arg-max where its top probability reaches
            ``unlabelled_confidence``) (:data:`UNLABELLED_TARGETS`).
        unlabelled_temperature: Temperature of the soft targets on unlabelled frames.
        unlabelled_weight: Weight of the unlabelled term beside the labelled loss.
        unlabelled_confidence: Hard targets: the labeller's top probability a pixel needs to count.
        control_labeller_epochs: Method ``"unlabelled"``: epochs of the RGB labeller of its control (row
            ``SN-RGB``); ``None``: the teacher's epochs (the labeller is row ``BL@TN``). A labeller trained longer
            asks whether the teacher's depth or only its extra training makes the difference.
        online_weight: Method ``"online"``: the full weight of the student's soft-target term beside its CE.
        online_temperature: Method ``"online"``: the temperature of the soft targets (KL at ``T``, times ``T²``).
        online_ramp_epochs: Method ``"online"``: the soft-target weight rises linearly over this many epochs,
            ``online_weight · min(1, e / online_ramp_epochs)`` at epoch ``e`` from 0 (0: full weight from the
            start).
        aux_depth_layer: Method ``"aux_depth"``: the module (a name of ``model.named_modules()``) whose output
            feeds the auxiliary depth head; ``None``: the model's second-to-last ``nn.Conv2d`` in module order, the
            last convolution before the classifier (``classifier.3``, fc7, in DeepLab-VGG16).
        aux_depth_weight: Method ``"aux_depth"``: weight λ of the depth loss beside the cross-entropy.
        aux_depth_scale_invariance: Method ``"aux_depth"``: λ_si of the scale-invariant log loss, 0 (plain squared
            log error) to 1 (blind to one global scale per image); Eigen et al. trained with 0.5.
        consistency_weight: Method ``"consistency"``: weight ``w`` of ``T² · KL(depth pass ‖ plain pass)``.
        consistency_temperature: Method ``"consistency"``: temperature ``T`` of that term.
        consistency_depth_ce: Method ``"consistency"``: the loss includes the cross-entropy of the depth pass (of
            the control's second pass in its row ``SN-RGB``), not only of the plain one.
        consistency_control: Method ``"consistency"``: its control (row ``SN-RGB``, :data:`CONSISTENCY_CONTROLS`):
            ``"augment"``, a plain pass on the horizontally flipped image instead of the depth pass (no depth
            anywhere); ``"shuffled_depth"``, the depth pass given another image's depth (that of the next sample of
            the training set, a map-style dataset).
        schedule: Method ``"removal"``: ``"per_phase"``, each phase decays its learning rate over its own epochs;
            ``"one"``, one optimiser and one decay over the teacher's and the student's epochs: the student
            carries the teacher's optimiser state and its learning rate goes on from where the teacher's decay
            stopped (:data:`SCHEDULES`; needs ``student_lr_scale=1``).

    Raises:
        ConfigError: If a value is out of range or unknown (the message names the field, the value and the
            choices); ConfigTypeError if it has the wrong type.

    Examples:
        >>> DistillSettings().depth_resize, DistillSettings.from_preset("paper").depth_resize
        ('avgpool', 'nearest')
        >>> DistillSettings.from_preset("paper", depth_dropout=0.2).depth_dropout
        0.2
    """

    preset: str = "default"
    method: str = "removal"
    alpha: float = DEFAULT_ALPHA
    layers: str = "model"
    include: LayerFilter | None = None
    exclude: LayerFilter | None = None
    depth_resize: DepthResize = "avgpool"
    depth_dropout: float = 0.5
    calibrate_removal: bool = False
    calibration_batches: int = 8
    share_parameters: bool = True
    vtce: bool = True
    teacher_source: str = "frozen"
    beta: float = DEFAULT_BETA
    vtce_schedule: Callable[[int], float] | str | None = None
    student_loss: StudentLoss | str | None = None
    student_lr_scale: float = 1.0
    student_optimizer: str = "fresh"
    student_start: str = "teacher"
    unlabelled_targets: str = "soft"
    unlabelled_temperature: float = 2.0
    unlabelled_weight: float = 1.0
    unlabelled_confidence: float = 0.0
    control_labeller_epochs: int | None = None
    # method "online": teacher and student trained together, the student against the teacher's current logits
    online_weight: float = 1.0
    online_temperature: float = 2.0
    online_ramp_epochs: int = 5
    # method "aux_depth": CE plus an auxiliary head predicting depth from one layer's features
    aux_depth_layer: str | None = None
    aux_depth_weight: float = 0.5
    aux_depth_scale_invariance: float = 0.5
    # method "consistency": the depth pass teaches the plain pass in the same weights
    consistency_weight: float = 1.0
    consistency_temperature: float = 2.0
    consistency_depth_ce: bool = True
    consistency_control: str = "augment"
    # method "removal": one optimiser and one learning-rate decay over teacher and student (issue #18 item 3)
    schedule: str = "per_phase"

    def __post_init__(self) -> None:
        _choice("preset", self.preset, tuple(PRESETS))
        if not isinstance(self.method, str) or not self.method:
            raise ConfigTypeError(f"method must be the name of a registered method, got {self.method!r}")
        _number("alpha", self.alpha, low=0.0)
        _choice("layers", self.layers, LAYER_CHOICES)
        for name in ("include", "exclude"):
            self._freeze_filter(name)
        _choice("depth_resize", self.depth_resize, get_args(DepthResize))
        _number("depth_dropout", self.depth_dropout, low=0.0, high=1.0)
        for name in ("calibrate_removal", "share_parameters", "vtce"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigTypeError(f"{name} must be true or false, got {getattr(self, name)!r}")
        _integer("calibration_batches", self.calibration_batches, low=1)
        _choice("teacher_source", self.teacher_source, TEACHER_SOURCES)
        _number("beta", self.beta, low=0.0)
        for name in ("vtce_schedule", "student_loss"):
            value = getattr(self, name)
            if value is not None and not callable(value) and not (isinstance(value, str) and ":" in value):
                raise ConfigTypeError(f"{name} must be a callable or 'package.module:name', got {value!r}")
        if self.student_loss is not None and (self.beta != DEFAULT_BETA or self.vtce_schedule is not None):
            raise ConfigError("beta and vtce_schedule configure the default student loss, which student_loss "
                              "replaces: give them to your loss instead (e.g. CEPlusVTCE(beta=..., schedule=...))")
        _number("student_lr_scale", self.student_lr_scale, low=0.0, open_low=True)
        _choice("student_optimizer", self.student_optimizer, STUDENT_OPTIMIZERS)
        _choice("student_start", self.student_start, STUDENT_STARTS)
        _choice("unlabelled_targets", self.unlabelled_targets, UNLABELLED_TARGETS)
        _number("unlabelled_temperature", self.unlabelled_temperature, low=0.0, open_low=True)
        _number("unlabelled_weight", self.unlabelled_weight, low=0.0)
        _number("unlabelled_confidence", self.unlabelled_confidence, low=0.0, high=1.0)
        if self.control_labeller_epochs is not None:
            _integer("control_labeller_epochs", self.control_labeller_epochs, low=1,
                     alternative=" or None (the teacher's epochs)")
        _number("online_weight", self.online_weight, low=0.0)
        _number("online_temperature", self.online_temperature, low=0.0, open_low=True)
        _integer("online_ramp_epochs", self.online_ramp_epochs, low=0)
        if self.aux_depth_layer is not None and (not isinstance(self.aux_depth_layer, str) or not self.aux_depth_layer):
            raise ConfigTypeError(f"aux_depth_layer must be a module name of the model (see model.named_modules()) "
                                  f"or None for the default, got {self.aux_depth_layer!r}")
        _number("aux_depth_weight", self.aux_depth_weight, low=0.0)
        _number("aux_depth_scale_invariance", self.aux_depth_scale_invariance, low=0.0, high=1.0)
        _number("consistency_weight", self.consistency_weight, low=0.0)
        _number("consistency_temperature", self.consistency_temperature, low=0.0, open_low=True)
        if not isinstance(self.consistency_depth_ce, bool):
            raise ConfigTypeError(f"consistency_depth_ce must be true or false, got {self.consistency_depth_ce!r}")
        _choice("consistency_control", self.consistency_control, CONSISTENCY_CONTROLS)
        _choice("schedule", self.schedule, SCHEDULES)
        if self.schedule == "one" and self.student_lr_scale != 1.0:
            raise ConfigError(f"schedule='one' continues the teacher's learning rate into the student phase, so "
                              f"student_lr_scale must be 1.0, got {self.student_lr_scale!r}; use "
                              "schedule='per_phase' to restart the student at a scaled rate")

    def _freeze_filter(self, name: str) -> None:
        """Globs given as a list are kept as a tuple: the settings stay immutable and comparable."""
        value = getattr(self, name)
        if value is None or callable(value) or isinstance(value, str):
            return
        globs = tuple(value) if isinstance(value, Iterable) else None
        if globs is None or not all(isinstance(v, str) for v in globs):
            raise ConfigTypeError(f"{name} must be a glob, a list of globs or a predicate(name, module), "
                                  f"got {value!r}")
        object.__setattr__(self, name, globs)

    # ------------------------------------------------------------------------------------------------ building
    @classmethod
    def from_preset(cls, name: str = "default", **overrides: Any) -> DistillSettings:
        """The settings of a named preset (:data:`PRESETS`), with any field overridden.

        Raises:
            ConfigError: For an unknown preset or field (both listed), or a bad value.

        Examples:
            >>> s = DistillSettings.from_preset("paper")
            >>> s.layers, s.depth_dropout, s.preset
            ('all', 0.0, 'paper')
        """
        _choice("preset", name, tuple(PRESETS))
        _known(overrides, "distill setting")
        return dataclasses.replace(cls(), preset=name, **{**PRESETS[name], **overrides})

    def replace(self, **overrides: Any) -> DistillSettings:
        """A copy with some fields changed (checked again).

        Examples:
            >>> DistillSettings().replace(alpha=4.0).alpha
            4.0
        """
        _known(overrides, "distill setting")
        if "preset" in overrides:  # a name alone would relabel these values, not change them
            raise ConfigError(f"preset={overrides['preset']!r} cannot be replaced on its own: start from it with "
                              f"DistillSettings.from_preset({overrides['preset']!r}, ...) (Distiller(model, n, "
                              f"{overrides['preset']!r}))")
        return dataclasses.replace(self, **overrides)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> DistillSettings:
        """Settings from a run file's ``distill:`` section: ``preset`` (default ``"default"``) and any fields.

        Examples:
            >>> DistillSettings.from_dict({"preset": "paper", "alpha": 4.0}).alpha
            4.0
        """
        if values is not None and not isinstance(values, dict):
            raise ConfigError(f"distill must be a mapping of settings, got {values!r}")
        values = dict(values or {})
        return cls.from_preset(values.pop("preset", "default"), **values)

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain data (what a run file holds): callables as ``"package.module:name"``.

        Examples:
            >>> DistillSettings.from_dict(DistillSettings().to_dict()) == DistillSettings()
            True
        """
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    def identity(self) -> dict[str, Any]:
        """What tells these settings' training apart from another's: every field but ``preset``, callables by
        qualified name. Checkpoints store it; resuming with a different identity is refused."""
        return {k: v for k, v in self.to_dict().items() if k != "preset"}

    # ------------------------------------------------------------------------------------------------ reading
    @property
    def carries_optimizer_state(self) -> bool:
        """Whether a student that starts from the teacher's weights carries the teacher's optimiser state on
        (``student_optimizer="carry"``, or one schedule over both phases).

        Examples:
            >>> DistillSettings().carries_optimizer_state, DistillSettings(schedule="one").carries_optimizer_state
            (False, True)
        """
        return self.student_optimizer == "carry" or self.schedule == "one"

    def layer_filter(self, model: Any) -> LayerFilter | None:
        """The ``include`` filter that picks the teacher's depth-aware layers of ``model`` (``None``: every one).

        Examples:
            >>> import torch
            >>> net = torch.nn.Conv2d(3, 3, 3); net.depth_aware_layers = [""]
            >>> DistillSettings().layer_filter(net), DistillSettings.from_preset("paper").layer_filter(net)
            ([''], None)
        """
        if self.include is not None:
            return self.include
        return getattr(model, "depth_aware_layers", None) if self.layers == "model" else None

    def build_student_loss(self, ignore_index: int) -> StudentLoss:
        """The student loss these settings name (imported when given as ``"package.module:name"``).

        Examples:
            >>> type(DistillSettings().build_student_loss(255)).__name__
            'CEPlusVTCE'
        """
        if self.student_loss is None:
            schedule = self.vtce_schedule
            return CEPlusVTCE(self.beta, ignore_index, resolve(schedule) if isinstance(schedule, str) else schedule)
        loss = resolve(self.student_loss) if isinstance(self.student_loss, str) else self.student_loss
        if isinstance(loss, type):
            loss = loss()
        if not callable(loss):
            raise ConfigTypeError(f"student_loss {self.student_loss!r} is not callable")
        return loss


def _known(values: dict[str, Any], what: str) -> None:
    known = {f.name for f in fields(DistillSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown {what}(s) {unknown}; known: {sorted(known)}")


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {list(choices)}, got {value!r}")


def _integer(name: str, value: Any, *, low: int, alternative: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}{alternative}, got {value!r}")


def _number(name: str, value: Any, *, low: float, high: float = math.inf, open_low: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigTypeError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < low or (open_low and value == low) or value > high:
        bound = f"> {low:g}" if open_low else f">= {low:g}"
        limit = f"a finite number {bound}" + (f" and <= {high:g}" if high != math.inf else "")
        raise ConfigError(f"{name} must be {limit}, got {value!r}")


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, tuple):
        return list(value)
    return qualified_name(value)
