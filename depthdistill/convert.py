"""Graph surgery: make the layers of any model depth-aware, and back.

Conversion walks the model and, for every module whose type (or a base of it) is in a depth-aware mapping (by
default :func:`~depthdistill.default_depth_aware_mapping`: ``nn.Conv2d`` → :class:`~depthdistill.DepthAwareConv2d`,
``nn.AvgPool2d`` → :class:`~depthdistill.DepthAwareAvgPool2d`, and whatever
:func:`~depthdistill.register_depth_aware` added; or the table passed as ``mapping=``), swaps the module's class
in place, the way ``SyncBatchNorm.convert_sync_batchnorm`` swaps modules but without building new ones: each layer
stays the same object, so its Parameter objects, buffers, device, dtype, training mode and hooks are untouched,
the state_dict keys never change, and the student trained after :func:`convert_to_plain` literally shares the
teacher's parameters.
"""

from __future__ import annotations

from typing import Any

import fnmatch
import logging
from collections import Counter
from collections.abc import Callable, Iterable

import torch
import torch.nn as nn

from depthdistill.errors import ConfigError, ConfigTypeError
from depthdistill.nn.arguments import check_alpha
from depthdistill.nn.base import DepthAwareModule, derive_depth_aware
from depthdistill.nn.context import DepthResize, check_depth_resize
from depthdistill.nn.functional import DEFAULT_ALPHA
from depthdistill.nn.mapping import DepthAwareMapping, check_mapping, depth_aware_type_for

__all__ = ["convert_to_depth_aware", "convert_to_plain", "list_depth_aware", "depth_aware_record",
           "restore_depth_aware", "LayerFilter"]

_log = logging.getLogger("depthdistill")

#: Selects layers by qualified name: a glob (``"encoder.*"``), several globs, or ``predicate(name, module)``.
LayerFilter = str | Iterable[str] | Callable[[str, nn.Module], bool]


def _matcher(spec: LayerFilter | None, what: str) -> Callable[[str, nn.Module], bool] | None:
    if spec is None:
        return None
    if callable(spec):
        return spec
    patterns = [spec] if isinstance(spec, str) else list(spec)
    if not all(isinstance(p, str) for p in patterns):
        raise ConfigTypeError(f"{what} must be a glob, a list of globs or a predicate(name, module), got {spec!r}")
    return lambda name, _module: any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _names_exactly(spec: LayerFilter | None) -> set[str]:
    """The layer names an include filter spells out in full (its globs taken literally)."""
    if spec is None or callable(spec):
        return set()
    return {spec} if isinstance(spec, str) else set(spec)


