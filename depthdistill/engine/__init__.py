"""Training machinery shared by every phase: the loop, its settings, resume, checkpoints, logging, devices, data
loaders, DDP."""

from depthdistill.engine.checkpoint import (
    capture_rng_state,
    checksum,
    load_checkpoint,
    load_model_state,
    restore_rng_state,
    save_checkpoint,
)
from depthdistill.engine.checks import check_batch, check_dataset, check_model
from depthdistill.engine.device import autocast, move_batch, resolve_device
from depthdistill.engine.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    get_rank,
    get_world_size,
    init_distributed,
    is_distributed,
    is_main_process,
    shutdown_distributed,
    unwrap,
    wrap_ddp,
)
from depthdistill.engine.evaluate import OutputKey, evaluate, select_logits
from depthdistill.engine.loader import eval_loader, start_epoch, train_loader
from depthdistill.engine.loop import Callback, FitResult, LoopState, LossFn, fit, seed_everything
from depthdistill.engine.optim import OptimizerFactory, SchedulerFactory, poly_schedule, sgd
from depthdistill.engine.run_log import RunLog, progress
from depthdistill.engine.settings import RESUME_SETTINGS, TrainSettings

__all__ = [
    "RESUME_SETTINGS",
    "Callback",
    "DistInfo",
    "FitResult",
    "LoopState",
    "LossFn",
    "OptimizerFactory",
    "OutputKey",
    "RunLog",
    "SchedulerFactory",
    "TrainSettings",
    "all_reduce_sum",
    "autocast",
    "barrier",
    "capture_rng_state",
    "checksum",
    "check_batch",
    "check_dataset",
    "check_model",
    "eval_loader",
    "evaluate",
    "fit",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "load_checkpoint",
    "load_model_state",
    "move_batch",
    "poly_schedule",
    "progress",
    "resolve_device",
    "restore_rng_state",
    "save_checkpoint",
    "seed_everything",
    "select_logits",
    "shutdown_distributed",
    "sgd",
    "start_epoch",
    "train_loader",
    "unwrap",
    "wrap_ddp",
]
