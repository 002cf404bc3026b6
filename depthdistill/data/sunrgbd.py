"""SUN RGB-D: the 37-class segmentation setup (5285 train / 5050 test) from the official release and its toolbox.

Expected under ``root`` (the two official archives unpacked side by side)::

    SUNRGBD/<sensor>/<collection>/<scene>/image/<name>.jpg
    SUNRGBD/<sensor>/<collection>/<scene>/depth/<name>.png        raw sensor depth (bit-rotated, see below)
    SUNRGBD/<sensor>/<collection>/<scene>/depth_bfx/<name>.png    the toolbox's filled depth (same encoding)
    SUNRGBDtoolbox/Metadata/SUNRGBDMeta.mat         struct array SUNRGBDMeta(i): rgbpath, rgbname, depthname, ...
    SUNRGBDtoolbox/Metadata/SUNRGBD2Dseg.mat        v7.3 (HDF5): SUNRGBD2Dseg(i).seglabel, 37-class label map
    SUNRGBDtoolbox/traintestSUNRGBD/allsplit.mat    alltrain / alltest: cell arrays of scene folders

Entry ``i`` of ``SUNRGBD2Dseg`` labels image ``i`` of ``SUNRGBDMeta``. Paths inside the toolbox are absolute paths
of the authors' server (``/n/fs/sun3d/data/SUNRGBD/...``); everything after the ``SUNRGBD`` component is kept and
resolved under ``root/SUNRGBD``. A scene is in the training split when its folder is in ``alltrain``, in the test
split when it is in ``alltest``.

Unlabelled frames: the release labels every one of its 10335 images (``SUNRGBD2Dseg`` has a map for each, and
``alltrain`` + ``alltest`` cover them all), so there are no frames outside the labelled split. ``labels=False``
reads a split's frames without their labels (and without opening ``SUNRGBD2Dseg.mat``); the training split that
way is the unlabelled set that does not touch the test images.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any, Callable

import numpy as np
from torch.utils.data import Dataset

from depthdistill.data._io import (
    LazyH5,
    check_aligned,
    load_mat,
    make_sample,
    map_labels,
    mat_entry,
    open_h5,
    read_array_image,
    read_image,
)
from depthdistill.errors import DatasetError
from depthdistill.labels import label_palette

__all__ = ["SUNRGBD", "SUNRGBD37_CLASS_NAMES", "SUNRGBD37_PALETTE", "decode_sunrgbd_depth"]

#: The 37 classes of the SUN RGB-D segmentation benchmark in id order (``seg37list`` of the toolbox).
SUNRGBD37_CLASS_NAMES: tuple[str, ...] = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture", "counter",
    "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor_mat", "clothes", "ceiling", "books",
    "fridge", "tv", "paper", "towel", "shower_curtain", "box", "whiteboard", "person", "night_stand", "toilet", "sink",
    "lamp", "bathtub", "bag")
SUNRGBD37_PALETTE = label_palette(37)

_SOURCE = ("SUN RGB-D is distributed at https://rgbd.cs.princeton.edu/ (SUNRGBD.zip for the images and depth, "
           "SUNRGBDtoolbox.zip for the metadata, labels and splits); unpack both into the same root. See docs/data.md")
_META = PurePosixPath("SUNRGBDtoolbox/Metadata/SUNRGBDMeta.mat")
_SEG = PurePosixPath("SUNRGBDtoolbox/Metadata/SUNRGBD2Dseg.mat")
_SPLIT = PurePosixPath("SUNRGBDtoolbox/traintestSUNRGBD/allsplit.mat")


def decode_sunrgbd_depth(raw: np.ndarray) -> np.ndarray:
    """Decodes a SUN RGB-D depth PNG to metres: the 16 bits are stored rotated left by 3 (the toolbox's
    ``read3dPoints`` undoes it with ``bitor(bitshift(d, -3), bitshift(d, 16 - 3))``), then millimetres / 1000.

    Unlike ``read3dPoints`` this does not clip depth at 8 m; 0 stays 0 (missing).

    Examples:
        >>> decode_sunrgbd_depth(np.array([[(1500 << 3) & 0xFFFF]], dtype=np.uint16))
        array([[1.5]], dtype=float32)
    """
    d = raw.astype(np.uint32)
    return ((((d >> 3) | (d << 13)) & 0xFFFF).astype(np.float32) / np.float32(1000.0))


def _after_sunrgbd(path: str, source: Path) -> PurePosixPath:
    """The part of a toolbox path after its ``SUNRGBD`` component (``kv1/NYUdata/NYU0001/...``)."""
    parts = PurePosixPath(str(path).strip()).parts
    if "SUNRGBD" not in parts:
        raise DatasetError(f"{source}: path {path!r} has no 'SUNRGBD' component; cannot place it under the root")
    cut = len(parts) - parts[::-1].index("SUNRGBD")
    return PurePosixPath(*parts[cut:])


class SUNRGBD(Dataset):
    """SUN RGB-D with its 37 classes, read from the official release and toolbox files.

    Labels: 0 (unlabelled) → 255 (void), 1..37 → 0..36. Depth: the PNGs are decoded with
    :func:`decode_sunrgbd_depth` to metres (0 = missing); ``depth_bfx`` (filled by the toolbox) by default,
    the raw ``depth`` with ``raw_depth=True``. Images keep their native sizes (they differ by sensor), so batch
    them with :func:`depthdistill.data.collate_rgbd` or resize in the transform.

    The toolbox's ``.mat`` files are read once when the dataset is built (only the paths are kept); the label file
    (HDF5, tens of GB once loaded in MATLAB) is opened per process and read one label map at a time.

    Args:
        root: Folder holding ``SUNRGBD/`` and ``SUNRGBDtoolbox/``.
        split: ``"train"`` or ``"test"``.
        transform: Joint transform applied to the sample dict.
        raw_depth: Use the raw sensor depth instead of the filled ``depth_bfx``.
        labels: ``False`` yields unlabelled samples (rgb, depth, id; no ``"label"``) and never opens
            ``SUNRGBD2Dseg.mat``, which then need not be present.

    Attributes:
        labelled: The value of ``labels``.
        class_names, palette, num_classes: The 37 class names, ``(37, 3)`` uint8 colours, 37.
        records: ``(index into SUNRGBDMeta, rgb path, depth path)`` per sample.

    Raises:
        DatasetError: A toolbox file missing (the message names it and where to get it), corrupt or lacking the
            expected entries; label and meta files of different lengths; an image or depth file missing or of
            another size than its label (raised when the sample is read, naming the file).

    Examples:
        >>> ds = SUNRGBD("/data/sunrgbd", split="test")  # doctest: +SKIP
        >>> len(ds), ds.num_classes                       # doctest: +SKIP
        (5050, 37)
    """

    num_classes = 37

    def __init__(self, root: str | Path, split: str = "train",
                 transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None, raw_depth: bool = False,
                 labels: bool = True) -> None:
        if split not in ("train", "test"):
            raise DatasetError(f"SUNRGBD split must be 'train' or 'test', got {split!r}")
        self.labelled = bool(labels)
        self.root = Path(root)
        self.split = split
        self.transform = transform
        self.class_names = SUNRGBD37_CLASS_NAMES
        self.palette = SUNRGBD37_PALETTE
        self._seg_path = self.root / _SEG
        self._h5 = LazyH5(self._seg_path, str(_SEG), _SOURCE)

        meta_path, split_path = self.root / _META, self.root / _SPLIT
        meta = mat_entry(load_mat(meta_path, str(_META), _SOURCE, squeeze_me=True, struct_as_record=False),
                         "SUNRGBDMeta", meta_path)
        splits = load_mat(split_path, str(_SPLIT), _SOURCE, squeeze_me=True)
        scenes = {str(_after_sunrgbd(p, split_path))
                  for p in np.atleast_1d(mat_entry(splits, "alltrain" if split == "train" else "alltest", split_path))}
        meta = np.atleast_1d(meta)
        if self.labelled:
            with open_h5(self._seg_path, str(_SEG), _SOURCE) as f:
                self._seg_shape = self._seglabel(f).shape
            seg_count = max(self._seg_shape)
            if seg_count != len(meta):
                raise DatasetError(f"{self._seg_path} holds {seg_count} label maps but {meta_path} describes "
                                   f"{len(meta)} images; both must come from the same toolbox release")
        depth_folder = "depth" if raw_depth else "depth_bfx"
        self.records: list[tuple[int, Path, Path]] = []
        for i, entry in enumerate(meta):
            try:
                rgb_rel = _after_sunrgbd(entry.rgbpath, meta_path)
                depth_name = str(entry.depthname)
            except AttributeError as exc:
                raise DatasetError(f"{meta_path}: SUNRGBDMeta entries lack a field ({exc}); expected rgbpath and "
                                   "depthname") from exc
            scene = rgb_rel.parent.parent  # <scene>/image/<name>.jpg
            if str(scene) in scenes:
                self.records.append((i, self.root / "SUNRGBD" / rgb_rel,
                                     self.root / "SUNRGBD" / scene / depth_folder / depth_name))

    @staticmethod
    def _seglabel(f: Any) -> Any:
        group = mat_entry(f, "SUNRGBD2Dseg", Path(f.filename))
        return mat_entry(group, "seglabel", Path(f.filename))

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        i, rgb_path, depth_path = self.records[index]
        rgb = read_image(rgb_path)
        depth = decode_sunrgbd_depth(read_array_image(depth_path))
        sample_id = f"sunrgbd/{rgb_path.relative_to(self.root / 'SUNRGBD').parent.parent}"
        parts = [(str(rgb_path), rgb.shape), (str(depth_path), depth.shape)]
        label = None
        if self.labelled:
            f = self._h5.get()
            seglabel = self._seglabel(f)
            ref = seglabel[i, 0] if self._seg_shape[-1] == 1 else seglabel[0, i]
            raw_label = np.asarray(f[ref]).T  # MATLAB column-major: stored (W, H)
            parts.append((f"{self._seg_path} label {i + 1}", raw_label.shape))
            label = map_labels(raw_label, np.arange(1, 38), f"{self._seg_path} label {i + 1}")
        check_aligned(sample_id, parts)
        sample = make_sample(rgb, depth, label, sample_id)
        return self.transform(sample) if self.transform is not None else sample

    def __repr__(self) -> str:
        return (f"SUNRGBD(root={str(self.root)!r}, split={self.split!r}, samples={len(self)}"
                + (")" if self.labelled else ", unlabelled)"))
