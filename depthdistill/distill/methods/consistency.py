"""Depth teaches the plain computation inside the same weights: one model whose layers are depth-aware for one of
two passes per step.

Each step runs the same batch twice through the same Parameters: **pass D**, the layers made depth-aware as the
teacher's (:func:`~depthdistill.distill.teacher.convert_teacher`) and fed the batch's depth, and **pass P**, the
plain convolutions on RGB, which is what a D-Conv computes when given a constant depth map (every ``H = 1``) and
what is deployed. The loss is ``CE(P) + CE(D) + w · T² · KL(softmax(z_D/T) ‖ softmax(z_P/T))`` with ``z_D``
detached: the depth pass teaches the plain pass, and both learn from the labels. There is no teacher phase; the
model starts from the initial weights and trains for the student's epochs.

Its control (row ``SN-RGB``) keeps everything but the image's own depth: a plain pass on the horizontally
flipped image in place of pass D (``consistency_control="augment"``, no depth anywhere), or pass D on another
image's depth (``"shuffled_depth"``, the same data as ``aux_depth``'s control). SN − SN-RGB is then what this
image's depth adds over a second view of the image, or over another image's depth.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from depthdistill.convert import convert_to_plain, list_depth_aware
from depthdistill.distill.experiment import row_folder
from depthdistill.distill.methods.base import Method
from depthdistill.distill.methods.shifted_depth import ShiftedDepth
from depthdistill.distill.methods.unlabelled import unlabelled_loss
from depthdistill.distill.teacher import as_teacher, convert_teacher, drop_depth
from depthdistill.nn import depth_context

if TYPE_CHECKING:
    from depthdistill.distill.distiller import Data, Distiller

__all__ = ["ConsistencyTraining", "consistency_loss", "depth_pass", "flip_pass", "train_consistency"]

#: ``second(model, batch) -> logits``: the pass whose distribution (detached) the plain pass learns to match.
SecondPass = Callable[[nn.Module, dict], torch.Tensor]


def consistency_loss(plain_logits: torch.Tensor, second_logits: torch.Tensor, labels: torch.Tensor, *,
                     weight: float, temperature: float, second_ce: bool, ignore_index: int) -> dict[str, torch.Tensor]:
    """``CE(P) + [CE(D)] + w · T² · KL(softmax(z_D/T) ‖ softmax(z_P/T))``, the KL per pixel averaged over every
    pixel (void ones too: it needs no label), with ``z_D`` detached so that only the plain pass learns from it.

    Args:
        plain_logits: ``z_P``, the plain pass's logits ``(B, C, H, W)``.
        second_logits: ``z_D``, the depth pass's (or the control's second pass's).
        labels: ``(B, H, W)`` class indices; ``ignore_index`` is left out of both cross-entropies.
        weight: ``w``.
        temperature: ``T``.
        second_ce: Add the second pass's cross-entropy (it trains the weights through the depth pass too).
        ignore_index: The void label.

    Returns:
        ``{"loss", "ce_plain", "ce_second", "consistency"}``: the loss and its parts (detached, for the log; the
        second pass's cross-entropy is logged whether or not it is in the loss).

    Examples:
        >>> z, y = torch.randn(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long)
        >>> parts = consistency_loss(z, z, y, weight=1.0, temperature=2.0, second_ce=False, ignore_index=255)
        >>> float(parts["consistency"]), bool(parts["loss"] == parts["ce_plain"])
        (0.0, True)
    """
    ce_plain = F.cross_entropy(plain_logits, labels, ignore_index=ignore_index)
    ce_second = F.cross_entropy(second_logits, labels, ignore_index=ignore_index)
    kl = unlabelled_loss(plain_logits, second_logits, targets="soft", temperature=temperature, confidence=0.0)
    loss = ce_plain + weight * kl
    if second_ce:
        loss = loss + ce_second
    return {"loss": loss, "ce_plain": ce_plain.detach(), "ce_second": ce_second.detach(),
            "consistency": kl.detach()}


@contextmanager
def _running_statistics_kept(model: nn.Module) -> Iterator[None]:
    """The running statistics of ``model``'s normalisation layers (BatchNorm …) as they were before the block:
    the deployed plain model normalises with them, so they must be the plain pass's, not the depth pass's.

    The block updates copies, and the originals are put back: changing them in place would break the backward of
    the plain pass, whose graph holds them."""
    kept = [(layer, name, buffer) for layer in model.modules() if getattr(layer, "track_running_stats", False)
            for name, buffer in layer.named_buffers(recurse=False)]
    for layer, name, buffer in kept:
        setattr(layer, name, buffer.clone())
    try:
        yield
    finally:
        for layer, name, buffer in kept:
            setattr(layer, name, buffer)


def depth_pass(distiller: Distiller, student: nn.Module) -> SecondPass:
    """Pass D: ``student``'s layers made depth-aware as the teacher's for this forward only, fed the batch's depth,
    with the settings' depth dropout. Normalisation layers normalise with the pass's
    own batch statistics in training, but their running statistics stay the plain pass's.

    ``student`` is the model itself (the forward may go through a DDP wrapper of it, whose layer names differ).
    """
    s = distiller.settings

    def second(model: nn.Module, batch: dict) -> torch.Tensor:
        with as_teacher(student, s), _running_statistics_kept(student), \
                depth_context(drop_depth(batch["depth"], s.depth_dropout)):
            return distiller.forward(model, batch)

    return second


def flip_pass(distiller: Distiller) -> SecondPass:
    """The augment control's second pass: the plain model on the horizontally flipped image, its logits flipped
    back so that each pixel lines up with the plain pass's (the same augmentation every step; no depth)."""

    def second(model: nn.Module, batch: dict) -> torch.Tensor:
        return distiller.forward(model, {**batch, "rgb": batch["rgb"].flip(-1)}).flip(-1)

    return second


def train_consistency(distiller: Distiller, student: nn.Module, train_data: Data, epochs: int,
                      val_data: Data | None, *, second: SecondPass, needs_depth: bool, name: str) -> nn.Module:
    """Trains the plain ``student`` in place: per step the plain pass, then ``second``, on the same batch, with
    :func:`consistency_loss`. Validation and checkpoints see the plain model (the deployable one).

    Returns:
        ``student``, plain.
    """
    s = distiller.settings

    def loss_fn(model: nn.Module, batch: dict, epoch: int) -> dict[str, torch.Tensor]:
        # pass P first: with the second pass silenced, the step is the baseline's, random draws included
        plain = distiller.forward(model, batch).float()
        return consistency_loss(plain, second(model, batch).float(), batch["label"],
                                weight=s.consistency_weight, temperature=s.consistency_temperature,
                                second_ce=s.consistency_depth_ce, ignore_index=distiller.ignore_index)

    distiller.fit_phase(name, student, loss_fn, train_data, epochs, val_data, needs_depth=needs_depth)
    return student


class ConsistencyTraining(Method):
    """One model from the initial weights, each step a depth pass and a plain pass in the same weights; the plain
    pass learns the depth pass's distribution (``consistency_weight``, ``consistency_temperature``) beside the
    labels (``consistency_depth_ce`` adds the depth pass's CE). The deployable model is the weights as plain
    convolutions. ``teacher_epochs`` is unused: there is no teacher phase; it trains ``student_epochs``.
    """

    name: ClassVar[str] = "consistency"
    trains_teacher: ClassVar[bool] = False
    summary: ClassVar[str] = "one model, a depth pass and a plain pass per step: depth teaches the plain computation"

    def train(self, distiller: Distiller, train_data: Data, *, teacher_epochs: int, student_epochs: int,
              val_data: Data | None = None, unlabelled_data: Data | None = None) -> nn.Module:
        name = row_folder("SN")
        distiller.check_data(train_data, needs_depth=True, where=f"{name} training data")
        student = _start(distiller, name, "pass D on the image's own depth", depth=True)
        return train_consistency(distiller, student, train_data, student_epochs, val_data,
                                 second=depth_pass(distiller, student), needs_depth=True, name=name)

    def train_control(self, distiller: Distiller, train_data: Data, *, teacher_epochs: int, student_epochs: int,
                      val_data: Data | None = None, unlabelled_data: Data | None = None) -> nn.Module:
        """The same training without this image's depth: pass D on another image's depth (``"shuffled_depth"``:
        sample ``i`` gets the depth of sample ``(i + 1) mod n`` of the training set,
        :class:`~depthdistill.distill.methods.shifted_depth.ShiftedDepth`; a map-style dataset is needed) or a
        plain pass on the flipped image instead (``"augment"``, :func:`flip_pass`)."""
        name, control = row_folder("SN-RGB"), distiller.settings.consistency_control
        shuffled = control == "shuffled_depth"
        distiller.check_data(train_data, needs_depth=shuffled, where=f"{name} training data")
        if shuffled:
            train_data = ShiftedDepth(train_data, control="consistency_control='shuffled_depth'")
            student = _start(distiller, name, "control: pass D on another image's depth", depth=True)
            second = depth_pass(distiller, student)
        else:
            student = _start(distiller, name, "control: a plain pass on the flipped image, no depth", depth=False)
            second = flip_pass(distiller)
        return train_consistency(distiller, student, train_data, student_epochs, val_data, second=second,
                                 needs_depth=shuffled, name=name)


def _start(distiller: Distiller, name: str, second: str, *, depth: bool) -> nn.Module:
    """The plain model from the initial weights; logs the second pass and the layers a depth pass makes
    depth-aware (none without depth)."""
    s, student = distiller.settings, distiller.initial_copy()
    layers: list[str] = []
    if depth:
        layers = list_depth_aware(convert_teacher(student, s))
        convert_to_plain(student)
    distiller.depth_aware_layers = layers
    distiller.log.write({"phase": name, "event": "consistency_start", "second_pass": second,
                         "depth_aware_layers": layers, "depth_resize": s.depth_resize,
                         "depth_dropout": s.depth_dropout})
    distiller.log.say(name, f"{second} ({len(layers)} depth-aware layers{': ' if layers else ''}"
                            f"{', '.join(layers)}); weight {s.consistency_weight:g}, T {s.consistency_temperature:g}, "
                            f"CE of the second pass: {s.consistency_depth_ce}")
    return student
