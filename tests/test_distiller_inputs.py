"""The Distiller on the inputs a new user brings: millimetre depth, narrow label types, dict outputs, meta models."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from tiny_rgbd import NUM_CLASSES, TinyRGBD, TinySegmenter

from depthdistill.distiller import Distiller
from depthdistill.errors import ConfigError, DepthError

FAST = dict(progress=False, log_echo=False, device="cpu")


class _Transformed(torch.utils.data.Dataset):
    def __init__(self, data, **change):
        self.data, self.change = data, change

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        sample = dict(self.data[index])
        for key, fn in self.change.items():
            sample[key] = fn(sample[key])
        return sample


def test_depth_in_millimetres_is_refused_before_training(tmp_path):
    d = Distiller(TinySegmenter(), NUM_CLASSES, out_dir=tmp_path, **FAST)
    mm = _Transformed(TinyRGBD(4), depth=lambda z: z * 1000)  # 1000..3000 instead of 1..3 m
    with pytest.raises(DepthError, match=r"teacher training data: median valid depth is \d+ .*millimetres.*/ 1000"):
        d.train_teacher(mm, epochs=1)
    assert not (tmp_path / "teacher" / "last.pt").exists()


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32])
def test_narrow_integer_labels_train_and_evaluate_like_int64(dtype):
    data = TinyRGBD(3)
    narrow = _Transformed(data, label=lambda y: y.to(dtype))
    assert narrow[0]["label"].dtype == dtype
    runs = []
    for dataset in (data, narrow):
        torch.manual_seed(0)
        d = Distiller(TinySegmenter(dropout=0.0), NUM_CLASSES, seed=0, **FAST)
        d.train_teacher(dataset, epochs=1)
        student = d.train_student(dataset, epochs=1)
        runs.append((d.fits["student"].history[-1]["loss"], d.evaluate(student, dataset)["mean_iou"]))
    assert runs[1] == pytest.approx(runs[0])
