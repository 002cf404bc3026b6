"""Segmenting RGB images with a trained student: label maps, colour masks and overlays (``depthdistill predict``).

The student needs RGB only. A model comes as a module or as a checkpoint written by training, whose metadata
brings the rest: the class count, the training set's palette and its RGB normalisation.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from depthdistill.convert import list_depth_aware
from depthdistill.errors import ConfigError, ConfigTypeError, DepthError, MissingFileError
from depthdistill.labels import VOID

__all__ = ["Prediction", "predict", "iter_predict", "load_student", "ImageInput", "ModelInput"]

#: An image: a file Pillow reads, or an RGB tensor in 0..1, ``(3, H, W)`` or a batch ``(B, 3, H, W)``.
ImageInput = str | os.PathLike | torch.Tensor
#: A model: the module itself, or a checkpoint (``model.pt``, ``best.pt``, ``last.pt``) written by training.
ModelInput = nn.Module | str | os.PathLike


@dataclass
class Prediction:
    """One segmented image.

    Attributes:
        name: The image file's stem, or ``image<i>`` for a tensor (``i``: its position among the images).
        label: ``(H, W)`` int64 class index per pixel.
        mask: ``(H, W, 3)`` uint8 colour mask.
        overlay: ``(H, W, 3)`` uint8: the mask blended over the image.
        files: What was written, ``{"label": …, "mask": …, "overlay": …}``; empty without ``out_dir``.
    """

    name: str
    label: torch.Tensor
    mask: np.ndarray
    overlay: np.ndarray
    files: dict[str, Path] = field(default_factory=dict)


def load_student(model: ModelInput, model_spec: dict[str, Any] | None, what: str,
                 device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The plain model to run on RGB (for prediction and export), and its checkpoint metadata.

    Args:
        model: A plain module, or the path of a student's (or baseline's) checkpoint.
        model_spec: For a checkpoint: the model as a run file names it, replacing the checkpoint's own.
        what: The caller's name, for messages.
        device: Where a checkpoint's tensors go.

    Returns:
        ``(model, meta)``; ``meta`` is ``{}`` for a module.

    Raises:
        DepthError: If the model (or checkpoint) is a depth-aware teacher.
        ConfigTypeError: If ``model`` is neither a module nor a path.
        ConfigError: If ``model_spec`` is given with a module.

    Examples:
        >>> import torch
        >>> load_student(torch.nn.Conv2d(3, 2, 1), None, "example")[1]
        {}
    """
    from depthdistill.engine.registry import load_model

    if isinstance(model, nn.Module):
        if model_spec is not None:
            raise ConfigError("model_spec names the model of a checkpoint; a module needs none")
        if list_depth_aware(model):
            raise DepthError(f"the model has depth-aware layers {list_depth_aware(model)}, which need depth; {what} "
                             "works on RGB with a student: pass the student, or revert the teacher with "
                             "depthdistill.convert_to_plain")
        return model, {}
    if not isinstance(model, (str, os.PathLike)):
        raise ConfigTypeError(f"{what} takes an nn.Module or the path of a checkpoint, got {type(model).__name__}")
    loaded, meta = load_model(model, map_location=str(device), model=model_spec)
    if meta.get("depth_aware_layers"):
        raise DepthError(f"{os.fspath(model)} holds a depth-aware teacher (phase {meta.get('phase')!r}), which needs "
                         f"depth; {what} works on RGB with a student: use the student's checkpoint "
                         "(e.g. <out_dir>/sn/model.pt)")
    return loaded, meta


