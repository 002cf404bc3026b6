"""Argument checks shared by the depth-aware operators and layers: geometry, α and padding modes.

Every public operator and constructor of :mod:`depthdistill.nn` reads its stride, padding, dilation, kernel size,
groups, α and padding mode through here, so a bad value raises the same :class:`~depthdistill.ConfigError`
(a ``ValueError`` too; :class:`~depthdistill.ConfigTypeError`, also a ``TypeError``, for a wrong type) naming the
argument, the value and what is accepted, instead of a ``ZeroDivisionError`` or a ``RuntimeError`` from deep in
a kernel.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

from depthdistill.errors import ConfigError, ConfigTypeError

__all__ = ["IntPair", "Padding", "PADDING_MODES", "check_alpha", "check_groups", "check_padding_mode", "output_size",
           "pair", "resolve_padding"]

#: An int for both axes, or ``(height, width)``.
IntPair = int | tuple[int, int]
#: An int, ``(h, w)``, explicit ``(left, right, top, bottom)``, ``"same"`` or ``"valid"``.
Padding = int | tuple[int, int] | tuple[int, int, int, int] | str
#: How the input of a convolution may be padded (as ``nn.Conv2d``'s ``padding_mode``).
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def pair(value: IntPair | Sequence[int], name: str, minimum: int = 1) -> tuple[int, int]:
    """``value`` as ``(height, width)`` ints, each at least ``minimum``.

    Args:
        value: An int, or a sequence of one or two ints (as ``nn.Conv2d`` accepts).
        name: The argument's name, for the message.
        minimum: The smallest allowed entry (1 for kernel size, stride and dilation; 0 for padding).

    Returns:
        The pair.

    Raises:
        ConfigTypeError: If ``value`` is not an int or a sequence of ints (a bool, a float, a string).
        ConfigError: If it has not one or two entries, or an entry is below ``minimum``.

    Examples:
        >>> pair(3, "kernel_size"), pair((2, 1), "stride")
        ((3, 3), (2, 1))
        >>> pair(0, "stride")
        Traceback (most recent call last):
        ...
        depthdistill.errors.ConfigError: stride must be >= 1 in each axis, got 0; use 1 for none
    """
    if _is_int(value):
        entries = (int(value), int(value))  # type: ignore[arg-type]
    elif isinstance(value, Sequence) and not isinstance(value, str):
        if not all(_is_int(v) for v in value):
            raise ConfigTypeError(f"{name} must be an int or a pair of ints, got {value!r}")
        entries = tuple(int(v) for v in value)
        if len(entries) == 1:
            entries = entries * 2
        if len(entries) != 2:
            raise ConfigError(f"{name} must be an int or a pair of ints (height, width), got {value!r} with "
                              f"{len(entries)} entries")
    else:
        raise ConfigTypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(entries) < minimum:
        raise ConfigError(f"{name} must be >= {minimum} in each axis, got {value!r}; "
                          f"{'use 1 for none' if minimum == 1 else 'use 0 for none'}")
    return entries  # type: ignore[return-value]


def resolve_padding(
    padding: Padding, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]
) -> tuple[int, int, int, int]:
    """Any padding spec as explicit ``(left, right, top, bottom)`` amounts, as ``F.pad`` orders them.

    Args:
        padding: An int, ``(h, w)``, ``(left, right, top, bottom)``, ``"same"`` or ``"valid"``; amounts ≥ 0.
        kernel: The kernel size ``(kh, kw)``.
        stride: The stride (``"same"`` needs 1).
        dilation: The dilation.

    Returns:
        ``(left, right, top, bottom)``.

    Raises:
        ConfigTypeError: If ``padding`` is neither a string nor ints.
        ConfigError: For another string, a wrong number of entries, a negative amount, or ``"same"`` with a
            stride.

    Examples:
        >>> resolve_padding((1, 2), (3, 5), (1, 1), (1, 1))
        (2, 2, 1, 1)
        >>> resolve_padding("same", (4, 4), (1, 1), (1, 1))  # the odd pixel at the end, as F.conv2d puts it
        (1, 2, 1, 2)
    """
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ConfigError(f"padding='same' needs stride 1 (as in F.conv2d), got stride {stride}; give the "
                                  "padding as numbers instead")
            total_h = dilation[0] * (kernel[0] - 1)
            total_w = dilation[1] * (kernel[1] - 1)
            return (total_w // 2, total_w - total_w // 2, total_h // 2, total_h - total_h // 2)
        raise ConfigError(f"padding must be an int, a tuple, 'same' or 'valid', got {padding!r}")
    if _is_int(padding):
        pads = (int(padding),) * 4  # type: ignore[arg-type]
    elif isinstance(padding, Sequence) and all(_is_int(p) for p in padding):
        entries = tuple(int(p) for p in padding)
        if len(entries) == 1:
            entries = entries * 2
        if len(entries) == 2:
            pads = (entries[1], entries[1], entries[0], entries[0])
        elif len(entries) == 4:
            pads = entries
        else:
            raise ConfigError(f"padding must have 2 (h, w) or 4 (left, right, top, bottom) entries, got {padding!r}")
    else:
        raise ConfigTypeError(f"padding must be an int, a tuple of ints, 'same' or 'valid', got {padding!r}")
    if min(pads) < 0:
        raise ConfigError(f"padding must be >= 0, got {padding!r}; crop the input instead of padding negatively")
    return pads  # type: ignore[return-value]


def output_size(size: int, pad: int, kernel: int, stride: int, dilation: int) -> int:
    """The output length of a convolution or pooling along one axis (``pad``: both sides together).

    Examples:
        >>> output_size(8, 2, 3, 2, 1)
        4
    """
    return (size + pad - dilation * (kernel - 1) - 1) // stride + 1


def check_groups(groups: object, in_channels: int, out_channels: int) -> int:
    """``groups`` checked: an int ≥ 1 dividing both channel counts.

    Raises:
        ConfigTypeError: If ``groups`` is not an int.
        ConfigError: If it is < 1 or does not divide the channels.

    Examples:
        >>> check_groups(2, 4, 6)
        2
    """
    if not _is_int(groups):
        raise ConfigTypeError(f"groups must be an int, got {groups!r}")
    groups = int(groups)  # type: ignore[arg-type]
    if groups < 1:
        raise ConfigError(f"groups must be >= 1, got {groups}; use 1 for an ungrouped convolution")
    if in_channels % groups or out_channels % groups:
        raise ConfigError(f"groups={groups} must divide both the input channels ({in_channels}) and the output "
                          f"channels ({out_channels}); pick a common divisor")
    return groups


def check_alpha(alpha: object, name: str = "alpha") -> float:
    """α of Eq. 6 checked: a finite real number ≥ 0 (0 makes a plain convolution).

    Raises:
        ConfigTypeError: If it is not a number (a bool, a string, a tensor with several values).
        ConfigError: If it is negative or not finite.

    Examples:
        >>> check_alpha(8)
        8.0
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise ConfigTypeError(f"{name} must be a number (per metre of depth difference), got {alpha!r}")
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ConfigError(f"{name} must be a finite number >= 0 (per metre), got {alpha!r}; the paper uses 8.3")
    return float(alpha)


def check_padding_mode(padding_mode: object) -> str:
    """``padding_mode`` checked against :data:`PADDING_MODES`.

    Examples:
        >>> check_padding_mode("reflect")
        'reflect'
    """
    if padding_mode not in PADDING_MODES:
        raise ConfigError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    return padding_mode  # type: ignore[return-value]
