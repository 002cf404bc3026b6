"""The paper's method, depth removal: a depth-aware teacher on RGB-D, then its very weights reverted to plain
convolutions and trained on RGB with the student loss against the frozen teacher."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch.nn as nn

from depthdistill.distill.methods.base import Method

if TYPE_CHECKING:
    from depthdistill.distill.distiller import Data, Distiller

__all__ = ["DepthRemoval"]


class DepthRemoval(Method):
    """Teacher phase (CE on RGB-D, depth-aware layers), the switch (plain convolutions, same Parameters), student
    phase (CE + VTCE on RGB against the frozen teacher). A teacher this Distiller trained already is reused."""

    name: ClassVar[str] = "removal"
    summary: ClassVar[str] = "the paper's depth removal: depth-aware teacher, shared-weight VTCE student"

    def train(self, distiller: Distiller, train_data: Data, *, teacher_epochs: int, student_epochs: int,
              val_data: Data | None = None, unlabelled_data: Data | None = None) -> nn.Module:
        if distiller.teacher is None:
            distiller.train_teacher(train_data, teacher_epochs, val_data)
        return distiller.train_student(train_data, student_epochs, val_data, share_parameters=True, vtce=True)
