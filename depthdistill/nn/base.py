"""The depth-aware layer family: the :class:`DepthAwareModule` base and the classes it derives for subclasses.

Every depth-aware layer is a subclass of the plain layer it replaces (same parameters, buffers and state_dict
keys) and of :class:`DepthAwareModule`. :func:`~depthdistill.convert_to_depth_aware` swaps the class of every
module whose type (or a base of it) is in a *plain type → depth-aware type* mapping
(:mod:`depthdistill.nn.mapping`); :func:`~depthdistill.convert_to_plain` swaps it back to
:attr:`DepthAwareModule.plain_class`. This module knows no mapping: it checks that a pair of types can be swapped
in place (:func:`bind_depth_aware`), and makes the class for a subclass of a mapped type
(:func:`derive_depth_aware`), once per pair, picklable.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn as nn
from torch import Tensor

from depthdistill.errors import ConfigError
from depthdistill.nn.context import check_depth_resize, depth_at
from depthdistill.nn.functional import check_alpha

__all__ = ["DepthAwareModule", "bind_depth_aware", "derive_depth_aware", "rebuild_depth_aware"]


class DepthAwareModule:
    """Base (a mixin) of every depth-aware layer: the depth lookup, α, the depth resize and the plain class.

    A depth-aware layer derives from this class first and from the plain layer it replaces second, so it keeps
    that layer's parameters and state_dict keys; its ``forward`` reads depth with :meth:`depth_for`. Put it in a
    mapping (``register_depth_aware(Plain, DepthAwarePlain)``, or ``convert_to_depth_aware(model,
    mapping={Plain: DepthAwarePlain})``) to make conversion use it.

    Attributes:
        alpha: α of Eq. 6 per metre, set by the constructor or by conversion.
        depth_resize: How depth is brought to this layer's input resolution when the
            :func:`~depthdistill.depth_context` names no mode (``"nearest"``, ``"bilinear"``, ``"area"`` or
            ``"avgpool"``), set by the constructor or by conversion. The class default ``"nearest"`` is what
            layers pickled before the attribute existed read.
        plain_class: The class :func:`~depthdistill.convert_to_plain` restores (set by :func:`bind_depth_aware`
            when the class does not set it).
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
        >>> mapping = {**depthdistill.default_depth_aware_mapping(), Gate: DepthAwareGate}
        >>> model = depthdistill.convert_to_depth_aware(torch.nn.Sequential(Gate(3)), mapping=mapping)
        >>> type(model[0]).__name__, type(depthdistill.convert_to_plain(model)[0]).__name__
        ('DepthAwareGate', 'Gate')
    """

    alpha: float
    depth_resize: str = "nearest"
    plain_class: ClassVar[type[nn.Module]]
    opt_in: ClassVar[bool] = False

    def depth_for(self, x: Tensor) -> tuple[Tensor, dict]:
        """Depth of the innermost :func:`~depthdistill.depth_context` at ``x``'s resolution and device.

        Args:
            x: The layer's input ``(B, C, H, W)``.

        Returns:
            ``(depth, cache)``: depth ``(B, 1, H, W)`` in metres (resized by the context's mode, or this layer's
            :attr:`depth_resize` when the context names none, memoised per resolution and mode), and a dict alive
            for the context's block in which depth weights may be memoised (pass it as ``cache=`` to
            :func:`~depthdistill.depth_aware_conv2d` or :func:`~depthdistill.depth_aware_avg_pool2d`).

        Raises:
            DepthError: Outside any depth context, or when the depth does not fit ``x``.
        """
        return depth_at(x, self.depth_resize, type(self).__name__)

    def set_depth_options(self, alpha: float, depth_resize: str) -> None:
        """Sets :attr:`alpha` and :attr:`depth_resize` on this layer, checked (constructors and conversion).

        Args:
            alpha: α of Eq. 6 per metre, a finite number ≥ 0.
            depth_resize: One of ``"nearest"``, ``"bilinear"``, ``"area"``, ``"avgpool"``.

        Raises:
            ConfigError: If either is out of range (a ``ConfigTypeError`` for a non-number α).
        """
        self.alpha = check_alpha(alpha)
        self.depth_resize = check_depth_resize(depth_resize, "depth_resize")

    @classmethod
    def same_as_plain(cls, module: nn.Module) -> bool:
        """Whether depth cannot change what ``module`` computes (a 1×1 kernel): conversion then leaves it plain.

        Args:
            module: A plain module of the mapped type.

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
        mine = f"alpha={self.alpha:g}, depth_resize={self.depth_resize!r}"
        return f"{own}, {mine}" if own else mine

    def __reduce_ex__(self, protocol: int) -> Any:
        cls = type(self)
        made_from = _MADE_FROM.get(cls)
        if made_from is None:
            return super().__reduce_ex__(protocol)
        # A class made by derive_depth_aware cannot be found by name on load, so the pickle names the two classes
        # it was made from and rebuilds it (torch.save(model), copy.deepcopy and multiprocessing all pickle).
        return rebuild_depth_aware, (cls.plain_class, made_from), self.__getstate__()  # type: ignore[attr-defined]


