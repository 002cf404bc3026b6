"""The teacher carries its depth resize: set by conversion, used by a bare depth context, kept and removed like α."""

import copy
import pickle

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from depthdistill import (
    ConfigError,
    DepthAwareAvgPool2d,
    DepthAwareConv2d,
    convert_to_depth_aware,
    convert_to_plain,
    depth_context,
    removal_report,
)
from depthdistill.engine import save_checkpoint
from depthdistill.engine.evaluate import evaluate
from depthdistill.engine.registry import load_model
from tests.tiny_rgbd import TinySegmenter


class StridedConv(nn.Conv2d):
    """A conv subclass: conversion makes a class derived from it, which must pickle with the resize too."""


def _net():
    """Depth-aware layers at 16x16, 8x8 and 4x4 (0, 2 / 4 / 6), logits upsampled back to the input's 16x16."""
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), StridedConv(4, 4, 3, stride=2, padding=1),
                         nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1),
                         nn.Upsample(scale_factor=4))


def _depth():
    # rough, so that every resize mode gives other depth at 8x8 and 4x4
    depth = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 3 + 0.5
    depth[:, :, 5:11, 3:9] = 1.0
    return depth


def _logits(model, depth, **kwargs):
    with torch.no_grad(), depth_context(depth, **kwargs):
        return model(torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)))


def test_a_bare_context_resizes_as_the_model_was_converted_and_a_named_mode_overrides():
    model = convert_to_depth_aware(_net(), depth_resize="avgpool").eval()
    depth = _depth()
    assert all(layer.depth_resize == "avgpool" for layer in (model[0], model[2], model[4], model[6]))
    own = _logits(model, depth)
    assert torch.equal(own, _logits(model, depth, resize="avgpool"))
    assert not torch.allclose(own, _logits(model, depth, resize="nearest"))


def test_layers_read_depth_by_their_own_mode():
    """Checked against the pooling written out: one 3x3/2 average of the valid depths per halving."""
    layer = DepthAwareConv2d(1, 1, 3, padding=1, depth_resize="avgpool")
    depth = _depth()
    seen = []
    layer.register_forward_hook(lambda m, inputs, out: seen.append(m.depth_for(inputs[0])[0]))
    with depth_context(depth):
        layer(torch.randn(2, 1, 8, 8))
    torch.testing.assert_close(seen[0], F.avg_pool2d(depth, 3, stride=2, padding=1, count_include_pad=False))


def test_converting_again_changes_the_mode_of_selected_layers_and_logs_it(caplog):
    model = convert_to_depth_aware(_net(), depth_resize="avgpool")
    with caplog.at_level("INFO", logger="depthdistill"):
        convert_to_depth_aware(model, depth_resize="bilinear", exclude="0")
    assert (model[0].depth_resize, model[2].depth_resize) == ("avgpool", "bilinear")
    assert "changed to alpha=8.3, depth_resize=bilinear (were 2: 8.3, avgpool" in caplog.text


def test_plain_conversion_removes_it_and_repr_shows_it():
    model = convert_to_depth_aware(_net(), depth_resize="area")
    assert "alpha=8.3, depth_resize='area'" in repr(model[0])
    convert_to_plain(model)
    assert not any(hasattr(m, "depth_resize") or hasattr(m, "alpha") for m in model.modules())


def test_pickle_and_deepcopy_keep_it():
    model = convert_to_depth_aware(_net(), depth_resize="bilinear").eval()
    for copied in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert type(copied[2]) is type(model[2]) and isinstance(copied[2], StridedConv)
        assert [m.depth_resize for m in copied if hasattr(m, "depth_resize")] == ["bilinear"] * 4
        assert torch.equal(_logits(copied, _depth()), _logits(model, _depth()))


def test_a_pickle_without_the_attribute_reads_nearest():
    layer = DepthAwareConv2d(1, 1, 3)
    del layer.depth_resize  # what a layer pickled before the attribute existed holds
    assert pickle.loads(pickle.dumps(layer)).depth_resize == "nearest"


def test_constructors_take_it_and_refuse_unknown_modes():
    assert DepthAwareAvgPool2d(3, depth_resize="avgpool").depth_resize == "avgpool"
    assert DepthAwareConv2d(1, 1, 3).depth_resize == "nearest"
    with pytest.raises(ConfigError, match="depth_resize must be one of .*got 'cubic'"):
        DepthAwareConv2d(1, 1, 3, depth_resize="cubic")
    with pytest.raises(ConfigError, match="depth_resize must be one of .*got 'cubic'"):
        convert_to_depth_aware(_net(), depth_resize="cubic")


def test_a_checkpoint_brings_the_teacher_back_with_its_mode(tmp_path):
    teacher = convert_to_depth_aware(TinySegmenter(), depth_resize="avgpool", alpha=4.0).eval()
    meta = {"model": {"name": "tests.tiny_rgbd:TinySegmenter", "args": {}}, "num_classes": 3, "alpha": 4.0,
            "depth_resize": "avgpool", "depth_aware_layers": ["conv1", "conv2"]}
    path = save_checkpoint({"model": teacher.state_dict(), "meta": meta}, tmp_path / "model.pt")
    loaded, _ = load_model(path)
    assert (loaded.conv2.depth_resize, loaded.conv2.alpha) == ("avgpool", 4.0)
    assert torch.equal(_logits(loaded, _depth()), _logits(teacher, _depth()))


def test_removal_report_and_evaluate_default_to_the_layers_mode():
    model = convert_to_depth_aware(_net(), depth_resize="avgpool").eval()
    batch = {"rgb": torch.randn(2, 3, 16, 16), "depth": _depth()}
    own = removal_report(model, batch).to_dict()
    assert own == removal_report(model, batch, depth_resize="avgpool").to_dict()
    assert own != removal_report(model, batch, depth_resize="nearest").to_dict()

    modes = []
    model[4].register_forward_hook(lambda m, inputs, out: modes.append(m.depth_for(inputs[0])[0]))
    data = [{"rgb": batch["rgb"][0], "depth": batch["depth"][0], "label": torch.zeros(16, 16, dtype=torch.long)}]
    evaluate(model, data, 2, device="cpu", show_progress=False)
    half = F.avg_pool2d(batch["depth"][:1], 3, 2, 1, count_include_pad=False)  # all valid: plain pooling
    torch.testing.assert_close(modes[0], half)