def convert_to_depth_aware(
    module: nn.Module,
    *,
    alpha: float = DEFAULT_ALPHA,
    depth_resize: DepthResize = "nearest",
    include: LayerFilter | None = None,
    exclude: LayerFilter | None = None,
    pooling: bool | None = None,
    mapping: DepthAwareMapping | None = None,
) -> nn.Module:
    """Makes every spatial ``nn.Conv2d`` of ``module`` depth-aware, in place (and, when asked, its average pools).

    Each selected convolution (``nn.Conv2d`` or any subclass, kernel larger than 1×1) becomes a
    :class:`~depthdistill.DepthAwareConv2d` (for subclasses, a class derived from both, which keeps the
    subclass's own forward). 1×1 convolutions are left as they are: with a single tap ``H ≡ 1`` and D-Conv *is*
    the plain convolution. Layers already depth-aware stay as they are but take the new ``alpha`` and
    ``depth_resize`` when selected (``include``/``exclude`` apply to them too), so converting twice is harmless and
    converting again with another ``alpha`` or ``depth_resize`` changes it; a change is logged. What was converted
    is logged on the ``"depthdistill"`` logger; :func:`list_depth_aware` lists it.

    ``nn.AvgPool2d`` layers become :class:`~depthdistill.DepthAwareAvgPool2d` only when asked (``pooling``, or an
    ``include`` pattern that is the pool's full name): by default a model converts exactly as it would without
    depth-aware pooling. Other layer types join through ``mapping`` (for this call: start from
    :func:`~depthdistill.default_depth_aware_mapping` and add or remove entries) or
    :func:`~depthdistill.register_depth_aware` (for every call); a subclass of a mapped type converts to a class
    derived from both, unless the subclass is mapped itself.

    TorchScript models (``torch.jit.script`` / ``torch.jit.trace``) cannot be converted: their convolutions are
    compiled code, not ``nn.Conv2d`` objects. Convert the eager model, train, then script the plain student.

    Run the converted model inside :func:`~depthdistill.depth_context`. With a constant depth its output equals
    the original model's. The model carries ``alpha`` and ``depth_resize`` (each converted layer holds them), so
    a bare ``depth_context(depth)`` runs it as it was converted.

    Args:
        module: Any model; the root itself may be a convolution.
        alpha: α of Eq. 6 per metre, for every converted layer.
        depth_resize: How each converted layer brings depth to its input's resolution when the depth context
            names no mode: ``"nearest"``, ``"bilinear"``, ``"area"`` or ``"avgpool"`` (see
            :func:`~depthdistill.depth_context`).
        include: Only layers whose qualified name matches (glob or globs, as in ``named_modules()``), or for
            which ``include(name, module)`` is true. ``None``: every layer.
        exclude: Layers to leave plain, in the same forms; applied after ``include``.
        pooling: Depth-aware average pooling (and any registered type marked ``opt_in``). ``None`` (default):
            only for pools that a string of ``include`` names in full (``include=["features.31", ...]``);
            ``True``: for every pool that ``include``/``exclude`` select; ``False``: never.
        mapping: The plain type → depth-aware type table for this call; ``None``:
            :func:`~depthdistill.default_depth_aware_mapping`. A table without ``nn.AvgPool2d`` never converts
            pools.

    Returns:
        ``module`` itself, converted.

    Raises:
        ConfigError: If the model has no layer to convert at all (no spatial ``nn.Conv2d``), or ``include``
            selects none of them, so that a teacher never silently equals the baseline; if a selected layer has
            options its depth-aware type does not support (an ``AvgPool2d`` with ``ceil_mode=True``); if the
            model is (or holds) a TorchScript module; if ``alpha`` or ``depth_resize`` is out of range, or a
            ``mapping`` entry's types cannot be swapped in place.
        ConfigTypeError: If ``module`` is not an ``nn.Module``, ``mapping`` not a mapping or ``alpha`` not a
            number.

    Examples:
        >>> import torch, depthdistill
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        ...                             torch.nn.AvgPool2d(3, stride=1, padding=1), torch.nn.Conv2d(8, 2, 1))
        >>> depthdistill.list_depth_aware(depthdistill.convert_to_depth_aware(model))
        ['0']
        >>> depthdistill.list_depth_aware(depthdistill.convert_to_depth_aware(model, pooling=True))
        ['0', '2']
    """
    if not isinstance(module, nn.Module):
        raise ConfigTypeError(f"convert_to_depth_aware takes an nn.Module, got {type(module).__name__}")
    alpha = check_alpha(alpha)
    depth_resize = check_depth_resize(depth_resize, "depth_resize")
    mapping = check_mapping(mapping, "convert_to_depth_aware")
    _refuse_scripted(module)
    if include is not None and not (callable(include) or isinstance(include, str)):
        include = list(include)  # read twice: as globs and as full names
    keep_in, keep_out = _matcher(include, "include"), _matcher(exclude, "exclude")
    named = _names_exactly(include)

    def left_out(name: str, layer: nn.Module) -> bool:
        return (keep_in is not None and not keep_in(name, layer)) or (keep_out is not None and keep_out(name, layer))

    converted: Counter[str] = Counter()
    already, changed, pointwise, excluded, not_asked = [], [], [], [], []
    for name, layer in module.named_modules():
        if isinstance(layer, DepthAwareModule):
            already.append(name)
            before = (layer.alpha, layer.depth_resize)
            if not left_out(name, layer) and before != (alpha, depth_resize):
                changed.append((name, before))
                layer.set_depth_options(alpha, depth_resize)
            continue
        registered = depth_aware_type_for(type(layer), mapping)
        if registered is None:
            continue
        if registered.same_as_plain(layer):
            pointwise.append(name)
        elif registered.opt_in and not (pooling or (pooling is None and name in named)):
            not_asked.append(name)
        elif left_out(name, layer):
            excluded.append(name)
        else:
            registered.check_convertible(layer, name or "<root>")
            layer.__class__ = derive_depth_aware(registered, type(layer))
            layer.set_depth_options(alpha, depth_resize)
            converted[registered.plain_class.__name__] += 1
    if not (converted or already):
        reason = ("include/exclude selected none of them" if excluded
                  else "it has only pooling layers, left plain unless pooling=True" if not_asked else "it has none")
        raise ConfigError(
            f"convert_to_depth_aware found no spatial nn.Conv2d (nor another registered layer type) to convert in "
            f"{type(module).__name__} ({reason}); the teacher would be the plain model"
        )
    _log.info(
        "convert_to_depth_aware: %s layer(s) made depth-aware (alpha=%g, depth_resize=%s), %d already depth-aware, "
        "%d 1x1 left plain (identical under D-Conv), %d excluded",
        " + ".join(f"{n} {kind}" for kind, n in converted.items()) or "0 Conv2d", alpha, depth_resize, len(already),
        len(pointwise), len(excluded),
    )
    if not_asked:
        _log.info("convert_to_depth_aware: %d pooling layer(s) left plain (pooling=True makes them depth-aware)",
                  len(not_asked))
    if changed:
        _log.info("convert_to_depth_aware: %d already depth-aware layer(s) changed to alpha=%g, depth_resize=%s "
                  "(were %s)", len(changed), alpha, depth_resize,
                  ", ".join(f"{name or '<root>'}: {old:g}, {resize}" for name, (old, resize) in changed[:5])
                  + (", ..." if len(changed) > 5 else ""))
    return module