#: Class made by derive_depth_aware → the depth-aware type it was made from (its plain_class is the other half).
_MADE_FROM: dict[type[DepthAwareModule], type[DepthAwareModule]] = {}
#: (depth-aware type, plain subclass) → the class made for them.
_DERIVED: dict[tuple[type[DepthAwareModule], type[nn.Module]], type[DepthAwareModule]] = {}


def bind_depth_aware(plain_type: type[nn.Module], depth_aware_type: type[DepthAwareModule], where: str) -> None:
    """Checks that ``depth_aware_type`` can stand in for ``plain_type`` in place, and makes it revert to it.

    ``depth_aware_type`` must derive from :class:`DepthAwareModule` and from ``plain_type``: conversion swaps a
    module's class in place, so the module keeps its Parameter objects and state_dict keys. Its ``plain_class``
    is set to ``plain_type`` unless the class sets it itself (then it must be ``plain_type``). Every entry of a
    mapping goes through here.

    Args:
        plain_type: The plain layer type, an ``nn.Module`` subclass.
        depth_aware_type: Its depth-aware counterpart.
        where: The caller's name, for messages.

    Raises:
        ConfigError: If the types do not fit together as above.

    Examples:
        >>> import torch.nn as nn
        >>> from depthdistill import DepthAwareConv2d
        >>> bind_depth_aware(nn.Conv2d, DepthAwareConv2d, "example")
        >>> bind_depth_aware(nn.Linear, DepthAwareConv2d, "example")
        Traceback (most recent call last):
        ...
        depthdistill.errors.ConfigError: example: <class 'depthdistill.nn.conv.DepthAwareConv2d'> must derive ...
    """
    if not (isinstance(plain_type, type) and issubclass(plain_type, nn.Module)):
        raise ConfigError(f"{where}: plain_type must be an nn.Module subclass, got {plain_type!r}")
    if issubclass(plain_type, DepthAwareModule):
        raise ConfigError(f"{where}: plain_type {plain_type.__name__} is itself depth-aware; pass the plain layer "
                          "type it reverts to")
    if not (isinstance(depth_aware_type, type) and issubclass(depth_aware_type, DepthAwareModule)
            and issubclass(depth_aware_type, plain_type)):
        raise ConfigError(
            f"{where}: {depth_aware_type!r} must derive from both DepthAwareModule and {plain_type.__name__} "
            f"(class DepthAware{plain_type.__name__}(DepthAwareModule, {plain_type.__name__})), so that conversion "
            "can swap the class of a module in place"
        )
    own = depth_aware_type.__dict__.get("plain_class")
    if own is not None and own is not plain_type:
        raise ConfigError(f"{where}: {depth_aware_type.__name__}.plain_class is {own.__name__}, "
                          f"not {plain_type.__name__}")
    depth_aware_type.plain_class = plain_type


