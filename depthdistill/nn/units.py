"""The depth units check: depth must be in metres, and millimetres or centimetres are the usual mistake.

Depth in millimetres makes every depth difference a thousand times too large, so nearly every ``H = exp(-α·|ΔD|)``
of a depth-aware layer is ~0 and the teacher trains without error but learns almost nothing from depth. One
statistic catches it: the median of the valid depth (> 0 and finite). Indoor and street scenes in metres have
medians of about 0.5–10; the same scenes in millimetres have medians in the thousands.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from depthdistill.errors import ConfigError, DepthError
from depthdistill.nn.depth import valid_depth

__all__ = ["DEPTH_RANGE", "check_depth_units", "depth_units_problem"]

#: Plausible range, in metres, of the median valid depth of an image or set. Scenes whose median depth is
#: really outside it (e.g. aerial views) widen it: pass ``depth_range=(lo, hi)`` where offered, or set
#: ``depthdistill.nn.units.DEPTH_RANGE`` for the whole process.
DEPTH_RANGE: tuple[float, float] = (0.1, 20.0)

# Units a depth map is mistakenly stored in, and the factor turning them into metres, most common first.
_UNITS = (("millimetres", 1000.0), ("centimetres", 100.0))
# The median of this many valid values, taken evenly over the map, is as telling as that of all of them.
_SAMPLE = 1 << 16


def _median_valid(depth: Tensor | np.ndarray) -> float | None:
    depth = torch.as_tensor(depth).detach()
    if depth.device.type == "meta" or not depth.is_floating_point():
        return None
    flat = depth.flatten()
    valid = flat[valid_depth(flat)]
    if valid.numel() == 0:
        return None
    if valid.numel() > _SAMPLE:
        valid = valid[:: valid.numel() // _SAMPLE + 1]
    return float(valid.float().median())


def _resolve_range(depth_range: tuple[float, float] | None) -> tuple[float, float]:
    lo, hi = DEPTH_RANGE if depth_range is None else depth_range
    if not 0 < lo < hi:
        raise ConfigError(f"depth_range must be (low, high) metres with 0 < low < high, got {depth_range!r}")
    return float(lo), float(hi)


def depth_units_problem(depth: Tensor | np.ndarray, depth_range: tuple[float, float] | None = None) -> str | None:
    """What is wrong with the units of ``depth`` (float metres, ≤ 0 or non-finite = missing), or ``None``.

    Args:
        depth: A depth map or a stack of them, any shape, a tensor or a NumPy array.
        depth_range: Plausible ``(low, high)`` median depth in metres; default :data:`DEPTH_RANGE`.

    Returns:
        ``None`` when the median valid depth lies in the range (or there is no valid depth to judge), else a
        sentence naming the median, the likely unit and the fix.

    Examples:
        >>> depth_units_problem(torch.tensor([1.2, 2.5, 0.0])) is None
        True
        >>> print(depth_units_problem(torch.tensor([1200.0, 2500.0, 3100.0])).split(": ", 1)[1])
        it looks like millimetres; convert it: depth / 1000
    """
    lo, hi = _resolve_range(depth_range)
    median = _median_valid(depth)
    if median is None or lo <= median <= hi:
        return None
    intro = f"median valid depth is {median:.4g} but metres are expected (plausible median {lo:g}..{hi:g} m)"
    middle = math.sqrt(lo * hi)  # the range's centre on a log scale
    if median > hi:
        # A median fitting several units (500: 0.5 m in mm, 5 m in cm) goes to the one nearer the middle.
        fits = sorted((u for u in _UNITS if lo <= median / u[1] <= hi),
                      key=lambda u: abs(math.log(median / u[1] / middle)))
        if not fits:
            return f"{intro}: convert it to metres (for millimetres: depth / 1000)"
        (unit, per_metre), others = fits[0], fits[1:]
        also = "".join(f" (if {u}: depth / {f:g})" for u, f in others)
        return f"{intro}: it looks like {unit}; convert it: depth / {per_metre:g}{also}"
    factor = 10 ** round(-math.log10(median / middle))
    return (f"{intro}: it looks scaled down about {factor:g}x (divided by 1000 twice, or normalised or inverse "
            "depth?); give depth in metres")


def check_depth_units(
    depth: Tensor | np.ndarray, depth_range: tuple[float, float] | None = None, *, where: str = ""
) -> None:
    """Raises a :class:`~depthdistill.DepthError` if ``depth`` does not look like metres (see
    :func:`depth_units_problem`).

    Args:
        depth: A depth map or a stack of them, a tensor or a NumPy array; ≤ 0 or non-finite = missing.
        depth_range: Plausible ``(low, high)`` median depth in metres; default :data:`DEPTH_RANGE`.
        where: Words naming the data in the message (a file, ``"teacher training data"``).

    Raises:
        DepthError: If the median valid depth lies outside ``depth_range``.
        ConfigError: If ``depth_range`` is not ``0 < low < high``.

    Examples:
        >>> check_depth_units(np.full((4, 4), 2.5))
        >>> check_depth_units(np.full((4, 4), 2500.0), where="a.npy")
        Traceback (most recent call last):
        ...
        depthdistill.errors.DepthError: depth of a.npy: median valid depth is 2500 ... depth / 1000 ...
    """
    problem = depth_units_problem(depth, depth_range)
    if problem is not None:
        where = f" of {where}" if where else ""
        raise DepthError(f"depth{where}: {problem} (if the scenes really are that far, pass depth_range=(low, high) "
                         "or set depthdistill.nn.units.DEPTH_RANGE)")