def _images(images: ImageInput | Sequence[ImageInput]) -> list[tuple[str, Path | torch.Tensor]]:
    """``(name, path or (3, H, W) tensor)`` per image, every file checked to exist before anything runs."""
    items = [images] if isinstance(images, (str, os.PathLike, torch.Tensor)) else list(images)
    named: list[tuple[str, Path | torch.Tensor]] = []
    for item in items:
        if isinstance(item, torch.Tensor):
            if item.dim() not in (3, 4) or item.shape[-3] != 3:
                raise ConfigError(f"an image tensor is RGB (3, H, W) or a batch (B, 3, H, W), got {tuple(item.shape)}")
            if not item.is_floating_point() or item.min() < 0 or item.max() > 1:
                raise ConfigError("an image tensor holds RGB as floats in 0..1 (not normalised: predict applies the "
                                  "model's normalisation itself)")
            for image in item.unbind(0) if item.dim() == 4 else [item]:
                named.append((f"image{len(named)}", image))
        elif isinstance(item, (str, os.PathLike)):
            path = Path(item)
            if not path.is_file():
                raise MissingFileError(f"image {path} does not exist")
            named.append((path.stem, path))
        else:
            raise ConfigTypeError(f"an image is a file path or an RGB tensor, got {type(item).__name__}")
    if not named:
        raise ConfigError("no images to segment")
    return named


