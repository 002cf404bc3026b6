"""Depth-aware operators: the functional D-Conv and pooling, the depth-aware layer family, its mapping and the
depth context."""

from depthdistill.nn.base import DepthAwareModule
from depthdistill.nn.context import DEPTH_RESIZE_MODES, DepthResize, current_depth, depth_context
from depthdistill.nn.conv import DepthAwareConv2d
from depthdistill.nn.depth import check_depth_size, valid_depth
from depthdistill.nn.functional import DEFAULT_ALPHA, depth_aware_conv2d, depth_similarity
from depthdistill.nn.mapping import default_depth_aware_mapping, depth_aware_class, register_depth_aware
from depthdistill.nn.pooling import DepthAwareAvgPool2d, depth_aware_avg_pool2d
from depthdistill.nn.units import check_depth_units

__all__ = [
    "DEFAULT_ALPHA",
    "DEPTH_RESIZE_MODES",
    "DepthAwareAvgPool2d",
    "DepthAwareConv2d",
    "DepthAwareModule",
    "DepthResize",
    "check_depth_size",
    "check_depth_units",
    "current_depth",
    "default_depth_aware_mapping",
    "depth_aware_avg_pool2d",
    "depth_aware_class",
    "depth_aware_conv2d",
    "depth_context",
    "depth_similarity",
    "register_depth_aware",
    "valid_depth",
]
