"""The consistency method: a depth pass and a plain pass in the same weights, and its two controls."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from depthdistill import depth_context, list_depth_aware
from depthdistill.data import collate_rgbd
from depthdistill.distill import Distiller, convert_teacher
from depthdistill.distill.methods.consistency import consistency_loss, depth_pass, flip_pass
from depthdistill.errors import ConfigError, DepthError
from tests.tiny_rgbd import NUM_CLASSES, TinyRGBD, TinySegmenter

COMMON = dict(batch_size=4, lr=0.05, progress=False, log_echo=False, device="cpu")


def _model() -> TinySegmenter:
    torch.manual_seed(0)
    return TinySegmenter(dropout=0.0, norm=False)  # no random draws; the same outputs in training and eval mode


def _distiller(**settings) -> Distiller:
    return Distiller(_model(), NUM_CLASSES, "paper", method="consistency", **{**COMMON, **settings})


def _plain_twin(model: nn.Module) -> TinySegmenter:
    """A model of nn.Conv2d layers only (built anew, never converted) holding ``model``'s weights."""
    twin = TinySegmenter(dropout=0.0, norm=False)
    twin.load_state_dict(model.state_dict())
    assert {type(m) for m in twin.modules() if isinstance(m, nn.Conv2d)} == {nn.Conv2d}
    return twin.eval()


def _ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy written out: log-sum-exp minus the label's logit, averaged over the non-void pixels."""
    keep = labels != 255
    picked = logits.gather(1, labels.clamp(max=logits.shape[1] - 1)[:, None])[:, 0]
    return (logits.logsumexp(1) - picked)[keep].mean()