def _load_rgb(image: Path | torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
    """The model's input ``(3, H, W)`` float in 0..1, and the image to paint over, ``(H, W, 3)`` uint8."""
    from PIL import Image

    if isinstance(image, Path):
        with Image.open(image) as opened:
            pixels = np.asarray(opened.convert("RGB")).copy()
        return torch.from_numpy(pixels).permute(2, 0, 1).float().div(255.0), pixels
    rgb = image.detach().float()
    return rgb, rgb.mul(255).round().to("cpu", torch.uint8).permute(1, 2, 0).numpy()


def predict(
    model: ModelInput,
    images: ImageInput | Sequence[ImageInput],
    out_dir: str | os.PathLike | None = None,
    *,
    device: str | torch.device | None = None,
    opacity: float = 0.5,
    palette: np.ndarray | Sequence[Sequence[int]] | None = None,
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
    model_spec: dict[str, Any] | None = None,
) -> list[Prediction]:
    """Segments RGB images with a student (no depth) into class maps, colour masks and overlays.

    With ``out_dir``, writes for each image ``NAME_label.png`` (class index per pixel, 8-bit),
    ``NAME_mask.png`` (the colour mask) and ``NAME_overlay.png`` (the mask blended over the image).
    :func:`iter_predict` does the same one image at a time, holding no more than one result in memory;
    ``depthdistill predict`` runs it.

    Args:
        model: A plain model (a student or baseline) or its checkpoint. A depth-aware teacher is refused: it needs
            depth. A module runs in eval mode and is put back in its mode afterwards.
        images: Image files (any format Pillow reads) or RGB tensors in 0..1, ``(3, H, W)`` or ``(B, 3, H, W)``;
            one or a sequence.
        out_dir: Folder to write the images to (created); ``None`` writes nothing.
        device: Where the model runs. ``None``: a module where its parameters are, a checkpoint ``"auto"``.
        opacity: Weight of the mask in the overlay, 0..1.
        palette: ``(num_classes, 3)`` RGB colours in 0..255. Default: the training set's palette when the
            checkpoint recorded one, else :func:`depthdistill.viz.label_palette`.
        normalization: ``(mean, std)`` applied to the 0..1 RGB before the model. Default: what the checkpoint
            recorded of the training data; none for a module.
        model_spec: ``{"name": …, "args": {…}}`` as in a run file, for a checkpoint that does not name its model
            (see :func:`~depthdistill.engine.registry.load_model`).

    Returns:
        One :class:`Prediction` per image, in order.

    Raises:
        DepthError: If the model is a depth-aware teacher.
        MissingFileError: If an image file does not exist (checked before anything is written).
        ConfigError: On an opacity outside 0..1, a palette with too few colours, more than 255 classes, an image
            tensor that is not RGB in 0..1, or two images with one name written to one folder.

    Examples:
        >>> import torch
        >>> model = torch.nn.Conv2d(3, 4, 1)  # any plain segmenter: RGB in, (B, C, H, W) logits out
        >>> [p] = predict(model, torch.rand(3, 8, 10))
        >>> p.name, tuple(p.label.shape), p.mask.shape, p.overlay.dtype.name
        ('image0', (8, 10), (8, 10, 3), 'uint8')
        >>> import tempfile
        >>> written = predict(model, torch.rand(2, 3, 8, 8), tempfile.mkdtemp())[1].files
        >>> sorted(path.name for path in written.values())
        ['image1_label.png', 'image1_mask.png', 'image1_overlay.png']
    """
    return list(iter_predict(model, images, out_dir, device=device, opacity=opacity, palette=palette,
                             normalization=normalization, model_spec=model_spec))


def iter_predict(
    model: ModelInput,
    images: ImageInput | Sequence[ImageInput],
    out_dir: str | os.PathLike | None = None,
    *,
    device: str | torch.device | None = None,
    opacity: float = 0.5,
    palette: np.ndarray | Sequence[Sequence[int]] | None = None,
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
    model_spec: dict[str, Any] | None = None,
) -> Iterator[Prediction]:
    """:func:`predict` one image at a time: each :class:`Prediction` is made (and its files written) when the
    iterator reaches it, for folders of photos too large to hold every result at once.

    The arguments are those of :func:`predict`. They, the model and every image file are checked when this is
    called, before the first image is segmented.

    Examples:
        >>> import torch
        >>> predictions = iter_predict(torch.nn.Conv2d(3, 2, 1), torch.rand(3, 3, 4, 4))
        >>> [p.name for p in predictions]
        ['image0', 'image1', 'image2']
    """
    from depthdistill.engine.device import resolve_device

    if not 0.0 <= opacity <= 1.0:
        raise ConfigError(f"opacity must be in 0..1, got {opacity}")
    if device is None and isinstance(model, nn.Module):
        device = next(model.parameters(), torch.empty(0)).device
    device = resolve_device(device)
    net, meta = load_student(model, model_spec, "predict", device)
    named = _images(images)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        names = [name for name, _ in named]
        if len(set(names)) < len(names):
            raise ConfigError(f"two images are named {sorted({n for n in names if names.count(n) > 1})}: their files "
                              f"would overwrite each other in {out}; rename them or predict them into two folders")
        out.mkdir(parents=True, exist_ok=True)
    # The training set's own colours when the checkpoint recorded them (the demo figures use the same ones)
    colours = palette if palette is not None else meta.get("palette")
    norm = normalization if normalization is not None else meta.get("rgb_normalization")
    mean_std = tuple(torch.tensor(v, dtype=torch.float32, device=device).view(3, 1, 1) for v in norm) if norm else None
    return _segment(net, named, out, device, opacity, colours, mean_std)


def _segment(net: nn.Module, named: list[tuple[str, Path | torch.Tensor]], out: Path | None, device: torch.device,
             opacity: float, colours: Any, mean_std: tuple[torch.Tensor, torch.Tensor] | None) -> Iterator[Prediction]:
    """The loop of :func:`iter_predict`, once every argument is checked."""
    from PIL import Image

    from depthdistill.engine.evaluate import select_logits
    from depthdistill.viz import colorize, label_palette, overlay

    was_training = net.training
    net.to(device).eval()
    try:
        for name, source in named:
            rgb, image = _load_rgb(source)
            rgb = rgb.to(device)
            if mean_std is not None:
                rgb = (rgb - mean_std[0]) / mean_std[1]
            with torch.no_grad():
                logits = select_logits(net(rgb[None]))
            num_classes = logits.shape[1]
            if num_classes > VOID:
                raise ConfigError(f"{num_classes} classes do not fit an 8-bit label image beside void ({VOID})")
            table = colours if colours is not None else label_palette(num_classes)
            if len(table) < num_classes:
                raise ConfigError(f"the palette has {len(table)} colours for {num_classes} classes")
            label = logits.argmax(1)[0].cpu()
            prediction = Prediction(name, label, colorize(label, table),
                                    overlay(image, label, table, alpha=opacity, mean=None, std=None))
            if out is not None:
                prediction.files = {kind: out / f"{name}_{kind}.png" for kind in ("label", "mask", "overlay")}
                Image.fromarray(label.to(torch.uint8).numpy()).save(prediction.files["label"])
                Image.fromarray(prediction.mask).save(prediction.files["mask"])
                Image.fromarray(prediction.overlay).save(prediction.files["overlay"])
            yield prediction
    finally:
        net.train(was_training)
