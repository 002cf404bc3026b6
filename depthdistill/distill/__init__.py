"""The method's orchestration: the settings object, the Distiller, the phase pieces, the methods and the
experiment's rows."""

from depthdistill.distill.distiller import Data, Distiller
from depthdistill.distill.experiment import (
    ABLATION_ROWS,
    DEFAULT_ROWS,
    EXPERIMENT_ROWS,
    ROW_NOTES,
    row_folder,
    run_experiment,
)
from depthdistill.distill.methods import METHODS, DepthRemoval, Method, get_method, register_method
from depthdistill.distill.results import ResultRow, ResultsTable
from depthdistill.distill.settings import (
    LAYER_CHOICES,
    PRESETS,
    STUDENT_OPTIMIZERS,
    TEACHER_SOURCES,
    DistillSettings,
    qualified_name,
)
from depthdistill.distill.student import student_loss_identity, teacher_logits, train_plain
from depthdistill.distill.switch import remove_depth
from depthdistill.distill.teacher import convert_teacher, drop_depth, frozen_copy, train_teacher

__all__ = [
    "ABLATION_ROWS",
    "DEFAULT_ROWS",
    "EXPERIMENT_ROWS",
    "LAYER_CHOICES",
    "METHODS",
    "PRESETS",
    "ROW_NOTES",
    "STUDENT_OPTIMIZERS",
    "TEACHER_SOURCES",
    "Data",
    "DepthRemoval",
    "DistillSettings",
    "Distiller",
    "Method",
    "ResultRow",
    "ResultsTable",
    "convert_teacher",
    "drop_depth",
    "frozen_copy",
    "get_method",
    "qualified_name",
    "register_method",
    "remove_depth",
    "row_folder",
    "run_experiment",
    "student_loss_identity",
    "teacher_logits",
    "train_plain",
    "train_teacher",
]