def derive_depth_aware(
    depth_aware_type: type[DepthAwareModule], plain_class: type[nn.Module]
) -> type[DepthAwareModule]:
    """The depth-aware class for ``plain_class``, a subclass of the type ``depth_aware_type`` stands in for.

    The result derives from both ``depth_aware_type`` and ``plain_class``, so ``isinstance`` checks against either
    still hold; it is made once per pair and reused, and reverts to ``plain_class``. For convolution subclasses
    that override ``forward`` their own forward still runs (see :class:`~depthdistill.DepthAwareConv2d`).

    Args:
        depth_aware_type: A depth-aware type bound to a base of ``plain_class`` (see :func:`bind_depth_aware`).
        plain_class: The plain subclass.

    Returns:
        ``depth_aware_type`` itself when ``plain_class`` is its own plain class, else the derived class.

    Examples:
        >>> import torch.nn as nn
        >>> from depthdistill import DepthAwareConv2d
        >>> class MyConv(nn.Conv2d): ...
        >>> cls = derive_depth_aware(DepthAwareConv2d, MyConv)
        >>> cls.__name__, cls.plain_class is MyConv, cls is derive_depth_aware(DepthAwareConv2d, MyConv)
        ('DepthAwareMyConv', True, True)
    """
    if plain_class is depth_aware_type.plain_class:
        return depth_aware_type
    cls = _DERIVED.get((depth_aware_type, plain_class))
    if cls is None:
        cls = type(
            f"DepthAware{plain_class.__name__}",
            (depth_aware_type, plain_class),
            {"plain_class": plain_class, "__module__": depth_aware_type.__module__,
             "__doc__": depth_aware_type.__doc__},
        )
        _DERIVED[depth_aware_type, plain_class] = cls
        _MADE_FROM[cls] = depth_aware_type
    return cls


def rebuild_depth_aware(
    plain_class: type[nn.Module], depth_aware_type: type[DepthAwareModule] | None = None
) -> DepthAwareModule:
    """Unpickling: an empty instance of the class :func:`derive_depth_aware` made for the two classes.

    Pickles name this function (as ``depthdistill.nn.base._rebuild_depth_aware`` or
    ``depthdistill.nn.conv._rebuild_depth_aware`` when written before the mapping took a table per call, with
    ``plain_class`` alone): then ``depth_aware_type`` is the depth-aware type that stands in for the nearest base
    of ``plain_class`` among the loaded ones.

    Args:
        plain_class: The plain subclass the layer reverts to.
        depth_aware_type: The depth-aware type the class was made from.

    Returns:
        An instance whose state the unpickler then sets.

    Raises:
        ConfigError: If no loaded depth-aware type stands in for a base of ``plain_class``.
    """
    if depth_aware_type is None:
        depth_aware_type = _loaded_type_for(plain_class)
    cls = derive_depth_aware(depth_aware_type, plain_class)
    return cls.__new__(cls)


def _loaded_type_for(plain_class: type[nn.Module]) -> type[DepthAwareModule]:
    """The depth-aware type defined for the nearest base of ``plain_class`` (pickles of older versions)."""
    defined: list[type[DepthAwareModule]] = []
    pending = list(DepthAwareModule.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls not in _MADE_FROM and "plain_class" in cls.__dict__:
            defined.append(cls)
    for base in plain_class.__mro__:
        found = next((cls for cls in defined if cls.plain_class is base), None)
        if found is not None:
            return found
    raise ConfigError(f"cannot unpickle a depth-aware {plain_class.__name__}: no depth-aware type for it or a base of "
                      "it is defined; import the module that defines it before loading")


#: The name pickles of depth-aware subclass layers written by depthdistill 0.1 look up here.
_rebuild_depth_aware = rebuild_depth_aware
