"""Evaluation of a segmenter over a whole set: one confusion matrix, reduced over processes under DDP."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from depthdistill.convert import list_depth_aware
from depthdistill.engine.checks import check_batch
from depthdistill.engine.device import autocast, move_batch, resolve_device
from depthdistill.engine.distributed import unwrap
from depthdistill.engine.loader import eval_loader
from depthdistill.engine.run_log import progress
from depthdistill.errors import ConfigError
from depthdistill.labels import VOID
from depthdistill.metrics import SegmentationMetrics
from depthdistill.nn import DepthResize, depth_context

__all__ = ["evaluate", "select_logits", "OutputKey"]

#: Where the logits are in a model's output: ``None`` (the output itself, or its ``"out"`` entry when it is a dict,
#: as torchvision's segmentation models return), a key of the output dict, or a function ``output -> logits``.
OutputKey = str | Callable[[Any], torch.Tensor] | None


def select_logits(output: Any, output_key: OutputKey = None) -> Any:
    """The logits in a model's output, as :data:`OutputKey` says where they are.

    Args:
        output: What the model's forward returned.
        output_key: ``None``, a dict key, or a callable ``output -> logits``.

    Returns:
        The selected value (the caller checks it is a logits tensor).

    Raises:
        ConfigError: If the output is a dict without that key, or a key is given but the output is no dict.

    Examples:
        >>> logits = torch.zeros(1, 2, 4, 4)
        >>> select_logits({"out": logits, "aux": None}) is logits
        True
        >>> select_logits((logits, 0.5), lambda out: out[0]) is logits
        True
    """
    if callable(output_key):
        return output_key(output)
    if isinstance(output, Mapping):
        key = "out" if output_key is None else output_key
        if key not in output:
            raise ConfigError(f"the model returned a dict with keys {sorted(map(str, output))} and no {key!r}: pass "
                              "output_key=<the key holding the logits> (or a function output -> logits)")
        return output[key]
    if output_key is not None:
        raise ConfigError(f"output_key={output_key!r} but the model returned a {type(output).__name__}, not a dict: "
                          "leave output_key unset or pass a function output -> logits")
    return output


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Dataset | DataLoader,
    num_classes: int,
    *,
    ignore_index: int = VOID,
    use_depth: bool | None = None,
    depth_resize: DepthResize | None = None,
    output_key: OutputKey = None,
    device: str | torch.device = "auto",
    batch_size: int = 1,
    num_workers: int = 0,
    amp: bool = False,
    channels_last: bool = False,
    show_progress: bool | None = None,
) -> dict[str, Any]:
    """Metrics of ``model`` on ``data`` from one confusion matrix over the whole set (never averaged per image).

    Args:
        model: A segmenter returning ``(B, num_classes, H, W)`` logits (a DDP wrapper is unwrapped).
        data: Samples (``depth`` needed only when it is used).
        num_classes: Number of classes.
        ignore_index: Void label, not counted.
        use_depth: Run the forward inside :func:`~depthdistill.depth_context`; default: when the model has
            depth-aware layers (a teacher is evaluated on RGB-D, a student on RGB).
        depth_resize: How depth is brought to each layer's resolution (see :func:`~depthdistill.depth_context`);
            ``None`` (default): each depth-aware layer's own, as the teacher was converted.
        output_key: Where the logits are in the model's output (see :func:`select_logits`).
        device: Where to run (the model is moved there).
        batch_size: Samples per forward.
        num_workers: Loader workers.
        amp: Mixed precision.
        channels_last: channels_last images.
        show_progress: Progress bar (``None``: when stderr is a terminal).

    Returns:
        :meth:`~depthdistill.SegmentationMetrics.compute`'s dict: ``pixel_accuracy``, ``mean_pixel_accuracy``,
        ``mean_iou``, per-class lists and the confusion matrix. Under DDP each process evaluates a disjoint share
        and the matrices are summed, so every process returns the metrics of the whole set.

    Examples:
        >>> net = torch.nn.Conv2d(3, 2, 1)
        >>> data = [{"rgb": torch.randn(3, 4, 4), "label": torch.zeros(4, 4, dtype=torch.long)}]
        >>> 0.0 <= evaluate(net, data, 2, device="cpu", show_progress=False)["pixel_accuracy"] <= 1.0
        True
    """
    model = unwrap(model)
    if use_depth is None:
        use_depth = bool(list_depth_aware(model))
    device = resolve_device(device)
    model.to(device)
    metrics = SegmentationMetrics(num_classes, ignore_index, device=device)
    was_training = model.training
    model.eval()
    try:
        for batch in progress(eval_loader(data, batch_size, num_workers), enabled=show_progress, desc="evaluate",
                              leave=False):
            batch = move_batch(batch, device, channels_last)
            check_batch(batch, num_classes=num_classes, ignore_index=ignore_index, needs_depth=use_depth,
                        where="evaluation data")
            with autocast(device, amp):
                if use_depth:
                    with depth_context(batch["depth"], resize=depth_resize):
                        logits = select_logits(model(batch["rgb"]), output_key)
                else:
                    logits = select_logits(model(batch["rgb"]), output_key)
            metrics.update(logits.float(), batch["label"])
    finally:
        model.train(was_training)
    return metrics.all_reduce().compute()
