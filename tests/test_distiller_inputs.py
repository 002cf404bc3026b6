"""The Distiller on the inputs a new user brings: millimetre depth, narrow label types, dict outputs, meta models."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from tests.tiny_rgbd import NUM_CLASSES, TinyRGBD, TinySegmenter

from depthdistill.distill import Distiller
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
    with pytest.raises(DepthError, match=r"tn training data: median valid depth is \d+ .*millimetres.*/ 1000"):
        d.train_teacher(mm, epochs=1)
    assert not (tmp_path / "tn" / "last.pt").exists()


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
        runs.append((d.fits["sn"].history[-1]["loss"], d.evaluate(student, dataset)["mean_iou"]))
    assert runs[1] == pytest.approx(runs[0])


class _DictOutput(nn.Module):
    """TinySegmenter's logits in torchvision's form, ``{"out": logits, "aux": ...}``, or under another key."""

    def __init__(self, key="out"):
        super().__init__()
        self.net, self.key = TinySegmenter(dropout=0.0), key

    def forward(self, x):
        return {self.key: self.net(x), "aux": torch.zeros(())}


@pytest.mark.parametrize("key, output_key, source", [("out", None, "live"), ("logits", "logits", "frozen"),
                                                     ("out", lambda output: output["out"], "frozen")])
def test_dict_output_models_train_like_the_plain_model(key, output_key, source):
    data = TinyRGBD(3)
    dict_model = _DictOutput(key)
    plain = TinySegmenter(dropout=0.0)
    plain.load_state_dict(dict_model.net.state_dict())
    results = []
    for model, kwargs in ((plain, {}), (dict_model, {"output_key": output_key})):
        torch.manual_seed(0)
        d = Distiller(model, NUM_CLASSES, seed=0, teacher_source=source, **FAST, **kwargs)
        d.train_teacher(data, epochs=1, val_data=data)  # validation evaluates the dict output too
        student = d.train_student(data, epochs=1)
        results.append([d.fits["tn"].history[-1]["loss"], d.fits["sn"].history[-1]["vtce"],
                        d.evaluate(student, data)["mean_iou"], d.evaluate(d.teacher, data)["mean_iou"]])
    assert results[1] == pytest.approx(results[0])


def test_output_key_errors_name_the_keys():
    with pytest.raises(ConfigError, match=r"keys \['aux', 'logits'\] and no 'out'.*output_key"):
        Distiller(_DictOutput("logits"), NUM_CLASSES, **FAST).train_baseline(TinyRGBD(1), epochs=1)
    with pytest.raises(ConfigError, match="output_key='out' but the model returned a Tensor"):
        Distiller(TinySegmenter(), NUM_CLASSES, output_key="out", **FAST).train_baseline(TinyRGBD(1), epochs=1)


def test_torchvision_segmentation_model():
    import torchvision

    from depthdistill import depth_context, list_depth_aware
    model = torchvision.models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                                      num_classes=NUM_CLASSES)
    before = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    data = TinyRGBD(2, size=32)
    d = Distiller(model, NUM_CLASSES, batch_size=2, **FAST)
    d.train_teacher(data, epochs=1)
    assert list_depth_aware(d.teacher)
    after = d.teacher.state_dict()
    assert all(torch.isfinite(after[k]).all() for k in before)
    assert any(not torch.equal(after[k], v) for k, v in before.items())  # one SGD step moved the weights

    # the same metric from a confusion matrix built here, from the model's own "out" logits
    confusion = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.long)
    d.teacher.eval()
    with torch.no_grad():
        for sample in (data[i] for i in range(len(data))):
            with depth_context(sample["depth"][None]):  # the teacher resizes depth as it was trained to
                pred = d.teacher(sample["rgb"][None])["out"].argmax(1)[0]
            valid = sample["label"] != 255
            confusion += torch.bincount(sample["label"][valid] * NUM_CLASSES + pred[valid],
                                        minlength=NUM_CLASSES ** 2).view(NUM_CLASSES, NUM_CLASSES)
    true_pos = confusion.diag().double()
    union = confusion.sum(0) + confusion.sum(1) - confusion.diag()
    present = confusion.sum(1) > 0
    want = (true_pos[present] / union[present]).mean().item()
    got = d.evaluate(d.teacher, data)
    assert got["confusion_matrix"] == confusion.tolist()
    assert got["mean_iou"] == pytest.approx(want, abs=1e-12)


def test_model_on_the_meta_device_gets_a_clear_error():
    with torch.device("meta"):
        model = TinySegmenter()
    with pytest.raises(ConfigError, match=r"'conv1.weight' is on the meta device.*to_empty"):
        Distiller(model, NUM_CLASSES, **FAST)
