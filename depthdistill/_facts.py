"""Facts every layer of the package shares: the void label, the generated label colours and how numbers are
written to JSON.

At the bottom of the import graph (it imports :mod:`depthdistill.errors` only), so that ``nn``, ``data``,
``metrics``, ``losses``, the engine and ``viz`` all read the same definition.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from depthdistill.errors import ConfigError

__all__ = ["VOID", "jsonable", "label_palette"]

#: The label of pixels that belong to no class: not counted by the metrics, skipped by the losses, drawn black.
VOID = 255


def label_palette(num_classes: int) -> np.ndarray:
    """Distinct colours for ``num_classes`` classes, none of them black (black is void).

    The PASCAL VOC colour map: class ``c`` takes VOC index ``c + 1``, whose bits are spread over the high bits of
    R, G and B. Any class count below 2**24 gets distinct colours (NYUv2's 894 raw classes included), with NumPy
    alone, so datasets can build their palettes at import time.

    Args:
        num_classes: Number of classes (≥ 1).

    Returns:
        ``(num_classes, 3)`` uint8 RGB.

    Raises:
        ConfigError: If ``num_classes`` is not a positive int.

    Examples:
        >>> label_palette(3).tolist()
        [[128, 0, 0], [0, 128, 0], [128, 128, 0]]
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive int, got {num_classes!r}")
    palette = np.zeros((int(num_classes), 3), dtype=np.uint8)
    for c in range(int(num_classes)):
        index, colour = c + 1, [0, 0, 0]
        for shift in range(7, -1, -1):
            for channel in range(3):
                colour[channel] |= ((index >> channel) & 1) << shift
            index >>= 3
        palette[c] = colour
    return palette


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
