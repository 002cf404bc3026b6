"""Methods: each one module with one :class:`~depthdistill.distill.methods.base.Method` class, and one entry in
:data:`METHODS` below."""

from __future__ import annotations

from depthdistill.distill.methods.aux_depth import AuxiliaryDepth
from depthdistill.distill.methods.base import Method
from depthdistill.distill.methods.consistency import ConsistencyTraining
from depthdistill.distill.methods.online import OnlineDistillation
from depthdistill.distill.methods.removal import DepthRemoval
from depthdistill.distill.methods.unlabelled import UnlabelledDistillation
from depthdistill.errors import ConfigError, ConfigTypeError

__all__ = ["METHODS", "Method", "AuxiliaryDepth", "ConsistencyTraining", "DepthRemoval", "OnlineDistillation",
           "UnlabelledDistillation", "get_method", "register_method"]

#: Method name (``DistillSettings.method``) → class.
METHODS: dict[str, type[Method]] = {
    DepthRemoval.name: DepthRemoval,
    UnlabelledDistillation.name: UnlabelledDistillation,
    OnlineDistillation.name: OnlineDistillation,
    AuxiliaryDepth.name: AuxiliaryDepth,
    ConsistencyTraining.name: ConsistencyTraining,
}


def register_method(method: type[Method]) -> type[Method]:
    """Adds a method to :data:`METHODS` under its ``name`` (usable as a class decorator).

    Raises:
        ConfigError: If another class is registered under that name.
        ConfigTypeError: If ``method`` is not a :class:`Method` subclass with a ``name``.

    Examples:
        >>> register_method(DepthRemoval) is DepthRemoval  # registered already: the same class is a no-op
        True
    """
    if not (isinstance(method, type) and issubclass(method, Method) and isinstance(getattr(method, "name", None),
                                                                                  str)):
        raise ConfigTypeError(f"register_method needs a Method subclass with a name, got {method!r}")
    current = METHODS.get(method.name)
    if current is not None and current is not method:
        raise ConfigError(f"method {method.name!r} is already registered to {current.__qualname__}")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """A new instance of the method registered as ``name``.

    Raises:
        ConfigError: If no method has that name (the known ones are listed).

    Examples:
        >>> type(get_method("removal")).__name__
        'DepthRemoval'
    """
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; registered: {sorted(METHODS)} (add one with register_method)")
    return METHODS[name]()
