"""The depth-aware layer family: the :class:`DepthAwareModule` base and the *plain type → depth-aware type* mapping.

Every depth-aware layer is a subclass of the plain layer it replaces (same parameters, buffers and state_dict
keys) and of :class:`DepthAwareModule`. :func:`~depthdistill.convert_to_depth_aware` walks a model and swaps the
class of every module whose type (or a base of it) is in the mapping; :func:`~depthdistill.convert_to_plain` swaps
it back to :attr:`DepthAwareModule.plain_class`. ``nn.Conv2d`` → :class:`~depthdistill.DepthAwareConv2d` and
``nn.AvgPool2d`` → :class:`~depthdistill.DepthAwareAvgPool2d` are registered by the package; users add their own
types with :func:`register_depth_aware`, as ``torch.ao`` extends its quantisation mappings.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn as nn
from torch import Tensor

from depthdistill.errors import ConfigError, ConfigTypeError
from depthdistill.nn.context import _state_for

__all__ = ["DepthAwareModule", "depth_aware_class", "register_depth_aware"]


class DepthAwareModule:
    """Base (a mixin) of every depth-aware layer: the depth lookup, α and the plain class it reverts to.

    A depth-aware layer derives from this class first and from the plain layer it replaces second, so it keeps
    that layer's parameters and state_dict keys; its ``forward`` reads depth with :meth:`depth_for`. Register it
    with :func:`register_depth_aware` to make :func:`~depthdistill.convert_to_depth_aware` use it.

    Attributes:
        alpha: α of Eq. 6 per metre, set by the constructor or by conversion.
        plain_class: The class :func:`~depthdistill.convert_to_plain` restores (set by
            :func:`register_depth_aware` when the class does not set it).
        opt_in: ``True`` for layers converted only when asked (``convert_to_depth_aware(pooling=True)``, or an
            ``include`` that names the layer): depth-aware pooling. ``False`` (default): converted like
            convolutions.

    Examples:
        >>> import torch, depthdistill
        >>> class Gate(torch.nn.Module):  # a plain layer: a learned scale per channel
        ...     def __init__(self, channels):
        ...         super().__init__()
        ...         self.weight = torch.nn.Parameter(torch.ones(channels))
        ...     def forward(self, x):
        ...         return x * self.weight.view(-1, 1, 1)
        >>> class DepthAwareGate(DepthAwareModule, Gate):  # the same, damped where depth is far
        ...     def forward(self, x):
        ...         depth, _ = self.depth_for(x)
        ...         return super().forward(x) * torch.exp(-self.alpha * depth)
        >>> register_depth_aware(Gate, DepthAwareGate)
        >>> model = depthdistill.convert_to_depth_aware(torch.nn.Sequential(Gate(3)))
        >>> type(model[0]).__name__, type(depthdistill.convert_to_plain(model)[0]).__name__
        ('DepthAwareGate', 'Gate')
    """

    alpha: float
    plain_class: ClassVar[type[nn.Module]]
    opt_in: ClassVar[bool] = False

    def depth_for(self, x: Tensor) -> tuple[Tensor, dict]:
        """Depth of the innermost :func:`~depthdistill.depth_context` at ``x``'s resolution and device.

        Args:
            x: The layer's input ``(B, C, H, W)``.

        Returns:
            ``(depth, cache)``: depth ``(B, 1, H, W)`` in metres (resized as the context says, memoised per
            resolution), and a dict alive for the context's block in which depth weights may be memoised (pass it
            as ``cache=`` to :func:`~depthdistill.depth_aware_conv2d` or
            :func:`~depthdistill.depth_aware_avg_pool2d`).

        Raises:
            DepthError: Outside any depth context, or when the depth does not fit ``x``.
        """
        return _state_for(x, type(self).__name__)

    @classmethod
    def same_as_plain(cls, module: nn.Module) -> bool:
        """Whether depth cannot change what ``module`` computes (a 1×1 kernel): conversion then leaves it plain.

        Args:
            module: A plain module of the registered type.

        Returns:
            ``False`` unless a subclass says otherwise.
        """
        return False

    @classmethod
    def check_convertible(cls, module: nn.Module, name: str) -> None:
        """Raises :class:`~depthdistill.ConfigError` if ``module``'s configuration has no depth-aware counterpart.

        Args:
            module: A plain module selected for conversion.
            name: Its qualified name, for the message.
        """

    def extra_repr(self) -> str:
        own = super().extra_repr()  # type: ignore[misc]
        return f"{own}, alpha={self.alpha:g}" if own else f"alpha={self.alpha:g}"

    def __reduce_ex__(self, protocol: int) -> Any:
        cls = type(self)
        if _DERIVED.get(cls.plain_class) is not cls:
            return super().__reduce_ex__(protocol)
        # A class made by depth_aware_class cannot be found by name on load, so the pickle names the plain class
        # it was made from and rebuilds it (torch.save(model), copy.deepcopy and multiprocessing all pickle).
        return _rebuild_depth_aware, (cls.plain_class,), self.__getstate__()  # type: ignore[attr-defined]


#: Registered plain type → depth-aware type.
_MAPPING: dict[type[nn.Module], type[DepthAwareModule]] = {}
#: Subclass of a registered plain type → the class made for it by depth_aware_class.
_DERIVED: dict[type[nn.Module], type[DepthAwareModule]] = {}


def register_depth_aware(plain_type: type[nn.Module], depth_aware_type: type[DepthAwareModule]) -> None:
    """Makes conversion turn every ``plain_type`` (and subclass of it) into ``depth_aware_type``, and back.

    ``depth_aware_type`` must derive from :class:`DepthAwareModule` and from ``plain_type``: conversion swaps a
    module's class in place, so the module keeps its Parameter objects and state_dict keys. A subclass of
    ``plain_type`` that is not registered itself is converted to a class derived from both ``depth_aware_type``
    and the subclass (made once, see :func:`depth_aware_class`). Registering a subclass of an already registered
    type (a conv subclass with its own depth-aware version) takes precedence over its base for that subclass.

    Args:
        plain_type: The plain layer type, an ``nn.Module`` subclass.
        depth_aware_type: Its depth-aware counterpart. Its ``plain_class`` is set to ``plain_type`` if it does not
            set one itself.

    Raises:
        ConfigError: If the types do not fit together as above, or ``plain_type`` is already registered to
            another type.

    Examples:
        >>> import torch.nn as nn
        >>> from depthdistill import DepthAwareConv2d
        >>> register_depth_aware(nn.Conv2d, DepthAwareConv2d)  # registered already: the same pair is a no-op
    """
    if not (isinstance(plain_type, type) and issubclass(plain_type, nn.Module)):
        raise ConfigError(f"register_depth_aware: plain_type must be an nn.Module subclass, got {plain_type!r}")
    if issubclass(plain_type, DepthAwareModule):
        raise ConfigError(f"register_depth_aware: plain_type {plain_type.__name__} is itself depth-aware; pass the "
                          "plain layer type it reverts to")
    if not (isinstance(depth_aware_type, type) and issubclass(depth_aware_type, DepthAwareModule)
            and issubclass(depth_aware_type, plain_type)):
        raise ConfigError(
            f"register_depth_aware: {depth_aware_type!r} must derive from both DepthAwareModule and "
            f"{plain_type.__name__} (class DepthAware{plain_type.__name__}(DepthAwareModule, {plain_type.__name__})), "
            "so that conversion can swap the class of a module in place"
        )
    current = _MAPPING.get(plain_type)
    if current is not None and current is not depth_aware_type:
        raise ConfigError(f"register_depth_aware: {plain_type.__name__} is already registered to {current.__name__}")
    own = depth_aware_type.__dict__.get("plain_class")
    if own is not None and own is not plain_type:
        raise ConfigError(f"register_depth_aware: {depth_aware_type.__name__}.plain_class is {own.__name__}, "
                          f"not {plain_type.__name__}")
    depth_aware_type.plain_class = plain_type
    _MAPPING[plain_type] = depth_aware_type


def _registered_base(cls: type) -> type[nn.Module] | None:
    """The nearest class in ``cls``'s MRO that is registered, or ``None``."""
    return next((base for base in cls.__mro__ if base in _MAPPING), None)


