"""Export any RGB-D dataset to the :class:`~depthdistill.data.RGBDFolder` layout, e.g. to read NYUv2 from fast
PNG files instead of the 2.8 GB HDF5 file."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from depthdistill.errors import ConfigError, DatasetError

__all__ = ["export_to_folder", "prepare_dataset", "PREPARABLE"]

#: The datasets :func:`prepare_dataset` reads from their official release.
PREPARABLE = ("nyuv2", "sunrgbd")

_MAX_MM = 65535


def export_to_folder(dataset: Sequence[dict[str, Any]], out_dir: str | Path, split: str,
                     depth_scale: float = 1000.0) -> int:
    """Writes every sample of ``dataset`` as ``{out_dir}/{split}/{rgb,depth,label}/<id>.png`` (no ``label/`` folder
    for an unlabelled dataset, which :class:`~depthdistill.data.RGBDFolder` then reads back as unlabelled).

    rgb becomes an 8-bit PNG, depth a 16-bit PNG in units of ``1 / depth_scale`` metres (millimetres by default;
    0 stays missing), label an 8-bit PNG of class ids with 255 = void. Slashes in sample ids become ``_``. A
    dataset's ``class_names`` are written to ``{out_dir}/classes.txt``. Each file is written to a temporary name
    and renamed, so an interrupted export leaves no half-written image.

    Args:
        dataset: Samples with rgb in 0..1, i.e. without normalisation (give the dataset no transform).
        out_dir: Root of the folder dataset.
        split: Sub-folder name, e.g. ``"train"``.
        depth_scale: Depth units per metre in the written PNGs; read back with the same ``depth_scale``.

    Returns:
        The number of samples written.

    Raises:
        DatasetError: rgb outside 0..1 (normalised), a class id above 255, depth beyond the 16-bit range, two
            samples with the same id, or labelled and unlabelled samples in one dataset.

    Examples:
        >>> import tempfile
        >>> from depthdistill.data import RGBDFolder, SyntheticRGBD
        >>> out = tempfile.mkdtemp()
        >>> export_to_folder(SyntheticRGBD(num_samples=2, size=(32, 32)), out, "train")
        2
        >>> len(RGBDFolder(out, "train"))
        2
    """
    root = Path(out_dir)
    folders = {key: root / split / key for key in ("rgb", "depth", "label")}
    root.mkdir(parents=True, exist_ok=True)
    class_names = getattr(dataset, "class_names", None)
    if class_names is not None:
        _atomic_write(root / "classes.txt", lambda tmp: tmp.write_text("\n".join(class_names) + "\n"))
    seen: set[str] = set()
    labelled: bool | None = None
    for sample in dataset:
        stem = str(sample["id"]).replace("/", "_").replace(os.sep, "_")
        if stem in seen:
            raise DatasetError(f"two samples are named {stem!r}; export_to_folder needs unique sample ids")
        if labelled is None:
            labelled = "label" in sample
            for key in ("rgb", "depth", "label") if labelled else ("rgb", "depth"):
                folders[key].mkdir(parents=True, exist_ok=True)
        elif labelled != ("label" in sample):
            raise DatasetError(f"sample {stem!r} is {'un' if labelled else ''}labelled but the samples before it are "
                               f"{'' if labelled else 'un'}labelled; one folder holds one kind: export them apart")
        seen.add(stem)
        rgb, depth = sample["rgb"].numpy(), sample["depth"][0].numpy()
        if rgb.min() < 0 or rgb.max() > 1:
            raise DatasetError(f"sample {stem!r}: rgb is outside 0..1 (normalised?); export the dataset without a "
                               "Normalize transform")
        label = sample["label"].numpy() if labelled else None
        if label is not None and (label.max(initial=0) > 255 or label.min(initial=0) < 0):
            raise DatasetError(f"sample {stem!r}: class ids must be 0..254 (255 = void) to fit an 8-bit PNG, got "
                               f"{int(label.min())}..{int(label.max())}")
        units = np.round(depth * depth_scale)
        if units.max(initial=0) > _MAX_MM:
            raise DatasetError(f"sample {stem!r}: depth {float(depth.max()):.2f} m does not fit a 16-bit PNG at "
                               f"depth_scale={depth_scale}; use a smaller depth_scale")
        images = {"rgb": np.round(rgb.transpose(1, 2, 0) * 255).astype(np.uint8), "depth": units.astype(np.uint16)}
        if label is not None:
            images["label"] = label.astype(np.uint8)
        for key, array in images.items():
            _atomic_write(folders[key] / f"{stem}.png",
                          lambda tmp, array=array: Image.fromarray(array).save(tmp, format="PNG"))
    return len(seen)


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def prepare_dataset(dataset: str, root: str | os.PathLike, out_dir: str | os.PathLike, *,
                    splits: str | Sequence[str] = ("train", "test"), num_classes: int = 40,
                    raw_depth: bool = False) -> dict[str, int]:
    """Reads the official release of NYUv2 or SUN RGB-D once and writes it in the fast folder layout.

    Each split goes to ``{out_dir}/{split}/{rgb,depth,label}/`` (PNG RGB, 16-bit depth PNG in millimetres, label
    PNG with 255 = void) by :func:`export_to_folder`; :class:`~depthdistill.data.RGBDFolder` reads it back far
    faster than the ``.mat`` files. ``depthdistill prepare`` runs this.

    Args:
        dataset: ``"nyuv2"`` or ``"sunrgbd"`` (see :data:`PREPARABLE`).
        root: Folder with the official files (see the data page of the docs).
        out_dir: Root of the folder dataset to write.
        splits: The split, or splits, to export.
        num_classes: NYUv2's label set: 13, 40 or 894 (SUN RGB-D has 37 classes and ignores it).
        raw_depth: Export the raw sensor depth with its holes instead of the filled depth.

    Returns:
        The number of samples written, per split.

    Raises:
        ConfigError: If ``dataset`` is not one of :data:`PREPARABLE`.
        DatasetError: If the official files are missing or unreadable.

    Examples:
        >>> prepare_dataset("nyuv2", "/data/nyuv2", "/data/nyuv2_png")  # doctest: +SKIP
        {'train': 795, 'test': 654}
    """
    from depthdistill.data.nyuv2 import NYUv2
    from depthdistill.data.sunrgbd import SUNRGBD

    if dataset not in PREPARABLE:
        raise ConfigError(f"prepare_dataset reads {' or '.join(PREPARABLE)} from their official files, got "
                          f"{dataset!r}; export any other dataset with export_to_folder")
    written = {}
    for split in [splits] if isinstance(splits, str) else splits:
        if dataset == "nyuv2":
            data = NYUv2(root, split=split, num_classes=num_classes, raw_depth=raw_depth)
        else:
            data = SUNRGBD(root, split=split, raw_depth=raw_depth)
        written[split] = export_to_folder(data, out_dir, split)
    return written
