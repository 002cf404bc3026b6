"""Graph surgery: make every spatial convolution of any model depth-aware, and back.

Both directions swap a layer's class in place, the way ``SyncBatchNorm.convert_sync_batchnorm`` swaps modules
but without building new ones: each layer stays the same object, so its Parameter objects, buffers, device,
dtype, training mode and hooks are untouched, the state_dict keys never change, and the student trained after
:func:`convert_to_plain` literally shares the teacher's parameters.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable, Iterable

import torch
import torch.nn as nn

from depthdistill.errors import ConfigError
from depthdistill.nn.conv import DepthAwareConv2d, depth_aware_class
from depthdistill.nn.functional import DEFAULT_ALPHA

__all__ = ["convert_to_depth_aware", "convert_to_plain", "list_depth_aware", "LayerFilter"]

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
        raise TypeError(f"{what} must be a glob, a list of globs or a predicate(name, module), got {spec!r}")
    return lambda name, _module: any(fnmatch.fnmatchcase(name, p) for p in patterns)


def convert_to_depth_aware(
    module: nn.Module,
    *,
    alpha: float = DEFAULT_ALPHA,
    include: LayerFilter | None = None,
    exclude: LayerFilter | None = None,
) -> nn.Module:
    """Makes every spatial ``nn.Conv2d`` of ``module`` depth-aware, in place.

    Each selected convolution (``nn.Conv2d`` or any subclass, kernel larger than 1×1) becomes a
    :class:`~depthdistill.DepthAwareConv2d` (for subclasses, a class derived from both, which keeps the
    subclass's own forward). 1×1 convolutions are left as they are: with a single tap ``H ≡ 1`` and D-Conv *is*
    the plain convolution. Layers already depth-aware stay as they are but take the new ``alpha`` when selected
    (``include``/``exclude`` apply to them too), so converting twice is harmless and converting again with another
    ``alpha`` changes α; a change is logged. What was converted is logged on the ``"depthdistill"`` logger;
    :func:`list_depth_aware` lists it.

    TorchScript models (``torch.jit.script`` / ``torch.jit.trace``) cannot be converted: their convolutions are
    compiled code, not ``nn.Conv2d`` objects. Convert the eager model, train, then script the plain student.

    Run the converted model inside :func:`~depthdistill.depth_context`. With a constant depth its output equals
    the original model's.

    Args:
        module: Any model; the root itself may be a convolution.
        alpha: α of Eq. 6 per metre, for every converted layer.
        include: Only layers whose qualified name matches (glob or globs, as in ``named_modules()``), or for
            which ``include(name, module)`` is true. ``None``: every layer.
        exclude: Layers to leave plain, in the same forms; applied after ``include``.

    Returns:
        ``module`` itself, converted.

    Raises:
        ValueError: If the model has no spatial ``nn.Conv2d`` at all, or ``include`` selects none of them, so that
            a teacher never silently equals the baseline.
        ConfigError: If the model is (or holds) a TorchScript module.

    Examples:
        >>> import torch, depthdistill
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        ...                             torch.nn.Conv2d(8, 2, 1))
        >>> teacher = depthdistill.convert_to_depth_aware(model)
        >>> depthdistill.list_depth_aware(teacher)
        ['0']
    """
    _refuse_scripted(module)
    keep_in, keep_out = _matcher(include, "include"), _matcher(exclude, "exclude")
    converted, already, realpha, pointwise, excluded = [], [], [], [], []
    for name, layer in module.named_modules():
        if not isinstance(layer, nn.Conv2d):
            continue
        left_out = ((keep_in is not None and not keep_in(name, layer))
                    or (keep_out is not None and keep_out(name, layer)))
        if isinstance(layer, DepthAwareConv2d):
            already.append(name)
            if not left_out and layer.alpha != float(alpha):
                realpha.append((name, layer.alpha))
                layer.alpha = float(alpha)
        elif tuple(layer.kernel_size) == (1, 1):
            pointwise.append(name)
        elif left_out:
            excluded.append(name)
        else:
            layer.__class__ = depth_aware_class(type(layer))
            layer.alpha = float(alpha)
            converted.append(name)
    if not (converted or already):
        reason = "include/exclude selected none of them" if excluded else "it has none"
        raise ValueError(
            f"convert_to_depth_aware found no spatial nn.Conv2d to convert in {type(module).__name__} ({reason}); "
            "the teacher would be the plain model"
        )
    _log.info(
        "convert_to_depth_aware: %d Conv2d layer(s) made depth-aware (alpha=%g), %d already depth-aware, "
        "%d 1x1 left plain (identical under D-Conv), %d excluded",
        len(converted), alpha, len(already), len(pointwise), len(excluded),
    )
    if realpha:
        _log.info("convert_to_depth_aware: alpha of %d already depth-aware layer(s) changed to %g (was %s)",
                  len(realpha), alpha, ", ".join(f"{name or '<root>'}: {old:g}" for name, old in realpha[:5])
                  + (", ..." if len(realpha) > 5 else ""))
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
    """Reverts every depth-aware convolution of ``module`` to its original class, in place.

    The layers keep their Parameter objects, so the plain model (the student) shares the teacher's weights, and
    the state_dict is unchanged. A layer built directly as ``DepthAwareConv2d`` becomes an ``nn.Conv2d``.

    Args:
        module: A model converted by :func:`convert_to_depth_aware` (a plain model is returned as it is).

    Returns:
        ``module`` itself, with plain convolutions only.

    Examples:
        >>> import torch, depthdistill
        >>> model = depthdistill.convert_to_depth_aware(torch.nn.Conv2d(3, 4, 3))
        >>> type(depthdistill.convert_to_plain(model)).__name__
        'Conv2d'
    """
    reverted = 0
    for layer in module.modules():
        if isinstance(layer, DepthAwareConv2d):
            layer.__class__ = type(layer).plain_class
            layer.__dict__.pop("alpha", None)
            reverted += 1
    _log.info("convert_to_plain: %d depth-aware layer(s) reverted to plain convolutions", reverted)
    return module


def list_depth_aware(module: nn.Module) -> list[str]:
    """Qualified names of the depth-aware convolutions in ``module`` (``""`` for the root).

    Examples:
        >>> import torch
        >>> list_depth_aware(torch.nn.Conv2d(3, 4, 3))
        []
    """
    return [name for name, layer in module.named_modules() if isinstance(layer, DepthAwareConv2d)]
