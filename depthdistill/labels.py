"""The label convention every part of the package shares: the void label and the generated label colours.

At the bottom of the import graph (it imports :mod:`depthdistill.errors` only), so that ``data``, ``metrics``,
``losses``, the engine and ``viz`` all read the same definition.
"""

from __future__ import annotations

import numpy as np

from depthdistill.errors import ConfigError

__all__ = ["VOID", "label_palette"]

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
