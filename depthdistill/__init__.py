"""depthdistill: depth removal distillation for RGB-D semantic segmentation.

Train any CNN segmenter as an RGB-D teacher with depth-aware convolutions, then hand the very same weights to a
plain-convolution RGB student distilled with the variable-temperature loss (VTCE).
"""

from depthdistill.convert import convert_to_depth_aware, convert_to_plain, list_depth_aware
from depthdistill.deploy import ExportResult, export
from depthdistill.distill import DistillSettings, Distiller, ResultRow, ResultsTable
from depthdistill.errors import (
    CheckpointError,
    ConfigError,
    ConfigTypeError,
    DatasetError,
    DepthDistillError,
    DepthError,
    DepthUnitsWarning,
    MissingFileError,
    TrainingError,
)
from depthdistill.inference import Prediction, predict
from depthdistill.losses import CEPlusVTCE, VTCELoss, vtce_loss, vtce_temperature
from depthdistill.metrics import SegmentationMetrics
from depthdistill.nn import (
    DepthAwareAvgPool2d,
    DepthAwareConv2d,
    DepthAwareModule,
    check_depth_units,
    current_depth,
    default_depth_aware_mapping,
    depth_aware_avg_pool2d,
    depth_aware_conv2d,
    depth_context,
    depth_similarity,
    register_depth_aware,
)
from depthdistill.removal import RemovalReport, RemovalRow, calibrate_removal, removal_report

#: The package version, read by pyproject.toml (the one place it is written).
__version__ = "0.1.0"

__all__ = [
    "CEPlusVTCE",
    "CheckpointError",
    "ConfigError",
    "ConfigTypeError",
    "DatasetError",
    "DepthAwareAvgPool2d",
    "DepthAwareConv2d",
    "DepthAwareModule",
    "DepthDistillError",
    "DepthError",
    "DepthUnitsWarning",
    "DistillSettings",
    "Distiller",
    "ExportResult",
    "MissingFileError",
    "Prediction",
    "RemovalReport",
    "RemovalRow",
    "ResultRow",
    "ResultsTable",
    "SegmentationMetrics",
    "TrainingError",
    "VTCELoss",
    "calibrate_removal",
    "check_depth_units",
    "convert_to_depth_aware",
    "convert_to_plain",
    "current_depth",
    "default_depth_aware_mapping",
    "depth_aware_avg_pool2d",
    "depth_aware_conv2d",
    "depth_context",
    "depth_similarity",
    "export",
    "list_depth_aware",
    "predict",
    "register_depth_aware",
    "removal_report",
    "vtce_loss",
    "vtce_temperature",
]
