"""Depth-aware operators: the functional D-Conv, the ``DepthAwareConv2d`` layer and the depth context."""

from depthdistill.nn.context import DepthResize, current_depth, depth_context
from depthdistill.nn.conv import DepthAwareConv2d, depth_aware_class
from depthdistill.nn.functional import DEFAULT_ALPHA, depth_aware_conv2d, depth_similarity
from depthdistill.nn.units import check_depth_units

__all__ = [
    "DEFAULT_ALPHA",
    "DepthAwareConv2d",
    "DepthResize",
    "check_depth_units",
    "current_depth",
    "depth_aware_class",
    "depth_aware_conv2d",
    "depth_context",
    "depth_similarity",
]
