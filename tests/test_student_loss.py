"""A pluggable student loss: Distiller(student_loss=...) trains SN with any (student, teacher, labels, epoch) loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tests.tiny_rgbd import NUM_CLASSES, TinyRGBD, TinySegmenter, sample_logits

from depthdistill import ConfigError, ConfigTypeError, DepthDistillError
from depthdistill.distill import Distiller
from depthdistill.losses import CEPlusVTCE, vtce_loss, vtce_temperature

FAST = dict(progress=False, log_echo=False, device="cpu")


def _kl_by_hand(student_logits, teacher_logits, label):
    """KL(teacher ‖ student) per pixel, written out, averaged over non-void pixels."""
    p_t = torch.softmax(teacher_logits, dim=1)
    per_pixel = (p_t * (torch.log(p_t) - torch.log(torch.softmax(student_logits, dim=1)))).sum(dim=1)
    valid = label != 255
    return per_pixel[valid].sum() / valid.sum()


def test_the_students_loss_is_the_users_function_with_its_parts_logged():
    calls = []

    def pure_kl(student_logits, teacher_logits, labels, epoch):
        calls.append((student_logits.dtype, teacher_logits.requires_grad, labels.dtype))
        per_pixel = F.kl_div(F.log_softmax(student_logits, 1), F.log_softmax(teacher_logits, 1), reduction="none",
                             log_target=True).sum(1)
        valid = labels != 255
        return {"loss": per_pixel[valid].mean(), "epoch_seen": torch.tensor(float(epoch))}

    data = TinyRGBD(3)
    model = TinySegmenter(norm=False, dropout=0.0)
    d = Distiller(model, NUM_CLASSES, student_loss=pure_kl, **FAST)
    d.train_teacher(data, epochs=1)
    d.optimizer = lambda p: torch.optim.SGD(p, lr=0.0)  # the student keeps the teacher's values
    d.train_student(data, epochs=2)
    assert calls and all(c == (torch.float32, False, torch.int64) for c in calls)
    expected = []
    for i in range(len(data)):
        s = data[i]
        student_logits, teacher_logits = sample_logits(model, d.teacher, s)
        expected.append(_kl_by_hand(student_logits, teacher_logits, s["label"][None]).item())
    history = d.fits["sn"].history
    for epoch, record in enumerate(history):
        assert record["loss"] == pytest.approx(sum(expected) / len(expected), rel=1e-5)
        assert record["epoch_seen"] == epoch
        assert "ce" not in record and "vtce" not in record and "temperature" not in record


def test_only_the_users_loss_moves_the_weights():
    """A loss with zero gradient leaves the student where the teacher left it: no CE is added behind it."""
    def trained_student(student_loss):
        torch.manual_seed(0)
        d = Distiller(TinySegmenter(norm=False, dropout=0.0), NUM_CLASSES, student_loss=student_loss,
                      optimizer=lambda p: torch.optim.SGD(p, lr=0.5), **FAST)
        d.train_teacher(TinyRGBD(2), epochs=1)
        start = [p.detach().clone() for p in d.model.parameters()]
        d.train_student(TinyRGBD(2), epochs=1)
        return start, list(d.model.parameters())

    start, end = trained_student(lambda s, t, labels, epoch: {"loss": 0.0 * s.sum()})
    assert all(torch.equal(a, b) for a, b in zip(start, end, strict=True))
    start, end = trained_student(None)  # the default CE + VTCE does move them
    assert not all(torch.equal(a, b) for a, b in zip(start, end, strict=True))


def test_the_default_is_ce_plus_vtce_with_the_distillers_settings():
    d = Distiller(TinySegmenter(), NUM_CLASSES, beta=0.5, ignore_index=7, **FAST)
    assert isinstance(d.student_loss, CEPlusVTCE) and d.student_loss.beta == 0.5
    s, t = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    labels = torch.randint(0, 3, (2, 4, 4))
    labels[0, 0] = 7
    parts = d.student_loss(s, t, labels, 3)
    T = vtce_temperature(3, 0.5)
    assert parts["temperature"].item() == pytest.approx(T)
    assert parts["ce"].item() == pytest.approx(F.cross_entropy(s, labels, ignore_index=7).item())
    assert parts["vtce"].item() == pytest.approx(vtce_loss(s, t, T, labels != 7).item())
    assert parts["loss"].item() == pytest.approx(parts["ce"].item() + parts["vtce"].item())


def test_bad_student_losses_are_refused_with_a_clear_error():
    with pytest.raises(ConfigTypeError, match="callable"):
        Distiller(TinySegmenter(), NUM_CLASSES, student_loss="kl", **FAST)
    with pytest.raises(ConfigError, match="beta and vtce_schedule"):
        Distiller(TinySegmenter(), NUM_CLASSES, student_loss=CEPlusVTCE(), beta=0.5, **FAST)
    for returned, match in (((1.0,), "'loss'"), ({"ce": torch.tensor(1.0)}, "'loss'"),
                            ({"loss": torch.ones(2)}, "'loss'"), ({"loss": None}, "'loss'")):
        d = Distiller(TinySegmenter(), NUM_CLASSES, student_loss=lambda *a, r=returned: r, **FAST)
        d.train_teacher(TinyRGBD(2), epochs=1)
        with pytest.raises(DepthDistillError, match=match):
            d.train_student(TinyRGBD(2), epochs=1)
    d = Distiller(TinySegmenter(), NUM_CLASSES, **FAST,
                  student_loss=lambda s, *a: {"loss": s.mean(), "per_class": s.mean((0, 2, 3))})
    d.train_teacher(TinyRGBD(2), epochs=1)
    with pytest.raises(ConfigError, match="'per_class' of shape"):
        d.train_student(TinyRGBD(2), epochs=1)
