"""The training loop every phase shares: epochs of optimiser steps, per-epoch evaluation, checkpoints, resume.

A phase (teacher, student, baseline …) is described by the model it trains and a loss function
``loss_fn(model, batch, epoch) -> {"loss": total, **parts}``; everything else — device, mixed precision,
channels_last, gradient accumulation, DDP, logging, checkpoints, NaN detection — lives here once.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from depthdistill.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    capture_rng_state,
    load_model_state,
    restore_rng_state,
    save_checkpoint,
)
from depthdistill.engine.device import autocast, make_grad_scaler, move_batch, resolve_device
from depthdistill.engine.distributed import all_reduce_sum, barrier, get_world_size, is_main_process, wrap_ddp
from depthdistill.engine.loader import start_epoch, train_loader
from depthdistill.engine.optim import OptimizerFactory, SchedulerFactory, poly_schedule, sgd
from depthdistill.engine.resume import carry_optimizer_state, resume_differences, resume_state
from depthdistill.engine.run_log import RunLog, progress
from depthdistill.engine.settings import RESUME_SETTINGS, TrainSettings, check_count
from depthdistill.errors import CheckpointError, ConfigError, TrainingError

# TrainSettings and RESUME_SETTINGS live in engine.settings and stay importable from here, where callers found them.
__all__ = ["TrainSettings", "LoopState", "FitResult", "LossFn", "Callback", "fit", "seed_everything",
           "RESUME_SETTINGS"]

#: ``loss_fn(model, batch, epoch) -> {"loss": scalar tensor to minimise, other named scalar parts to log}``.
LossFn = Callable[[nn.Module, dict, int], dict[str, torch.Tensor]]


@dataclass
class LoopState:
    """What a callback sees: where the loop is and what it trains.

    Attributes:
        phase: The phase's name.
        event: ``"epoch_start"``, ``"step_end"`` (after every batch) or ``"epoch_end"``.
        epoch: Epoch index, from 0.
        epochs: Epochs planned.
        batch: Batch index in the epoch, from 0 (``step_end``).
        global_step: Optimiser steps taken in this phase.
        loss: Loss of the last batch (``step_end``) or epoch mean (``epoch_end``).
        model: The model being trained (not the DDP wrapper).
        optimizer: Its optimiser.
        record: The epoch's log record (``epoch_end``).
    """

    phase: str
    event: str
    epoch: int
    epochs: int
    batch: int
    global_step: int
    loss: float
    model: nn.Module
    optimizer: torch.optim.Optimizer
    record: dict[str, Any] = field(default_factory=dict)


#: ``callback(state)`` called at every event; raising from it stops training (the last checkpoint stays).
Callback = Callable[[LoopState], None]


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        history: One record per epoch trained (including epochs of a resumed-from run).
        best_metric: Best validation value of ``best_key`` (``None`` without validation).
        best_epoch: Epoch index where it was reached.
        seconds: Wall time of the epochs trained by this call.
        resumed_from: Completed epochs found in the checkpoint (``None``: fresh start).
        optimizer_state: With ``fit(keep_optimizer_state=True)``, the optimiser's ``state_dict()`` at the end, for
            a later phase that carries it on (``fit(optimizer_state=...)``); else ``None``.
    """

    history: list[dict[str, Any]]
    best_metric: float | None
    best_epoch: int | None
    seconds: float
    resumed_from: int | None
    optimizer_state: dict[str, Any] | None = None


