"""The run file: one YAML document describes one experiment (data, model, the method's settings, training, rows).

Every key has a default (see ``docs/config.md``); unknown keys and values of the wrong kind are errors that name
the key, so a typo never silently falls back to a default. ``--set section.key=value`` overrides come on top. The
``distill:`` section is a :class:`~depthdistill.distill.settings.DistillSettings` (``preset`` plus any field) and
``train:`` a :class:`~depthdistill.engine.TrainSettings`, read by their own ``from_dict``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from depthdistill.distill.experiment import EXPERIMENT_ROWS
from depthdistill.distill.settings import DistillSettings, default_preset
from depthdistill.engine.loop import TrainSettings
from depthdistill.errors import ConfigError, ConfigTypeError, MissingFileError
from depthdistill.labels import VOID

__all__ = ["RunConfig", "DataConfig", "ModelConfig", "ExperimentConfig", "load_config", "apply_overrides",
           "parse_key_value"]


@dataclass
class DataConfig:
    """``data:`` — which dataset and how to build each split.

    Attributes:
        name: ``synthetic``, ``nyuv2``, ``sunrgbd``, ``folder`` or ``package.module:Class``.
        args: Keyword arguments given to every split's constructor (e.g. ``root``).
        train: Extra keyword arguments of the training split.
        val: Extra keyword arguments of a validation split, or ``null`` for none.
        test: Extra keyword arguments of the test split.
        unlabelled: Extra keyword arguments of a split of unlabelled RGB-D frames (for ``distill.method:
            unlabelled``, e.g. ``{split: unlabelled, num_samples: 576}``), or ``null`` for none. A run file with
            such frames whose ``distill:`` names neither ``preset`` nor ``method`` runs the ``"unlabelled"`` preset
            (:func:`~depthdistill.distill.settings.default_preset`).
    """

    name: str = "synthetic"
    args: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=lambda: {"split": "train"})
    val: dict[str, Any] | None = None
    test: dict[str, Any] = field(default_factory=lambda: {"split": "test"})
    unlabelled: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        _require(isinstance(self.name, str) and bool(self.name), "data.name", "a dataset name", self.name)
        for key in ("args", "train", "test"):
            _require(isinstance(getattr(self, key), dict), f"data.{key}", "a mapping", getattr(self, key))
        for key in ("val", "unlabelled"):
            value = getattr(self, key)
            _require(value is None or isinstance(value, dict), f"data.{key}", "a mapping or null", value)


@dataclass
class ModelConfig:
    """``model:`` — the segmenter.

    Attributes:
        name: ``deeplab_vgg16``, ``smp:<Arch>/<encoder>``, ``timm:<backbone>`` or ``package.module:factory``.
        args: Keyword arguments of the factory (``num_classes`` is passed by depthdistill).
    """

    name: str = "deeplab_vgg16"
    args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require(isinstance(self.name, str) and bool(self.name), "model.name", "a model name", self.name)
        _require(isinstance(self.args, dict), "model.args", "a mapping", self.args)


@dataclass
class ExperimentConfig:
    """``experiment:`` — what to train and for how long.

    Attributes:
        rows: Any of :data:`~depthdistill.distill.experiment.EXPERIMENT_ROWS` (``BL``, ``BL@TN``, ``TN``, ``TN→RGB``,
            ``SN``, ``SN-RGB``, ``BL+VTCE``, ``BL+PS``, ``BL@TN+PS``).
        teacher_epochs: Epochs of TN.
        student_epochs: Epochs of SN and BL+PS.
        baseline_epochs: Epochs of BL and BL+VTCE (``null``: teacher + student epochs).
    """

    rows: list[str] = field(default_factory=lambda: ["TN", "SN"])
    teacher_epochs: int = 20
    student_epochs: int = 20
    baseline_epochs: int | None = None

    def __post_init__(self) -> None:
        rows_ok = isinstance(self.rows, list) and bool(self.rows) and all(r in EXPERIMENT_ROWS for r in self.rows)
        _require(rows_ok, "experiment.rows", f"a list of rows from {list(EXPERIMENT_ROWS)}", self.rows)
        for key in ("teacher_epochs", "student_epochs", "baseline_epochs"):
            value = getattr(self, key)
            if value is None and key == "baseline_epochs":
                continue
            _require(isinstance(value, int) and not isinstance(value, bool) and value >= 1, f"experiment.{key}",
                     "an integer >= 1" + (" or null" if key == "baseline_epochs" else ""), value)


@dataclass
class RunConfig:
    """The whole run file.

    Attributes:
        out_dir: Where checkpoints, ``metrics.jsonl`` and ``results.json`` go.
        num_classes: Classes; ``null`` takes the training set's ``num_classes`` attribute.
        ignore_index: The void label, ignored by the losses and metrics.
        resume: Continue an interrupted run in ``out_dir``.
        data: :class:`DataConfig`.
        model: :class:`ModelConfig`.
        distill: :class:`~depthdistill.distill.settings.DistillSettings`.
        experiment: :class:`ExperimentConfig`.
        train: :class:`~depthdistill.engine.TrainSettings`.

    Examples:
        >>> cfg = RunConfig.from_dict({"model": {"name": "smp:Unet/resnet18"}, "train": {"lr": 0.01}})
        >>> cfg.model.name, cfg.train.lr, cfg.train.momentum
        ('smp:Unet/resnet18', 0.01, 0.9)
    """

    out_dir: str = "runs/run"
    num_classes: int | None = None
    ignore_index: int = VOID
    resume: bool = False
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    distill: DistillSettings = field(default_factory=DistillSettings)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    train: TrainSettings = field(default_factory=TrainSettings)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> RunConfig:
        """Builds the config from a (YAML-parsed) mapping; missing keys take their defaults.

        Raises:
            ConfigError: On unknown keys or values of the wrong kind.
        """
        values = dict(values or {})
        data, distill = values.get("data"), values.get("distill")
        has_unlabelled = isinstance(data, dict) and data.get("unlabelled") is not None
        # The Distiller's rule for settings left to the library (default_preset), for a run file: a file with
        # unlabelled frames and no preset or method in its distill section runs the unlabelled-data preset.
        chosen = isinstance(distill, dict) and bool({"preset", "method"} & set(distill))
        if has_unlabelled and (distill is None or (isinstance(distill, dict) and not chosen)):
            values["distill"] = {"preset": default_preset(has_unlabelled=True), **(distill or {})}
        return _build(cls, values, "")

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data (what ``--print-config`` shows and checkpoints store)."""
        return {f.name: _plain_section(getattr(self, f.name)) for f in fields(self)}

    def __post_init__(self) -> None:
        _require(isinstance(self.out_dir, str) and bool(self.out_dir), "out_dir", "a folder", self.out_dir)
        count = self.num_classes
        _require(count is None or (isinstance(count, int) and not isinstance(count, bool) and count >= 1),
                 "num_classes", "an integer >= 1 or null", count)
        _require(isinstance(self.ignore_index, int) and not isinstance(self.ignore_index, bool), "ignore_index",
                 "an integer", self.ignore_index)
        _require(isinstance(self.resume, bool), "resume", "true or false", self.resume)