def _registered_type(cls: type) -> type[DepthAwareModule] | None:
    """The depth-aware type registered for the nearest registered base of ``cls``, or ``None``."""
    base = _registered_base(cls)
    return None if base is None else _MAPPING[base]


def depth_aware_class(plain_class: type[nn.Module]) -> type[DepthAwareModule]:
    """The depth-aware counterpart of a layer class (a registered type such as ``nn.Conv2d``, or a subclass of one).

    For a subclass that is not registered itself, the result derives from both the registered depth-aware type
    and ``plain_class``, so ``isinstance`` checks against either still hold, and it is made once and reused.
    For convolution subclasses that override ``forward`` their own forward still runs (see
    :class:`~depthdistill.DepthAwareConv2d`).

    Args:
        plain_class: A registered plain type or a subclass of one.

    Returns:
        The depth-aware class.

    Raises:
        ConfigTypeError: If no base of ``plain_class`` is registered.

    Examples:
        >>> import torch.nn as nn
        >>> depth_aware_class(nn.Conv2d).__name__
        'DepthAwareConv2d'
    """
    if not isinstance(plain_class, type):
        raise ConfigTypeError(f"expected a layer class, got {plain_class!r}")
    if issubclass(plain_class, DepthAwareModule):
        return plain_class
    cls = _MAPPING.get(plain_class) or _DERIVED.get(plain_class)
    if cls is not None:
        return cls
    base = _registered_base(plain_class)
    if base is None:
        raise ConfigTypeError(
            f"{plain_class.__name__} has no depth-aware counterpart (registered: "
            f"{', '.join(t.__name__ for t in _MAPPING)}); add one with depthdistill.register_depth_aware"
        )
    registered = _MAPPING[base]
    cls = type(
        f"DepthAware{plain_class.__name__}",
        (registered, plain_class),
        {"plain_class": plain_class, "__module__": registered.__module__, "__doc__": registered.__doc__},
    )
    _DERIVED[plain_class] = cls
    return cls


def _rebuild_depth_aware(plain_class: type[nn.Module]) -> DepthAwareModule:
    cls = depth_aware_class(plain_class)
    return cls.__new__(cls)