def seed_everything(seed: int) -> None:
    """Seeds Python's ``random``, NumPy's global generator and torch (CPU and CUDA).

    Examples:
        >>> seed_everything(0); a = torch.rand(1); seed_everything(0)
        >>> torch.equal(a, torch.rand(1))
        True
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _reduce_parts(
    parts: dict[str, torch.Tensor], phase: str, epoch: int, batch: int, last_good: str
) -> dict[str, float]:
    """Means of the loss parts over processes; raises if the total loss is NaN or infinite."""
    names = list(parts)
    # One collective for all parts, and every rank sees the same values, so all stop together on a NaN instead of
    # the healthy ranks hanging in the next all-reduce.
    stacked = torch.stack([parts[name].detach().float().reshape(()) for name in names])
    means = (all_reduce_sum(stacked) / get_world_size()).tolist()
    values = dict(zip(names, means, strict=True))
    if not math.isfinite(values["loss"]):
        raise TrainingError(
            f"{phase}: the loss became {values['loss']} at epoch {epoch} batch {batch}; training stopped. {last_good} "
            "Lower the learning rate, check the data for NaN/inf values, or turn off amp; resume=True continues "
            "from the last checkpoint."
        )
    return values


def fit(
    model: nn.Module,
    loss_fn: LossFn,
    train_data: Dataset | DataLoader,
    epochs: int,
    *,
    phase: str = "train",
    settings: TrainSettings | None = None,
    run_dir: str | Path | None = None,
    evaluate: Callable[[nn.Module], dict[str, Any]] | None = None,
    best_key: str = "mean_iou",
    check: Callable[[dict], None] | None = None,
    optimizer: OptimizerFactory | None = None,
    scheduler: SchedulerFactory | None = None,
    callbacks: Sequence[Callback] = (),
    resume: bool = False,
    meta: dict[str, Any] | None = None,
    identity: dict[str, Any] | None = None,
    log: RunLog | None = None,
    optimizer_state: dict[str, Any] | None = None,
    keep_optimizer_state: bool = False,
    lr_scale: float = 1.0,
    schedule_start: int = 0,
    schedule_epochs: int | None = None,
    deployable: nn.Module | None = None,
) -> FitResult:
    """Trains ``model`` in place for ``epochs`` epochs of ``loss_fn``.

    Every epoch ends with evaluation (if ``evaluate`` is given), a line on stdout, a record in the JSON-lines log
    and an atomic checkpoint ``run_dir/last.pt`` holding model, optimiser, scheduler, gradient scaler, phase,
    epoch, RNG states, best metric and history (plus ``best.pt`` with the weights of the best epoch). With
    ``resume=True`` and a ``last.pt`` present, training continues after its last epoch and ends with exactly the
    weights an uninterrupted run would have (on a deterministic device); a finished checkpoint loads the weights
    and returns at once.

    Under ``torchrun`` the model is wrapped in ``DistributedDataParallel`` (the loss function receives the
    wrapper), the data is sharded, losses and metrics are reduced over processes, and only rank 0 writes.

    Args:
        model: The model to train; moved to the settings' device, trained in place.
        loss_fn: ``loss_fn(model, batch, epoch) -> {"loss": …, **parts}``; called under autocast.
        train_data: Dataset of sample dicts, or a ``DataLoader``.
        epochs: Epochs to train (>= 1).
        phase: Name used in logs, checkpoints and messages.
        settings: Training settings (default :class:`TrainSettings`).
        run_dir: Folder for ``last.pt``, ``best.pt`` and ``model.pt`` (the final weights, written when the last
            epoch ends); ``None`` keeps no checkpoint.
        evaluate: ``evaluate(model) -> metrics dict`` run after every epoch (validation).
        best_key: Metric of ``evaluate``'s result that selects ``best.pt`` (higher is better).
        check: ``check(batch)`` run on every batch before the forward (e.g. label range, depth present).
        optimizer: Optimiser factory (default: SGD with the settings' lr, momentum, weight decay).
        scheduler: Schedule factory ``(optimizer, total_steps)`` (default: poly with the settings' power).
        callbacks: Called at every event with a :class:`LoopState`.
        resume: Continue from ``run_dir/last.pt`` if it exists (a finished phase whose ``last.pt`` is unreadable
            loads ``model.pt``). Records of this phase that the log holds past the checkpoint (written before a
            kill) are dropped from it first, so each step and epoch is logged once.
        meta: Extra information stored in the checkpoints (e.g. which layers are depth-aware); not compared.
        identity: What the caller declares changes what this phase computes (its method's settings, the model,
            the classes …), as a flat mapping of plain values. It is stored in ``last.pt``, and resuming from a
            checkpoint whose identity differs in any key is refused, naming the keys. The loop reads no key of it.
        log: Where records go (default: ``run_dir/../metrics.jsonl`` is the caller's choice; ``None``: no file).
        optimizer_state: Per-parameter state (momenta, Adam moments) of an earlier phase's optimiser over the same
            parameters, in the same order (a :attr:`FitResult.optimizer_state`), loaded into the new optimiser
            before the first step. Its hyper-parameters (lr, betas …) stay the new optimiser's own. Ignored when
            resuming from a checkpoint, which holds the state already.
        keep_optimizer_state: Return the optimiser's final state in :attr:`FitResult.optimizer_state`.
        lr_scale: Multiplies the learning rate of every parameter group of the optimiser (the default one or
            ``optimizer``'s) before the schedule is built, e.g. a student phase's lr relative to its teacher's.
            Resuming with another scale is refused.
        schedule_start: Epochs of the learning-rate schedule that earlier phases trained: this phase's first step
            takes the rate the schedule reaches after ``schedule_start`` epochs of this phase's steps, so a phase
            continues a decay an earlier one began (with that phase's ``optimizer_state``, one optimiser and one
            schedule over both).
        schedule_epochs: Epochs the schedule is planned over (default ``schedule_start + epochs``: the decay ends
            with this phase); more leaves the rest of the decay to a later phase. Resuming with another
            ``schedule_start`` or ``schedule_epochs`` is refused.
        deployable: The part of ``model`` that ``model.pt`` and ``best.pt`` hold (default: all of it), when what
            trains is more than what is deployed (a student trained inside a pair, a model with a training-only
            head): those files then load into the deployed model itself. ``last.pt`` holds all of ``model``.

    Returns:
        A :class:`FitResult`.

    Raises:
        TrainingError: If the loss is NaN or infinite (the last checkpoint is kept), or resuming from a
            checkpoint of another phase, epoch count, setting of :data:`RESUME_SETTINGS` or ``identity`` (the
            differences are named).
        CheckpointError: If the checkpoint to resume from is corrupt, or a finished phase's ``last.pt`` is
            unreadable and its ``model.pt`` holds only ``deployable``.
        ConfigError: If the checkpoint holds another model's weights.

    Examples:
        >>> data = [{"rgb": torch.randn(3, 4, 4), "label": torch.zeros(4, 4, dtype=torch.long)}] * 2
        >>> net = nn.Conv2d(3, 2, 1)
        >>> loss = lambda m, b, e: {"loss": nn.functional.cross_entropy(m(b["rgb"]), b["label"])}
        >>> result = fit(net, loss, data, epochs=1, settings=TrainSettings(progress=False),
        ...              log=RunLog(None, echo=False))
        >>> result.history[0]["epoch"]
        0
    """
    settings = settings or TrainSettings()
    check_count(epochs, "epochs", 1, where=phase)
    log = log if log is not None else RunLog(None)
    run_dir = Path(run_dir) if run_dir is not None else None
    last_path = run_dir / "last.pt" if run_dir is not None else None
    device = resolve_device(settings.device)
    model.to(device)
    if settings.channels_last:
        model.to(memory_format=torch.channels_last)
    loader = train_loader(train_data, settings.batch_size, settings.num_workers, settings.seed or 0,
                          pin_memory=device.type == "cuda")
    if not lr_scale > 0:
        raise ConfigError(f"{phase}: lr_scale must be > 0, got {lr_scale!r}")
    check_count(schedule_start, "schedule_start", 0, where=phase)
    schedule_epochs = schedule_start + epochs if schedule_epochs is None else schedule_epochs
    check_count(schedule_epochs, "schedule_epochs", schedule_start + epochs, where=phase)
    run = _build_run(model, loader, epochs, phase, settings, device, meta or {}, identity or {}, optimizer,
                     scheduler, optimizer_state, lr_scale, (schedule_start, schedule_epochs),
                     model if deployable is None else deployable)

    state, source = resume_state(run_dir, device) if resume and run_dir is not None else (None, None)
    if state is not None:
        _restore(run, state, source, custom_optimizer=optimizer is not None,
                 needs_optimizer_state=keep_optimizer_state, last_path=run_dir / "last.pt")
    elif settings.seed is not None:
        seed_everything(settings.seed)
    if resume:
        log.rewind(phase, run.first_epoch, run.global_step)

    last_good = f"The last good checkpoint is {last_path}." if last_path is not None else "No checkpoint is kept."
    train_model = wrap_ddp(model, device)
    began = time.perf_counter()
    for epoch in range(run.first_epoch, epochs):
        epoch_began = time.perf_counter()
        record = _train_epoch(run, train_model, epoch, loss_fn, check, log, callbacks, last_good)
        if evaluate is not None:
            record.update(_validate(run, epoch, evaluate, best_key, run_dir))
        record["seconds"] = round(time.perf_counter() - epoch_began, 3)
        run.history.append(record)
        log.write(record)
        log.epoch_line(phase, epoch, epochs, {k: v for k, v in record.items()
                                              if k not in ("phase", "epoch") and isinstance(v, float)})
        if last_path is not None and is_main_process():
            save_checkpoint(_checkpoint(run, epoch + 1, resumable=True), last_path)
        barrier()
        last_good = f"The last good checkpoint is {last_path} (after epoch {epoch})." if last_path else last_good
        _notify(callbacks, LoopState(phase, "epoch_end", epoch, epochs, len(loader) - 1, run.global_step,
                                     record.get("loss", math.nan), model, run.opt, record))
    final_path = run_dir / "model.pt" if run_dir is not None else None
    # A phase resumed after it had finished keeps its model.pt as it was written.
    if final_path is not None and is_main_process() and (run.first_epoch < epochs or not final_path.is_file()):
        save_checkpoint(_checkpoint(run, epochs, resumable=False), final_path)
    barrier()
    return FitResult(run.history, run.best_metric, run.best_epoch, time.perf_counter() - began, run.resumed_from,
                     run.opt.state_dict() if keep_optimizer_state else None)


@dataclass
class _Run:
    """One call of :func:`fit`: what it trains with (built once) and where it stands (what a checkpoint records)."""

    model: nn.Module
    loader: DataLoader
    epochs: int
    phase: str
    settings: TrainSettings
    device: torch.device
    meta: dict[str, Any]
    identity: dict[str, Any]
    opt: torch.optim.Optimizer
    sched: Any
    scaler: Any
    #: What model.pt and best.pt hold (fit's ``deployable``): ``model`` or a part of it.
    deployable: nn.Module
    lr_scale: float = 1.0
    lr_schedule: tuple[int, int] = (0, 0)
    first_epoch: int = 0
    global_step: int = 0
    best_metric: float | None = None
    best_epoch: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int | None = None


def _build_run(
    model: nn.Module, loader: DataLoader, epochs: int, phase: str, settings: TrainSettings, device: torch.device,
    meta: dict[str, Any], identity: dict[str, Any], optimizer: OptimizerFactory | None,
    scheduler: SchedulerFactory | None, optimizer_state: dict[str, Any] | None, lr_scale: float,
    lr_schedule: tuple[int, int], deployable: nn.Module,
) -> _Run:
    """The optimiser (scaled, with an earlier phase's state carried in), the schedule over every step of
    ``lr_schedule = (start, epochs)`` advanced to its ``start``, the grad scaler."""
    steps_per_epoch = math.ceil(len(loader) / settings.grad_accum_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (optimizer or sgd(settings.lr, settings.momentum, settings.weight_decay))(params)
    for group in opt.param_groups:
        group["lr"] *= lr_scale
    if optimizer_state is not None:
        carry_optimizer_state(opt, optimizer_state, phase)
    start, planned = lr_schedule
    sched = (scheduler or poly_schedule(settings.poly_power))(opt, planned * steps_per_epoch)
    # Stepping the schedule itself works for any scheduler a factory builds; no optimiser step has been taken yet,
    # which torch would warn about, on purpose here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
        for _ in range(start * steps_per_epoch):
            sched.step()
    scaler = make_grad_scaler(device, settings.amp)
    return _Run(model, loader, epochs, phase, settings, device, meta, identity, opt, sched, scaler, deployable,
                lr_scale, lr_schedule)


def _restore(
    run: _Run, state: dict[str, Any], source: Path, *, custom_optimizer: bool, needs_optimizer_state: bool,
    last_path: Path,
) -> None:
    """Resumes ``run`` from a checkpoint: weights, optimiser, schedule, scaler, RNGs and where the phase stood.

    Raises a TrainingError naming every difference between the checkpoint's plan and this call's.
    """
    if "optimizer" not in state and run.deployable is not run.model:
        raise CheckpointError(f"{last_path} is unreadable, and {source} holds only the deployed part of "
                              f"{run.phase!r}'s model: train {run.phase!r} again (remove {last_path.parent})")
    load_model_state(run.model, state["model"], source)
    differences = resume_differences(state, run.phase, run.epochs, run.settings, run.identity, run.lr_scale,
                                     run.opt if custom_optimizer else None, run.lr_schedule)
    if differences:
        raise TrainingError(
            f"cannot resume {run.phase!r} from {source}: it was made with {'; '.join(differences)}. Resume with "
            "the settings it was made with, or train in another out_dir"
        )
    if "optimizer" in state:  # last.pt; model.pt of a finished phase holds the weights only
        run.opt.load_state_dict(state["optimizer"])
        run.sched.load_state_dict(state["scheduler"])
        run.scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
    elif needs_optimizer_state:
        raise CheckpointError(f"{last_path} is unreadable, and only it holds the optimiser state that the next "
                              f"phase carries over: train {run.phase!r} again (remove {last_path.parent})")
    run.first_epoch = run.resumed_from = state["epoch"]
    run.best_metric, run.best_epoch, run.history = state["best_metric"], state["best_epoch"], list(state["history"])
    run.global_step = state["global_step"]


def _train_epoch(
    run: _Run, train_model: nn.Module, epoch: int, loss_fn: LossFn, check: Callable[[dict], None] | None,
    log: RunLog, callbacks: Sequence[Callback], last_good: str,
) -> dict[str, Any]:
    """One pass over the data, stepping every ``grad_accum_steps`` batches; the epoch's record (mean loss parts,
    learning rate) so far."""
    settings, loader, opt, accum = run.settings, run.loader, run.opt, run.settings.grad_accum_steps
    run.model.train()
    start_epoch(loader, epoch, settings.seed or 0)
    _notify(callbacks, LoopState(run.phase, "epoch_start", epoch, run.epochs, 0, run.global_step, math.nan,
                                 run.model, opt))
    opt.zero_grad(set_to_none=True)
    sums: dict[str, float] = {}
    batches = progress(loader, enabled=settings.progress, desc=f"{run.phase} {epoch + 1}/{run.epochs}", leave=False)
    for index, batch in enumerate(batches):
        batch = move_batch(batch, run.device, settings.channels_last)
        if check is not None:
            check(batch)
        steps_now = (index + 1) % accum == 0 or index + 1 == len(loader)
        no_sync = isinstance(train_model, DistributedDataParallel) and not steps_now
        with train_model.no_sync() if no_sync else contextlib.nullcontext():
            with autocast(run.device, settings.amp):
                parts = loss_fn(train_model, batch, epoch)
            values = _reduce_parts(parts, run.phase, epoch, index, last_good)
            run.scaler.scale(parts["loss"] / accum).backward()
        if steps_now:
            run.scaler.step(opt)
            run.scaler.update()
            opt.zero_grad(set_to_none=True)
            run.sched.step()
            run.global_step += 1
            if settings.log_every and run.global_step % settings.log_every == 0:
                log.write({"phase": run.phase, "epoch": epoch, "step": run.global_step, **values,
                           "lr": opt.param_groups[0]["lr"]})
        for name, value in values.items():
            sums[name] = sums.get(name, 0.0) + value
        _notify(callbacks, LoopState(run.phase, "step_end", epoch, run.epochs, index, run.global_step,
                                     values["loss"], run.model, opt))

    record: dict[str, Any] = {"phase": run.phase, "epoch": epoch}
    record.update({name: total / len(loader) for name, total in sums.items()})
    record["lr"] = opt.param_groups[0]["lr"]
    return record


def _validate(
    run: _Run, epoch: int, evaluate: Callable[[nn.Module], dict[str, Any]], best_key: str, run_dir: Path | None
) -> dict[str, float]:
    """Evaluates the model; a new best ``best_key`` is remembered and its weights written to ``best.pt``."""
    metrics = evaluate(run.model)
    value = metrics.get(best_key)
    if value is not None and math.isfinite(value) and (run.best_metric is None or value > run.best_metric):
        run.best_metric, run.best_epoch = float(value), epoch
        if run_dir is not None and is_main_process():
            save_checkpoint({"format": CHECKPOINT_FORMAT, "phase": run.phase, "epoch": epoch + 1,
                             "model": run.deployable.state_dict(), "metric": {best_key: run.best_metric},
                             "meta": run.meta}, run_dir / "best.pt")
    return {f"val_{k}": v for k, v in metrics.items() if isinstance(v, float)}


def _checkpoint(run: _Run, epoch: int, *, resumable: bool) -> dict[str, Any]:
    """The checkpoint record after ``epoch`` epochs: ``last.pt`` (``resumable``: with the optimiser, schedule,
    scaler and RNG states) or ``model.pt`` (the weights and the phase's record only)."""
    record = {"format": CHECKPOINT_FORMAT, "phase": run.phase, "epoch": epoch, "epochs": run.epochs,
              "global_step": run.global_step, "model": (run.model if resumable else run.deployable).state_dict()}
    if resumable:
        record.update(optimizer=run.opt.state_dict(), optimizer_class=type(run.opt).__name__,
                      scheduler=run.sched.state_dict(), scaler=run.scaler.state_dict(), rng=capture_rng_state())
    record.update(best_metric=run.best_metric, best_epoch=run.best_epoch, history=run.history,
                  settings=run.settings.to_dict(), lr_scale=run.lr_scale,
                  lr_schedule=list(run.lr_schedule), meta=run.meta, identity=run.identity)
    return record


def _notify(callbacks: Sequence[Callback], state: LoopState) -> None:
    for callback in callbacks:
        callback(state)
