"""The student phase: a plain model trained on RGB, with the student loss against the teacher's soft targets or
with cross-entropy alone; the piece behind SN, BL, BL+VTCE, BL+PS and BL@TN+PS."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from depthdistill.distill.settings import qualified_name
from depthdistill.distill.teacher import as_teacher
from depthdistill.engine.evaluate import select_logits
from depthdistill.errors import ConfigError, TrainingError
from depthdistill.losses import CEPlusVTCE, StudentLoss
from depthdistill.nn import depth_context

if TYPE_CHECKING:
    from depthdistill.distill.distiller import Data, Distiller

__all__ = ["train_plain", "teacher_logits", "frozen_logits", "student_loss_identity", "checked_parts",
           "continued_schedule"]

#: ``teacher(batch) -> logits``: the soft targets of one RGB-D batch.
TeacherLogits = Callable[[dict], torch.Tensor]


def teacher_logits(distiller: Distiller, student: nn.Module, source: str) -> TeacherLogits:
    """The soft-target source: the frozen teacher (``"frozen"``), or the student's own weights run as the
    depth-aware teacher in eval mode (``"live"``, shared parameters only).

    Raises:
        TrainingError: If the teacher has not been trained.
    """
    if distiller.teacher is None:
        raise TrainingError("VTCE needs the trained teacher: call train_teacher first")
    if source == "frozen":
        return frozen_logits(distiller, distiller.teacher, depth=True)

    def live(batch: dict) -> torch.Tensor:
        # The shared weights as they are now, run as the depth-aware teacher (eval mode: no dropout, BN
        # running statistics), then back to the plain student in train mode.
        with as_teacher(student, distiller.settings, distiller.depth_aware_layers):
            student.eval()
            try:
                with torch.no_grad(), depth_context(batch["depth"]):
                    return select_logits(student(batch["rgb"]), distiller.output_key)
            finally:
                student.train()

    return live


def frozen_logits(distiller: Distiller, model: nn.Module, *, depth: bool) -> TeacherLogits:
    """``batch -> logits`` of a frozen ``model`` (no gradients) on the batch's RGB, under its depth when ``depth``
    (a depth-aware teacher); the labeller of every soft target, the RGB models of the controls included.

    Examples:
        >>> import types
        >>> net = torch.nn.Conv2d(3, 2, 1)
        >>> d = types.SimpleNamespace(device=torch.device("cpu"), output_key=None)
        >>> frozen_logits(d, net, depth=False)({"rgb": torch.zeros(1, 3, 2, 2)}).shape
        torch.Size([1, 2, 2, 2])
    """
    model = model.to(distiller.device)

    def logits(batch: dict) -> torch.Tensor:
        with torch.no_grad(), depth_context(batch["depth"]) if depth else contextlib.nullcontext():
            return select_logits(model(batch["rgb"]), distiller.output_key)

    return logits


def checked_parts(parts: Any) -> dict[str, torch.Tensor]:
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


def student_loss_identity(loss: StudentLoss) -> dict[str, Any]:
    """What tells one student loss from another in the resume check: its qualified name, plus β and the schedule
    for the built-in CE + VTCE."""
    identity: dict[str, Any] = {"name": qualified_name(loss)}
    if isinstance(loss, CEPlusVTCE):
        schedule = loss.vtce.schedule
        identity.update(beta=loss.beta, schedule=None if schedule is None else qualified_name(schedule))
    return identity


def continued_schedule(planned: tuple[int, int] | None, epochs: int, where: str) -> dict[str, int]:
    """The :meth:`~depthdistill.Distiller.fit_phase` keywords of a student phase that goes on with the learning-rate
    schedule its teacher began (``planned``: the teacher's and the student's epochs, see
    :func:`~depthdistill.distill.teacher.shared_schedule`); none when the teacher's schedule was its own.

    Raises:
        ConfigError: If ``epochs`` is not the student's epochs the teacher planned.

    Examples:
        >>> continued_schedule((3, 2), 2, "sn"), continued_schedule(None, 5, "sn")
        ({'schedule_start': 3, 'schedule_epochs': 5}, {})
    """
    if planned is None:
        return {}
    teacher_epochs, student_epochs = planned
    if epochs != student_epochs:
        raise ConfigError(f"{where}: schedule='one' planned the teacher's learning-rate decay for {student_epochs} "
                          f"student epochs, got epochs={epochs}: train the student for {student_epochs}, or the "
                          f"teacher again with student_epochs={epochs}")
    return {"schedule_start": teacher_epochs, "schedule_epochs": teacher_epochs + student_epochs}


def train_plain(distiller: Distiller, student: nn.Module, train_data: Data, epochs: int, val_data: Data | None, *,
                use_teacher: bool, from_teacher: bool, name: str, lr_scale: float = 1.0) -> nn.Module:
    """Trains a plain model on RGB: with the distiller's student loss against the teacher (``use_teacher``) or
    with CE.

    ``from_teacher``: the model starts from the teacher's weights (SN, BL+PS), so the student settings apply
    (``student_lr_scale`` replaces ``lr_scale``; ``student_optimizer``; ``schedule="one"``: the teacher's optimiser
    state and learning-rate decay go on; the soft targets may come from the live weights) and its starting CE is
    logged.
    """
    s = distiller.settings
    distiller.check_data(train_data, needs_depth=use_teacher, where=f"{name} training data")
    plan: dict[str, Any] = {"lr_scale": lr_scale}
    if use_teacher:
        # Without shared weights there is no live teacher to speak of: the frozen one is the only reading.
        source = s.teacher_source if from_teacher else "frozen"
        targets = teacher_logits(distiller, student, source)
        plan["distillation"] = {"loss": student_loss_identity(distiller.student_loss), "teacher_source": source}

    def loss_fn(model: nn.Module, batch: dict, epoch: int) -> dict[str, torch.Tensor]:
        logits = distiller.forward(model, batch).float()
        if not use_teacher:
            return {"loss": F.cross_entropy(logits, batch["label"], ignore_index=distiller.ignore_index)}
        return checked_parts(distiller.student_loss(logits, targets(batch).float(), batch["label"], epoch))

    if from_teacher:
        carried = distiller.teacher_optimizer_state if s.carries_optimizer_state else None
        if s.carries_optimizer_state and carried is None:
            raise TrainingError(f"student_optimizer={s.student_optimizer!r} with schedule={s.schedule!r} needs the "
                                "teacher phase's optimiser state: train the teacher with this Distiller first")
        plan.update(lr_scale=s.student_lr_scale, optimizer_state=carried,
                    **continued_schedule(distiller.shared_schedule, epochs, name))
        _log_start(distiller, student, train_data, name, carried is not None)
    distiller.fit_phase(name, student, loss_fn, train_data, epochs, val_data, needs_depth=use_teacher, **plan)
    return student


def _log_start(distiller: Distiller, student: nn.Module, train_data: Data, name: str, carried: bool) -> None:
    """Logs where a student starts: its CE on the first training batch, lr scale, optimiser state, calibration."""
    s = distiller.settings
    with torch.no_grad():
        first = distiller.sample_batches(train_data, 1)[0]
        start_ce = F.cross_entropy(distiller.forward(student.to(distiller.device).eval(), first).float(),
                                   first["label"], ignore_index=distiller.ignore_index).item()
    student.train()
    optimizer = "carried" if carried else "fresh"
    distiller.log.write({"phase": name, "event": "student_start", "start_ce": start_ce,
                         "lr_scale": s.student_lr_scale, "optimizer": optimizer, "schedule": s.schedule,
                         "calibrated": s.calibrate_removal})
    distiller.log.say(name, f"starts from the teacher's weights as plain convolutions: CE {start_ce:.4g} on the "
                            f"first training batch, lr x{s.student_lr_scale:g} of the teacher's, {optimizer} "
                            f"optimiser state, schedule {s.schedule}, calibrated: {s.calibrate_removal}")
