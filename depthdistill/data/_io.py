"""Private helpers shared by the datasets: file reading with errors that name the file and the one sample builder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from depthdistill.errors import DatasetError
from depthdistill.labels import VOID


def make_sample(rgb: np.ndarray, depth: np.ndarray, label: np.ndarray | None, sample_id: str) -> dict[str, Any]:
    """Builds the library's sample dict from numpy arrays, checking that the parts agree in size.

    This is the one definition of a sample: ``{"rgb", "depth", "label", "id"}``, and of an *unlabelled* sample, the
    same dict without the ``"label"`` key (``label=None``). No placeholder label (all void) stands in for a missing
    one, so code that needs labels fails loudly on unlabelled data instead of training on void.

    Args:
        rgb: ``(H, W, 3)`` uint8 (0..255) or float (0..1).
        depth: ``(H, W)`` float metres; non-finite and negative values become 0 (missing).
        label: ``(H, W)`` integer class indices, 255 = void; ``None`` for an unlabelled sample.
        sample_id: Name of the sample, used in error messages downstream.

    Returns:
        ``{"rgb": float32 (3,H,W) in [0, 1], "depth": float32 (1,H,W), "label": int64 (H,W), "id": str}``, without
        ``"label"`` when ``label`` is ``None``.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise DatasetError(f"sample {sample_id!r}: rgb must be (H, W, 3), got {rgb.shape}")
    if depth.shape != rgb.shape[:2] or (label is not None and label.shape != rgb.shape[:2]):
        shapes = f"rgb {rgb.shape[:2]}, depth {depth.shape}"
        shapes += f" and label {label.shape}" if label is not None else ""
        raise DatasetError(f"sample {sample_id!r}: {shapes} differ in size; they must be pixel-aligned")
    rgb_f = rgb.astype(np.float32) / 255.0 if rgb.dtype == np.uint8 else rgb.astype(np.float32)
    depth_f = depth.astype(np.float32)
    depth_f[~np.isfinite(depth_f) | (depth_f < 0)] = 0.0
    sample: dict[str, Any] = {
        "rgb": torch.from_numpy(np.ascontiguousarray(rgb_f.transpose(2, 0, 1))),
        "depth": torch.from_numpy(np.ascontiguousarray(depth_f))[None],
    }
    if label is not None:
        sample["label"] = torch.from_numpy(label.astype(np.int64))
    sample["id"] = sample_id
    return sample


def map_labels(raw: np.ndarray, mapping: np.ndarray, source: str) -> np.ndarray:
    """Maps raw 1-based labels through ``mapping`` (raw value ``k`` → ``mapping[k - 1]``, itself 1-based) to 0-based
    training ids; raw 0 and mapped 0 become void (255).

    Raises:
        DatasetError: If a raw label is larger than the mapping (the file and the mapping do not belong together).
    """
    raw = raw.astype(np.int64)
    if raw.size and raw.max() > len(mapping):
        raise DatasetError(f"{source}: label {int(raw.max())} has no entry in the class mapping of {len(mapping)} "
                           "classes; is the mapping file the one that belongs to this dataset?")
    lut = np.full(len(mapping) + 1, VOID, dtype=np.int64)
    mapped = np.asarray(mapping, dtype=np.int64)
    lut[1:] = np.where(mapped > 0, mapped - 1, VOID)
    return lut[raw]


def check_aligned(sample_id: str, parts: list[tuple[str, tuple[int, ...]]]) -> None:
    """Raises a DatasetError naming every source when the ``(source, (H, W, ...))`` parts differ in height/width."""
    sizes = {shape[:2] for _, shape in parts}
    if len(sizes) > 1:
        listing = ", ".join(f"{source} is {shape[0]}x{shape[1]}" for source, shape in parts)
        raise DatasetError(f"size mismatch for sample {sample_id!r}: {listing} (height x width); rgb, depth and "
                           "label must be pixel-aligned")


def missing_file_error(path: Path, what: str, where: str) -> DatasetError:
    """The error for a file a dataset needs and cannot find: names the file and where users get it."""
    return DatasetError(f"{what} not found: {path}. {where}")


