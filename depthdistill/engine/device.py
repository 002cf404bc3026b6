"""Where and how tensors run: device choice, moving a sample batch, mixed precision and channels_last."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from depthdistill.engine.distributed import is_distributed
from depthdistill.errors import ConfigError

__all__ = ["resolve_device", "move_batch", "autocast", "make_grad_scaler"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """The device to train on.

    ``"auto"`` (or ``None``) picks CUDA when available, else CPU. Under DDP with CUDA every process takes the GPU
    it was pinned to (``LOCAL_RANK``, see :func:`~depthdistill.engine.init_distributed`).

    Raises:
        ConfigError: If CUDA is asked for but not available, or the name is not a device.

    Examples:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device()) if is_distributed() else torch.device("cuda")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device {device!r} is not a torch device; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for but CUDA is not available; use device 'auto' or 'cpu'")
    return resolved


def move_batch(batch: dict[str, Any], device: torch.device, channels_last: bool = False) -> dict[str, Any]:
    """Moves every tensor of a sample batch to ``device``; ``rgb`` goes channels_last when asked.

    Integer labels of any width (``uint8`` from 8-bit PNGs, ``int32``) become ``int64``, the only label type the
    losses accept.

    Examples:
        >>> b = move_batch({"rgb": torch.zeros(1, 3, 2, 2), "label": torch.zeros(1, 2, 2, dtype=torch.uint8),
        ...                 "id": ["a"]}, torch.device("cpu"))
        >>> b["rgb"].device.type, b["label"].dtype, b["id"]
        ('cpu', torch.int64, ['a'])
    """
    moved = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    label = moved.get("label")
    if isinstance(label, torch.Tensor) and not label.is_floating_point() and label.dtype != torch.bool:
        moved["label"] = label.long()
    if channels_last and isinstance(moved.get("rgb"), torch.Tensor) and moved["rgb"].dim() == 4:
        moved["rgb"] = moved["rgb"].contiguous(memory_format=torch.channels_last)
    return moved


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass: float16 on CUDA, bfloat16 on CPU; a no-op when not ``enabled``.

    Examples:
        >>> with autocast(torch.device("cpu"), enabled=False):
        ...     pass
    """
    if not enabled:
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_grad_scaler(device: torch.device, enabled: bool) -> torch.amp.GradScaler:
    """A gradient scaler, active only for float16 mixed precision on CUDA (bfloat16 needs none).

    Examples:
        >>> make_grad_scaler(torch.device("cpu"), enabled=True).is_enabled()
        False
    """
    return torch.amp.GradScaler(device.type, enabled=enabled and device.type == "cuda")
