"""Checks of sample batches against the library's data convention, with errors that say what to fix.

A sample is ``{"rgb": (3,H,W) float, "depth": (1,H,W) float metres (0 = missing), "label": (H,W) int64 with the
ignore index for void, "id": str}``; a batch stacks them. The trainer checks a spread of samples before training
starts and every batch as it goes, so a wrong ``num_classes`` or a dataset without depth fails at once with a
clear message instead of a CUDA assert or a silently depth-free teacher.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from depthdistill.errors import ConfigError, DatasetError, DepthError
from depthdistill.labels import VOID
from depthdistill.nn.depth import check_depth_size, valid_depth
from depthdistill.nn.units import check_depth_units

__all__ = ["check_batch", "check_dataset", "check_model"]

# RGB in 0..1 stays below it (colour jitter included), and mean/std normalisation makes values negative: a
# batch with no negative value and a maximum above this is almost certainly 0..255.
_RGB_0_255_MAX = 10.0


def check_model(model: nn.Module) -> None:
    """Raises if ``model`` cannot be trained as it is: its parameters or buffers are on the meta device.

    Raises:
        ConfigError: Naming the first tensor without data, and how to materialise the model.

    Examples:
        >>> check_model(nn.Conv2d(3, 4, 3))
        >>> check_model(nn.Conv2d(3, 4, 3, device="meta"))
        Traceback (most recent call last):
        ...
        depthdistill.errors.ConfigError: the model's 'weight' is on the meta device ...
    """
    meta = next((n for n, t in itertools.chain(model.named_parameters(), model.named_buffers()) if t.is_meta), None)
    if meta is not None:
        raise ConfigError(
            f"the model's {meta!r} is on the meta device (a shape without values): the model must hold real weights "
            "to be trained. Materialise it first, e.g. model.to_empty(device='cpu') then initialise it or "
            "model.load_state_dict(weights, assign=True)"
        )


def _ids(batch: dict[str, Any], rows: torch.Tensor | None = None) -> str:
    ids = batch.get("id")
    if ids is None:
        return ""
    ids = [ids] if isinstance(ids, str) else list(ids)
    if rows is not None:
        ids = [ids[i] for i in rows.tolist() if i < len(ids)]
    return f" (sample id(s) {ids[:5]})"


def check_batch(
    batch: dict[str, Any], *, num_classes: int, ignore_index: int = VOID, needs_depth: bool = False, where: str = "",
    needs_label: bool = True,
) -> None:
    """Raises if ``batch`` breaks the sample convention.

    Args:
        batch: A batch dict (``rgb`` ``(B,3,H,W)``, ``label`` ``(B,H,W)``, ``depth`` ``(B,1,H,W)``).
        num_classes: Valid labels are ``0..num_classes−1`` and ``ignore_index``.
        ignore_index: The void label.
        needs_depth: The batch feeds a depth-aware teacher: depth must be present, of the image's size (the rule
            :func:`~depthdistill.nn.depth.check_depth_size` states, which the depth context applies too), and
            valid (> 0 and finite) somewhere.
        where: Words naming the data in the message (e.g. ``"teacher training data"``).
        needs_label: ``False`` for unlabelled frames: the batch must then have no ``"label"`` (a labelled batch
            where unlabelled frames are expected is a mix-up of the two data sets).

    Raises:
        DatasetError: Missing keys, wrong shapes or dtypes, labels out of range, a label on unlabelled frames, RGB
            that looks like 0..255 (no negative value and a maximum above 10) rather than 0..1 or normalised.
        DepthError: ``needs_depth`` and the depth is missing, misshapen or empty.

    Examples:
        >>> b = {"rgb": torch.zeros(1, 3, 2, 2), "label": torch.tensor([[[0, 1], [255, 7]]])}
        >>> check_batch(b, num_classes=3)
        Traceback (most recent call last):
        ...
        depthdistill.errors.DatasetError: labels [7] are >= num_classes=3 ...
    """
    where = f" in {where}" if where else ""
    if not needs_label and "label" in batch:
        raise DatasetError(f"samples{where} have a 'label': unlabelled frames are samples without one; pass the "
                           "labelled images as the training data, and unlabelled frames (e.g. "
                           "depthdistill.data.without_labels(dataset)) as the unlabelled data")
    for key in ("rgb", "label") if needs_label else ("rgb",):
        if not isinstance(batch.get(key), torch.Tensor):
            raise DatasetError(f"samples{where} have no tensor {key!r} (keys: {sorted(batch)}); a sample is a dict "
                               "with 'rgb' (3,H,W) float, 'depth' (1,H,W) metres, 'label' (H,W) int64")
    rgb = batch["rgb"]
    if rgb.dim() != 4 or rgb.shape[1] != 3 or not rgb.is_floating_point():
        raise DatasetError(f"'rgb'{where} must be float (B,3,H,W), got {rgb.dtype} {tuple(rgb.shape)}")
    if rgb.numel() and bool((rgb.amin() >= 0) & (rgb.amax() > _RGB_0_255_MAX)):
        raise DatasetError(
            f"'rgb'{where} looks like 0..255 (min {rgb.amin().item():g}, max {rgb.amax().item():g}){_ids(batch)}: "
            "the library expects float RGB in 0..1, optionally mean/std-normalised (the first loss would be huge and "
            "training silently poor); divide it by 255, or load images with depthdistill.data's datasets and "
            "transforms (Normalize expects 0..1)"
        )
    if needs_label:
        _check_labels(batch, rgb, num_classes, ignore_index, where)
    if needs_depth:
        _check_depth(batch, rgb, where)


def _check_labels(batch: dict[str, Any], rgb: torch.Tensor, num_classes: int, ignore_index: int, where: str) -> None:
    label = batch["label"]
    if label.dim() != 3 or label.shape[0] != rgb.shape[0] or label.shape[-2:] != rgb.shape[-2:]:
        raise DatasetError(f"'label'{where} must be (B,H,W) matching rgb {tuple(rgb.shape)}, got {tuple(label.shape)}")
    if label.is_floating_point() or label.dtype == torch.bool:
        raise DatasetError(f"'label'{where} must be an integer tensor (int64), got {label.dtype}")
    valid = label != ignore_index
    bad = valid & ((label < 0) | (label >= num_classes))
    if bool(bad.any()):
        values = label[bad].unique()[:10].tolist()
        rows = bad.flatten(1).any(dim=1).nonzero().flatten()
        raise DatasetError(
            f"labels {values} are >= num_classes={num_classes} or negative (ignore_index={ignore_index}){where}"
            f"{_ids(batch, rows)}; set num_classes to the dataset's class count or map those labels to "
            f"{ignore_index} (void)"
        )


def _check_depth(batch: dict[str, Any], rgb: torch.Tensor, where: str) -> None:
    depth = batch.get("depth")
    if not isinstance(depth, torch.Tensor):
        raise DepthError(f"the teacher needs depth but the samples{where} have no 'depth' tensor "
                         f"(keys: {sorted(batch)}); use an RGB-D dataset for the teacher phase")
    if depth.dim() == 3:
        depth = depth.unsqueeze(1)
    if depth.dim() != 4 or depth.shape[1] != 1 or depth.shape[0] != rgb.shape[0]:
        raise DepthError(f"'depth'{where} must be (B,1,H,W) matching rgb {tuple(rgb.shape)}, got {tuple(depth.shape)}")
    check_depth_size(depth.shape[-2:], rgb.shape[-2:], f"'depth'{where}", image=True)
    if not depth.is_floating_point():
        raise DepthError(f"'depth'{where} must be float metres, got {depth.dtype}")
    empty = ~valid_depth(depth).flatten(1).any(dim=1)
    if bool(empty.all()):
        raise DepthError(f"'depth'{where} has no valid pixel (all <= 0 or non-finite){_ids(batch)}; the teacher "
                         "would learn nothing from depth: check the depth files and their units (metres)")


def _spread(n: int, count: int | None) -> Sequence[int]:
    if count is None or count >= n:
        return range(n)
    return sorted({round(i * (n - 1) / max(count - 1, 1)) for i in range(count)})


def check_dataset(
    data: Dataset | DataLoader,
    *,
    num_classes: int,
    ignore_index: int = VOID,
    needs_depth: bool = False,
    samples: int | None = 64,
    where: str = "",
    depth_range: tuple[float, float] | None = None,
    needs_label: bool = True,
) -> None:
    """Checks ``samples`` samples spread evenly over ``data`` (``None``: all) with :func:`check_batch`.

    For a ``DataLoader`` its first batch is checked; a dataset without ``len`` is left to the per-batch checks.
    With ``needs_depth`` the checked samples' depth must also look like metres: their median valid depth within
    ``depth_range`` (see :func:`~depthdistill.nn.check_depth_units`).

    Args:
        data: A map-style dataset of sample dicts or a ``DataLoader``.
        num_classes: As in :func:`check_batch`.
        ignore_index: As in :func:`check_batch`.
        needs_depth: As in :func:`check_batch`, plus the units check.
        samples: How many samples to check.
        where: Words naming the data in the message.
        depth_range: Plausible median depth in metres; default :data:`depthdistill.nn.units.DEPTH_RANGE`.
        needs_label: As in :func:`check_batch` (``False``: unlabelled frames).

    Raises:
        DatasetError: If the set is empty or a sample breaks the convention.
        DepthError: As in :func:`check_batch`, or the depth is not in metres (millimetres, most often).

    Examples:
        >>> sample = {"rgb": torch.zeros(3, 2, 2), "label": torch.zeros(2, 2, dtype=torch.long)}
        >>> check_dataset([sample], num_classes=2)
    """
    kwargs = dict(num_classes=num_classes, ignore_index=ignore_index, needs_depth=needs_depth, where=where,
                  needs_label=needs_label)
    if isinstance(data, DataLoader):
        batch = next(iter(data), None)
        if batch is None:
            raise DatasetError(f"the data loader{' for ' + where if where else ''} yields no batch")
        check_batch(batch, **kwargs)
        depths = [batch.get("depth")]
    elif not hasattr(data, "__len__"):
        return
    else:
        if len(data) == 0:
            raise DatasetError(f"the dataset{' for ' + where if where else ''} is empty")
        depths = []
        for index in _spread(len(data), samples):
            sample = data[index]
            if not isinstance(sample, dict):
                raise DatasetError(f"sample {index}{' of ' + where if where else ''} is a {type(sample).__name__}, "
                                   "expected a dict with 'rgb', 'depth', 'label', 'id'")
            batch = {k: v.unsqueeze(0) if isinstance(v, torch.Tensor) else [v] for k, v in sample.items()}
            check_batch(batch, **kwargs)
            depths.append(batch.get("depth"))
    if needs_depth:
        # One median over the checked samples (an even share of each), so a single close-up image does not make
        # a data set wrong.
        share = [d.detach().flatten() for d in depths]
        share = [d[:: max(1, d.numel() // 4096)].float().cpu() for d in share]
        check_depth_units(torch.cat(share), depth_range, where=where or "the data")
