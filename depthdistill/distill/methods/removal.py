"""The paper's method, depth removal: a depth-aware teacher on RGB-D, then its very weights reverted to plain
convolutions and trained on RGB with the student loss against the frozen teacher; and its control without depth."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from depthdistill.distill import student as student_phase
from depthdistill.distill.experiment import row_folder
from depthdistill.distill.methods.base import Method
from depthdistill.distill.teacher import frozen_copy, shared_schedule

if TYPE_CHECKING:
    from depthdistill.distill.distiller import Data, Distiller

__all__ = ["DepthRemoval"]


class DepthRemoval(Method):
    """Teacher phase (CE on RGB-D, depth-aware layers), the switch (plain convolutions, same Parameters), student
    phase (CE + VTCE on RGB against the frozen teacher). A teacher this Distiller trained already is reused.

    ``schedule="per_phase"`` decays each phase's learning rate over its own epochs; ``"one"`` runs one optimiser
    and one decay over the teacher's and the student's epochs (the student carries the teacher's optimiser state
    and its learning rate goes on from where the teacher's stopped).
    """

    name: ClassVar[str] = "removal"
    summary: ClassVar[str] = "the paper's depth removal: depth-aware teacher, shared-weight VTCE student"
    schedules: ClassVar[tuple[str, ...]] = ("per_phase", "one")

    def train(self, distiller: Distiller, train_data: Data, *, teacher_epochs: int, student_epochs: int,
              val_data: Data | None = None, unlabelled_data: Data | None = None) -> nn.Module:
        if distiller.teacher is None:
            distiller.train_teacher(train_data, teacher_epochs, val_data, student_epochs=student_epochs)
        return distiller.train_student(train_data, student_epochs, val_data, share_parameters=True, vtce=True)

    def train_control(self, distiller: Distiller, train_data: Data, *, teacher_epochs: int, student_epochs: int,
                      val_data: Data | None = None, unlabelled_data: Data | None = None) -> nn.Module:
        """SN's pipeline with no depth anywhere (row ``SN-RGB``): the "teacher" is the plain model trained with CE
        on RGB for ``teacher_epochs`` (BL@TN), then its own weights train on with CE + the student loss against
        its frozen copy (RGB in) for ``student_epochs``, with the student phase's learning-rate scale, optimiser
        state and schedule as SN's. Depth is never read, so the data need none.

        With ``schedule="per_phase"`` the teacher is exactly the row BL@TN (its folder, ``bl_tn``; trained once per
        Distiller by :meth:`~depthdistill.Distiller.train_baseline`, unless ``student_optimizer="carry"`` needs its
        optimiser state); with ``"one"`` its decay runs over both phases, so it trains in a folder of its own
        (``sn_rgb_tn``). The soft targets always come from the frozen copy: the live weights run without depth are
        the student itself.
        """
        s = distiller.settings
        plan = shared_schedule(s.schedule, teacher_epochs, student_epochs, where=row_folder("SN-RGB"))
        teacher_name = row_folder("BL@TN") if plan is None else f"{row_folder('SN-RGB')}_tn"
        optimizer_state = None
        if plan is None and not s.carries_optimizer_state:
            # the row BL@TN itself, trained once per Distiller (with that row, or by the unlabelled method's control)
            model = copy.deepcopy(distiller.train_baseline(train_data, teacher_epochs, val_data, name=teacher_name))
        else:
            model = distiller.initial_copy()
            distiller.check_data(train_data, needs_depth=False, where=f"{teacher_name} training data")

            def ce(model: nn.Module, batch: dict, epoch: int) -> dict[str, torch.Tensor]:
                logits = distiller.forward(model, batch).float()
                return {"loss": F.cross_entropy(logits, batch["label"], ignore_index=distiller.ignore_index)}

            optimizer_state = distiller.fit_phase(
                teacher_name, model, ce, train_data, teacher_epochs, val_data, needs_depth=False,
                keep_optimizer_state=s.carries_optimizer_state,
                **({} if plan is None else {"schedule_epochs": sum(plan)})).optimizer_state
        rgb_teacher = student_phase.frozen_logits(distiller, frozen_copy(model), depth=False)

        def distil(model: nn.Module, batch: dict, epoch: int) -> dict[str, torch.Tensor]:
            logits = distiller.forward(model, batch).float()
            targets = rgb_teacher(batch).float()
            return student_phase.checked_parts(distiller.student_loss(logits, targets, batch["label"], epoch))

        name = row_folder("SN-RGB")
        distiller.fit_phase(name, model, distil, train_data, student_epochs, val_data, needs_depth=False,
                            lr_scale=s.student_lr_scale, optimizer_state=optimizer_state,
                            distillation={"loss": student_phase.student_loss_identity(distiller.student_loss),
                                          "teacher_source": "frozen RGB"},
                            **student_phase.continued_schedule(plan, student_epochs, name))
        return model
