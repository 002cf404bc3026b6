"""The auxiliary-depth method: its scale-invariant log loss, its training against the CE baseline, the plain model it
returns, its layer choice, and its control."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from depthdistill.convert import list_depth_aware
from depthdistill.distill import Distiller
from depthdistill.distill.methods.aux_depth import _WithDepthHead, default_aux_depth_layer, si_log_loss
from depthdistill.engine.registry import load_model
from depthdistill.errors import ConfigError
from depthdistill.models import deeplab_vgg16
from tests.tiny_rgbd import NUM_CLASSES, TinyRGBD, TinySegmenter

COMMON = dict(batch_size=4, lr=0.05, progress=False, log_echo=False, device="cpu")


def _model(**kwargs):
    torch.manual_seed(0)
    return TinySegmenter(**kwargs)


def test_si_log_loss_is_eigens_formula_written_out_over_the_measured_pixels():
    torch.manual_seed(0)
    log_prediction = torch.randn(3, 1, 2, 3)
    depth = torch.rand(3, 1, 2, 3) * 4 + 0.5
    depth[0, 0, 0, 0], depth[0, 0, 1, 2] = 0.0, float("nan")  # holes: excluded
    depth[1, 0, 0, 1] = -1.0
    depth[2] = 0.0  # an image without any measured pixel: left out of the mean over images
    for si in (0.0, 0.5, 1.0):
        per_image = []
        for b in range(2):
            d = [float(log_prediction[b, 0, y, x]) - math.log(float(depth[b, 0, y, x]))
                 for y in range(2) for x in range(3)
                 if math.isfinite(float(depth[b, 0, y, x])) and float(depth[b, 0, y, x]) > 0]
            per_image.append(sum(v * v for v in d) / len(d) - si * (sum(d) / len(d)) ** 2)
        got = si_log_loss(log_prediction, depth, scale_invariance=si)
        assert math.isclose(float(got), sum(per_image) / 2, rel_tol=1e-5), si
    # gradients reach only the measured pixels, and no NaN comes from the holes
    log_prediction.requires_grad_(True)
    si_log_loss(log_prediction, depth, scale_invariance=0.5).backward()
    assert torch.isfinite(log_prediction.grad).all()
    assert float(log_prediction.grad[0, 0, 0, 0]) == 0.0 and float(log_prediction.grad[2].abs().sum()) == 0.0
    assert float(log_prediction.grad[0, 0, 0, 1]) != 0.0


def test_si_log_loss_with_full_scale_invariance_ignores_one_scale_per_image_and_is_zero_without_depth():
    depth = torch.rand(2, 1, 4, 4) + 0.5
    scaled = torch.cat([depth[:1] * 3.0, depth[1:] * 0.2]).log()
    assert float(si_log_loss(scaled, depth, scale_invariance=1.0)) < 1e-10
    assert float(si_log_loss(scaled, depth, scale_invariance=0.0)) > 0.1
    empty = si_log_loss(torch.zeros(1, 1, 2, 2, requires_grad=True), torch.zeros(1, 1, 2, 2), scale_invariance=0.5)
    assert float(empty.detach()) == 0.0 and empty.requires_grad


def test_weight_zero_is_the_ce_baseline_bit_for_bit_and_a_positive_weight_is_not():
    data = TinyRGBD(8)
    silent = Distiller(_model(), NUM_CLASSES, method="aux_depth", aux_depth_weight=0.0, **COMMON)
    silent_model = silent.train(data, teacher_epochs=1, student_epochs=2)
    baseline = silent.train_baseline(data, 2)  # the same initial weights, CE only, same epochs
    assert all(torch.equal(p, q) for p, q in zip(silent_model.state_dict().values(),
                                                 baseline.state_dict().values(), strict=True))
    active = Distiller(_model(), NUM_CLASSES, method="aux_depth", aux_depth_weight=0.5, **COMMON)
    active_model = active.train(data, teacher_epochs=1, student_epochs=2)
    assert not all(torch.equal(p, q) for p, q in zip(active_model.parameters(), baseline.parameters(), strict=True))
    history = active.fits["sn"].history
    assert all(r["depth"] > 0 and r["ce"] > 0 for r in history)
    assert history[-1]["depth"] < history[0]["depth"]  # the head learns to predict depth
    assert list(active.fits) == ["sn"]  # no teacher phase


def test_the_returned_model_is_the_plain_model_without_head_or_hooks(tmp_path):
    model = _model()
    keys = list(model.state_dict())
    d = Distiller(model, NUM_CLASSES, method="aux_depth", out_dir=tmp_path, **COMMON)
    trained = d.train(TinyRGBD(8), teacher_epochs=3, student_epochs=1)
    assert type(trained) is TinySegmenter and list(trained.state_dict()) == keys
    assert list_depth_aware(trained) == []
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in trained.modules())
    assert trained(torch.randn(1, 3, 16, 16)).shape == (1, NUM_CLASSES, 16, 16)
    control = d.train_control(TinyRGBD(8), teacher_epochs=3, student_epochs=1)
    assert list(control.state_dict()) == keys and all(not m._forward_hooks for m in control.modules())
    # model.pt holds the model without its head: what evaluate / predict / export rebuild
    for folder, expected in (("sn", trained), ("sn_rgb", control)):
        rebuilt, _ = load_model(tmp_path / folder / "model.pt", model={"name": "tests.tiny_rgbd:TinySegmenter"})
        # parameters: the forward above, in training mode, moved the returned model's BatchNorm statistics
        assert all(torch.equal(p, q) for p, q in zip(rebuilt.parameters(), expected.parameters(), strict=True))


def test_the_default_layer_is_the_last_convolution_before_the_classifier():
    assert default_aux_depth_layer(TinySegmenter()) == "conv2"
    assert default_aux_depth_layer(deeplab_vgg16(5, width=0.0625)) == "classifier.3"  # fc7
    with pytest.raises(ConfigError, match="aux_depth_layer"):
        default_aux_depth_layer(nn.Conv2d(3, 2, 1))


class _Pair(nn.Module):
    def forward(self, x):
        return x, x


class _WithPair(TinySegmenter):
    """A TinySegmenter with a layer returning a tuple, and one its forward never runs."""

    def __init__(self):
        super().__init__()
        self.pair = _Pair()
        self.unused = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return super().forward(self.pair(x)[0])


@pytest.mark.parametrize(("layer", "message"), [
    ("conv9", r"'conv9' is not a layer of TinySegmenter; its layers: \['conv1', 'bn', 'drop', 'conv2', 'head'\]"),
    ("pair", "'pair' returns a tuple; the depth head needs a \\(B, C, H, W\\) feature map"),
    ("unused", "'unused' did not run"),
])
def test_a_bad_layer_is_refused_clearly(layer, message):
    model = _WithPair() if layer != "conv9" else _model()
    d = Distiller(model, NUM_CLASSES, method="aux_depth", aux_depth_layer=layer, **COMMON)
    with pytest.raises(ConfigError, match=message):
        d.train(TinyRGBD(4), teacher_epochs=1, student_epochs=1)


def test_the_head_reads_the_layers_output_as_returned_even_before_an_inplace_relu():
    # DeepLab's fc7 is followed by ReLU(inplace=True), which rewrites fc7's output before the head runs.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 2, 1))
    seen = []
    head = nn.Conv2d(4, 1, 1)
    head.register_forward_pre_hook(lambda m, inputs: seen.append(inputs[0].detach().clone()))
    wrapped = _WithDepthHead(model, "0", head)
    x = torch.randn(2, 3, 5, 5)
    logits = wrapped(x)
    assert torch.equal(seen[0], model[0](x).detach()) and bool((seen[0] < 0).any())
    (logits.sum() + wrapped.log_depth.sum()).backward()  # both reach the optimiser
    assert head.weight.grad is not None and model[0].weight.grad is not None
    wrapped.eval()
    wrapped(x)
    assert len(seen) == 1 and wrapped.log_depth is None  # no head outside training
    assert wrapped.release() is model and not model[0]._forward_hooks


def test_the_control_is_the_row_sn_rgb_and_trains_with_batch_size_one():
    d = Distiller(_model(), NUM_CLASSES, method="aux_depth", **{**COMMON, "batch_size": 1})
    table = d.run_experiment(TinyRGBD(4), TinyRGBD(4, seed=1), teacher_epochs=1, student_epochs=1,
                             rows=["BL", "SN", "SN-RGB"])
    assert [r.name for r in table] == ["BL", "SN", "SN-RGB"] and set(d.fits) == {"bl", "sn", "sn_rgb"}
    # the same training, another target: the depth loss differs from the first step on
    assert d.fits["sn"].history[0]["depth"] != d.fits["sn_rgb"].history[0]["depth"]