def _refuse_scripted(module: nn.Module) -> None:
    scripted = next((name for name, m in module.named_modules() if isinstance(m, torch.jit.ScriptModule)), None)
    if scripted is not None:
        what = "the model is" if scripted == "" else f"its submodule {scripted!r} is"
        raise ConfigError(
            f"{what} a TorchScript module (torch.jit.script / trace): its convolutions are compiled code that "
            "cannot be made depth-aware. Convert and train the eager model, then script or trace the plain student "
            "(depthdistill.convert_to_plain) for deployment"
        )


def convert_to_plain(module: nn.Module) -> nn.Module:
    """Reverts every depth-aware layer of ``module`` to its original class, in place.

    The layers keep their Parameter objects, so the plain model (the student) shares the teacher's weights, and
    the state_dict is unchanged. A layer built directly as ``DepthAwareConv2d`` becomes an ``nn.Conv2d`` (each
    depth-aware type becomes its ``plain_class``, whichever mapping converted it); its ``alpha`` and
    ``depth_resize`` go with it.

    Args:
        module: A model converted by :func:`convert_to_depth_aware` (a plain model is returned as it is).

    Returns:
        ``module`` itself, with plain layers only.

    Examples:
        >>> import torch, depthdistill
        >>> model = depthdistill.convert_to_depth_aware(torch.nn.Conv2d(3, 4, 3))
        >>> type(depthdistill.convert_to_plain(model)).__name__
        'Conv2d'
    """
    reverted = 0
    for layer in module.modules():
        if isinstance(layer, DepthAwareModule):
            layer.__class__ = type(layer).plain_class
            layer.__dict__.pop("alpha", None)
            layer.__dict__.pop("depth_resize", None)
            reverted += 1
    _log.info("convert_to_plain: %d depth-aware layer(s) reverted to their plain classes", reverted)
    return module


def list_depth_aware(module: nn.Module) -> list[str]:
    """Qualified names of the depth-aware layers in ``module`` (``""`` for the root), in module order.

    Examples:
        >>> import torch
        >>> list_depth_aware(torch.nn.Conv2d(3, 4, 3))
        []
    """
    return [name for name, layer in module.named_modules() if isinstance(layer, DepthAwareModule)]


def depth_aware_record(module: nn.Module) -> dict[str, Any]:
    """What a checkpoint records of ``module``'s conversion, so that :func:`restore_depth_aware` rebuilds it: the
    depth-aware layers and their α and depth resize (each layer's own; one value when they share it).

    Examples:
        >>> import torch
        >>> model = convert_to_depth_aware(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), depth_resize="avgpool")
        >>> depth_aware_record(model)
        {'depth_aware_layers': ['0'], 'alpha': 8.3, 'depth_resize': 'avgpool'}
    """
    layers = {name: layer for name, layer in module.named_modules() if isinstance(layer, DepthAwareModule)}
    record: dict[str, Any] = {"depth_aware_layers": list(layers)}
    if not layers:
        return record
    for option in ("alpha", "depth_resize"):
        values = {name: getattr(layer, option) for name, layer in layers.items()}
        shared = set(values.values())
        record[option] = next(iter(shared)) if len(shared) == 1 else values
    return record


def restore_depth_aware(module: nn.Module, record: dict[str, Any]) -> nn.Module:
    """Converts a freshly built plain ``module`` as :func:`depth_aware_record` recorded it (a plain record, or
    none, leaves it plain). Records written before the depth resize was recorded rebuild with ``"nearest"``.

    Examples:
        >>> import torch
        >>> record = {"depth_aware_layers": ["0"], "alpha": 4.0, "depth_resize": "avgpool"}
        >>> layer = restore_depth_aware(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), record)[0]
        >>> type(layer).__name__, layer.alpha, layer.depth_resize
        ('DepthAwareConv2d', 4.0, 'avgpool')
    """
    alpha, resize = record.get("alpha", DEFAULT_ALPHA), record.get("depth_resize") or "nearest"
    # one conversion per (alpha, resize) the layers share: a single walk of the model when they all share one
    groups: dict[tuple[float, str], list[str]] = {}
    for name in record.get("depth_aware_layers") or []:
        options = (alpha[name] if isinstance(alpha, dict) else alpha,
                   resize[name] if isinstance(resize, dict) else resize)
        groups.setdefault(options, []).append(name)
    for (layer_alpha, layer_resize), names in groups.items():
        convert_to_depth_aware(module, include=names, alpha=layer_alpha, depth_resize=layer_resize)
    return module
