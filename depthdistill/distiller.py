"""The Distiller: train a depth-aware teacher on RGB-D, hand its very weights to a plain RGB student distilled with
VTCE, and compare against the baseline and the paper's ablations.

Phases and what they train (the paper's names):

* **BL** — the plain model on RGB with cross-entropy, from the initial weights.
* **TN** — the teacher: every spatial convolution made depth-aware (:func:`~depthdistill.convert_to_depth_aware`),
  cross-entropy on RGB-D, depth reaching the layers through :func:`~depthdistill.depth_context`.
* **SN** — the student: the live teacher reverted to plain convolutions *in place*
  (:func:`~depthdistill.convert_to_plain`), so its Parameter objects are the teacher's ("PS"), trained on RGB
  with ``CE + VTCE(T(e))`` against a frozen copy of the trained teacher fed RGB-D.
* **BL+VTCE** / **BL+PS** — the ablations of the paper's Table 3: one of the two ingredients only.
* **TN→RGB** — the trained teacher's weights reverted to plain convolutions and tested on RGB before any student
  training: what removing depth costs at the switch. **BL@TN** — BL trained for the teacher's epochs only, so TN's
  gain from depth is seen at equal epochs. **BL@TN+PS** — the student's schedule without depth: BL@TN's weights
  trained on for the student's epochs with CE, so SN's difference from it is what the depth-trained teacher adds.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from depthdistill.labels import VOID
from depthdistill.convert import LayerFilter, convert_to_depth_aware, convert_to_plain, list_depth_aware
from depthdistill.engine.checks import check_batch, check_dataset, check_model
from depthdistill.engine.device import move_batch, resolve_device
from depthdistill.engine.distributed import barrier, get_rank, get_world_size, is_main_process
from depthdistill.engine.evaluate import OutputKey, evaluate, select_logits
from depthdistill.engine.loop import Callback, FitResult, LossFn, TrainSettings, fit
from depthdistill.engine.optim import OptimizerFactory, SchedulerFactory
from depthdistill.engine.registry import model_spec
from depthdistill.engine.run_log import RunLog
from depthdistill.errors import ConfigError, ConfigTypeError, TrainingError
from depthdistill.losses import DEFAULT_BETA, CEPlusVTCE, StudentLoss
from depthdistill.nn import depth_context
from depthdistill.nn.functional import DEFAULT_ALPHA
from depthdistill.results import ResultRow, ResultsTable

__all__ = ["Distiller", "ResultRow", "ResultsTable", "EXPERIMENT_ROWS", "RECIPES", "STUDENT_OPTIMIZERS",
           "TEACHER_SOURCES"]

#: Rows :meth:`Distiller.run_experiment` knows, in the order it reports them (see its table).
EXPERIMENT_ROWS = ("BL", "BL@TN", "TN", "TN→RGB", "SN", "BL+VTCE", "BL+PS", "BL@TN+PS")
#: How the student phase's optimiser starts: a new one, or the teacher's per-parameter state carried on.
STUDENT_OPTIMIZERS = ("fresh", "carry")
#: Named settings of the teacher and of the switch to the student; every one can still be set on its own.
#: ``"default"`` is the recipe whose student measured best in docs/fidelity.md: the model's own depth-aware
#: layers when it names them (``model.depth_aware_layers``, e.g. Depth-aware CNN's six for ``deeplab_vgg16``),
#: depth brought to each layer by average pooling, and depth dropout 0.5. ``"paper"`` is the paper to the letter
#: as we read it: every spatial convolution, nearest depth, no dropout.
RECIPES: dict[str, dict[str, Any]] = {
    "default": {"layers": "model", "depth_resize": "avgpool", "depth_dropout": 0.5, "calibrate_removal": False,
                "student_lr_scale": 1.0, "student_optimizer": "fresh"},
    "paper": {"layers": "all", "depth_resize": "nearest", "depth_dropout": 0.0, "calibrate_removal": False,
              "student_lr_scale": 1.0, "student_optimizer": "fresh"},
}
#: Where the student's soft targets come from: a frozen copy of the trained teacher, or the live shared weights.
TEACHER_SOURCES = ("frozen", "live")

Data = Dataset | DataLoader


def _frozen_copy(model: nn.Module) -> nn.Module:
    teacher = copy.deepcopy(model)
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def _student_parts(parts: Any) -> dict[str, torch.Tensor]:
    """A student loss's result checked, its logged parts made detached scalar tensors on the loss's device."""
    loss = parts.get("loss") if isinstance(parts, dict) else None
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise ConfigError("student_loss must return a dict with the scalar tensor to minimise under 'loss' (and "
                          f"any other scalars to log), got {parts if not isinstance(parts, dict) else sorted(parts)!r}")
    logged = {}
    for name, value in parts.items():
        if name != "loss":
            value = torch.as_tensor(value).detach()
            if value.numel() != 1:
                raise ConfigError(f"student_loss returned {name!r} of shape {tuple(value.shape)}; every entry it "
                                  "returns is logged and must be a scalar")
            logged[name] = value.to(loss.device)
    return {"loss": loss, **logged}


class Distiller:
    """Depth removal distillation for any segmenter mapping an image batch ``(B,3,H,W)`` to logits ``(B,C,H,W)``.

    The Distiller owns one *live* model that goes through the phases in place: plain → teacher (depth-aware) →
    student (plain again, same Parameter objects). A copy of the initial weights is kept before anything trains,
    so the baseline rows start from exactly the weights the teacher started from.

    Args:
        model: The segmenter; its logits must have the label's height and width (upsample inside the model).
            A model returning a dict (torchvision's ``{"out": logits, "aux": …}``) works too, see ``output_key``.
        num_classes: Number of classes; labels are ``0..num_classes−1`` and ``ignore_index``.
        alpha: α of the depth-aware convolution (Eq. 6), per metre.
        beta: β of the VTCE temperature (Eq. 10), for the default ``student_loss``.
        ignore_index: Void label, ignored by the losses and metrics.
        out_dir: Where each phase writes ``<out_dir>/<phase>/{last,best,model}.pt`` and the run writes
            ``metrics.jsonl`` and ``results.json``; ``None`` writes nothing.
        share_parameters: Default of :meth:`train_student`: the student is the teacher's own weights (PS).
            ``False`` starts it from the initial weights instead.
        vtce: Default of :meth:`train_student`: learn from the teacher with ``student_loss`` (``False``: CE on the
            labels only).
        teacher_source: Where VTCE's soft targets come from. ``"frozen"`` (default): a frozen copy of the trained
            teacher (eval mode, no gradients), made when the teacher phase ends. ``"live"``: the shared weights as
            they are being trained, run as a depth-aware teacher on RGB-D in eval mode (the other reading of the
            paper; only meaningful with shared parameters).
        vtce_schedule: Optional ``epoch -> T`` replacing Eq. 10, for the default ``student_loss``.
        student_loss: The loss of every phase that learns from the teacher (SN, BL+VTCE, ``train_student`` with
            ``vtce``): any callable ``(student_logits, teacher_logits, labels, epoch) -> {"loss": …, **parts}``
            (:data:`~depthdistill.losses.StudentLoss`); ``"loss"`` is minimised, the other entries (scalars) are
            logged. Default: :class:`~depthdistill.losses.CEPlusVTCE` with ``beta``, ``ignore_index`` and
            ``vtce_schedule``, the paper's ``CE + VTCE``. Phases without the teacher (BL, BL+PS) train with CE.
        recipe: ``"default"`` or ``"paper"`` (:data:`RECIPES`): the values of ``include``, ``depth_resize``,
            ``depth_dropout``, ``calibrate_removal``, ``student_lr_scale`` and ``student_optimizer`` left at
            ``None``. ``"paper"`` reproduces the paper as we read it; ``"default"`` is the recipe that measured best
            (docs/fidelity.md).
        include: Which layers become depth-aware (see :func:`~depthdistill.convert_to_depth_aware`). ``None``: the
            recipe's choice: ``"paper"`` converts every spatial convolution; ``"default"`` takes the model's
            ``depth_aware_layers`` attribute when it has one, else every spatial convolution (``include="*"``
            asks for every one explicitly).
        exclude: Which stay plain.
        depth_resize: How depth is brought to each layer's resolution (see :func:`~depthdistill.depth_context`);
            ``None``: the recipe's (``"avgpool"`` by default, ``"nearest"`` for the paper).
        output_key: Where the logits are in the model's output, for every forward the Distiller makes (training,
            the teacher's soft targets, evaluation): ``None`` takes the output itself, or its ``"out"`` entry when
            it is a dict; a string picks another key; a function maps the output to the logits.
        depth_dropout: Probability, per training sample, that the teacher sees no depth in that step (its depth
            map replaced by a constant, so every ``H = 1`` and each D-Conv computes exactly the plain convolution).
            The shared weights then learn to work with and without depth. Under DDP each process draws for its
            own samples, independently of the others. ``None``: the recipe's (0.5 by default; 0, the paper).
        calibrate_removal: At the switch to the student, rescale each reverted layer's weight and bias in place so
            its plain output on RGB has the RMS its depth-aware output had on RGB-D (layer by layer in forward
            order, over ``calibration_batches`` training batches; BatchNorm statistics re-estimated on RGB); see
            :func:`~depthdistill.calibrate_removal`. ``None``: the recipe's (off in both).
        calibration_batches: Training batches used by ``calibrate_removal``.
        student_lr_scale: The student phase's learning rate is the optimiser's times this (``None``: the recipe's,
            1 in both: the teacher's, as in the paper).
        student_optimizer: ``"fresh"`` (both recipes): the student phase starts a new optimiser; ``"carry"``: it
            carries the teacher's per-parameter optimiser state (momenta, Adam moments) on, over the same
            Parameter objects. Applies to SN and BL+PS, which start from the teacher's weights.
        optimizer: Optimiser factory ``params -> Optimizer`` for every phase (default SGD from the settings).
        scheduler: Schedule factory ``(optimizer, total_steps) -> LRScheduler`` (default poly 0.9).
        callbacks: ``callback(LoopState)`` called at every epoch start, batch end and epoch end of every phase.
        resume: Continue each phase from its ``last.pt`` if present (finished phases just load their weights).
        settings: Training settings; keyword arguments below override its fields.
        meta: Extra information stored in every checkpoint. ``meta["model"]`` names the model for
            ``depthdistill evaluate / predict / export`` (the CLI stores the run file's name and arguments); by
            default it is the model's class (:func:`~depthdistill.engine.registry.model_spec`).
        **train_settings: Any field of :class:`~depthdistill.engine.TrainSettings` (``lr``, ``batch_size``,
            ``device``, ``amp``, ``channels_last``, ``grad_accum_steps``, ``seed`` …).

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
        *,
        alpha: float = DEFAULT_ALPHA,
        beta: float = DEFAULT_BETA,
        ignore_index: int = VOID,
        out_dir: str | os.PathLike | None = None,
        share_parameters: bool = True,
        vtce: bool = True,
        teacher_source: str = "frozen",
        vtce_schedule: Callable[[int], float] | None = None,
        student_loss: StudentLoss | None = None,
        recipe: str = "default",
        include: LayerFilter | None = None,
        exclude: LayerFilter | None = None,
        depth_resize: str | None = None,
        output_key: OutputKey = None,
        depth_dropout: float | None = None,
        calibrate_removal: bool | None = None,
        calibration_batches: int = 8,
        student_lr_scale: float | None = None,
        student_optimizer: str | None = None,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        callbacks: Sequence[Callback] = (),
        resume: bool = False,
        settings: TrainSettings | None = None,
        meta: dict[str, Any] | None = None,
        log_echo: bool = True,
        **train_settings: Any,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigTypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"num_classes must be an integer >= 1, got {num_classes!r}")
        if student_loss is not None and not callable(student_loss):
            raise ConfigTypeError(f"student_loss must be a callable (student_logits, teacher_logits, labels, epoch) "
                                  f"-> {{'loss': …}}, got {type(student_loss).__name__}")
        if student_loss is not None and (beta != DEFAULT_BETA or vtce_schedule is not None):
            raise ConfigError("beta and vtce_schedule configure the default student loss, which student_loss "
                              "replaces: give them to your loss instead (e.g. CEPlusVTCE(beta=..., schedule=...))")
        if teacher_source not in TEACHER_SOURCES:
            raise ConfigError(f"teacher_source must be one of {TEACHER_SOURCES}, got {teacher_source!r}")
        check_model(model)
        if recipe not in RECIPES:
            raise ConfigError(f"recipe must be one of {list(RECIPES)}, got {recipe!r}")
        chosen = RECIPES[recipe]
        depth_resize = chosen["depth_resize"] if depth_resize is None else depth_resize
        depth_dropout = chosen["depth_dropout"] if depth_dropout is None else depth_dropout
        calibrate_removal = chosen["calibrate_removal"] if calibrate_removal is None else calibrate_removal
        student_lr_scale = chosen["student_lr_scale"] if student_lr_scale is None else student_lr_scale
        student_optimizer = chosen["student_optimizer"] if student_optimizer is None else student_optimizer
        if include is None and chosen["layers"] == "model":
            include = getattr(model, "depth_aware_layers", None)
        if not 0.0 <= depth_dropout <= 1.0:
            raise ConfigError(f"depth_dropout is a probability in [0, 1], got {depth_dropout!r}")
        if not student_lr_scale > 0:
            raise ConfigError(f"student_lr_scale must be > 0, got {student_lr_scale!r}")
        if student_optimizer not in STUDENT_OPTIMIZERS:
            raise ConfigError(f"student_optimizer must be one of {STUDENT_OPTIMIZERS}, got {student_optimizer!r}")
        if not isinstance(calibration_batches, int) or calibration_batches < 1:
            raise ConfigError(f"calibration_batches must be an integer >= 1, got {calibration_batches!r}")
        if list_depth_aware(model):
            raise ConfigError("pass the plain model to Distiller: it converts the teacher itself (and keeps the "
                              "plain initial weights for the baseline); call depthdistill.convert_to_plain first")
        base = (settings or TrainSettings()).to_dict()
        self.settings = TrainSettings.from_dict({**base, **train_settings})
        self.model = model
        self.num_classes = num_classes
        self.alpha = float(alpha)
        self.ignore_index = int(ignore_index)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.share_parameters = bool(share_parameters)
        self.vtce = bool(vtce)
        self.teacher_source = teacher_source
        self.student_loss: StudentLoss = (student_loss if student_loss is not None
                                          else CEPlusVTCE(beta, self.ignore_index, vtce_schedule))
        self.recipe = recipe
        self.include, self.exclude, self.depth_resize = include, exclude, depth_resize
        self.output_key = output_key
        self.depth_dropout = float(depth_dropout)
        self.calibrate_removal, self.calibration_batches = bool(calibrate_removal), calibration_batches
        self.student_lr_scale, self.student_optimizer = float(student_lr_scale), student_optimizer
        self.optimizer, self.scheduler = optimizer, scheduler
        self.callbacks = list(callbacks)
        self.resume = bool(resume)
        self.meta = {"model": model_spec(model), **(meta or {})}
        self.device = resolve_device(self.settings.device)
        self.log = RunLog(self.out_dir / "metrics.jsonl" if self.out_dir else None, echo=log_echo)
        self._teacher_optimizer_state: dict[str, Any] | None = None
        #: The frozen teacher (eval mode, no gradients), set when the teacher phase ends.
        self.teacher: nn.Module | None = None
        #: The trained model of every row of the last :meth:`run_experiment`, by row name (TN is depth-aware).
        self.models: dict[str, nn.Module] = {}
        #: Names of the layers the teacher made depth-aware.
        self.depth_aware_layers: list[str] = []
        #: The :class:`~depthdistill.engine.FitResult` of every phase run so far, by phase name.
        self.fits: dict[str, FitResult] = {}
        # Cloned before anything trains: the baselines start from exactly the teacher's initial weights.
        self.initial_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    # ----------------------------------------------------------------------------------------------- phases
    def train_teacher(self, train_data: Data, epochs: int, val_data: Data | None = None, *,
                      name: str = "teacher") -> nn.Module:
        """Teacher phase: converts the live model to depth-aware in place and trains it with CE on RGB-D.

        When it ends, a frozen copy of the teacher is kept as :attr:`teacher` for the student's soft targets.

        Args:
            train_data: RGB-D samples (``depth`` required).
            epochs: Epochs to train.
            val_data: Optional validation set, evaluated with depth after every epoch (selects ``best.pt``).
            name: The phase's name and folder under ``out_dir``.

        Returns:
            The live model, now the teacher. The same object becomes the student in :meth:`train_student`;
            :attr:`teacher` keeps the teacher.

        Raises:
            DepthError: If the training data has no depth.
            DatasetError: If labels are out of range or samples are malformed.
            TrainingError: If the loss becomes NaN (the last good checkpoint is kept).
        """
        convert_to_depth_aware(self.model, alpha=self.alpha, include=self.include, exclude=self.exclude)
        self.depth_aware_layers = list_depth_aware(self.model)
        self._check_data(train_data, needs_depth=True, where=f"{name} training data")
        # Which layers the recipe's include rule picked is easy to get wrong and invisible in the results: say it.
        start = {"recipe": self.recipe, "depth_aware_layers": self.depth_aware_layers,
                 "depth_resize": self.depth_resize, "depth_dropout": self.depth_dropout}
        self.log.write({"phase": name, "event": "teacher_start", **start})
        self.log.say(name, f"{len(self.depth_aware_layers)} depth-aware layers ({', '.join(self.depth_aware_layers)}), "
                           f"depth resized by {self.depth_resize}, depth dropout {self.depth_dropout:g} "
                           f"(recipe {self.recipe!r})")

        def loss_fn(model: nn.Module, batch: dict, epoch: int) -> dict[str, torch.Tensor]:
            with depth_context(self._teacher_depth(batch["depth"]), resize=self.depth_resize):
                logits = self._forward(model, batch)
            ce = F.cross_entropy(logits.float(), batch["label"], ignore_index=self.ignore_index)
            return {"loss": ce}

        self._fit(name, self.model, loss_fn, train_data, epochs, val_data, needs_depth=True,
                  keep_optimizer_state=self.student_optimizer == "carry")
        self._teacher_optimizer_state = self.fits[name].optimizer_state
        self.teacher = _frozen_copy(self.model)
        return self.model

    def train_student(self, train_data: Data, epochs: int, val_data: Data | None = None, *,
                      share_parameters: bool | None = None, vtce: bool | None = None,
                      name: str = "student") -> nn.Module:
        """Student phase: a plain model trained on RGB with ``student_loss`` against the teacher (``CE + VTCE(T(e))``
        by default) when ``vtce``, else with ``CE``.

        With ``share_parameters`` (PS, the paper's method) the live teacher's layers are reverted to plain
        convolutions in place, so the student's Parameter objects *are* the trained teacher's (rescaled first when
        ``calibrate_removal`` is on; trained with ``student_lr_scale`` and ``student_optimizer``). Without it the
        student is a plain copy of the model loaded with the initial weights (the BL+VTCE ablation). ``e`` in
        ``T(e)`` (the ``epoch`` given to ``student_loss``) is the student phase's epoch index, from 0. VTCE is
        averaged over non-void pixels.

        Args:
            train_data: RGB-D samples (depth feeds the teacher's soft targets; RGB alone is enough without VTCE).
            epochs: Epochs to train.
            val_data: Optional validation set, evaluated on RGB after every epoch.
            share_parameters: Override of the constructor's default.
            vtce: Override of the constructor's default.
            name: The phase's name and folder under ``out_dir``.

        Returns:
            The student (a plain model). With PS it is the object :meth:`train_teacher` returned.

        Raises:
            TrainingError: If the teacher is needed (PS or VTCE) but has not been trained.
        """
        share = self.share_parameters if share_parameters is None else bool(share_parameters)
        use_vtce = self.vtce if vtce is None else bool(vtce)
        if share:
            if not list_depth_aware(self.model):
                raise TrainingError("train_student(share_parameters=True) needs the trained teacher, but the live "
                                    "model is not depth-aware: call train_teacher first (or it already became the "
                                    "student)")
            student = self._remove_depth(self.model, train_data)
        else:
            student = self._initial_copy()
        return self._train_plain(student, train_data, epochs, val_data, use_vtce=use_vtce, shared=share, name=name)

    def train_baseline(self, train_data: Data, epochs: int, val_data: Data | None = None, *, vtce: bool = False,
                       name: str = "baseline") -> nn.Module:
        """The baseline (BL): a plain copy of the model from the initial weights, CE on RGB.

        ``vtce=True`` gives the BL+VTCE ablation (needs the trained teacher). The live model is not touched.

        Returns:
            The trained baseline model (a new object).
        """
        return self._train_plain(self._initial_copy(), train_data, epochs, val_data, use_vtce=vtce, shared=False,
                                 name=name)

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
        s = self.settings
        return evaluate(model, data, self.num_classes, ignore_index=self.ignore_index, use_depth=use_depth,
                        depth_resize=self.depth_resize, output_key=self.output_key, device=self.device,
                        batch_size=s.eval_batch_size or s.batch_size, num_workers=s.num_workers, amp=s.amp,
                        channels_last=s.channels_last, show_progress=s.progress)

    # ------------------------------------------------------------------------------------------- experiment
    def run_experiment(
        self,
        train_data: Data,
        test_data: Data,
        *,
        teacher_epochs: int,
        student_epochs: int,
        baseline_epochs: int | None = None,
        val_data: Data | None = None,
        ablations: bool = False,
        rows: Sequence[str] | None = None,
    ) -> ResultsTable:
        """Trains BL, TN and SN (and, with ``ablations``, BL+VTCE and BL+PS) and tests each one.

        Row definitions (the paper's Tables 1 and 3; the constructor's ``share_parameters`` / ``vtce`` defaults do
        not apply here, each row sets its own):

        ========  =============================  =========================  =================
        row       starts from                    loss, input                epochs
        ========  =============================  =========================  =================
        BL        initial weights                CE, RGB                    ``baseline_epochs``
        BL@TN     initial weights                CE, RGB                    ``teacher_epochs``
        TN        initial weights, depth-aware   CE, RGB-D                  ``teacher_epochs``
        TN→RGB    TN's weights, plain convs      (not trained), RGB         0
        SN        TN's weights (the same ones)   CE + VTCE (TN), RGB        ``student_epochs``
        BL+VTCE   initial weights                CE + VTCE (TN), RGB        ``baseline_epochs``
        BL+PS     TN's weights (a copy)          CE, RGB                    ``student_epochs``
        BL@TN+PS  BL@TN's weights (a copy)       CE, RGB                    ``student_epochs``
        ========  =============================  =========================  =================

        ``baseline_epochs`` defaults to ``teacher_epochs + student_epochs``, the training SN gets in total, so a
        gain of SN over BL is not merely more training. BL@TN+PS is the control for SN: the same two schedules
        (``teacher_epochs``, then ``student_epochs`` with a fresh optimiser at ``student_lr_scale``) with no depth
        anywhere, so SN − BL@TN+PS is what the depth-trained teacher adds, and BL@TN+PS − BL what splitting the
        training in two costs by itself. TN is tested on RGB-D, every other row on RGB. The table
        is written to ``out_dir/results.json`` (rank 0). With ``resume`` finished rows are loaded, not retrained.

        Args:
            train_data: RGB-D training samples.
            test_data: RGB-D test samples.
            teacher_epochs: Epochs of TN.
            student_epochs: Epochs of SN and BL+PS.
            baseline_epochs: Epochs of BL and BL+VTCE.
            val_data: Optional validation set for every phase.
            ablations: Add BL+VTCE and BL+PS. The default rows are BL, TN, TN→RGB and SN.
            rows: Explicit rows instead (any of :data:`EXPERIMENT_ROWS`).

        Returns:
            The :class:`ResultsTable`, rows in the order of :data:`EXPERIMENT_ROWS`.
        """
        wanted = list(rows) if rows is not None else (["BL", "TN", "TN→RGB", "SN"]
                                                      + (["BL+VTCE", "BL+PS"] if ablations else []))
        unknown = sorted(set(wanted) - set(EXPERIMENT_ROWS))
        if unknown or not wanted:
            raise ConfigError(f"unknown experiment row(s) {unknown or wanted}; choose from {list(EXPERIMENT_ROWS)}")
        if baseline_epochs is None:
            baseline_epochs = teacher_epochs + student_epochs
        trained: dict[str, tuple[nn.Module, int, str]] = {}

        if "BL" in wanted:
            trained["BL"] = (self._train_plain(self._initial_copy(), train_data, baseline_epochs, val_data,
                                               use_vtce=False, shared=False, name="bl"), baseline_epochs, "bl")
        if {"BL@TN", "BL@TN+PS"} & set(wanted):
            trained["BL@TN"] = (self._train_plain(self._initial_copy(), train_data, teacher_epochs, val_data,
                                                  use_vtce=False, shared=False, name="bl_tn"), teacher_epochs, "bl_tn")
        if "BL@TN+PS" in wanted:
            trained["BL@TN+PS"] = (self._train_plain(copy.deepcopy(trained["BL@TN"][0]), train_data, student_epochs,
                                                     val_data, use_vtce=False, shared=False, name="bl_tn_ps",
                                                     lr_scale=self.student_lr_scale), student_epochs, "bl_tn_ps")
        if set(wanted) - {"BL", "BL@TN", "BL@TN+PS"}:
            teacher = self.train_teacher(train_data, teacher_epochs, val_data, name="tn")
            trained["TN"] = (self.teacher, teacher_epochs, "tn")
        if "TN→RGB" in wanted:
            trained["TN→RGB"] = (convert_to_plain(copy.deepcopy(self.teacher)), 0, "tn")
        if "BL+VTCE" in wanted:
            trained["BL+VTCE"] = (self._train_plain(self._initial_copy(), train_data, baseline_epochs, val_data,
                                                    use_vtce=True, shared=False, name="bl_vtce"),
                                  baseline_epochs, "bl_vtce")
        if "BL+PS" in wanted:
            copy_of_teacher = self._remove_depth(copy.deepcopy(teacher), train_data)
            trained["BL+PS"] = (self._train_plain(copy_of_teacher, train_data, student_epochs, val_data,
                                                  use_vtce=False, shared=True, name="bl_ps"), student_epochs, "bl_ps")
        if "SN" in wanted:
            trained["SN"] = (self.train_student(train_data, student_epochs, val_data, share_parameters=True,
                                                vtce=True, name="sn"), student_epochs, "sn")

        self.models = {row: model for row, (model, _, _) in trained.items() if row in wanted}
        table_rows = []
        for row in (r for r in EXPERIMENT_ROWS if r in wanted):
            model, epochs, phase = trained[row]
            depth = row == "TN"
            metrics = self.evaluate(model, test_data, use_depth=depth)
            table_rows.append(ResultRow(
                name=row, input="RGB-D" if depth else "RGB",
                mean_pixel_accuracy=metrics["mean_pixel_accuracy"], mean_iou=metrics["mean_iou"],
                pixel_accuracy=metrics["pixel_accuracy"], epochs=epochs,
                seconds=round(self.fits[phase].seconds, 3) if epochs else 0.0, per_class_iou=metrics["per_class_iou"],
            ))
            self.log.write({"phase": phase, "row": row, "test": {k: v for k, v in metrics.items() if k != "confusion_matrix"}})
        table = ResultsTable(table_rows, info={
            "num_classes": self.num_classes, "alpha": self.alpha, "beta": getattr(self.student_loss, "beta", None),
            "teacher_source": self.teacher_source, "teacher_epochs": teacher_epochs,
            "depth_aware_layers": self.depth_aware_layers, "depth_resize": self.depth_resize,
            "depth_dropout": self.depth_dropout, "calibrate_removal": self.calibrate_removal,
            "recipe": self.recipe, "student_lr_scale": self.student_lr_scale,
            "student_optimizer": self.student_optimizer,
            "student_epochs": student_epochs, "baseline_epochs": baseline_epochs,
            "settings": self.settings.to_dict(),
            "note": "seconds: training time of this call (a resumed row counts only what it trained now)",
        })
        if self.out_dir is not None and is_main_process():
            table.save_json(self.out_dir / "results.json")
        barrier()
        return table

    # --------------------------------------------------------------------------------------------- helpers
    def _initial_copy(self) -> nn.Module:
        """A plain model with the initial weights (a new object; the live model is untouched)."""
        model = convert_to_plain(copy.deepcopy(self.model))
        model.load_state_dict(self.initial_state)
        model.requires_grad_(True)
        return model

    def _forward(self, model: nn.Module, batch: dict) -> torch.Tensor:
        logits = select_logits(model(batch["rgb"]), self.output_key)
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

    def _check_data(self, data: Data, *, needs_depth: bool, where: str) -> None:
        check_dataset(data, num_classes=self.num_classes, ignore_index=self.ignore_index, needs_depth=needs_depth,
                      samples=self.settings.check_samples, where=where)

    def _teacher_logits(self, student: nn.Module, source: str) -> Callable[[dict], torch.Tensor]:
        """Soft-target source for VTCE: the frozen teacher, or the student's own weights run as the teacher."""
        if self.teacher is None:
            raise TrainingError("VTCE needs the trained teacher: call train_teacher first")
        if source == "frozen":
            teacher = self.teacher.to(self.device)

            def frozen(batch: dict) -> torch.Tensor:
                with torch.no_grad(), depth_context(batch["depth"], resize=self.depth_resize):
                    return select_logits(teacher(batch["rgb"]), self.output_key)

            return frozen

        layers = list(self.depth_aware_layers)

        def live(batch: dict) -> torch.Tensor:
            # The shared weights as they are now, run as the depth-aware teacher (eval mode: no dropout, BN
            # running statistics), then back to the plain student in train mode.
            convert_to_depth_aware(student, alpha=self.alpha, include=layers)
            student.eval()
            try:
                with torch.no_grad(), depth_context(batch["depth"], resize=self.depth_resize):
                    return select_logits(student(batch["rgb"]), self.output_key)
            finally:
                convert_to_plain(student)
                student.train()

        return live

    def _teacher_depth(self, depth: torch.Tensor) -> torch.Tensor:
        """The teacher's depth for one training batch: with ``depth_dropout``, some samples' maps made constant."""
        if self.depth_dropout == 0.0:
            return depth
        # Every rank draws the whole global batch from the same (equally seeded) generator and keeps its own share:
        # ranks then drop independently, and N processes of b samples draw what one process of N·b would.
        size, rank = depth.shape[0], get_rank()
        draws = torch.rand(size * get_world_size(), device=depth.device)[rank * size:(rank + 1) * size]
        dropped = draws < self.depth_dropout
        # A constant map gives H = exp(0) = 1 at every tap: those samples see the plain convolution.
        return torch.where(dropped.view(-1, *([1] * (depth.dim() - 1))), torch.ones_like(depth), depth)

    def _remove_depth(self, teacher: nn.Module, train_data: Data) -> nn.Module:
        """The switch from teacher to student: optional calibration, then plain convolutions, in place."""
        if self.calibrate_removal:
            from depthdistill.removal import calibrate_removal

            scales = calibrate_removal(teacher, self._sample_batches(train_data, self.calibration_batches),
                                       depth_resize=self.depth_resize)
            self.log.write({"event": "calibrate_removal", "scales": scales})
        return convert_to_plain(teacher)

    def _sample_batches(self, data: Data, count: int) -> list[dict]:
        """The first ``count`` batches of ``data`` in order (no shuffling), on the Distiller's device."""
        from depthdistill.data import collate_rgbd

        if isinstance(data, DataLoader):
            batches = [batch for batch, _ in zip(data, range(count))]
        else:
            size = self.settings.batch_size
            batches = [collate_rgbd([data[i] for i in range(start, min(start + size, len(data)))])
                       for start in range(0, min(count * size, len(data)), size)]
        return [move_batch(batch, self.device, False) for batch in batches]

    def _train_plain(self, student: nn.Module, train_data: Data, epochs: int, val_data: Data | None, *,
                     use_vtce: bool, shared: bool, name: str, lr_scale: float = 1.0) -> nn.Module:
        """Trains a plain model on RGB, with ``student_loss`` against the teacher or with CE: BL, BL+VTCE, BL+PS, SN,
        BL@TN+PS.

        ``shared``: the model starts from the teacher's weights (SN, BL+PS), so the student recipe applies (its
        ``student_lr_scale`` replaces ``lr_scale``).
        """
        self._check_data(train_data, needs_depth=use_vtce, where=f"{name} training data")
        recipe: dict[str, Any] = {"lr_scale": lr_scale}
        if use_vtce:
            # Without shared weights there is no live teacher to speak of: the frozen one is the only reading.
            source = self.teacher_source if shared else "frozen"
            teacher_logits = self._teacher_logits(student, source)
            recipe["distillation"] = {"loss": _loss_identity(self.student_loss), "teacher_source": source}

        def loss_fn(model: nn.Module, batch: dict, epoch: int) -> dict[str, torch.Tensor]:
            logits = self._forward(model, batch).float()
            if not use_vtce:
                return {"loss": F.cross_entropy(logits, batch["label"], ignore_index=self.ignore_index)}
            return _student_parts(self.student_loss(logits, teacher_logits(batch).float(), batch["label"], epoch))

        if shared:
            carried = self._teacher_optimizer_state if self.student_optimizer == "carry" else None
            if self.student_optimizer == "carry" and carried is None:
                raise TrainingError("student_optimizer='carry' needs the teacher phase's optimiser state: train the "
                                    "teacher with this Distiller first")
            recipe.update(lr_scale=self.student_lr_scale, optimizer_state=carried)
            with torch.no_grad():
                first = self._sample_batches(train_data, 1)[0]
                start_ce = F.cross_entropy(self._forward(student.to(self.device).eval(), first).float(),
                                           first["label"], ignore_index=self.ignore_index).item()
            student.train()
            start = {"start_ce": start_ce, "lr_scale": self.student_lr_scale,
                     "optimizer": "carried" if carried is not None else "fresh", "calibrated": self.calibrate_removal}
            self.log.write({"phase": name, "event": "student_start", **start})
            self.log.say(name, f"starts from the teacher's weights as plain convolutions: CE {start_ce:.4g} on the "
                               f"first training batch, lr x{self.student_lr_scale:g} of the teacher's, "
                               f"{start['optimizer']} optimiser state, calibrated: {self.calibrate_removal}")
        self._fit(name, student, loss_fn, train_data, epochs, val_data, needs_depth=use_vtce, **recipe)
        return student

    def _fit(self, name: str, model: nn.Module, loss_fn: LossFn, train_data: Data, epochs: int,
             val_data: Data | None, *, needs_depth: bool, lr_scale: float = 1.0,
             optimizer_state: dict[str, Any] | None = None, keep_optimizer_state: bool = False,
             distillation: dict[str, Any] | None = None) -> None:
        run_dir = self.out_dir / name if self.out_dir is not None else None
        depth_aware = list_depth_aware(model)
        meta = {**self.meta, "phase": name, "num_classes": self.num_classes, "ignore_index": self.ignore_index,
                "alpha": self.alpha, "depth_resize": self.depth_resize, "depth_aware_layers": depth_aware,
                "recipe": {"depth_dropout": self.depth_dropout, "calibrate_removal": self.calibrate_removal,
                           "student_lr_scale": self.student_lr_scale, "student_optimizer": self.student_optimizer}}
        if distillation is not None:
            meta["distillation"] = distillation
        palette = getattr(getattr(train_data, "dataset", train_data), "palette", None)
        if palette is not None and len(palette) == self.num_classes:
            meta["palette"] = [[int(c) for c in colour] for colour in palette]  # predict paints with it

        def check(batch: dict) -> None:
            check_batch(batch, num_classes=self.num_classes, ignore_index=self.ignore_index,
                        needs_depth=needs_depth, where=f"{name} training data")

        evaluate = (lambda m: self.evaluate(m, val_data, use_depth=bool(depth_aware))) if val_data is not None else None
        self.fits[name] = fit(
            model, loss_fn, train_data, epochs, phase=name, settings=self.settings, run_dir=run_dir,
            evaluate=evaluate, check=check, optimizer=self.optimizer, scheduler=self.scheduler,
            callbacks=self.callbacks, resume=self.resume, meta=meta, log=self.log, optimizer_state=optimizer_state,
            keep_optimizer_state=keep_optimizer_state, lr_scale=lr_scale,
        )


def _loss_identity(loss: StudentLoss) -> dict[str, Any]:
    """What tells one student loss from another in the resume check: its qualified name, plus β and the schedule
    for the built-in CE + VTCE."""
    identity: dict[str, Any] = {"name": _qualified_name(loss)}
    if isinstance(loss, CEPlusVTCE):
        schedule = loss.vtce.schedule
        identity.update(beta=loss.beta, schedule=None if schedule is None else _qualified_name(schedule))
    return identity


def _qualified_name(obj: Callable) -> str:
    """``module.QualName`` of a function, or of the class of a callable object."""
    named = obj if hasattr(obj, "__qualname__") else type(obj)
    return f"{named.__module__}.{named.__qualname__}"
