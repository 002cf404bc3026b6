"""Names in a run file resolved to objects: datasets and models, imported only when asked for.

Short names cover the library's own datasets and models and the two model zoos it supports; any other
``package.module:attribute`` works too, so a user's own dataset or model needs no registration.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import torch.nn as nn

from depthdistill.convert import restore_depth_aware
from depthdistill.engine.checkpoint import load_checkpoint, load_model_state
from depthdistill.errors import ConfigError

__all__ = ["DATASETS", "MODELS", "MODEL_PREFIXES", "TRANSFORMS", "resolve", "build_dataset", "build_transform",
           "build_model", "load_model", "model_spec"]

#: Short dataset names and where they live.
DATASETS = {
    "synthetic": "depthdistill.data:SyntheticRGBD",
    "nyuv2": "depthdistill.data:NYUv2",
    "sunrgbd": "depthdistill.data:SUNRGBD",
    "folder": "depthdistill.data:RGBDFolder",
}


def resolve(target: str) -> Any:
    """Imports ``package.module:attribute`` (dots allowed after the colon) and returns the attribute.

    Raises:
        ConfigError: If the string is malformed or the module or attribute does not exist.

    Examples:
        >>> resolve("collections:OrderedDict").__name__
        'OrderedDict'
    """
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"{target!r} is not of the form package.module:attribute")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r} (for {target!r}): {exc}") from exc
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{module_name!r} has no attribute {attribute!r} (for {target!r})")
        obj = getattr(obj, part)
    return obj


def build_dataset(name: str, **kwargs: Any) -> Any:
    """Builds a dataset by short name (:data:`DATASETS`) or ``package.module:Class`` with ``kwargs``.

    Examples:
        >>> build_dataset("collections:OrderedDict", a=1)
        OrderedDict([('a', 1)])
    """
    target = DATASETS.get(name, name)
    if ":" not in target:
        raise ConfigError(f"unknown dataset {name!r}; use one of {sorted(DATASETS)} or package.module:Class")
    factory = resolve(target)
    if "transform" in kwargs:
        kwargs = {**kwargs, "transform": build_transform(kwargs["transform"])}
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"dataset {name!r} does not accept arguments {sorted(kwargs)}: {exc}") from exc


#: Transform presets a run file can name.
TRANSFORMS = {"train": "depthdistill.data:train_transforms", "eval": "depthdistill.data:eval_transforms"}


def build_transform(spec: Any) -> Any:
    """A dataset transform from a run file: a preset name, ``{preset: name, **arguments}``, or ``None``.

    ``"train"`` is :func:`~depthdistill.data.train_transforms` (scale, crop, flip, jitter, normalise) and
    ``"eval"`` is :func:`~depthdistill.data.eval_transforms` (normalise, optional resize). A callable is
    returned as it is, so Python callers can pass their own.

    Examples:
        >>> build_transform({"preset": "eval", "size": [8, 8]}).__class__.__name__
        'Compose'
    """
    if spec is None or callable(spec):
        return spec
    if isinstance(spec, str):
        spec = {"preset": spec}
    if not isinstance(spec, dict) or spec.get("preset") not in TRANSFORMS:
        raise ConfigError(f"transform must be one of {sorted(TRANSFORMS)} or {{preset: NAME, ...arguments}}, "
                          f"got {spec!r}")
    arguments = {k: v for k, v in spec.items() if k != "preset"}
    try:
        return resolve(TRANSFORMS[spec["preset"]])(**arguments)
    except TypeError as exc:
        raise ConfigError(f"transform preset {spec['preset']!r} does not accept {sorted(arguments)}: {exc}") from exc


#: Short model names and their factories, called as ``factory(num_classes, **args)``.
MODELS = {"deeplab_vgg16": "depthdistill.models:deeplab_vgg16"}


def _smp_model(spec: str, num_classes: int, **kwargs: Any) -> nn.Module:
    arch, sep, encoder = spec.partition("/")
    if not sep or not arch or not encoder:
        raise ConfigError(f"smp model {spec!r} must be 'smp:<Arch>/<encoder>', e.g. 'smp:Unet/resnet18'")
    # Resolved here: smp and timm load only for a run file that names one of their models.
    return resolve("depthdistill.models:smp_model")(arch, encoder, num_classes, **kwargs)


def _timm_model(backbone: str, num_classes: int, **kwargs: Any) -> nn.Module:
    return resolve("depthdistill.models:TimmSegmenter")(backbone, num_classes, **kwargs)


#: Model name prefixes (``prefix:rest``) and their builders, called as ``builder(rest, num_classes, **args)``.
MODEL_PREFIXES = {"smp": _smp_model, "timm": _timm_model}


def build_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Builds the segmenter named in a run file.

    * ``deeplab_vgg16`` — ``depthdistill.models.deeplab_vgg16(num_classes, **kwargs)``
    * ``smp:<Arch>/<encoder>`` — ``depthdistill.models.smp_model(Arch, encoder, num_classes, **kwargs)``
      (``encoder_weights=None`` unless set: nothing is downloaded unless asked)
    * ``timm:<backbone>`` — ``depthdistill.models.TimmSegmenter(backbone, num_classes, **kwargs)``
    * ``package.module:factory`` — ``factory(num_classes=num_classes, **kwargs)``

    Raises:
        ConfigError: If the name is unknown or the factory rejects the arguments.

    Examples:
        >>> build_model("smp:Unet/resnet18", 3, encoder_depth=3, decoder_channels=(16, 8, 4)).__class__.__name__
        'Unet'
    """
    prefix, _, rest = name.partition(":")
    if name in MODELS:
        factory, args = resolve(MODELS[name]), (num_classes,)
    elif prefix in MODEL_PREFIXES and rest:
        factory, args = MODEL_PREFIXES[prefix], (rest, num_classes)
    elif rest:
        factory, args, kwargs = resolve(name), (), {"num_classes": num_classes, **kwargs}
    else:
        raise ConfigError(f"unknown model {name!r}; use {', '.join(MODELS)}, smp:<Arch>/<encoder>, timm:<backbone> "
                          "or package.module:factory")
    try:
        model = factory(*args, **kwargs)
    except ConfigError:
        raise
    except TypeError as exc:
        raise ConfigError(f"model {name!r} does not accept arguments {sorted(kwargs)}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model {name!r} built a {type(model).__name__}, not an nn.Module")
    return model


