"""The method's orchestration: the settings object, the Distiller, the methods and the experiment's rows.

The phase pieces a method is built from (:mod:`~depthdistill.distill.teacher`, :mod:`~depthdistill.distill.switch`,
:mod:`~depthdistill.distill.student`) are imported from their modules; the building blocks an own training loop
needs (``convert_teacher``, ``drop_depth``, ``frozen_copy``) are re-exported here.
"""

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
from depthdistill.distill.teacher import convert_teacher, drop_depth, frozen_copy

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
    "row_folder",
    "run_experiment",
]