def _plain_section(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return asdict(value) if is_dataclass(value) else value


def _require(ok: bool, key: str, expected: str, value: Any) -> None:
    if not ok:
        raise ConfigTypeError(f"{key} must be {expected}, got {value!r}")


def _refuse_unknown(cls: type, values: dict[str, Any], where: str) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {[where + k for k in unknown]} in the run file; known keys"
                          f"{' of ' + where.rstrip('.') if where else ''}: {sorted(known)}")


def _build(cls: type, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'the run file'} must be a mapping, got {type(values).__name__}: {values!r}")
    _refuse_unknown(cls, values, where)
    kwargs = {}
    for name, value in values.items():
        default = getattr(cls(), name)
        if is_dataclass(default) and value is not None:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}{name} must be a mapping, got {type(value).__name__}: {value!r}")
            _refuse_unknown(type(default), value, f"{where}{name}.")
            # The settings objects read their own sections (presets, checks); the rest are plain dataclasses.
            reader = getattr(type(default), "from_dict", None)
            try:
                value = reader(value) if reader is not None else _build(type(default), value, f"{where}{name}.")
            except TypeError as exc:
                raise ConfigError(f"invalid value in {where}{name}: {exc}") from exc
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid value in {where.rstrip('.') or 'the run file'}: {exc}") from exc


def parse_key_value(item: str, what: str = "override", form: str = "KEY=VALUE") -> tuple[str, Any]:
    """Splits ``KEY=VALUE`` at the first ``=`` and reads the value as YAML (``3`` an int, ``[a, b]`` a list).

    The one parser of the command line's ``--set``, ``--model-arg`` and ``--data-arg``.

    Args:
        item: The text given.
        what: The option, for the error message.
        form: What the text should look like, for the error message.

    Raises:
        ConfigError: If there is no ``=``, the key is empty or the value is not YAML.

    Examples:
        >>> parse_key_value("decoder_channels=[16, 8]")
        ('decoder_channels', [16, 8])
    """
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"{what} {item!r} must look like {form}")
    try:
        return key, yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {item!r}: the value is not valid YAML ({exc})") from exc


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Applies ``key.sub=value`` overrides (values parsed as YAML) to a nested mapping, in place.

    Examples:
        >>> apply_overrides({"train": {"lr": 0.1}}, ["train.lr=0.01", "experiment.rows=[BL, TN]"])
        {'train': {'lr': 0.01}, 'experiment': {'rows': ['BL', 'TN']}}
    """
    for item in overrides:
        key, value = parse_key_value(item, "override", "section.key=value")
        node = values
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[leaf] = value
    return values


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> RunConfig:
    """Reads a run file (``None``: all defaults) and applies ``overrides``.

    Raises:
        MissingFileError: If the file does not exist.
        ConfigError: If it is not valid YAML or has unknown keys or bad values.

    Examples:
        >>> load_config(None, ["experiment.teacher_epochs=2"]).experiment.teacher_epochs
        2
    """
    values: Any = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"run file {path} does not exist")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(values, dict):
        raise ConfigError(f"the run file must be a mapping of sections, got {type(values).__name__}")
    return RunConfig.from_dict(apply_overrides(values, overrides or []))
