"""Segmentation metrics from one confusion matrix accumulated over a whole set: pixel accuracy, mPA, mIoU."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from depthdistill.errors import ConfigError, DatasetError
from depthdistill.labels import VOID

__all__ = ["SegmentationMetrics"]


class SegmentationMetrics:
    """Accumulates a ``num_classes × num_classes`` confusion matrix (rows: ground truth, columns: prediction).

    Metrics are computed from the matrix of the whole set, never averaged over images. A class that never
    occurs in the ground truth has NaN accuracy and IoU and is left out of the means (``nanmean``), so absent
    classes neither help nor hurt.

    Args:
        num_classes: Number of classes ``C``; labels are ``0..C−1``.
        ignore_index: Label of void pixels, which are not counted.
        device: Where the matrix lives (default: the device of the first update).

    Examples:
        >>> m = SegmentationMetrics(num_classes=3)
        >>> m.update(torch.tensor([[0, 1, 2]]), torch.tensor([[0, 1, 1]]))
        >>> round(m.compute()["pixel_accuracy"], 4)
        0.6667
    """

    def __init__(self, num_classes: int, ignore_index: int = VOID, device: torch.device | str | None = None) -> None:
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.confusion_matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def reset(self) -> None:
        """Clears the accumulated matrix."""
        self.confusion_matrix.zero_()

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Adds a batch.

        Args:
            pred: Predicted labels ``(B, H, W)`` or logits ``(B, C, H, W)`` (arg-maxed over ``C``).
            target: Ground truth ``(B, H, W)``, ``ignore_index`` for void.

        Raises:
            ConfigError: On mismatched shapes or class counts.
            DatasetError: On target labels outside ``0..C−1`` other than ``ignore_index``.
        """
        if pred.dim() == target.dim() + 1:
            if pred.shape[1] != self.num_classes:
                raise ConfigError(f"logits have {pred.shape[1]} classes, expected {self.num_classes}")
            pred = pred.argmax(dim=1)
        if pred.shape != target.shape:
            raise ConfigError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        if self.confusion_matrix.device != target.device:
            self.confusion_matrix = self.confusion_matrix.to(target.device)
        target, pred = target.reshape(-1).long(), pred.reshape(-1).to(target.device).long()
        keep = target != self.ignore_index
        target, pred = target[keep], pred[keep]
        if target.numel() and (target.min() < 0 or target.max() >= self.num_classes):
            bad = target[(target < 0) | (target >= self.num_classes)].unique()[:10].tolist()
            raise DatasetError(
                f"target has labels {bad} outside 0..{self.num_classes - 1} (ignore_index={self.ignore_index}); "
                "check num_classes and the dataset's label mapping"
            )
        if pred.numel() and (pred.min() < 0 or pred.max() >= self.num_classes):
            raise ConfigError(f"prediction has labels outside 0..{self.num_classes - 1}")
        counts = torch.bincount(target * self.num_classes + pred, minlength=self.num_classes**2)
        self.confusion_matrix += counts.view(self.num_classes, self.num_classes)

    def merge(self, other: SegmentationMetrics) -> SegmentationMetrics:
        """Adds another accumulator's counts to this one (e.g. from a sharded evaluation); returns ``self``."""
        if other.num_classes != self.num_classes:
            raise ConfigError(f"cannot merge {other.num_classes}-class metrics into {self.num_classes}-class ones")
        self.confusion_matrix += other.confusion_matrix.to(self.confusion_matrix.device)
        return self

    def all_reduce(self, group: dist.ProcessGroup | None = None) -> SegmentationMetrics:
        """Sums the matrix over all processes (DDP), so every rank computes the metrics of the whole set.

        A no-op when ``torch.distributed`` is not initialised. Returns ``self``.
        """
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.confusion_matrix, op=dist.ReduceOp.SUM, group=group)
        return self

    def compute(self) -> dict:
        """Metrics of everything accumulated so far.

        Returns:
            ``pixel_accuracy`` (overall), ``mean_pixel_accuracy`` (mPA: mean class accuracy), ``mean_iou`` (mIoU),
            ``frequency_weighted_iou`` (floats), ``per_class_accuracy`` and ``per_class_iou`` (lists, NaN for
            classes absent from the ground truth) and ``confusion_matrix`` (nested lists of ints).
        """
        cm = self.confusion_matrix.double().cpu()
        true_pos = cm.diag()
        gt_count = cm.sum(dim=1)
        pred_count = cm.sum(dim=0)
        present = gt_count > 0
        nan = torch.full_like(true_pos, float("nan"))
        class_acc = torch.where(present, true_pos / gt_count.clamp_min(1), nan)
        union = gt_count + pred_count - true_pos
        iou = torch.where(present, true_pos / union.clamp_min(1), nan)
        total = gt_count.sum()
        freq = gt_count / total.clamp_min(1)
        return {
            "pixel_accuracy": float(true_pos.sum() / total) if total > 0 else float("nan"),
            "mean_pixel_accuracy": float(class_acc.nanmean()),
            "mean_iou": float(iou.nanmean()),
            "frequency_weighted_iou": float((freq[present] * iou[present]).sum()) if total > 0 else float("nan"),
            "per_class_accuracy": class_acc.tolist(),
            "per_class_iou": iou.tolist(),
            "confusion_matrix": self.confusion_matrix.cpu().tolist(),
        }
