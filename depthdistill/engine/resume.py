"""Resuming a phase: which checkpoint it continues from, what in it must match the call, and carrying an earlier
phase's optimiser state into a new optimiser.

:func:`~depthdistill.engine.loop.fit` calls these; a resume is refused with every difference named, never
continued with settings, an identity or an optimiser other than those the checkpoint was made with.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch

from depthdistill.engine.checkpoint import load_checkpoint
from depthdistill.engine.settings import RESUME_SETTINGS, TrainSettings
from depthdistill.errors import CheckpointError, ConfigError

__all__ = ["resume_state", "resume_differences", "carry_optimizer_state"]

logger = logging.getLogger(__name__)


def resume_state(run_dir: Path, device: torch.device) -> tuple[dict[str, Any] | None, Path | None]:
    """The checkpoint to resume from and its path: ``last.pt``, or ``model.pt`` of a finished phase whose
    ``last.pt`` is missing or unreadable; ``(None, None)`` when there is none."""
    last, final = run_dir / "last.pt", run_dir / "model.pt"
    error = None
    if last.is_file():
        try:
            return load_checkpoint(last, map_location=device), last
        except CheckpointError as exc:
            error = exc
    if final.is_file():
        try:
            state = load_checkpoint(final, map_location=device)
        except CheckpointError:
            if error is not None:
                raise error from None
            raise
        if state.get("epochs") is not None and state.get("epoch") == state["epochs"]:  # a finished phase
            if error is not None:
                logger.warning("%s; the phase had finished: its final weights load from %s", error, final)
            return state, final
    if error is not None:
        raise error
    return None, None


def resume_differences(
    state: dict[str, Any], phase: str, epochs: int, settings: TrainSettings, identity: dict[str, Any],
    lr_scale: float, custom_optimizer: torch.optim.Optimizer | None, lr_schedule: tuple[int, int] | None = None,
) -> list[str]:
    """How a checkpoint differs from the call that would resume it, each difference in words (none: it may).

    Args:
        state: The checkpoint (``last.pt``, or ``model.pt`` of a finished phase).
        phase: The phase's name now.
        epochs: Epochs planned now.
        settings: The settings now; only :data:`~depthdistill.engine.settings.RESUME_SETTINGS` are compared.
        identity: The identity the caller declares now.
        lr_scale: The learning rate's scale now.
        custom_optimizer: The optimiser built by the caller's own factory, compared by class and hyper-parameters
            with the checkpoint's; ``None`` for the default SGD, which the settings describe already.
        lr_schedule: ``(start, epochs)`` of the learning-rate schedule this phase trains on (default
            ``(0, epochs)``: its own).
    """
    differences = _plan_differences(state, phase, epochs, settings, identity)
    if state.get("lr_scale", lr_scale) != lr_scale:
        differences.append(f"lr_scale={state['lr_scale']!r} (now {lr_scale!r})")
    # The schedule around this phase: its epochs before the phase and after it ((0, 0): the phase's own, as in
    # checkpoints written before shared schedules existed). The phase's own epochs are compared above.
    saved = (0, 0)
    if state.get("lr_schedule"):
        saved_start, saved_total = state["lr_schedule"]
        saved = (saved_start, saved_total - saved_start - state["epochs"])
    start, total = lr_schedule or (0, epochs)
    if saved != (start, total - start - epochs):
        differences.append(f"a learning-rate schedule with {saved[0]} epochs before this phase and {saved[1]} after "
                           f"it (now {start} and {total - start - epochs})")
    if custom_optimizer is not None and "optimizer" in state:  # the settings say nothing about a custom optimiser
        differences += _optimizer_differences(state["optimizer"], custom_optimizer, state.get("optimizer_class"))
    return differences


def _plan_differences(state: dict[str, Any], phase: str, epochs: int, settings: TrainSettings,
                      identity: dict[str, Any]) -> list[str]:
    """How the checkpoint's phase, epochs, settings and identity differ from the ones asked for now."""
    differences = []
    if state.get("phase") != phase:
        differences.append(f"phase {state.get('phase')!r} (now {phase!r})")
    if state.get("epochs") != epochs:
        differences.append(f"planned for {state.get('epochs')} epochs (now {epochs})")
    saved, now = state.get("settings") or {}, settings.to_dict()
    differences += [f"{key}={saved[key]!r} (now {now[key]!r})" for key in RESUME_SETTINGS
                    if key in saved and saved[key] != now[key]]
    # Checkpoints written before identities were recorded have none: nothing of theirs can be compared.
    saved_identity = state.get("identity", identity)
    for key in sorted(set(saved_identity) | set(identity)):
        before, after = saved_identity.get(key, "(not recorded)"), identity.get(key, "(not recorded)")
        if before != after:
            differences.append(f"{key}={before!r} (now {after!r})")
    return differences


def _optimizer_differences(saved: dict[str, Any], optimizer: torch.optim.Optimizer,
                           saved_class: str | None) -> list[str]:
    """How a custom optimiser's class and hyperparameters differ from the checkpoint's (``lr`` is the base lr)."""
    name = type(optimizer).__name__
    if saved_class is not None and saved_class != name:
        return [f"optimizer {saved_class} (now {name})"]
    now_groups, saved_groups = optimizer.state_dict()["param_groups"], saved["param_groups"]
    if len(now_groups) != len(saved_groups):
        return [f"{len(saved_groups)} optimizer parameter groups (now {len(now_groups)})"]
    differences = []
    for index, (before, after) in enumerate(zip(saved_groups, now_groups, strict=True)):
        # "lr" follows the schedule; "initial_lr" is the base lr. Keys only one torch version has are skipped.
        for key in sorted((set(before) & set(after)) - {"params", "lr"}):
            if before[key] != after[key]:
                shown = "lr" if key == "initial_lr" else key
                group = f" (group {index})" if len(now_groups) > 1 else ""
                differences.append(f"{name} {shown}{group}={before[key]!r} (now {after[key]!r})")
    return differences


def carry_optimizer_state(opt: torch.optim.Optimizer, state: dict[str, Any], phase: str) -> None:
    """Loads a copy of another optimiser's per-parameter state into ``opt``, keeping ``opt``'s own
    hyper-parameters.

    A copy: ``load_state_dict`` keeps the very tensors it is given, which ``opt`` then updates in place, and the
    state must stay as the earlier phase left it for every later phase that carries it (BL+PS and SN both do).
    """
    own_groups = [{k: v for k, v in group.items() if k != "params"} for group in opt.param_groups]
    if [len(g["params"]) for g in state["param_groups"]] != [len(g["params"]) for g in opt.param_groups]:
        raise ConfigError(f"{phase}: the carried optimiser state covers other parameters than this phase trains "
                          "(a different model or requires_grad setting); start this phase with a fresh optimiser")
    try:
        opt.load_state_dict(copy.deepcopy(state))
    except (ValueError, KeyError) as error:
        raise ConfigError(f"{phase}: cannot carry the earlier phase's optimiser state into "
                          f"{type(opt).__name__}: {error}; use the same optimiser type or a fresh one") from error
    for group, own in zip(opt.param_groups, own_groups, strict=True):
        params = group["params"]
        group.clear()  # drops the earlier phase's scheduler keys (initial_lr) with its hyper-parameters
        group.update(own, params=params)

