"""RGBDFolder: a user's own RGB-D data as plain image files, matched by file stem.

Layout (also what :func:`depthdistill.data.prepare.export_to_folder` writes)::

    {root}/classes.txt            optional: one class name per line, in id order
    {root}/{split}/rgb/*.png|jpg|jpeg
    {root}/{split}/depth/*.png|tif|tiff|npy
    {root}/{split}/label/*.png    8-bit class ids 0..C-1, 255 = void; without this folder, samples are unlabelled
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
from torch.utils.data import Dataset

from depthdistill.data._io import check_aligned, make_sample, read_array_image, read_image, read_npy
from depthdistill.errors import DatasetError, DepthError
from depthdistill.nn.units import check_depth_units

__all__ = ["RGBDFolder", "RGB_SUFFIXES", "DEPTH_SUFFIXES", "LABEL_SUFFIXES"]

RGB_SUFFIXES = (".png", ".jpg", ".jpeg")
DEPTH_SUFFIXES = (".png", ".tif", ".tiff", ".npy")
LABEL_SUFFIXES = (".png",)


class RGBDFolder(Dataset):
    """RGB-D samples from ``{root}/{split}/{rgb,depth,label}/`` files that share a stem (``0001.jpg``,
    ``0001.png``, ``0001.png``).

    Depth units: integer depth (16-bit PNG, integer TIFF or ``.npy``) is divided by ``depth_scale`` (1000: stored
    in millimetres); floating-point depth (float TIFF or ``.npy``) is taken as metres already. 0 and non-finite
    values mean missing. 8-bit depth (an 8-bit PNG) is refused: 256 levels cannot hold metric depth. Each depth
    map read is checked to be in metres: a median valid depth outside ``depth_range`` (float depth saved in
    millimetres, most often) is a :class:`~depthdistill.DepthError` naming the file, the likely unit and the fix.
    Labels are single-channel PNGs holding class ids (0..C-1) with 255 = void. A split without a ``label/`` folder
    (or ``labels=False``) yields unlabelled samples: rgb, depth and id, no ``"label"`` key.

    The file lists are matched when the dataset is built (a file without its partners is an error); images are
    read, and their sizes checked, when a sample is asked for.

    Args:
        root: Dataset root.
        split: Sub-folder, e.g. ``"train"``, ``"val"``, ``"test"``.
        depth_scale: Integer depth units per metre.
        depth_range: Plausible median depth of one image in metres; default
            :data:`depthdistill.nn.units.DEPTH_RANGE` (0.1..20).
        transform: Joint transform applied to each sample dict.
        labels: ``None`` (default): read labels when ``{root}/{split}/label`` exists, else yield unlabelled
            samples. ``True``: labels are required (a missing folder is an error). ``False``: ignore any label
            folder and yield unlabelled samples.

    Attributes:
        labelled: Whether samples carry a ``"label"``.
        class_names: From ``{root}/classes.txt`` when present, else ``None``.
        num_classes: ``len(class_names)`` or ``None``.
        stems: The matched file stems, sorted; sample ``i`` is ``stems[i]``.

    Raises:
        DatasetError: If a folder is missing (``label/`` only with ``labels=True``) or empty, a stem has no partner
            in another folder, or a stem appears twice in one folder (``a.png`` and ``a.jpg``).
        DepthError: When a sample is read: its depth is 8-bit or not in metres.

    Examples:
        >>> import tempfile, numpy as np
        >>> from PIL import Image
        >>> root = Path(tempfile.mkdtemp())
        >>> for sub in ("rgb", "depth", "label"):
        ...     (root / "train" / sub).mkdir(parents=True)
        >>> Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(root / "train/rgb/a.png")
        >>> Image.fromarray(np.full((4, 6), 1500, np.uint16)).save(root / "train/depth/a.png")
        >>> Image.fromarray(np.ones((4, 6), np.uint8)).save(root / "train/label/a.png")
        >>> sample = RGBDFolder(root, "train")[0]
        >>> sample["id"], float(sample["depth"][0, 0, 0]), int(sample["label"][0, 0])
        ('a', 1.5, 1)
        >>> sorted(RGBDFolder(root, "train", labels=False)[0])
        ['depth', 'id', 'rgb']
    """

    def __init__(self, root: str | Path, split: str = "train", depth_scale: float = 1000.0,
                 transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None, *,
                 depth_range: tuple[float, float] | None = None, labels: bool | None = None) -> None:
        if depth_scale <= 0:
            raise DatasetError(f"depth_scale must be > 0 (integer depth units per metre), got {depth_scale}")
        self.root = Path(root)
        self.split = split
        self.depth_scale = float(depth_scale)
        self.depth_range = depth_range
        self.transform = transform
        split_dir = self.root / split
        if not split_dir.is_dir():
            raise DatasetError(f"split folder not found: {split_dir}; RGBDFolder expects "
                               f"{self.root}/<split>/rgb and depth folders (and label, for labelled data)")
        self.labelled = (split_dir / "label").is_dir() if labels is None else bool(labels)
        rgb = _index(split_dir / "rgb", RGB_SUFFIXES)
        depth = _index(split_dir / "depth", DEPTH_SUFFIXES)
        label = _index(split_dir / "label", LABEL_SUFFIXES) if self.labelled else {}
        partners = [("depth", depth), ("label", label)] if self.labelled else [("depth", depth)]
        for name, files in partners:
            missing = sorted(set(rgb) - set(files))
            if missing:
                raise DatasetError(f"{len(missing)} rgb image(s) have no partner in {split_dir / name}, e.g. "
                                   f"{rgb[missing[0]]}; each rgb/<stem>.* needs {name}/<stem>.*")
        extra = sorted((set(depth) | set(label)) - set(rgb))
        if extra:
            orphan = depth.get(extra[0]) or label[extra[0]]
            raise DatasetError(f"{len(extra)} depth/label file(s) have no rgb partner in {split_dir / 'rgb'}, e.g. "
                               f"{orphan}")
        self.stems = sorted(rgb)
        self._files = [(rgb[s], depth[s], label.get(s)) for s in self.stems]
        classes = self.root / "classes.txt"
        self.class_names: tuple[str, ...] | None = (
            tuple(line.strip() for line in classes.read_text().splitlines() if line.strip())
            if classes.is_file() else None)
        self.num_classes = len(self.class_names) if self.class_names is not None else None

    def __len__(self) -> int:
        return len(self._files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rgb_path, depth_path, label_path = self._files[index]
        rgb = read_image(rgb_path)
        depth = self._read_depth(depth_path)
        parts = [(str(rgb_path), rgb.shape), (str(depth_path), depth.shape)]
        label = None
        if label_path is not None:
            label = read_array_image(label_path)
            parts.append((str(label_path), label.shape))
            if label.dtype.kind == "f":
                raise DatasetError(f"{label_path}: labels must be integer class ids, got {label.dtype}")
        check_aligned(self.stems[index], parts)
        sample = make_sample(rgb, depth, label, self.stems[index])
        return self.transform(sample) if self.transform is not None else sample

    def _read_depth(self, path: Path) -> np.ndarray:
        raw = read_npy(path) if path.suffix == ".npy" else read_array_image(path)
        if raw.dtype.itemsize == 1:
            raise DepthError(f"{path}: depth is 8-bit ({raw.dtype}); 256 levels cannot hold metric depth. Save depth "
                             "as a 16-bit PNG in millimetres or as a float .npy in metres")
        depth = raw.astype(np.float32)
        if raw.dtype.kind in "iu":
            depth /= self.depth_scale
        check_depth_units(depth, self.depth_range, where=str(path))
        return depth

    def __repr__(self) -> str:
        return (f"RGBDFolder(root={str(self.root)!r}, split={self.split!r}, samples={len(self)}"
                + (")" if self.labelled else ", unlabelled)"))


def _index(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    if not folder.is_dir():
        raise DatasetError(f"folder not found: {folder}; RGBDFolder expects rgb/ and depth/ (and label/ for labelled "
                           "data) side by side")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in suffixes or not path.is_file():
            continue
        if path.stem in files:
            raise DatasetError(f"two files share the stem {path.stem!r} in {folder}: {files[path.stem].name} and "
                               f"{path.name}; keep one")
        files[path.stem] = path
    if not files:
        raise DatasetError(f"no {'/'.join(suffixes)} files in {folder}")
    return files
