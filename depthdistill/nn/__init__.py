"""Depth-aware operators: the functional D-Conv and pooling, the depth-aware layer family and the depth context."""

from depthdistill.nn.base import DepthAwareModule, depth_aware_class, register_depth_aware
from depthdistill.nn.context import DepthResize, current_depth, depth_context
from depthdistill.nn.conv import DepthAwareConv2d
from depthdistill.nn.functional import DEFAULT_ALPHA, depth_aware_conv2d, depth_similarity, valid_depth
from depthdistill.nn.pooling import DepthAwareAvgPool2d, depth_aware_avg_pool2d
from depthdistill.nn.units import check_depth_units

__all__ = [
    "DEFAULT_ALPHA",
    "DepthAwareAvgPool2d",
    "DepthAwareConv2d",
    "DepthAwareModule",
    "DepthResize",
    "check_depth_units",
    "current_depth",
    "depth_aware_avg_pool2d",
    "depth_aware_class",
    "depth_aware_conv2d",
    "depth_context",
    "depth_similarity",
    "register_depth_aware",
    "valid_depth",
]
