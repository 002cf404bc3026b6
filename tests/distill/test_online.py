"""The online method: teacher and student trained together, the student against the teacher's current soft
targets; its RGB-peer control."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from depthdistill.convert import list_depth_aware
from depthdistill.distill import Distiller
from depthdistill.engine.registry import load_model
from depthdistill.engine.checkpoint import load_checkpoint
from depthdistill.errors import DepthError
from depthdistill.nn import depth_context
from tests.tiny_rgbd import NUM_CLASSES, TinyRGBD, TinySegmenter

COMMON = dict(batch_size=4, lr=0.05, progress=False, log_echo=False, device="cpu")


def _model(**kwargs) -> TinySegmenter:
    torch.manual_seed(0)
    return TinySegmenter(**kwargs)


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_loss_is_ce_plus_the_ramped_t_squared_kl_and_the_teachers_ce():
    data = TinyRGBD(6)
    # One batch per epoch (the whole set: means over pixels do not depend on the order) and no random draws or
    # running statistics, so the loss of each epoch's one step can be computed again from the weights it started
    # from.
    batch = {key: torch.stack([data[i][key] for i in range(len(data))]) for key in ("rgb", "depth", "label")}
    weight, temperature, ramp = 1.5, 3.0, 2
    expected = []

    def recompute(state):
        if state.event != "epoch_start":
            return
        pair = copy.deepcopy(state.model).eval()
        with torch.no_grad():
            z_s = pair.student(batch["rgb"])
            with depth_context(batch["depth"]):
                z_t = pair.partner(batch["rgb"])
        ce = F.cross_entropy(z_s, batch["label"], ignore_index=255)
        teacher_ce = F.cross_entropy(z_t, batch["label"], ignore_index=255)
        p, q = (z_t / temperature).softmax(1), (z_s / temperature).softmax(1)
        kl = (p * (p.log() - q.log())).sum(1).mean() * temperature**2
        w = weight * min(1.0, state.epoch / ramp)  # the ramp: 0, w/2, w, w
        expected.append({"ce": ce, "kl": kl, "partner_ce": teacher_ce, "weight": w,
                         "loss": ce + w * kl + teacher_ce})

    d = Distiller(_model(dropout=0.0, norm=False), NUM_CLASSES, "paper", method="online", online_weight=weight,
                  online_temperature=temperature, online_ramp_epochs=ramp, callbacks=[recompute],
                  **{**COMMON, "batch_size": len(data)})
    d.train(data, teacher_epochs=1, student_epochs=4)
    history = d.fits["sn"].history
    assert [e["weight"] for e in expected] == [0.0, 0.75, 1.5, 1.5]
    for record, want in zip(history, expected, strict=True):
        for name, value in want.items():
            assert record[name] == pytest.approx(float(value), rel=1e-5, abs=1e-7), (record["epoch"], name)
    assert all(e["kl"] > 0 for e in expected)  # the targets are not the student's own: the term does something


def test_weight_zero_is_the_baseline_bit_for_bit_and_a_weight_changes_the_student():
    # Dropout, batch norm and depth dropout: the teacher draws random numbers and the student must not notice.
    data, epochs = TinyRGBD(10), 3
    baseline = Distiller(_model(), NUM_CLASSES, **COMMON).train_baseline(data, epochs).state_dict()
    for control in (False, True):  # the teacher, then the RGB peer
        silent = Distiller(_model(), NUM_CLASSES, method="online", online_weight=0.0, depth_dropout=0.5, **COMMON)
        run = silent.train_control if control else silent.train
        assert _states_equal(run(data, teacher_epochs=1, student_epochs=epochs).state_dict(), baseline), control
    taught = Distiller(_model(), NUM_CLASSES, method="online", online_weight=1.0, online_ramp_epochs=0, **COMMON)
    assert not _states_equal(taught.train(data, teacher_epochs=1, student_epochs=epochs).state_dict(), baseline)


def test_the_soft_targets_pull_the_student_only():
    data = TinyRGBD(8)
    teachers = []
    for weight in (0.0, 2.0):
        d = Distiller(_model(), NUM_CLASSES, method="online", online_weight=weight, online_ramp_epochs=0, **COMMON)
        d.train(data, teacher_epochs=1, student_epochs=2)
        teachers.append(d.teacher.state_dict())
    assert _states_equal(*teachers)


def test_the_student_is_plain_the_teacher_trained_with_depth_and_the_control_never_used_depth(tmp_path):
    data, model = TinyRGBD(8), _model()
    keys = set(model.state_dict())
    d = Distiller(model, NUM_CLASSES, "paper", method="online", out_dir=tmp_path, **COMMON)
    table = d.run_experiment(data, TinyRGBD(4, seed=1), teacher_epochs=1, student_epochs=2,
                             rows=["BL", "SN", "SN-RGB"])
    assert [r.name for r in table] == ["BL", "SN", "SN-RGB"] and set(d.fits) == {"bl", "sn", "sn_rgb"}
    for row in ("SN", "SN-RGB"):
        student = d.models[row]
        assert student is not d.model and list_depth_aware(student) == [] and set(student.state_dict()) == keys
    assert list_depth_aware(d.model) == []  # the live model was not trained either
    # The teacher: depth-aware, its weights moved from the initial ones, and its output depends on depth.
    assert list_depth_aware(d.teacher) == ["conv1", "conv2"]
    assert not all(torch.equal(v, d.initial_state[k]) for k, v in d.teacher.state_dict().items())
    sample = data[0]
    rgb = sample["rgb"][None]
    with torch.no_grad(), depth_context(sample["depth"][None]):
        with_depth = d.teacher(rgb)
    with torch.no_grad(), depth_context(torch.ones_like(sample["depth"][None])):
        without = d.teacher(rgb)
    assert not torch.allclose(with_depth, without)
    # last.pt holds both models (to resume); model.pt the student alone, which load_model rebuilds as trained.
    for name, row in (("sn", "SN"), ("sn_rgb", "SN-RGB")):
        last = load_checkpoint(tmp_path / name / "last.pt")
        assert set(last["model"]) == {f"{who}.{k}" for who in ("student", "partner") for k in keys}
        assert load_checkpoint(tmp_path / name / "model.pt")["meta"]["depth_aware_layers"] == []
        rebuilt, _ = load_model(tmp_path / name / "model.pt", model={"name": "tests.tiny_rgbd:TinySegmenter"})
        assert list_depth_aware(rebuilt) == [] and _states_equal(rebuilt.state_dict(), d.models[row].state_dict())
    # The control needs no depth at all; the method refuses data without it.
    rgb_only = TinyRGBD(8, with_depth=False)
    Distiller(_model(), NUM_CLASSES, method="online", **COMMON).train_control(rgb_only, teacher_epochs=1,
                                                                             student_epochs=1)
    with pytest.raises(DepthError, match="no 'depth'"):
        Distiller(_model(), NUM_CLASSES, method="online", **COMMON).train(rgb_only, teacher_epochs=1,
                                                                          student_epochs=1)


def _resumable_run(out_dir, stop_at=None):
    """Online training for 2 epochs (3 batches each), optionally killed by a callback at (epoch, batch)."""
    def killer(state):
        if stop_at and state.event == "step_end" and (state.epoch, state.batch) == stop_at:
            raise KeyboardInterrupt("simulated kill")

    d = Distiller(_model(), NUM_CLASSES, method="online", online_ramp_epochs=1, depth_dropout=0.5,
                  out_dir=out_dir, resume=True, callbacks=[killer], **{**COMMON, "batch_size": 2})
    student = d.train(TinyRGBD(6), teacher_epochs=1, student_epochs=2)
    return student.state_dict(), d.teacher.state_dict()


def test_a_killed_and_resumed_run_restores_the_student_and_the_teacher(tmp_path):
    reference = _resumable_run(tmp_path / "uninterrupted")
    with pytest.raises(KeyboardInterrupt):
        _resumable_run(tmp_path / "killed", stop_at=(1, 1))
    assert load_checkpoint(tmp_path / "killed" / "sn" / "last.pt")["epoch"] == 1
    resumed = _resumable_run(tmp_path / "killed")
    for got, want in zip(resumed, reference, strict=True):
        assert _states_equal(got, want)
