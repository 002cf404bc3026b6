"""NYUv2: the 1449 densely labelled NYU Depth V2 images read from the official files, lazily.

Files in ``root``:

* ``nyu_depth_v2_labeled.mat`` (2.8 GB, MATLAB v7.3 = HDF5): ``images`` (N, 3, W, H) uint8, ``depths`` and
  ``rawDepths`` (N, W, H) float metres, ``labels`` (N, W, H) raw class ids 0..894 (0 = unlabelled), ``names``,
  ``scenes`` (the recording each image comes from).
  MATLAB writes arrays column-major, so h5py sees every image transposed; samples come out H×W = 480×640.
* ``splits.mat``: ``trainNdxs`` (795) and ``testNdxs`` (654), 1-based indices into the labelled set.
* ``classMapping40.mat``: ``mapClass`` (894 raw classes → 1..40), for ``num_classes=40`` and 13.
* ``class13Mapping.mat``: ``classMapping13.labels13`` (40 classes → 1..13), for ``num_classes=13``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
from torch.utils.data import Dataset

from depthdistill.data._io import LazyH5, load_mat, make_sample, map_labels, mat_entry, open_h5
from depthdistill.errors import DatasetError
from depthdistill.labels import label_palette

__all__ = ["NYUv2", "NYU40_CLASS_NAMES", "NYU13_CLASS_NAMES", "NYU40_PALETTE", "NYU13_PALETTE", "NYUV2_FILES"]

#: The 40 classes of Gupta et al. (CVPR 2013), in id order (``className`` of ``classMapping40.mat``).
NYU40_CLASS_NAMES: tuple[str, ...] = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture", "counter",
    "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat", "clothes", "ceiling", "books",
    "refrigerator", "television", "paper", "towel", "shower curtain", "box", "whiteboard", "person", "night stand",
    "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop")
#: The 13 classes of Couprie et al. (ICLR 2013), in id order (``labelName`` of ``class13Mapping.mat``).
NYU13_CLASS_NAMES: tuple[str, ...] = (
    "bed", "books", "ceiling", "chair", "floor", "furniture", "objects", "picture", "sofa", "table", "tv", "wall",
    "window")
NYU40_PALETTE = label_palette(40)
NYU13_PALETTE = label_palette(13)

_SOURCE = ("NYU Depth V2 labelled set: https://cs.nyu.edu/~fergus/datasets/nyu_depth_v2.html "
           "(file: http://horatio.cs.nyu.edu/mit/silberman/nyu_depth_v2/nyu_depth_v2_labeled.mat)")
_META_SOURCE = ("The split and class-mapping files are redistributed with the NYUv2 metadata at "
                "https://github.com/ankurhanda/nyuv2-meta-data (splits.mat, classMapping40.mat, class13Mapping.mat); "
                "see docs/data.md")
#: The files NYUv2 reads, and where users get them.
NYUV2_FILES = {
    "nyu_depth_v2_labeled.mat": _SOURCE,
    "splits.mat": _META_SOURCE,
    "classMapping40.mat": _META_SOURCE,
    "class13Mapping.mat": _META_SOURCE,
}
_LABELED = "nyu_depth_v2_labeled.mat"


class NYUv2(Dataset):
    """NYUv2 from its official files, with 40, 13 or all 894 raw classes.

    Labels: raw 0 (unlabelled) → 255 (void), classes → 0..C-1 through ``classMapping40.mat`` (40),
    ``classMapping40.mat`` then ``class13Mapping.mat`` (13), or as they are (894). Depth: ``depths`` (Levin et al.
    colourisation in-painting, no holes) in metres, or ``rawDepths`` (the sensor's, 0 = missing) with
    ``raw_depth=True``.

    The labelled file holds exactly the 1449 labelled frames; NYUv2's unlabelled frames are in its raw scene dumps,
    read by :class:`~depthdistill.data.NYUv2Raw` (leave out ``NYUv2(root, "test").scenes()`` there).

    The 2.8 GB file is never loaded whole: a sample reads its own three slices. The HDF5 handle is opened on first
    use in each process (so every DataLoader worker has its own) and never pickled.

    Args:
        root: Folder holding the files listed in ``NYUV2_FILES``.
        split: ``"train"`` (795 images) or ``"test"`` (654), from ``splits.mat``.
        num_classes: 40, 13 or 894.
        transform: Joint transform applied to the sample dict.
        raw_depth: Use ``rawDepths`` instead of the in-painted ``depths``.

    Attributes:
        class_names, palette, num_classes: Class names in id order, ``(C, 3)`` uint8 colours, and their number.
        indices: 0-based indices into the labelled set, in split order; the sample id is ``nyuv2/<1-based index>``.

    Raises:
        DatasetError: A file missing (the message names it and where to get it), corrupt, or lacking the
            expected entries; a split index outside the labelled set.

    Examples:
        >>> ds = NYUv2("/data/nyuv2", split="test", num_classes=40)  # doctest: +SKIP
        >>> len(ds), ds[0]["rgb"].shape                               # doctest: +SKIP
        (654, torch.Size([3, 480, 640]))
    """

    def __init__(self, root: str | Path, split: str = "train", num_classes: int = 40,
                 transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None, raw_depth: bool = False) -> None:
        if split not in ("train", "test"):
            raise DatasetError(f"NYUv2 split must be 'train' or 'test', got {split!r}")
        if num_classes not in (13, 40, 894):
            raise DatasetError(f"NYUv2 num_classes must be 13, 40 or 894, got {num_classes}")
        self.root = Path(root)
        self.split = split
        self.num_classes = num_classes
        self.transform = transform
        self._depth_key = "rawDepths" if raw_depth else "depths"
        self._path = self.root / _LABELED
        self._h5 = LazyH5(self._path, _LABELED, _SOURCE)

        with open_h5(self._path, _LABELED, _SOURCE) as f:
            count = self._check_layout(f)
            self._raw_classes = 894 if num_classes != 894 else len(mat_entry(f, "names", self._path)[()].ravel())
        splits_path = self.root / "splits.mat"
        splits = load_mat(splits_path, "splits.mat", _META_SOURCE)
        one_based = np.asarray(mat_entry(splits, "trainNdxs" if split == "train" else "testNdxs", splits_path))
        self.indices = one_based.astype(np.int64).ravel() - 1
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= count):
            raise DatasetError(f"{splits_path} refers to image {int(self.indices.max()) + 1}, but {self._path} holds "
                               f"{count} images (indices are 1-based); the two files do not belong together")
        self._mapping = self._class_mapping()
        if num_classes == 894:
            self.class_names = self._raw_names()
            self.palette = label_palette(894)
        else:
            self.class_names = NYU40_CLASS_NAMES if num_classes == 40 else NYU13_CLASS_NAMES
            self.palette = NYU40_PALETTE if num_classes == 40 else NYU13_PALETTE

    def _check_layout(self, f: Any) -> int:
        images = mat_entry(f, "images", self._path)
        if images.ndim != 4 or images.shape[1] != 3:
            raise DatasetError(f"{self._path}: 'images' should be (N, 3, W, H) as MATLAB v7.3 stores it, got "
                               f"{images.shape}")
        count, _, width, height = images.shape
        for key in (self._depth_key, "labels"):
            shape = mat_entry(f, key, self._path).shape
            if shape != (count, width, height):
                raise DatasetError(f"{self._path}: {key!r} has shape {shape}, expected {(count, width, height)} to "
                                   "match 'images'")
        return count

    def _class_mapping(self) -> np.ndarray:
        if self.num_classes == 894:
            return np.arange(1, self._raw_classes + 1)
        path40 = self.root / "classMapping40.mat"
        to40 = np.asarray(mat_entry(load_mat(path40, "classMapping40.mat", _META_SOURCE), "mapClass", path40))
        to40 = to40.astype(np.int64).ravel()
        if self.num_classes == 40:
            return to40
        path13 = self.root / "class13Mapping.mat"
        struct = mat_entry(load_mat(path13, "class13Mapping.mat", _META_SOURCE), "classMapping13", path13)
        if "labels13" not in (struct.dtype.names or ()):
            raise DatasetError(f"{path13}: 'classMapping13' has no field 'labels13'; is it the right file?")
        to13 = np.asarray(struct["labels13"][0, 0]).astype(np.int64).ravel()
        if to40.max() > len(to13):
            raise DatasetError(f"{path40} maps to class {int(to40.max())} but {path13} maps only {len(to13)} classes")
        return np.where(to40 > 0, to13[np.maximum(to40, 1) - 1], 0)

    def _raw_names(self) -> tuple[str, ...]:
        return self._strings("names")

    def _strings(self, key: str) -> tuple[str, ...]:
        """A MATLAB cell array of strings in the labelled file: references to uint16 character arrays."""
        with open_h5(self._path, _LABELED, _SOURCE) as f:
            refs = mat_entry(f, key, self._path)[()].ravel()
            return tuple("".join(map(chr, np.asarray(f[ref]).ravel())) for ref in refs)

    def scenes(self) -> tuple[str, ...]:
        """The recording scenes this split's images come from (the labelled file's ``scenes``), sorted, each once.

        The official split is by scene, so these are the names to leave out of the raw, unlabelled frames
        (:class:`~depthdistill.data.NYUv2Raw`'s ``exclude_scenes``) when test images must stay unseen.

        Returns:
            Scene names such as ``"bedroom_0001"``.

        Examples:
            >>> from depthdistill.data import NYUv2Raw
            >>> test_scenes = NYUv2("/data/nyuv2", split="test").scenes()                # doctest: +SKIP
            >>> unlabelled = NYUv2Raw("/data/nyuv2_raw", exclude_scenes=test_scenes)  # doctest: +SKIP
        """
        names = self._strings("scenes")
        return tuple(sorted({names[i] for i in self.indices}))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = int(self.indices[index])
        f = self._h5.get()
        rgb = np.asarray(f["images"][i]).transpose(2, 1, 0)  # (3, W, H) -> (H, W, 3)
        depth = np.asarray(f[self._depth_key][i]).T
        raw = np.asarray(f["labels"][i]).T
        label = map_labels(raw, self._mapping, f"{self._path} image {i + 1}")
        sample = make_sample(rgb, depth, label, f"nyuv2/{i + 1}")
        return self.transform(sample) if self.transform is not None else sample

    def __repr__(self) -> str:
        return (f"NYUv2(root={str(self.root)!r}, split={self.split!r}, num_classes={self.num_classes}, "
                f"samples={len(self)})")
