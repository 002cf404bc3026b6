"""SegmentationMetrics against a confusion matrix built by hand."""

import math
import os

import pytest
import torch

from depthdistill import SegmentationMetrics
from depthdistill.engine import shutdown_distributed


def test_against_hand_built_confusion_matrix():
    # 4 classes; class 3 never appears in the ground truth (only predicted once); 255 is void.
    target = torch.tensor([[0, 0, 0, 1, 1, 2, 255, 255],
                           [2, 2, 1, 0, 255, 1, 1, 2]])
    pred = torch.tensor([[0, 0, 1, 1, 1, 2, 3, 0],
                         [2, 3, 1, 0, 2, 2, 1, 2]])
    # rows = gt, cols = pred, counted by hand from the pairs above (void pixels skipped)
    cm = [[3, 1, 0, 0],   # gt 0: pred 0,0,1 (row 0) and 0 (row 1)
          [0, 4, 1, 0],   # gt 1: pred 1,1 (row 0), 1,2,1 (row 1)
          [0, 0, 3, 1],   # gt 2: pred 2 (row 0), 2,3,2 (row 1)
          [0, 0, 0, 0]]
    m = SegmentationMetrics(num_classes=4)
    m.update(pred[:1], target[:1])
    m.update(pred[1:], target[1:])
    r = m.compute()
    assert r["confusion_matrix"] == cm
    assert r["pixel_accuracy"] == pytest.approx(10 / 13)
    acc = [3 / 4, 4 / 5, 3 / 4]
    iou = [3 / (4 + 3 - 3), 4 / (5 + 5 - 4), 3 / (4 + 4 - 3)]
    assert r["per_class_accuracy"][:3] == pytest.approx(acc) and math.isnan(r["per_class_accuracy"][3])
    assert r["per_class_iou"][:3] == pytest.approx(iou) and math.isnan(r["per_class_iou"][3])
    assert r["mean_pixel_accuracy"] == pytest.approx(sum(acc) / 3)
    assert r["mean_iou"] == pytest.approx(sum(iou) / 3)
    assert r["frequency_weighted_iou"] == pytest.approx((4 * iou[0] + 5 * iou[1] + 4 * iou[2]) / 13)


def test_logits_merge_and_reset():
    target = torch.randint(0, 3, (2, 5, 5))
    logits = torch.randn(2, 3, 5, 5)
    a, b = SegmentationMetrics(3), SegmentationMetrics(3)
    a.update(logits, target)
    b.update(logits.argmax(1), target)
    assert a.compute() == b.compute()
    a.merge(b)
    assert a.confusion_matrix.sum() == 2 * 50
    a.all_reduce()  # no process group: a no-op
    a.reset()
    assert a.confusion_matrix.sum() == 0 and math.isnan(a.compute()["pixel_accuracy"])


def test_errors():
    m = SegmentationMetrics(3)
    with pytest.raises(ValueError, match=r"labels \[5\] outside"):
        m.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.tensor([[[0, 5], [1, 255]]]))
    with pytest.raises(ValueError, match="shape"):
        m.update(torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="classes"):
        m.update(torch.zeros(1, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))


def _ddp_worker(rank, world_size, port, preds, targets, out):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    m = SegmentationMetrics(3)
    m.update(preds[rank], targets[rank])
    out[rank] = m.all_reduce().compute()["confusion_matrix"]
    shutdown_distributed()
    os._exit(0)  # nothing left to do: skip interpreter teardown, where gloo's threads once aborted a CI run


def test_all_reduce_over_two_processes_equals_whole_set():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    preds = [torch.randint(0, 3, (1, 4, 4)) for _ in range(2)]
    targets = [torch.randint(0, 3, (1, 4, 4)) for _ in range(2)]
    out = mp.Manager().dict()
    mp.spawn(_ddp_worker, args=(2, port, preds, targets, out), nprocs=2, join=True)
    whole = SegmentationMetrics(3)
    whole.update(torch.cat(preds), torch.cat(targets))
    assert out[0] == out[1] == whole.compute()["confusion_matrix"]
