"""Depth through unlabelled RGB-D: the depth-aware teacher, fed RGB-D, labels frames nobody labelled, and an RGB
student learns from those targets (on RGB only) beside its labelled images.

RGB-D sensors record far more frames than anyone labels. The teacher turns depth into better predictions on those
frames; the student, which sees their RGB only, inherits what it can. The control (row ``SN-RGB``) is the same
student with an RGB model as the labeller (BL trained for the teacher's epochs): the same extra frames and the
same training, without depth anywhere, so SN − SN-RGB is what depth adds.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from depthdistill.distill import student as student_phase
from depthdistill.distill import switch
from depthdistill.distill.experiment import row_folder
from depthdistill.distill.methods.base import Method
from depthdistill.distill.teacher import frozen_copy
from depthdistill.engine.device import move_batch
from depthdistill.engine.distributed import get_world_size
from depthdistill.engine.evaluate import select_logits
from depthdistill.engine.loader import start_epoch, train_loader
from depthdistill.errors import ConfigError
from depthdistill.labels import VOID

if TYPE_CHECKING:
    from depthdistill.distill.distiller import Data, Distiller

__all__ = ["UnlabelledDistillation", "unlabelled_loss"]

#: ``labeller(batch) -> logits`` of the model that labels the unlabelled frames (no gradients).
Labeller = Callable[[dict], torch.Tensor]


def unlabelled_loss(student_logits: torch.Tensor, labeller_logits: torch.Tensor, *, targets: str,
                    temperature: float, confidence: float) -> torch.Tensor:
    """The student's loss on unlabelled frames.

    ``targets="soft"``: ``T² · KL(softmax(z_l / T) ‖ softmax(z_s / T))`` per pixel, averaged (Hinton's
    distillation; ``T²`` keeps the gradient's size independent of ``T``). ``targets="hard"``: cross-entropy
    against the labeller's arg-max at the pixels where its top probability reaches ``confidence`` (the others
    are ignored; 0 when none is kept).

    Examples:
        >>> z = torch.randn(2, 3, 4, 4)
        >>> float(unlabelled_loss(z, z, targets="soft", temperature=2.0, confidence=0.0))
        0.0
    """
    labeller_logits = labeller_logits.detach().float()
    if targets == "soft":
        log_q_s = F.log_softmax(student_logits / temperature, dim=1)
        log_q_l = F.log_softmax(labeller_logits / temperature, dim=1)
        kl = F.kl_div(log_q_s, log_q_l, log_target=True, reduction="none").sum(1)
        return kl.mean() * temperature**2
    probabilities = labeller_logits.softmax(1)
    top, pseudo = probabilities.max(1)
    pseudo = torch.where(top >= confidence, pseudo, torch.full_like(pseudo, VOID))
    if not bool((pseudo != VOID).any()):
        return student_logits.sum() * 0.0
    return F.cross_entropy(student_logits, pseudo, ignore_index=VOID)


class _Stream:
    """Unlabelled batches drawn beside the labelled ones: shuffled per epoch from ``(seed, epoch)`` only, so a run
    resumed at an epoch boundary draws what an uninterrupted one would; cycled if an epoch needs more."""

    def __init__(self, distiller: Distiller, data: Data, batch_size: int) -> None:
        s = distiller.train_settings
        self.seed = (s.seed or 0) + 1  # another stream than the labelled one's
        self.loader = train_loader(data, batch_size, s.num_workers, self.seed)
        self.device, self.channels_last = distiller.device, s.channels_last
        self.epoch: int | None = None

    def next(self, epoch: int) -> dict:
        if epoch != self.epoch:
            start_epoch(self.loader, epoch, self.seed)
            self.iterator, self.epoch = iter(self.loader), epoch
        batch = next(self.iterator, None)
        if batch is None:
            self.iterator = iter(self.loader)
            batch = next(self.iterator)
        return move_batch(batch, self.device, self.channels_last)


def _unlabelled_batch_size(distiller: Distiller, labelled: Data, unlabelled: Data) -> int:
    """So that one epoch over the labelled images also passes once over the unlabelled frames (a DataLoader of
    frames keeps its own batch size)."""
    if isinstance(labelled, DataLoader):
        # its batches are the steps of an epoch on this process; the frames are sharded over the processes
        return max(1, round(len(unlabelled) / get_world_size() / len(labelled)))
    return max(1, round(distiller.train_settings.batch_size * len(unlabelled) / len(labelled)))


def train_with_unlabelled(distiller: Distiller, student: nn.Module, train_data: Data, unlabelled_data: Data,
                          epochs: int, val_data: Data | None, *, labeller: Labeller, name: str) -> nn.Module:
    """Trains ``student`` on RGB: per step, a labelled batch (CE, plus the student loss against ``labeller`` when
    the settings' ``vtce``) and an unlabelled batch (:func:`unlabelled_loss` against ``labeller``, weighted by
    ``unlabelled_weight``)."""
    s = distiller.settings
    distiller.check_data(train_data, needs_depth=s.vtce, where=f"{name} training data")
    distiller.check_data(unlabelled_data, needs_depth=True, needs_label=False, where=f"{name} unlabelled data")
    stream = _Stream(distiller, unlabelled_data, _unlabelled_batch_size(distiller, train_data, unlabelled_data))

    def loss_fn(model: nn.Module, batch: dict, epoch: int) -> dict[str, torch.Tensor]:
        logits = distiller.forward(model, batch).float()
        if s.vtce:
            parts = student_phase.checked_parts(distiller.student_loss(logits, labeller(batch).float(),
                                                                      batch["label"], epoch))
        else:
            parts = {"loss": F.cross_entropy(logits, batch["label"], ignore_index=distiller.ignore_index)}
        frames = stream.next(epoch)
        with torch.no_grad():
            targets = labeller(frames)
        student_logits = select_logits(model(frames["rgb"]), distiller.output_key).float()
        extra = unlabelled_loss(student_logits, targets, targets=s.unlabelled_targets,
                                temperature=s.unlabelled_temperature, confidence=s.unlabelled_confidence)
        return {**parts, "loss": parts["loss"] + s.unlabelled_weight * extra, "unlabelled": extra.detach()}

    distiller.fit_phase(name, student, loss_fn, train_data, epochs, val_data, needs_depth=s.vtce,
                        lr_scale=s.student_lr_scale,
                        distillation={"unlabelled": True, "loss": student_phase.student_loss_identity(
                            distiller.student_loss)})
    return student


class UnlabelledDistillation(Method):
    """Teacher on labelled RGB-D; then a student on RGB, trained on the labelled images and on the teacher's
    targets for unlabelled RGB-D frames (the teacher sees their depth, the student their RGB only).

    The student starts from the teacher's weights reverted to plain convolutions (``student_start="teacher"``,
    the paper's parameter sharing) or from the initial weights (``"initial"``). Settings:
    ``unlabelled_targets`` (soft or confidence-filtered hard), ``unlabelled_temperature``,
    ``unlabelled_weight``, ``unlabelled_confidence``; ``vtce`` adds the student loss on labelled images.
    """

    name: ClassVar[str] = "unlabelled"
    summary: ClassVar[str] = "the depth teacher labels unlabelled RGB-D; the RGB student learns from its targets"
    uses_unlabelled: ClassVar[bool] = True
    row_notes: ClassVar[dict[str, str]] = {
        "SN": ("the student network: the plain network trained on RGB for {epochs}, per step on a labelled batch "
               "(CE) and a batch of unlabelled frames whose targets are TN's predictions from their RGB-D: depth "
               "reaches the RGB model only through those targets"),
        "SN-RGB": ("the control without depth: SN's training with BL@TN (or BL trained for the settings' "
                   "control_labeller_epochs), trained on RGB only, labelling the unlabelled frames instead of TN, "
                   "for {epochs}: SN − SN-RGB is what depth adds"),
    }

    def train(self, distiller: Distiller, train_data: Data, *, teacher_epochs: int, student_epochs: int,
              val_data: Data | None = None, unlabelled_data: Data | None = None) -> nn.Module:
        _require(unlabelled_data)
        if distiller.teacher is None:
            distiller.train_teacher(train_data, teacher_epochs, val_data)
        # the frozen teacher fed RGB-D, as it gives any student its soft targets
        labeller = student_phase.teacher_logits(distiller, distiller.model, "frozen")

        if distiller.settings.student_start == "teacher":
            student = switch.remove_depth(distiller, distiller.model, train_data)
        else:
            student = distiller.initial_copy()
        return train_with_unlabelled(distiller, student, train_data, unlabelled_data, student_epochs, val_data,
                                     labeller=labeller, name=row_folder("SN"))

    def train_control(self, distiller: Distiller, train_data: Data, *, teacher_epochs: int, student_epochs: int,
                      val_data: Data | None = None, unlabelled_data: Data | None = None) -> nn.Module:
        """The same student with an RGB labeller: BL trained for the teacher's epochs (row ``BL@TN``) or for the
        settings' ``control_labeller_epochs`` (phase ``sn_rgb_labeller``), its frozen copy labelling the frames
        from their RGB; the student starts from its weights or the initial ones."""
        _require(unlabelled_data)
        epochs = distiller.settings.control_labeller_epochs or teacher_epochs
        name = row_folder("BL@TN") if epochs == teacher_epochs else f"{row_folder('SN-RGB')}_labeller"
        baseline = distiller.train_baseline(train_data, epochs, val_data, name=name)
        labeller = student_phase.frozen_logits(distiller, frozen_copy(baseline), depth=False)
        start = copy.deepcopy(baseline) if distiller.settings.student_start == "teacher" else distiller.initial_copy()
        return train_with_unlabelled(distiller, start, train_data, unlabelled_data, student_epochs, val_data,
                                     labeller=labeller, name=row_folder("SN-RGB"))


def _require(unlabelled_data: Data | None) -> None:
    if unlabelled_data is None:
        raise ConfigError("method 'unlabelled' needs unlabelled RGB-D frames: pass unlabelled_data= (e.g. "
                          "SyntheticRGBD(split='unlabelled'), RGBDFolder without a label folder, NYUv2Raw)")

