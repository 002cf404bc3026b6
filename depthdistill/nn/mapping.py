"""The *plain type → depth-aware type* mapping, as ``torch.ao.quantization`` keeps its module mappings.

The built-in entries are the literal table :data:`BUILT_IN_MAPPING`; :func:`register_depth_aware` adds a user's
type for every later conversion, and :func:`default_depth_aware_mapping` returns a *copy* of both, which a caller
may extend and pass to :func:`~depthdistill.convert_to_depth_aware` (``mapping=``) for one conversion without
touching any global. Adding a depth-aware layer type to the package is one module (the class) and one entry in
:data:`BUILT_IN_MAPPING`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch.nn as nn

from depthdistill.errors import ConfigError, ConfigTypeError
from depthdistill.nn.base import DepthAwareModule, bind_depth_aware, derive_depth_aware
from depthdistill.nn.conv import DepthAwareConv2d
from depthdistill.nn.pooling import DepthAwareAvgPool2d

__all__ = ["BUILT_IN_MAPPING", "DepthAwareMapping", "default_depth_aware_mapping", "depth_aware_class",
           "depth_aware_type_for", "check_mapping", "register_depth_aware"]

#: A plain → depth-aware table: each key an ``nn.Module`` type, each value its depth-aware counterpart.
DepthAwareMapping = Mapping[type[nn.Module], type[DepthAwareModule]]

#: The package's own depth-aware layer types.
BUILT_IN_MAPPING: DepthAwareMapping = {
    nn.Conv2d: DepthAwareConv2d,
    nn.AvgPool2d: DepthAwareAvgPool2d,
}

#: What register_depth_aware added.
_REGISTERED: dict[type[nn.Module], type[DepthAwareModule]] = {}


def default_depth_aware_mapping() -> dict[type[nn.Module], type[DepthAwareModule]]:
    """A copy of the mapping conversion uses by default: :data:`BUILT_IN_MAPPING` plus what
    :func:`register_depth_aware` added.

    Changing the copy changes nothing else; pass it to :func:`~depthdistill.convert_to_depth_aware` as
    ``mapping=`` to convert with it.

    Returns:
        A new dict, plain type → depth-aware type.

    Examples:
        >>> import torch.nn as nn
        >>> mapping = default_depth_aware_mapping()
        >>> mapping[nn.Conv2d].__name__
        'DepthAwareConv2d'
        >>> del mapping[nn.AvgPool2d]  # a table without depth-aware pooling, for one conversion
        >>> nn.AvgPool2d in default_depth_aware_mapping()
        True
    """
    return {**BUILT_IN_MAPPING, **_REGISTERED}


def register_depth_aware(plain_type: type[nn.Module], depth_aware_type: type[DepthAwareModule]) -> None:
    """Adds ``plain_type → depth_aware_type`` to the default mapping, for every later conversion in this process.

    For one conversion only, pass a table instead: ``convert_to_depth_aware(model, mapping={
    **default_depth_aware_mapping(), Plain: DepthAwarePlain})``. ``depth_aware_type`` must derive from
    :class:`~depthdistill.DepthAwareModule` and from ``plain_type`` (see
    :func:`~depthdistill.nn.base.bind_depth_aware`). A subclass of ``plain_type`` is converted to a class derived
    from both ``depth_aware_type`` and the subclass; a subclass mapped itself takes precedence over its base.

    Args:
        plain_type: The plain layer type, an ``nn.Module`` subclass.
        depth_aware_type: Its depth-aware counterpart.

    Raises:
        ConfigError: If the types do not fit together, or ``plain_type`` is already mapped to another type.

    Examples:
        >>> import torch.nn as nn
        >>> from depthdistill import DepthAwareConv2d
        >>> register_depth_aware(nn.Conv2d, DepthAwareConv2d)  # built in already: the same pair is a no-op
    """
    current = default_depth_aware_mapping().get(plain_type)
    if current is not None and current is not depth_aware_type:
        raise ConfigError(f"register_depth_aware: {plain_type.__name__} is already registered to {current.__name__}")
    bind_depth_aware(plain_type, depth_aware_type, "register_depth_aware")
    if plain_type not in BUILT_IN_MAPPING:
        _REGISTERED[plain_type] = depth_aware_type


def check_mapping(mapping: DepthAwareMapping | None, where: str) -> DepthAwareMapping:
    """``mapping`` checked entry by entry (:func:`~depthdistill.nn.base.bind_depth_aware`); ``None``: the default.

    Args:
        mapping: A plain → depth-aware table, or ``None``.
        where: The caller's name, for messages.

    Returns:
        The table to convert with.

    Raises:
        ConfigTypeError: If ``mapping`` is not a mapping.
        ConfigError: If an entry's types cannot be swapped in place.

    Examples:
        >>> import torch.nn as nn
        >>> check_mapping([nn.Conv2d], "example")
        Traceback (most recent call last):
        ...
        depthdistill.errors.ConfigTypeError: example: mapping must be a dict {plain type: depth-aware type}, ...
    """
    if mapping is None:
        return default_depth_aware_mapping()
    if not isinstance(mapping, Mapping):
        raise ConfigTypeError(f"{where}: mapping must be a dict {{plain type: depth-aware type}}, got "
                              f"{type(mapping).__name__}; start from depthdistill.default_depth_aware_mapping()")
    for plain_type, depth_aware_type in mapping.items():
        bind_depth_aware(plain_type, depth_aware_type, where)
    return mapping


def depth_aware_type_for(cls: type, mapping: DepthAwareMapping) -> type[DepthAwareModule] | None:
    """The depth-aware type ``mapping`` gives the nearest base of ``cls`` (its MRO order), or ``None``.

    Examples:
        >>> import torch.nn as nn
        >>> depth_aware_type_for(nn.Conv2d, default_depth_aware_mapping()).__name__
        'DepthAwareConv2d'
        >>> depth_aware_type_for(nn.Linear, default_depth_aware_mapping()) is None
        True
    """
    base = next((base for base in cls.__mro__ if base in mapping), None)
    return None if base is None else mapping[base]


def depth_aware_class(
    plain_class: type[nn.Module], mapping: DepthAwareMapping | None = None
) -> type[DepthAwareModule]:
    """The depth-aware counterpart of a layer class (a mapped type such as ``nn.Conv2d``, or a subclass of one).

    For a subclass that is not mapped itself, the result derives from both the mapped depth-aware type and
    ``plain_class`` (see :func:`~depthdistill.nn.base.derive_depth_aware`), made once and reused.

    Args:
        plain_class: A mapped plain type or a subclass of one.
        mapping: The table; ``None``: :func:`default_depth_aware_mapping`.

    Returns:
        The depth-aware class (``plain_class`` itself if it is depth-aware already).

    Raises:
        ConfigTypeError: If ``plain_class`` is not a class, or no base of it is mapped.

    Examples:
        >>> import torch.nn as nn
        >>> depth_aware_class(nn.Conv2d).__name__
        'DepthAwareConv2d'
    """
    if not isinstance(plain_class, type):
        raise ConfigTypeError(f"expected a layer class, got {plain_class!r}")
    if issubclass(plain_class, DepthAwareModule):
        return plain_class
    mapping = check_mapping(mapping, "depth_aware_class")
    registered = depth_aware_type_for(plain_class, mapping)
    if registered is None:
        raise ConfigTypeError(
            f"{plain_class.__name__} has no depth-aware counterpart (mapped: "
            f"{', '.join(t.__name__ for t in mapping)}); add one with depthdistill.register_depth_aware or a "
            "mapping= entry"
        )
    return derive_depth_aware(registered, plain_class)
