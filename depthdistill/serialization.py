"""How the package writes values to JSON: every JSON file and line it writes goes through :func:`jsonable`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

__all__ = ["jsonable"]


def jsonable(value: Any) -> Any:
    """``value`` made valid JSON: NaN becomes ``None`` (``null``), ±inf the strings ``"inf"`` / ``"-inf"``,
    tuples lists, paths strings and mapping keys strings, all the way down.

    ``json.dumps`` would otherwise write ``NaN`` and ``Infinity``, which strict JSON readers reject; metrics hold
    NaN for classes absent from a test set. Every JSON file and line the package writes goes through here.

    Examples:
        >>> jsonable({"iou": [0.5, float("nan")], "ratio": float("inf"), 1: ("a", Path("b"))})
        {'iou': [0.5, None], 'ratio': 'inf', '1': ['a', 'b']}
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
