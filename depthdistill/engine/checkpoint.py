"""Checkpoints written atomically, holding everything a run needs to continue exactly where it stopped.

A file is first written to a temporary name in the same folder, flushed to disk, then renamed over the target
(``os.replace`` is atomic), so a run killed while saving never leaves a truncated checkpoint: the previous one
stays. Files are loaded with ``weights_only=True``: the RNG states are stored as tensors and plain types so that
no pickled object is ever executed.

Every checkpoint carries a SHA-256 checksum of its content (key ``"checksum"``), verified on load: a file whose
bytes changed on disk since it was written (bit rot, a bad copy) is refused instead of silently loading wrong
weights. Checkpoints written before checksums existed load without the check.
"""

from __future__ import annotations

import hashlib
import os
import random
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from depthdistill.errors import CheckpointError, ConfigError, MissingFileError

__all__ = ["save_checkpoint", "load_checkpoint", "load_model_state", "checksum", "capture_rng_state",
           "restore_rng_state", "CHECKPOINT_FORMAT"]

#: Value of the ``"format"`` key of every checkpoint depthdistill writes.
CHECKPOINT_FORMAT = "depthdistill/1"


def _update(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        flat = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"tensor {value.dtype} {tuple(value.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy())
    elif isinstance(value, dict):
        digest.update(f"dict {len(value)};".encode())
        for key, item in value.items():
            digest.update(f"{key!r}:".encode())
            _update(digest, item)
    elif isinstance(value, (list, tuple)):
        digest.update(f"list {len(value)};".encode())
        for item in value:
            _update(digest, item)
    else:
        digest.update(f"{type(value).__name__} {value!r};".encode())


def checksum(state: dict[str, Any]) -> str:
    """SHA-256 of a checkpoint's content: every tensor's bytes, dtype and shape, and every plain value, in order.

    It is computed from the loaded objects, not the file's bytes, so it does not depend on how ``torch.save``
    lays out the file; the ``"checksum"`` key itself is left out.

    Examples:
        >>> checksum({"w": torch.zeros(2)}) == checksum({"w": torch.zeros(2)})
        True
        >>> checksum({"w": torch.zeros(2)}) == checksum({"w": torch.tensor([0.0, 1e-30])})
        False
    """
    digest = hashlib.sha256()
    _update(digest, {key: value for key, value in state.items() if key != "checksum"})
    return digest.hexdigest()


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Writes ``state`` and its :func:`checksum` to ``path`` atomically (temporary file in the same folder, fsync,
    rename).

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
    state = {**state, "checksum": checksum(state)}
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
    """Loads a checkpoint written by :func:`save_checkpoint` (tensors and plain types only) and verifies its checksum.

    Args:
        path: The file.
        map_location: Where tensors go (default CPU).

    Returns:
        The state that was saved (without the ``"checksum"`` key).

    Raises:
        MissingFileError: If the file does not exist.
        CheckpointError: If it is not a readable checkpoint, or its content does not match its checksum.

    Examples:
        >>> import tempfile, pathlib
        >>> p = save_checkpoint({"w": torch.ones(2)}, pathlib.Path(tempfile.mkdtemp()) / "a.pt")
        >>> load_checkpoint(p)["w"]
        tensor([1., 1.])
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise CheckpointError(f"cannot read checkpoint {path} (corrupt, or not a checkpoint): {exc}") from exc
    if isinstance(state, dict) and "checksum" in state:
        stored = state.pop("checksum")
        if checksum(state) != stored:
            raise CheckpointError(f"checkpoint {path} is corrupt: its content does not match the checksum written "
                                  "with it (the file changed on disk since it was saved); restore it from a copy "
                                  "or train it again")
    return state


def load_model_state(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str | os.PathLike) -> None:
    """``model.load_state_dict(state_dict)``, after checking that the checkpoint fits the model.

    Args:
        model: The model to load into.
        state_dict: Its weights, as saved in the checkpoint's ``"model"``.
        source: The checkpoint, named in the error.

    Raises:
        ConfigError: If parameter names or shapes differ (the checkpoint was made with another model), naming them.

    Examples:
        >>> try:
        ...     load_model_state(nn.Conv2d(3, 8, 1), nn.Conv2d(3, 4, 1).state_dict(), "a.pt")
        ... except ConfigError as error:
        ...     print(str(error)[:79])
        a.pt was made with another model: weight: (4, 3, 1, 1) in the checkpoint, (8, 3
    """
    own = model.state_dict()
    problems = [f"{key}: {tuple(value.shape)} in the checkpoint, {tuple(own[key].shape)} in the model"
                for key, value in state_dict.items() if key in own and value.shape != own[key].shape]
    missing = [key for key in own if key not in state_dict]
    unexpected = [key for key in state_dict if key not in own]
    if missing:
        problems.append(f"missing from the checkpoint: {missing[:5]}{' …' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"not in the model: {unexpected[:5]}{' …' if len(unexpected) > 5 else ''}")
    if problems:
        shown = "; ".join(problems[:6]) + ("; …" if len(problems) > 6 else "")
        raise ConfigError(f"{source} was made with another model: {shown}. Build the model with the name and "
                          "arguments it was trained with (or train in another folder)")
    model.load_state_dict(state_dict)


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