def open_h5(path: Path, what: str, where: str) -> Any:
    """Opens a MATLAB v7.3 (HDF5) file read-only with h5py; a missing or corrupt file is a DatasetError."""
    import h5py

    if not path.is_file():
        raise missing_file_error(path, what, where)
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DatasetError(f"cannot open {path} as a MATLAB v7.3 (HDF5) file ({exc}); the file is corrupt or the "
                           f"download is incomplete. {where}") from exc


class LazyH5:
    """An HDF5 file opened on first use in each process, so every DataLoader worker reads through its own handle
    (a handle inherited through fork is not safe to share); pickling drops the handle.
    """

    def __init__(self, path: Path, what: str, where: str) -> None:
        self.path, self.what, self.where = path, what, where
        self.handle: Any = None
        self.pid = -1

    def get(self) -> Any:
        if self.handle is None or self.pid != os.getpid():
            self.handle = open_h5(self.path, self.what, self.where)
            self.pid = os.getpid()
        return self.handle

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "handle": None, "pid": -1}


def load_mat(path: Path, what: str, where: str, **kwargs: Any) -> dict[str, Any]:
    """Loads a MATLAB v5/v7 ``.mat`` file with scipy; a missing or corrupt file is a DatasetError."""
    import scipy.io

    if not path.is_file():
        raise missing_file_error(path, what, where)
    try:
        return scipy.io.loadmat(path, **kwargs)
    except NotImplementedError as exc:  # scipy's answer to v7.3 files
        raise DatasetError(f"{path} is a MATLAB v7.3 file, expected v5/v7 ({exc}). {where}") from exc
    # scipy reports damaged files through several types, IndexError and its own MatReadError among them.
    except (scipy.io.matlab.MatReadError, ValueError, OSError, TypeError, IndexError, KeyError) as exc:
        raise DatasetError(f"cannot read {path} ({exc!r}); the file is corrupt or not a .mat file. {where}") from exc


def mat_entry(mat: dict[str, Any], key: str, path: Path) -> Any:
    """``mat[key]``, or a DatasetError naming the file and the keys it does have."""
    if key not in mat:
        present = sorted(k for k in mat if not k.startswith("__"))
        raise DatasetError(f"{path} has no {key!r} entry (it has {present}); is it the right file?")
    return mat[key]


def read_image(path: Path) -> np.ndarray:
    """Reads an 8-bit RGB image (PNG or JPEG) as ``(H, W, 3)`` uint8.

    Raises:
        DatasetError: If the file is missing or not a readable image.
    """
    return np.asarray(_open_image(path).convert("RGB"))


def read_array_image(path: Path) -> np.ndarray:
    """Reads a single-channel image (8/16-bit PNG, integer or float TIFF) as a 2-D array in its stored dtype.

    Raises:
        DatasetError: If the file is missing, unreadable or has more than one channel.
    """
    image = _open_image(path)
    if image.mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LA"):
        raise DatasetError(f"{path}: expected a single-channel image, got mode {image.mode!r}")
    array = np.asarray(image)
    if image.mode == "I;16B":  # big-endian 16-bit (some TIFF writers) would read as byte-swapped values
        array = array.astype(np.uint16)
    return array


def read_npy(path: Path) -> np.ndarray:
    """Reads a 2-D ``.npy`` array (a leading or trailing singleton axis is dropped).

    Raises:
        DatasetError: If the file is missing, unreadable or not 2-D.
    """
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError as exc:
        raise DatasetError(f"file not found: {path}") from exc
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read {path} as a .npy array ({exc}); is the file complete?") from exc
    array = np.squeeze(array)
    if array.ndim != 2:
        raise DatasetError(f"{path}: expected a 2-D depth array, got shape {array.shape}")
    return array


def _open_image(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError as exc:
        raise DatasetError(f"file not found: {path}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DatasetError(f"cannot read image {path} ({exc}); the file is corrupt or not an image") from exc
    return image
