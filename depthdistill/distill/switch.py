"""The switch from teacher to student: the depth-aware layers reverted to plain convolutions in place (the same
Parameter objects, the paper's parameter sharing), optionally rescaled first so each layer's output keeps its size."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch.nn as nn

from depthdistill.convert import convert_to_plain
from depthdistill.removal import calibrate_removal

if TYPE_CHECKING:
    from depthdistill.distill.distiller import Data, Distiller

__all__ = ["remove_depth"]


def remove_depth(distiller: Distiller, teacher: nn.Module, train_data: Data) -> nn.Module:
    """Reverts ``teacher`` to plain convolutions in place, after :func:`~depthdistill.calibrate_removal` over the
    first ``calibration_batches`` training batches when the settings ask for it.

    Returns:
        ``teacher`` itself, now plain.
    """
    s = distiller.settings
    if s.calibrate_removal:
        scales = calibrate_removal(teacher, distiller.sample_batches(train_data, s.calibration_batches))
        distiller.log.write({"event": "calibrate_removal", "scales": scales})
    return convert_to_plain(teacher)