def _kl(teacher: torch.Tensor, student: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(softmax(teacher/T) ‖ softmax(student/T)) per pixel, averaged over every pixel."""
    p, q = (teacher / temperature).softmax(1), (student / temperature).softmax(1)
    return (p * (p.log() - q.log())).sum(1).mean() * temperature**2


def test_the_loss_is_the_formula_written_out_and_only_the_plain_pass_learns_from_the_kl():
    torch.manual_seed(1)
    labels = torch.randint(0, 4, (2, 3, 3))
    labels[0, 0, 0] = 255
    for second_ce in (True, False):
        z_p = torch.randn(2, 4, 3, 3, requires_grad=True)
        z_d = torch.randn(2, 4, 3, 3, requires_grad=True)
        parts = consistency_loss(z_p, z_d, labels, weight=0.7, temperature=3.0, second_ce=second_ce,
                                 ignore_index=255)
        expected = _ce(z_p, labels) + 0.7 * _kl(z_d, z_p, 3.0) + (_ce(z_d, labels) if second_ce else 0.0)
        torch.testing.assert_close(parts["loss"], expected)
        torch.testing.assert_close(parts["ce_second"], _ce(z_d, labels).detach())
        torch.testing.assert_close(parts["consistency"], _kl(z_d, z_p, 3.0).detach())
        parts["loss"].backward()
        if second_ce:  # z_D's gradient is its own CE's alone: the KL is detached on its side
            reference = z_d.detach().clone().requires_grad_(True)
            _ce(reference, labels).backward()
            torch.testing.assert_close(z_d.grad, reference.grad)
        else:
            assert z_d.grad is None


def test_pass_d_is_the_depth_aware_model_on_rgbd_and_pass_p_the_plain_convolutions():
    d = _distiller()
    student = d.initial_copy()
    batch = collate_rgbd([TinyRGBD(4)[i] for i in range(4)])
    teacher = convert_teacher(copy.deepcopy(student), d.settings)
    with torch.no_grad():
        with depth_context(batch["depth"]):
            expected_d = teacher(batch["rgb"])
        with depth_context(batch["depth"].roll(1, 0)):
            expected_shuffled = teacher(batch["rgb"])
        with depth_context(torch.ones_like(batch["depth"])):
            constant = teacher(batch["rgb"])
        z_d = depth_pass(d, student)(student, batch)
        shuffled = depth_pass(d, student)(student, {**batch, "depth": batch["depth"].roll(1, 0)})
        assert list_depth_aware(student) == []  # depth-aware for the pass only
        z_p = d.forward(student, batch)
    assert torch.equal(z_d, expected_d) and torch.equal(shuffled, expected_shuffled)
    assert torch.equal(z_p, _plain_twin(student)(batch["rgb"]))
    torch.testing.assert_close(z_p, constant)  # the plain pass is what D-Conv computes on a constant depth map
    assert not torch.allclose(z_d, z_p, atol=1e-3)  # depth changes pass D
    assert not torch.allclose(shuffled, z_d, atol=1e-3)


def test_one_step_logs_both_passes_of_the_initial_weights_and_returns_the_plain_model():
    data = TinyRGBD(8)
    d = _distiller(batch_size=8, consistency_weight=0.5, consistency_temperature=2.0)
    initial = _plain_twin(d.initial_copy())
    student = d.train(data, teacher_epochs=3, student_epochs=1)  # one step; the teacher's epochs are unused
    batch = collate_rgbd([data[i] for i in range(8)])
    with torch.no_grad():
        z_p = initial(batch["rgb"])
        with depth_context(batch["depth"]):
            z_d = convert_teacher(copy.deepcopy(initial), d.settings)(batch["rgb"])
    record = d.fits["sn"].history[0]
    for part, expected in [("ce_plain", _ce(z_p, batch["label"])), ("ce_second", _ce(z_d, batch["label"])),
                           ("consistency", _kl(z_d, z_p, 2.0))]:
        # the KL of two untrained passes is small (1e-4): float32's cancellation in it is ~1e-9
        assert record[part] == pytest.approx(float(expected), rel=1e-5, abs=1e-8), part
    assert list(d.fits) == ["sn"] and d.teacher is None
    assert list_depth_aware(student) == [] and d.depth_aware_layers == ["conv1", "conv2"]
    with torch.no_grad():
        assert torch.equal(student.eval()(batch["rgb"]), _plain_twin(student)(batch["rgb"]))


def test_weight_zero_without_the_depth_ce_is_the_ce_baseline_bit_for_bit():
    data = TinyRGBD(8)

    def normed() -> TinySegmenter:  # with BatchNorm: pass D must leave the running statistics to pass P
        torch.manual_seed(0)
        return TinySegmenter(dropout=0.0, norm=True)

    baseline = Distiller(normed(), NUM_CLASSES, "paper", **COMMON).train_baseline(data, 2)

    def trained(**settings) -> nn.Module:
        return Distiller(normed(), NUM_CLASSES, "paper", method="consistency", **COMMON, **settings).train(
            data, teacher_epochs=1, student_epochs=2)

    silent = trained(consistency_weight=0.0, consistency_depth_ce=False)
    for (name, p), q in zip(silent.state_dict().items(), baseline.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    for settings in ({"consistency_weight": 1.0, "consistency_depth_ce": False},
                     {"consistency_weight": 0.0, "consistency_depth_ce": True}):
        other = trained(**settings)
        assert not all(torch.equal(p, q) for p, q in zip(other.parameters(), baseline.parameters())), settings


def test_the_shuffled_depth_control_is_sn_trained_with_each_image_given_the_next_images_depth():
    data = TinyRGBD(6)
    by_hand = [{**data[i], "depth": data[(i + 1) % 6]["depth"]} for i in range(6)]
    control = _distiller(consistency_control="shuffled_depth").train_control(data, teacher_epochs=1,
                                                                             student_epochs=2)
    sn = _distiller().train(by_hand, teacher_epochs=1, student_epochs=2)
    for (name, p), q in zip(control.state_dict().items(), sn.state_dict().values()):
        assert torch.equal(p, q), name
    own = _distiller().train(data, teacher_epochs=1, student_epochs=2)  # the image's own depth trains otherwise
    assert not all(torch.equal(p, q) for p, q in zip(control.parameters(), own.parameters()))


def test_the_shuffled_depth_control_trains_at_any_batch_size_and_returns_a_plain_model():
    data = TinyRGBD(5)  # batches of 4 and 1
    d = _distiller(consistency_control="shuffled_depth")
    control = d.train_control(data, teacher_epochs=1, student_epochs=1)
    assert list(d.fits) == ["sn_rgb"] and list_depth_aware(control) == []
    assert d.depth_aware_layers == ["conv1", "conv2"]
    assert d.fits["sn_rgb"].history[0]["consistency"] > 0
    with pytest.raises(ConfigError, match="not a DataLoader"):
        d.train_control(DataLoader(data, batch_size=4, collate_fn=collate_rgbd), teacher_epochs=1,
                        student_epochs=1)


def test_the_augment_control_uses_no_depth():
    data = TinyRGBD(8, with_depth=False)
    d = _distiller(consistency_control="augment")
    control = d.train_control(data, teacher_epochs=1, student_epochs=1)  # a D-Conv run would need depth
    assert list(d.fits) == ["sn_rgb"] and list_depth_aware(control) == [] and d.depth_aware_layers == []
    batch = collate_rgbd([data[i] for i in range(4)])
    with torch.no_grad():
        flipped = flip_pass(d)(control, batch)
        assert torch.equal(flipped, control(batch["rgb"].flip(-1)).flip(-1))
    for run in (d.train, _distiller(consistency_control="shuffled_depth").train_control):
        with pytest.raises(DepthError):
            run(data, teacher_epochs=1, student_epochs=1)


def test_the_experiment_reports_sn_and_its_control_at_the_students_epochs():
    d = _distiller(consistency_control="augment")
    table = d.run_experiment(TinyRGBD(4), TinyRGBD(4, seed=1), teacher_epochs=1, student_epochs=2,
                             rows=["BL", "SN", "SN-RGB"])
    assert [(r.name, r.epochs) for r in table] == [("BL", 3), ("SN", 2), ("SN-RGB", 2)]
    assert set(d.fits) == {"bl", "sn", "sn_rgb"}
