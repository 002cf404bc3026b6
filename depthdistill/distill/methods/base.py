"""The interface every method implements: how the deployable RGB model is trained from the Distiller's initial
weights and its RGB-D data, out of the phase pieces (:mod:`~depthdistill.distill.teacher`,
:mod:`~depthdistill.distill.switch`, :mod:`~depthdistill.distill.student`) and the Distiller's services."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

import torch.nn as nn

from depthdistill.errors import ConfigError

if TYPE_CHECKING:
    from depthdistill.distill.distiller import Data, Distiller

__all__ = ["Method"]


class Method(ABC):
    """One way to turn RGB-D training data into a plain RGB model: the ``SN`` row of an experiment.

    A method knows nothing of checkpoints, devices or DDP: it trains through the Distiller's pieces and services
    (``distiller.train_teacher``, ``distiller.train_student``, ``distiller.fit_phase``, ``distiller.forward`` …),
    which keep those in one place. Register a new one in :data:`~depthdistill.distill.methods.METHODS` (or with
    :func:`~depthdistill.distill.methods.register_method`) and select it with ``DistillSettings(method=name)``.

    Attributes:
        name: The name settings select it by.
        summary: One line for tables and logs.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    #: Whether the method trains on unlabelled RGB-D frames (``unlabelled_data``); others refuse them.
    uses_unlabelled: ClassVar[bool] = False
    #: Whether its SN builds on the teacher phase (row ``TN``, ``teacher_epochs``); ``False`` for methods that
    #: train no separate teacher, whose ``teacher_epochs`` is unused.
    trains_teacher: ClassVar[bool] = True
    #: What the method's rows are, in the form of :data:`~depthdistill.distill.experiment.ROW_NOTES` (``{epochs}``,
    #: ``{teacher_epochs}``), for ``SN`` and ``SN-RGB`` where they differ from the paper's method there.
    row_notes: ClassVar[dict[str, str]] = {}
    #: The values of ``DistillSettings.schedule`` the method trains with; the Distiller refuses the others.
    schedules: ClassVar[tuple[str, ...]] = ("per_phase",)

    @abstractmethod
    def train(self, distiller: Distiller, train_data: Data, *, teacher_epochs: int, student_epochs: int,
              val_data: Data | None = None, unlabelled_data: Data | None = None) -> nn.Module:
        """Trains the deployable model.

        Args:
            distiller: The Distiller: the live model, the settings, the phase services.
            train_data: RGB-D training samples.
            teacher_epochs: Epochs of the method's depth-aware phase (or its first part).
            student_epochs: Epochs of its RGB phase (or its second part).
            val_data: Optional validation set for every phase.
            unlabelled_data: Unlabelled RGB-D frames, for methods that use them (:attr:`uses_unlabelled`).

        Returns:
            A plain model (no depth-aware layer): RGB in, logits out.
        """

    def train_control(self, distiller: Distiller, train_data: Data, *, teacher_epochs: int, student_epochs: int,
                      val_data: Data | None = None, unlabelled_data: Data | None = None) -> nn.Module:
        """The method's control without depth (row ``SN-RGB``): the same training with an RGB model wherever the
        method uses depth, so that SN − SN-RGB is what depth adds.

        Raises:
            ConfigError: If the method defines none.
        """
        raise ConfigError(f"method {self.name!r} defines no SN-RGB control row; compare it with the rows BL@TN+PS "
                          "(the teacher's and the student's schedules with no depth) or BL instead")
