"""Online soft-target distillation: the depth-aware teacher and the RGB student trained at the same time, from the
same initial weights, the student learning from the teacher's logits as they are at each step.

Both models train in one phase, as one module (:class:`OnlinePair`): one optimiser, one checkpoint, one resume
for both. Per step, on the same batch, the teacher (a copy of the initial model made depth-aware) learns with CE on
RGB-D (with the settings' depth dropout) and the student (another copy, plain) with

    CE(z_s, y) + w(e) · T² · KL(softmax(z_t / T) ‖ softmax(z_s / T)),   w(e) = online_weight · min(1, e / R)

on RGB, ``z_t`` the teacher's current logits (no gradient flows into the teacher through it), ``T`` =
``online_temperature``, ``R`` = ``online_ramp_epochs`` (the teacher starts untrained: its early targets are
noise). Both train for ``student_epochs``; ``teacher_epochs`` is not used.

The control (row ``SN-RGB``) is the same with an RGB peer in the teacher's place: a plain copy of the same initial
weights, CE on RGB, no depth anywhere. The peer starts where the teacher starts (and where the student starts):
the setups differ in depth alone, so SN − SN-RGB is what depth adds beyond co-training with a peer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from depthdistill.convert import list_depth_aware
from depthdistill.distill.experiment import row_folder
from depthdistill.distill.methods.base import Method
from depthdistill.distill.methods.unlabelled import unlabelled_loss
from depthdistill.distill.settings import DistillSettings
from depthdistill.distill.teacher import convert_teacher, drop_depth, frozen_copy
from depthdistill.nn import depth_context

if TYPE_CHECKING:
    from depthdistill.distill.distiller import Data, Distiller

__all__ = ["OnlineDistillation", "OnlinePair", "online_weight"]


def online_weight(settings: DistillSettings, epoch: int) -> float:
    """The soft-target weight at ``epoch`` (from 0): ``online_weight · min(1, epoch / online_ramp_epochs)``, the
    full weight from the start when ``online_ramp_epochs`` is 0.

    Examples:
        >>> s = DistillSettings(online_weight=2.0, online_ramp_epochs=4)
        >>> [online_weight(s, e) for e in range(6)]
        [0.0, 0.5, 1.0, 1.5, 2.0, 2.0]
    """
    if settings.online_ramp_epochs == 0:
        return settings.online_weight
    return settings.online_weight * min(1.0, epoch / settings.online_ramp_epochs)


class OnlinePair(nn.Module):
    """The student and its partner (the depth-aware teacher, or the RGB peer of the control) as one module, so
    that one optimiser, one checkpoint and one resume cover both (state_dict keys ``student.*``, ``partner.*``).

    Called with the image alone it is the student (what validation measures). Called with a ``seed`` it runs both
    in one call (one forward under DDP) and returns ``(student output, partner output)``. The partner's random
    draws (its depth dropout, its dropout layers) come from a generator seeded with ``seed`` and forked off torch's
    global one, so the student draws from the global generator exactly what it would draw training alone.

    Args:
        student: The plain model to deploy.
        partner: The model it learns from, trained beside it.
        depth_dropout: Probability per sample that the partner sees no depth (with depth only).
    """

    def __init__(self, student: nn.Module, partner: nn.Module, depth_dropout: float = 0.0) -> None:
        super().__init__()
        self.student, self.partner, self.depth_dropout = student, partner, depth_dropout

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor | None = None, seed: int | None = None):
        """The student's output on ``rgb``; with ``seed``, the pair ``(student's, partner's)``, the partner fed
        ``depth`` (after depth dropout) through the depth context when it is given."""
        student = self.student(rgb)
        if seed is None:
            return student
        devices = [rgb.device] if rgb.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, device_type=rgb.device.type):
            torch.manual_seed(seed)
            if depth is None:
                return student, self.partner(rgb)
            with depth_context(drop_depth(depth, self.depth_dropout)):
                return student, self.partner(rgb)


def train_online(distiller: Distiller, train_data: Data, epochs: int, val_data: Data | None, *, with_depth: bool,
                 name: str) -> OnlinePair:
    """Trains the student and its partner together for ``epochs`` (see the module's docstring): the partner is
    the depth-aware teacher on RGB-D (``with_depth``) or a plain peer on RGB.

    Returns:
        The trained pair.
    """
    s = distiller.settings
    partner = distiller.initial_copy()
    if with_depth:
        convert_teacher(partner, s)
    pair = OnlinePair(distiller.initial_copy(), partner, s.depth_dropout if with_depth else 0.0)
    distiller.check_data(train_data, needs_depth=with_depth, where=f"{name} training data")
    layers = list_depth_aware(partner)
    kind = (f"the depth-aware teacher ({len(layers)} layers: {', '.join(layers)}; depth dropout {s.depth_dropout:g})"
            if with_depth else "an RGB peer")
    distiller.log.say(name, f"student and {kind} trained together from the initial weights; soft targets at T = "
                            f"{s.online_temperature:g}, full weight {s.online_weight:g} from epoch "
                            f"{s.online_ramp_epochs} on")
    # Seeds of the partner's random draws, a function of (seed, epoch, batch) only, so a resumed run draws them again.
    base = distiller.train_settings.seed
    base = int(torch.randint(2**31, ())) if base is None else base
    batch_of: dict[str, int] = {}

    def loss_fn(model: nn.Module, batch: dict, epoch: int) -> dict[str, torch.Tensor]:
        index = batch_of["index"] + 1 if batch_of.get("epoch") == epoch else 0
        batch_of.update(epoch=epoch, index=index)
        seed = int(np.random.SeedSequence([base, epoch, index]).generate_state(1)[0])
        student_out, partner_out = model(batch["rgb"], batch["depth"] if with_depth else None, seed)
        student = distiller.checked_logits(student_out, batch).float()
        partner = distiller.checked_logits(partner_out, batch).float()
        ce = F.cross_entropy(student, batch["label"], ignore_index=distiller.ignore_index)
        partner_ce = F.cross_entropy(partner, batch["label"], ignore_index=distiller.ignore_index)
        # unlabelled_loss detaches the partner's logits: the soft targets pull the student only
        kl = unlabelled_loss(student, partner, targets="soft", temperature=s.online_temperature, confidence=0.0)
        weight = online_weight(s, epoch)
        return {"loss": ce + weight * kl + partner_ce, "ce": ce.detach(), "kl": kl.detach(),
                "partner_ce": partner_ce.detach(), "weight": torch.tensor(weight, device=ce.device)}

    distiller.fit_phase(name, pair, loss_fn, train_data, epochs, val_data, needs_depth=with_depth,
                        deployable=pair.student)
    return pair


class OnlineDistillation(Method):
    """The depth-aware teacher and the RGB student trained at the same time from the initial weights, the student
    against the teacher's current soft targets (see :mod:`~depthdistill.distill.methods.online`).

    Settings: ``online_weight``, ``online_temperature``, ``online_ramp_epochs``, and the teacher's ``depth_dropout``
    (and its layers, α, depth resize). Both train for ``student_epochs``; ``teacher_epochs`` is not used. The
    trained teacher is kept frozen as ``distiller.teacher``; the returned student is a new plain model with the
    input model's state_dict keys (the live model is not trained).
    """

    name: ClassVar[str] = "online"
    trains_teacher: ClassVar[bool] = False
    summary: ClassVar[str] = "teacher and student trained together, the student against the teacher's current logits"
    #: How reports describe its SN and SN-RGB rows (``Method.row_notes``).
    row_notes: ClassVar[dict[str, str]] = {
        "SN": ("the student network: the plain network from its initial weights trained on RGB for {epochs} beside "
               "a depth-aware teacher trained at the same time on RGB-D from the same weights, with CE plus the "
               "teacher's current soft targets (KL at T, weight ramped up)"),
        "SN-RGB": ("the control without depth: SN's training with an RGB peer (the plain network from the same "
                   "initial weights, CE on RGB) in the teacher's place, for {epochs}: SN − SN-RGB is what depth adds"),
    }

    def train(self, distiller: Distiller, train_data: Data, *, teacher_epochs: int, student_epochs: int,
              val_data: Data | None = None, unlabelled_data: Data | None = None) -> nn.Module:
        pair = train_online(distiller, train_data, student_epochs, val_data, with_depth=True, name=row_folder("SN"))
        distiller.teacher = frozen_copy(pair.partner)
        distiller.depth_aware_layers = list_depth_aware(pair.partner)
        return pair.student

    def train_control(self, distiller: Distiller, train_data: Data, *, teacher_epochs: int, student_epochs: int,
                      val_data: Data | None = None, unlabelled_data: Data | None = None) -> nn.Module:
        """The same training with an RGB peer in the teacher's place: a plain copy of the same initial weights,
        CE on RGB, no depth anywhere."""
        pair = train_online(distiller, train_data, student_epochs, val_data, with_depth=False,
                            name=row_folder("SN-RGB"))
        return pair.student
