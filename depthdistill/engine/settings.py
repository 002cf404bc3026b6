"""The settings of :func:`~depthdistill.engine.loop.fit`: how every phase of a run trains, checked when made.

Which of them a resumed phase must keep (:data:`RESUME_SETTINGS`) is stated here, beside the fields it names.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from depthdistill.engine.optim import DEFAULT_LR, DEFAULT_MOMENTUM, DEFAULT_POLY_POWER, DEFAULT_WEIGHT_DECAY
from depthdistill.errors import ConfigError, ConfigTypeError

__all__ = ["TrainSettings", "RESUME_SETTINGS", "check_count"]

#: Training settings that change what a phase computes: resuming it with other values is refused (device,
#: workers, logging and evaluation batch size may change).
RESUME_SETTINGS = ("batch_size", "lr", "momentum", "weight_decay", "poly_power", "grad_accum_steps", "seed", "amp")


@dataclass
class TrainSettings:
    """How to train (every phase of a run uses the same settings).

    Attributes:
        batch_size: Samples per step and process (the paper: 1).
        lr: Learning rate of the default SGD (the paper: 2.5e-4).
        momentum: SGD momentum (DeepLab's 0.9; the paper is silent).
        weight_decay: SGD weight decay (DeepLab's 5e-4).
        poly_power: Power of the poly schedule (DeepLab's 0.9), stepped per optimiser step.
        grad_accum_steps: Batches whose gradients are summed before each optimiser step.
        num_workers: DataLoader worker processes.
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        amp: Mixed precision (float16 + gradient scaling on CUDA, bfloat16 on CPU).
        channels_last: Keep model and images in channels_last memory format.
        seed: Seeds Python, NumPy and torch at the start of each phase and the shuffling; ``None`` leaves the
            global generators alone.
        progress: Progress bars: ``None`` only when stderr is a terminal, or force ``True`` / ``False``.
        log_every: Write a step record to the metrics log every this many optimiser steps (0: epochs only).
        check_samples: Samples checked before training (spread over the set; ``None``: all of them). Every batch
            is checked during training anyway.
        eval_batch_size: Batch size for evaluation (default: ``batch_size``).

    Examples:
        >>> TrainSettings(lr=1e-3).momentum
        0.9
    """

    batch_size: int = 1
    lr: float = DEFAULT_LR
    momentum: float = DEFAULT_MOMENTUM
    weight_decay: float = DEFAULT_WEIGHT_DECAY
    poly_power: float = DEFAULT_POLY_POWER
    grad_accum_steps: int = 1
    num_workers: int = 0
    device: str = "auto"
    amp: bool = False
    channels_last: bool = False
    seed: int | None = 0
    progress: bool | None = None
    log_every: int = 50
    check_samples: int | None = 64
    eval_batch_size: int | None = None

    def __post_init__(self) -> None:
        for name, low in (("batch_size", 1), ("grad_accum_steps", 1), ("num_workers", 0), ("log_every", 0)):
            check_count(getattr(self, name), name, low)
        if self.eval_batch_size is not None:
            check_count(self.eval_batch_size, "eval_batch_size", 1)
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)):
            raise ConfigTypeError(f"lr must be a number, got {self.lr!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a finite number > 0, got {self.lr!r} (the paper uses 2.5e-4)")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainSettings:
        """Builds settings from a mapping, rejecting unknown keys with the list of known ones.

        Examples:
            >>> TrainSettings.from_dict({"batch_size": 4}).batch_size
            4
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown training setting(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict."""
        return asdict(self)


def check_count(value: Any, name: str, low: int, where: str = "") -> None:
    """Raises unless ``value`` is an int (not a bool, not a float) of at least ``low``."""
    prefix = f"{where}: " if where else ""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigTypeError(f"{prefix}{name} must be an integer >= {low}, got {value!r} ({type(value).__name__})")
    if value < low:
        raise ConfigError(f"{prefix}{name} must be an integer >= {low}, got {value!r}")

