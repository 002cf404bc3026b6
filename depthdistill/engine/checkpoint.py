"""Checkpoints written atomically, holding everything a run needs to continue exactly where it stopped.

A file is first written to a temporary name in the same folder, flushed to disk, then renamed over the target
(``os.replace`` is atomic), so a run killed while saving never leaves a truncated checkpoint: the previous one
stays. Files are loaded with ``weights_only=True``: the RNG states are stored as tensors and plain types so that
no pickled object is ever executed.
"""

from __future__ import annotations

import os
import random
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import torch

from depthdistill.errors import TrainingError

__all__ = ["save_checkpoint", "load_checkpoint", "capture_rng_state", "restore_rng_state", "CHECKPOINT_FORMAT"]

#: Value of the ``"format"`` key of every checkpoint depthdistill writes.
CHECKPOINT_FORMAT = "depthdistill/1"


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Writes ``state`` to ``path`` atomically (temporary file in the same folder, fsync, rename).

    Args:
        state: Anything ``torch.save`` accepts; depthdistill stores tensors, dicts, lists and plain values only.
        path: Target file; its folder is created if needed.

    Returns:
        The path written.

    Examples:
        >>> import tempfile, pathlib
        >>> p = save_checkpoint({"epoch": 3}, pathlib.Path(tempfile.mkdtemp()) / "last.pt")
        >>> load_checkpoint(p)["epoch"]
        3
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp, which creates files -rw------- whatever the umask: 0o666 lets the umask decide, like open().
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Loads a checkpoint written by :func:`save_checkpoint` (tensors and plain types only).

    Args:
        path: The file.
        map_location: Where tensors go (default CPU).

    Raises:
        FileNotFoundError: If the file does not exist.
        TrainingError: If it is not a readable checkpoint.

    Examples:
        >>> import tempfile, pathlib
        >>> p = save_checkpoint({"w": torch.ones(2)}, pathlib.Path(tempfile.mkdtemp()) / "a.pt")
        >>> load_checkpoint(p)["w"]
        tensor([1., 1.])
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise TrainingError(f"cannot read checkpoint {path}: {exc}") from exc


def capture_rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's (CPU and every CUDA device) random generators.

    Examples:
        >>> state = capture_rng_state()
        >>> a = torch.rand(1); restore_rng_state(state)
        >>> torch.equal(a, torch.rand(1))
        True
    """
    np_state = np.random.get_state(legacy=False)
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restores generator states captured by :func:`capture_rng_state`.

    CUDA states are restored only when as many devices are visible as were saved.

    Examples:
        >>> restore_rng_state(capture_rng_state())
    """
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
    np_state = state["numpy"]
    np.random.set_state({
        "bit_generator": "MT19937",
        "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
        "has_gauss": np_state["has_gauss"],
        "gauss": np_state["gauss"],
    })
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
