"""The Distiller: one live model taken through the phases of a method (by default the paper's depth removal:
a depth-aware teacher on RGB-D, then the same weights as a plain RGB student), with the services every phase
shares: the forward and its checks, data checks, the training loop with checkpoints, evaluation.

What each phase does lives in its own module (:mod:`~depthdistill.distill.teacher`,
:mod:`~depthdistill.distill.switch`, :mod:`~depthdistill.distill.student`); how they are put together into a
deployable model is a method (:mod:`~depthdistill.distill.methods`); the paper's rows and controls are
:mod:`~depthdistill.distill.experiment`. Every setting of the method is one :class:`DistillSettings`.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from depthdistill.convert import convert_to_plain, depth_aware_record, list_depth_aware
from depthdistill.data import collate_rgbd, rgb_normalization
from depthdistill.distill import methods, teacher, switch, student
from depthdistill.distill.experiment import run_experiment
from depthdistill.distill.results import ResultsTable
from depthdistill.distill.settings import DistillSettings, default_preset
from depthdistill.engine.checks import check_batch, check_dataset, check_model
from depthdistill.engine.device import move_batch, resolve_device
from depthdistill.engine.evaluate import OutputKey, evaluate, select_logits
from depthdistill.engine.loop import Callback, FitResult, LossFn, TrainSettings, fit
from depthdistill.engine.optim import OptimizerFactory, SchedulerFactory
from depthdistill.engine.registry import model_spec
from depthdistill.engine.run_log import RunLog
from depthdistill.errors import ConfigError, ConfigTypeError, TrainingError
from depthdistill.labels import VOID
from depthdistill.losses import StudentLoss

__all__ = ["Distiller", "Data"]

#: Training data: a dataset of sample dicts, or a DataLoader of batches.
Data = Dataset | DataLoader


class Distiller:
    """Depth removal distillation for any segmenter mapping an image batch ``(B,3,H,W)`` to logits ``(B,C,H,W)``.

    The Distiller owns one *live* model that goes through the phases in place: plain → teacher (depth-aware) →
    student (plain again, same Parameter objects). A copy of the initial weights is kept before anything trains,
    so the baseline rows start from exactly the weights the teacher started from.

    Args:
        model: The segmenter; its logits must have the label's height and width (upsample inside the model).
            A model returning a dict (torchvision's ``{"out": logits, "aux": …}``) works too, see ``output_key``.
        num_classes: Number of classes; labels are ``0..num_classes−1`` and ``ignore_index``.
        settings: The method's settings: a :class:`DistillSettings`, or the name of a preset (``"default"``,
            ``"paper"``, ``"unlabelled"``, see :data:`~depthdistill.distill.settings.PRESETS`). ``None`` (the
            default) chooses by the data (:func:`~depthdistill.distill.settings.default_preset`): ``"default"``
            (the paper's depth removal), or ``"unlabelled"`` once :meth:`train`, :meth:`train_control` or
            :meth:`run_experiment` is given unlabelled RGB-D frames before any phase trained, unless ``method`` is
            among the overrides.
        train_settings: How to train (:class:`~depthdistill.engine.TrainSettings`).
        ignore_index: Void label, ignored by the losses and metrics.
        out_dir: Where each phase writes ``<out_dir>/<phase>/{last,best,model}.pt`` and the run writes
            ``metrics.jsonl`` and ``results.json``; ``None`` writes nothing.
        output_key: Where the logits are in the model's output, for every forward the Distiller makes: ``None``
            takes the output itself, or its ``"out"`` entry when it is a dict; a string picks another key; a
            function maps the output to the logits.
        optimizer: Optimiser factory ``params -> Optimizer`` for every phase (default SGD from ``train``).
        scheduler: Schedule factory ``(optimizer, total_steps) -> LRScheduler`` (default poly 0.9).
        callbacks: ``callback(LoopState)`` called at every epoch start, batch end and epoch end of every phase.
        resume: Continue each phase from its ``last.pt`` if present (finished phases just load their weights).
        meta: Extra information stored in every checkpoint. ``meta["model"]`` names the model for
            ``depthdistill evaluate / predict / export`` (default: the model's class,
            :func:`~depthdistill.engine.registry.model_spec`); ``meta["rgb_normalization"]`` records the input
            pipeline (default: the training set's ``rgb_normalization`` attribute).
        log_echo: Print one line per epoch and phase event.
        **overrides: Any field of :class:`DistillSettings` (``alpha``, ``depth_dropout``, ``student_loss`` …) or
            of :class:`~depthdistill.engine.TrainSettings` (``lr``, ``batch_size``, ``device``, ``seed`` …),
            replacing the value ``settings`` / ``train_settings`` give.

    Raises:
        ConfigError: On an unknown override or method, a bad value, or a model that is already depth-aware.

    Examples:
        >>> import torch
        >>> from depthdistill import Distiller
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 2, 1))
        >>> data = [{"rgb": torch.randn(3, 8, 8), "depth": torch.rand(1, 8, 8) + 1,
        ...          "label": torch.randint(0, 2, (8, 8)), "id": str(i)} for i in range(2)]
        >>> d = Distiller(net, num_classes=2, progress=False, log_echo=False)
        >>> teacher = d.train_teacher(data, epochs=1)
        >>> student = d.train_student(data, epochs=1)
        >>> "mean_iou" in d.evaluate(student, data)
        True
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        settings: DistillSettings | str | None = None,
        *,
        train_settings: TrainSettings | None = None,
        ignore_index: int = VOID,
        out_dir: str | os.PathLike | None = None,
        output_key: OutputKey = None,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        callbacks: Sequence[Callback] = (),
        resume: bool = False,
        meta: dict[str, Any] | None = None,
        log_echo: bool = True,
        **overrides: Any,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigTypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"num_classes must be an integer >= 1, got {num_classes!r}")
        check_model(model)
        if list_depth_aware(model):
            raise ConfigError("pass the plain model to Distiller: it converts the teacher itself (and keeps the "
                              "plain initial weights for the baseline); call depthdistill.convert_to_plain first")
        distill_fields = {f.name for f in fields(DistillSettings)}
        train_fields = {f.name for f in fields(TrainSettings)}
        unknown = sorted(set(overrides) - distill_fields - train_fields)
        if unknown:
            raise ConfigError(f"unknown Distiller argument(s) {unknown}; the method's settings are "
                              f"{sorted(distill_fields)}, the training settings {sorted(train_fields)}")
        distill_overrides = {k: v for k, v in overrides.items() if k in distill_fields}
        # Settings left to the library are chosen again when unlabelled frames arrive (_settle_preset).
        self._chosen_by_data = settings is None and "method" not in distill_overrides
        if settings is None:
            settings = default_preset(has_unlabelled=False)
        if isinstance(settings, str):
            settings = DistillSettings.from_preset(settings)
        if not isinstance(settings, DistillSettings):
            raise ConfigTypeError(f"settings must be a DistillSettings or a preset name, got {settings!r}")
        self._distill_overrides = distill_overrides
        #: How every phase trains (:class:`~depthdistill.engine.TrainSettings`).
        self.train_settings = TrainSettings.from_dict({**(train_settings or TrainSettings()).to_dict(),
                                                       **{k: v for k, v in overrides.items() if k in train_fields}})
        self.model = model
        self.num_classes = num_classes
        self.ignore_index = int(ignore_index)
        self._adopt(settings.replace(**distill_overrides))
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.output_key = output_key
        self.optimizer, self.scheduler = optimizer, scheduler
        self.callbacks = list(callbacks)
        self.resume = bool(resume)
        self.meta = {"model": model_spec(model), **(meta or {})}
        self.device = resolve_device(self.train_settings.device)
        self.log = RunLog(self.out_dir / "metrics.jsonl" if self.out_dir else None, echo=log_echo)
        #: The teacher phase's final optimiser state, kept when the student carries it
        #: (:attr:`DistillSettings.carries_optimizer_state`).
        self.teacher_optimizer_state: dict[str, Any] | None = None
        #: With ``schedule="one"``: the teacher's and the student's epochs of the one learning-rate schedule the
        #: teacher phase began (the student phase goes on with it); ``None`` otherwise.
        self.shared_schedule: tuple[int, int] | None = None
        #: The frozen teacher (eval mode, no gradients), set when the teacher phase ends.
        self.teacher: nn.Module | None = None
        #: The trained model of every row of the last :meth:`run_experiment`, by row name (TN is depth-aware).
        self.models: dict[str, nn.Module] = {}
        #: Names of the layers the teacher made depth-aware.
        self.depth_aware_layers: list[str] = []
        # Baselines trained so far, by train_baseline's arguments: each is trained once per Distiller.
        self._baselines: dict[tuple, tuple[Data, Data | None, nn.Module]] = {}
        #: The :class:`~depthdistill.engine.FitResult` of every phase run so far, by phase name.
        self.fits: dict[str, FitResult] = {}
        # Cloned before anything trains: the baselines start from exactly the teacher's initial weights.
        self.initial_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    # ----------------------------------------------------------------------------------------------- phases
    def train(self, train_data: Data, *, teacher_epochs: int, student_epochs: int, val_data: Data | None = None,
              unlabelled_data: Data | None = None) -> nn.Module:
        """Runs the settings' method end to end and returns the deployable plain RGB model.

        With the default method (``"removal"``) this is :meth:`train_teacher` then :meth:`train_student`; with
        ``"unlabelled"`` the student also learns from the teacher's targets on ``unlabelled_data``.

        Args:
            train_data: RGB-D training samples.
            teacher_epochs: Epochs of the method's depth-aware phase.
            student_epochs: Epochs of its RGB phase.
            val_data: Optional validation set for every phase.
            unlabelled_data: Unlabelled RGB-D frames (samples without ``"label"``), for a method that uses them.

        Returns:
            A plain model: RGB in, logits out.

        Raises:
            ConfigError: If unlabelled data is given to a method that does not use it, or missing for one that
                needs it.
        """
        self._settle_preset(unlabelled_data)
        self._check_unlabelled(unlabelled_data)
        return self.method.train(self, train_data, teacher_epochs=teacher_epochs, student_epochs=student_epochs,
                                 val_data=val_data, unlabelled_data=unlabelled_data)

    def train_control(self, train_data: Data, *, teacher_epochs: int, student_epochs: int,
                      val_data: Data | None = None, unlabelled_data: Data | None = None) -> nn.Module:
        """The method's control without depth (:meth:`~depthdistill.distill.methods.Method.train_control`): the
        same training with an RGB model wherever the method uses depth."""
        self._settle_preset(unlabelled_data)
        self._check_unlabelled(unlabelled_data)
        return self.method.train_control(self, train_data, teacher_epochs=teacher_epochs,
                                         student_epochs=student_epochs, val_data=val_data,
                                         unlabelled_data=unlabelled_data)

    def _adopt(self, settings: DistillSettings) -> None:
        """Makes ``settings`` this Distiller's, with the method and the student loss they name."""
        method = methods.get_method(settings.method)
        if settings.schedule not in method.schedules:
            raise ConfigError(f"method {method.name!r} trains with schedule {list(method.schedules)} only, "
                              f"got schedule={settings.schedule!r}")
        #: The method's settings (:class:`DistillSettings`).
        self.settings = settings
        #: The method the settings name (:class:`~depthdistill.distill.methods.Method`).
        self.method = method
        #: The loss of every phase that learns from the teacher (built from the settings).
        self.student_loss: StudentLoss = settings.build_student_loss(self.ignore_index)

    def _settle_preset(self, unlabelled_data: Data | None) -> None:
        """Settings left to the library (``settings=None``, no ``method``) become the ``"unlabelled"`` preset when
        unlabelled frames are given, before anything trained with the others."""
        wanted = default_preset(has_unlabelled=unlabelled_data is not None)
        if not self._chosen_by_data or self.settings.preset == wanted:
            return
        if self.fits:
            raise ConfigError(
                f"unlabelled frames were given after phases {sorted(self.fits)} trained with the "
                f"{self.settings.preset!r} settings; for the unlabelled-data method give them to the first call "
                f"(train / run_experiment) or create the Distiller with settings={wanted!r}")
        self._adopt(DistillSettings.from_preset(wanted, **self._distill_overrides))
        self.log.write({"event": "settings", "preset": wanted, "why": "unlabelled RGB-D frames were given"})

    def _check_unlabelled(self, unlabelled_data: Data | None) -> None:
        if unlabelled_data is not None and not self.method.uses_unlabelled:
            raise ConfigError(f"method {self.method.name!r} does not use unlabelled data; choose "
                              "method='unlabelled' (DistillSettings(method='unlabelled')) to learn from it")

    def train_teacher(self, train_data: Data, epochs: int, val_data: Data | None = None, *,
                      name: str = "tn", student_epochs: int | None = None) -> nn.Module:
        """Teacher phase: converts the live model to depth-aware in place and trains it with CE on RGB-D.

        The layers become depth-aware with the settings' α and depth resize, recorded on each layer, so the
        teacher runs the same way under a bare ``depth_context(depth)`` after training. When the phase ends a
        frozen copy is kept as :attr:`teacher` for the student's soft targets.

        Args:
            train_data: RGB-D samples (``depth`` required).
            epochs: Epochs to train.
            val_data: Optional validation set, evaluated with depth after every epoch (selects ``best.pt``).
            name: The phase's name and folder under ``out_dir``.
            student_epochs: The student phase's epochs that follow, needed with ``schedule="one"`` (the teacher's
                decay is planned over both phases; :meth:`train` and :meth:`run_experiment` pass it); unused with
                ``"per_phase"``.

        Returns:
            The live model, now the teacher. The same object becomes the student in :meth:`train_student`;
            :attr:`teacher` keeps the teacher.

        Raises:
            DepthError: If the training data has no depth.
            DatasetError: If labels are out of range or samples are malformed.
            TrainingError: If the loss becomes NaN (the last good checkpoint is kept).
            ConfigError: With ``schedule="one"`` and no ``student_epochs``.
        """
        return teacher.train_teacher(self, train_data, epochs, val_data, name=name, student_epochs=student_epochs)

    def train_student(self, train_data: Data, epochs: int, val_data: Data | None = None, *,
                      share_parameters: bool | None = None, vtce: bool | None = None,
                      name: str = "sn") -> nn.Module:
        """Student phase: a plain model trained on RGB with the student loss against the teacher
        (``CE + VTCE(T(e))`` by default) when ``vtce``, else with ``CE``.

        With ``share_parameters`` (PS, the paper's method) the live teacher's layers are reverted to plain
        convolutions in place, so the student's Parameter objects *are* the trained teacher's (rescaled first when
        ``calibrate_removal`` is on; trained with ``student_lr_scale`` and ``student_optimizer``, and with
        ``schedule="one"`` on the teacher's optimiser and learning-rate decay, for the epochs
        :meth:`train_teacher` planned). Without it the
        student is a plain copy of the model loaded with the initial weights (the BL+VTCE ablation). ``e`` in
        ``T(e)`` is the student phase's epoch index, from 0. VTCE is averaged over non-void pixels.

        Args:
            train_data: RGB-D samples (depth feeds the teacher's soft targets; RGB alone is enough without VTCE).
            epochs: Epochs to train.
            val_data: Optional validation set, evaluated on RGB after every epoch.
            share_parameters: Override of the settings' ``share_parameters``.
            vtce: Override of the settings' ``vtce``.
            name: The phase's name and folder under ``out_dir``.

        Returns:
            The student (a plain model). With PS it is the object :meth:`train_teacher` returned.

        Raises:
            TrainingError: If the teacher is needed (PS or VTCE) but has not been trained.
            ConfigError: With PS and ``schedule="one"``, if ``epochs`` is not what the teacher planned.
        """
        share = self.settings.share_parameters if share_parameters is None else bool(share_parameters)
        use_teacher = self.settings.vtce if vtce is None else bool(vtce)
        if share:
            if not list_depth_aware(self.model):
                raise TrainingError("train_student(share_parameters=True) needs the trained teacher, but the live "
                                    "model is not depth-aware: call train_teacher first (or it already became the "
                                    "student)")
            model = switch.remove_depth(self, self.model, train_data)
        else:
            model = self.initial_copy()
        return student.train_plain(self, model, train_data, epochs, val_data, use_teacher=use_teacher,
                                   from_teacher=share, name=name)

    def train_baseline(self, train_data: Data, epochs: int, val_data: Data | None = None, *, vtce: bool = False,
                       name: str = "bl") -> nn.Module:
        """The baseline (BL): a plain copy of the model from the initial weights, CE on RGB.

        ``vtce=True`` gives the BL+VTCE ablation (needs the trained teacher). The live model is not touched. A
        baseline this Distiller trained already under the same name, epochs and data is returned again, not
        retrained (e.g. BL@TN of :meth:`run_experiment` is the RGB labeller of the unlabelled method's control).

        Returns:
            The trained baseline model (a new object, or the one trained before under the same arguments).
        """
        key = (name, epochs, id(train_data), id(val_data), vtce)
        if key not in self._baselines:
            model = student.train_plain(self, self.initial_copy(), train_data, epochs, val_data, use_teacher=vtce,
                                        from_teacher=False, name=name)
            # The data are kept with the model: alive, their ids cannot be taken by other data objects.
            self._baselines[key] = (train_data, val_data, model)
        return self._baselines[key][2]

    # ------------------------------------------------------------------------------------------- evaluation
    def evaluate(self, model: nn.Module, data: Data, *, use_depth: bool | None = None) -> dict[str, Any]:
        """Metrics of ``model`` on ``data`` from one confusion matrix over the whole set.

        Args:
            model: Any of the phases' models.
            data: Samples (``depth`` needed only for a depth-aware model).
            use_depth: Feed depth through the depth context; default: when the model has depth-aware layers.

        Returns:
            See :func:`depthdistill.engine.evaluate` (``mean_pixel_accuracy``, ``mean_iou``, ``pixel_accuracy`` …).
        """
        s = self.train_settings
        return evaluate(model, data, self.num_classes, ignore_index=self.ignore_index, use_depth=use_depth,
                        output_key=self.output_key, device=self.device, batch_size=s.eval_batch_size or s.batch_size,
                        num_workers=s.num_workers, amp=s.amp, channels_last=s.channels_last,
                        show_progress=s.progress)

    def run_experiment(self, train_data: Data, test_data: Data, *, teacher_epochs: int, student_epochs: int,
                       baseline_epochs: int | None = None, val_data: Data | None = None, ablations: bool = False,
                       rows: Sequence[str] | None = None, unlabelled_data: Data | None = None) -> ResultsTable:
        """Trains the paper's rows (BL, TN, SN, and with ``ablations`` BL+VTCE and BL+PS, or the ``rows`` asked for)
        and tests each one; see :func:`~depthdistill.distill.experiment.run_experiment` for every row."""
        self._settle_preset(unlabelled_data)
        self._check_unlabelled(unlabelled_data)
        return run_experiment(self, train_data, test_data, teacher_epochs=teacher_epochs,
                              student_epochs=student_epochs, baseline_epochs=baseline_epochs, val_data=val_data,
                              ablations=ablations, rows=rows, unlabelled_data=unlabelled_data)

    # ------------------------------------------------------------------------------- services of the phases
    def initial_copy(self) -> nn.Module:
        """A plain model with the initial weights (a new object; the live model is untouched)."""
        model = convert_to_plain(copy.deepcopy(self.model))
        model.load_state_dict(self.initial_state)
        model.requires_grad_(True)
        return model

    def forward(self, model: nn.Module, batch: dict) -> torch.Tensor:
        """``model``'s logits on ``batch["rgb"]``, checked against the labels' shape and ``num_classes``.

        Raises:
            ConfigError: If the output is not a ``(B, num_classes, H, W)`` tensor at the labels' size.
        """
        return self.checked_logits(model(batch["rgb"]), batch)

    def checked_logits(self, output: Any, batch: dict) -> torch.Tensor:
        """The logits in a model's ``output`` (``output_key``), checked as :meth:`forward` checks them: for a phase
        whose one forward call returns several models' outputs (method ``"online"``).

        Raises:
            ConfigError: If they are not a ``(B, num_classes, H, W)`` tensor at the labels' size.

        Examples:
            >>> d = Distiller(nn.Conv2d(3, 2, 3, padding=1), 2, output_key="out", progress=False, device="cpu")
            >>> batch = {"rgb": torch.rand(1, 3, 4, 4), "label": torch.zeros(1, 4, 4, dtype=torch.long)}
            >>> d.checked_logits({"out": torch.zeros(1, 2, 4, 4), "aux": None}, batch).shape
            torch.Size([1, 2, 4, 4])
        """
        logits = select_logits(output, self.output_key)
        if not isinstance(logits, torch.Tensor):
            raise ConfigError(f"the model returned a {type(logits).__name__}; the Distiller needs a logits tensor "
                              "(B,C,H,W): pass output_key (a dict key or a function output -> logits) or wrap the "
                              "model so its forward returns the segmentation logits")
        label = batch["label"]
        if logits.dim() != 4 or logits.shape[1] != self.num_classes or logits.shape[-2:] != label.shape[-2:]:
            raise ConfigError(
                f"the model's logits are {tuple(logits.shape)} but labels are {tuple(label.shape)} with "
                f"num_classes={self.num_classes}: the model must return (B,{self.num_classes},H,W) at the label's size "
                "(upsample inside the model, e.g. F.interpolate(logits, size=image.shape[-2:], mode='bilinear'))"
            )
        return logits

    def check_data(self, data: Data, *, needs_depth: bool, where: str, needs_label: bool = True) -> None:
        """Checks samples of ``data`` (labels in range, depth present when needed) before a phase trains;
        ``needs_label=False`` checks unlabelled frames (no ``"label"``, and refuses labelled ones)."""
        check_dataset(data, num_classes=self.num_classes, ignore_index=self.ignore_index, needs_depth=needs_depth,
                      samples=self.train_settings.check_samples, where=where, needs_label=needs_label)

    def sample_batches(self, data: Data, count: int) -> list[dict]:
        """The first ``count`` batches of ``data`` in order (no shuffling), on the Distiller's device."""
        if isinstance(data, DataLoader):
            batches = [batch for batch, _ in zip(data, range(count))]
        else:
            size = self.train_settings.batch_size
            batches = [collate_rgbd([data[i] for i in range(start, min(start + size, len(data)))])
                       for start in range(0, min(count * size, len(data)), size)]
        return [move_batch(batch, self.device, False) for batch in batches]

    def identity(self, model: nn.Module) -> dict[str, Any]:
        """What a phase training ``model`` must match to resume from a checkpoint: the model, the classes, the
        depth-aware layers and every setting of the method (``distill.<field>``)."""
        return {"model": self.meta["model"], "num_classes": self.num_classes, "ignore_index": self.ignore_index,
                "depth_aware_layers": list_depth_aware(model),
                **{f"distill.{k}": v for k, v in self.settings.identity().items()}}

    def fit_phase(self, name: str, model: nn.Module, loss_fn: LossFn, train_data: Data, epochs: int,
                  val_data: Data | None, *, needs_depth: bool, lr_scale: float = 1.0,
                  optimizer_state: dict[str, Any] | None = None, keep_optimizer_state: bool = False,
                  distillation: dict[str, Any] | None = None, schedule_start: int = 0,
                  schedule_epochs: int | None = None, deployable: nn.Module | None = None) -> FitResult:
        """Trains one phase with :func:`~depthdistill.engine.fit` in ``out_dir/<name>``, with the Distiller's
        optimiser, schedule, callbacks, log and resume check; records the result in :attr:`fits`.

        Args:
            name: The phase's name and folder.
            model: What it trains, in place.
            loss_fn: ``loss_fn(model, batch, epoch) -> {"loss": …, **parts}``.
            train_data: Training samples.
            epochs: Epochs to train.
            val_data: Optional validation set (with depth when ``model`` is depth-aware).
            needs_depth: Every training batch must carry depth.
            lr_scale: The phase's learning rate relative to the optimiser's.
            optimizer_state: An earlier phase's optimiser state to carry on.
            keep_optimizer_state: Return the final optimiser state in the result.
            distillation: What the phase learns from (student loss, teacher source), part of its identity.
            schedule_start: Epochs of the learning-rate schedule earlier phases trained (this phase continues it).
            schedule_epochs: Epochs the schedule is planned over (default: it ends with this phase).
            deployable: The part of ``model`` that ``model.pt`` and ``best.pt`` hold and that ``evaluate`` /
                ``predict`` / ``export`` rebuild (default: all of it), e.g. the student of a pair trained together.

        Returns:
            The phase's :class:`~depthdistill.engine.FitResult`.
        """
        run_dir = self.out_dir / name if self.out_dir is not None else None
        depth_aware = list_depth_aware(model)
        identity = self.identity(model)
        if distillation is not None:
            identity["distillation"] = distillation
        # the model's conversion (load_model rebuilds a teacher from it), then what trained it
        meta = {**self.meta, "phase": name, "num_classes": self.num_classes, "ignore_index": self.ignore_index,
                **depth_aware_record(model if deployable is None else deployable),
                "distill": self.settings.to_dict()}
        palette = getattr(getattr(train_data, "dataset", train_data), "palette", None)
        if palette is not None and len(palette) == self.num_classes:
            meta["palette"] = [[int(c) for c in colour] for colour in palette]  # predict paints with it
        # The input pipeline: evaluate and predict feed RGB as training did (None: RGB in 0..1).
        meta.setdefault("rgb_normalization", rgb_normalization(train_data))

        def check(batch: dict) -> None:
            check_batch(batch, num_classes=self.num_classes, ignore_index=self.ignore_index,
                        needs_depth=needs_depth, where=f"{name} training data")

        evaluate = (lambda m: self.evaluate(m, val_data, use_depth=bool(depth_aware))) if val_data is not None else None
        self.fits[name] = fit(
            model, loss_fn, train_data, epochs, phase=name, settings=self.train_settings, run_dir=run_dir,
            evaluate=evaluate, check=check, optimizer=self.optimizer, scheduler=self.scheduler,
            callbacks=self.callbacks, resume=self.resume, meta=meta, identity=identity, log=self.log,
            optimizer_state=optimizer_state, keep_optimizer_state=keep_optimizer_state, lr_scale=lr_scale,
            schedule_start=schedule_start, schedule_epochs=schedule_epochs, deployable=deployable,
        )
        return self.fits[name]