def model_spec(model: nn.Module) -> dict[str, Any]:
    """The model as a run file names it (``{"name": …, "args": {…}}``), for checkpoint metadata.

    The library's DeepLab-VGG16 and segmentation_models_pytorch models are named with their arguments
    (``deeplab_vgg16`` with its width, ``smp:<Arch>/<encoder>`` with the arguments smp records), so
    :func:`load_model` rebuilds them exactly. Any other model is named by its class, ``module:Class`` with no
    arguments: it rebuilds when the class needs none besides ``num_classes``. A class defined in a script run as
    ``__main__`` is named after the script's file, so it resolves when the script's folder is on the Python path.

    Examples:
        >>> model_spec(nn.Conv2d(1, 1, 1))
        {'name': 'torch.nn.modules.conv:Conv2d', 'args': {}}
        >>> from depthdistill.models import deeplab_vgg16
        >>> model_spec(deeplab_vgg16(3, width=0.0625))
        {'name': 'deeplab_vgg16', 'args': {'width': 0.0625}}
    """
    deeplab = sys.modules.get("depthdistill.models.deeplab_vgg16")  # not imported: the model cannot be one
    if deeplab is not None and type(model) is deeplab.DeepLabVGG16:
        return {"name": "deeplab_vgg16", "args": {"width": model.width}}
    smp_config = getattr(model, "_hub_mixin_config", None)  # what smp >= 0.4 records of its constructor
    if type(model).__module__.startswith("segmentation_models_pytorch.") and isinstance(smp_config, dict):
        args = {k: v for k, v in smp_config.items() if k not in ("encoder_name", "classes", "encoder_weights")}
        return {"name": f"smp:{type(model).__name__}/{smp_config['encoder_name']}", "args": args}
    module = type(model).__module__
    if module == "__main__" and getattr(sys.modules["__main__"], "__file__", None):
        module = os.path.splitext(os.path.basename(sys.modules["__main__"].__file__))[0]
    return {"name": f"{module}:{type(model).__qualname__}", "args": {}}


def load_model(checkpoint: str | os.PathLike, map_location: str = "cpu",
               model: dict[str, Any] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuilds the model saved in a depthdistill checkpoint (``model.pt``, ``best.pt`` or ``last.pt``).

    The checkpoint's ``meta`` names the model (``meta["model"] = {"name", "args"}``: the run file's model for
    ``depthdistill train``, the model's class for the :class:`~depthdistill.Distiller` in Python) and records its
    conversion (:func:`~depthdistill.convert.depth_aware_record`): a teacher comes back depth-aware, with the α and
    depth resize it was trained with, a student plain.

    Args:
        checkpoint: The file.
        map_location: Where tensors go.
        model: ``{"name": …, "args": {…}}`` as in a run file, replacing the model the checkpoint names (for
            checkpoints that name none, or a class that needs constructor arguments).

    Returns:
        ``(model in eval mode, meta)``.

    Raises:
        ConfigError: If no model is named, it cannot be built, or its weights do not fit the checkpoint.
    """
    state = load_checkpoint(checkpoint, map_location=map_location)
    meta = dict(state.get("meta") or {})
    spec = model or meta.get("model")
    hint = ("name it as in a run file: `--model NAME --model-arg KEY=VALUE` on the command line, "
            "load_model(..., model={'name': ..., 'args': {...}}) in Python")
    if not isinstance(spec, dict) or not spec.get("name") or "num_classes" not in meta:
        raise ConfigError(f"{checkpoint} does not name its model (meta['model'] and meta['num_classes']): {hint}")
    try:
        built = build_model(spec["name"], meta["num_classes"], **(spec.get("args") or {}))
        restore_depth_aware(built, meta)  # a teacher comes back depth-aware, as it was converted
        load_model_state(built, state["model"], checkpoint)
    except ConfigError as exc:
        raise ConfigError(f"{exc}. The model {spec['name']!r} with arguments {spec.get('args') or {}} does not "
                          f"rebuild {checkpoint}: {hint}") from exc
    return built.eval(), meta
