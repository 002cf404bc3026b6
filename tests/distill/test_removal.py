"""The paper's method, depth removal: its two learning-rate schedules (one per phase, or one over both phases) and
its control without depth (row SN-RGB)."""

from __future__ import annotations

import math

import pytest
import torch

from depthdistill import DepthAwareModule
from depthdistill.distill import Distiller
from depthdistill.errors import ConfigError, TrainingError
from depthdistill.losses import CEPlusVTCE
from tests.tiny_rgbd import NUM_CLASSES, TinyRGBD, TinySegmenter

LR, POWER = 0.05, 0.9
COMMON = dict(batch_size=4, lr=LR, poly_power=POWER, progress=False, log_echo=False, device="cpu")
TEACHER_EPOCHS, STUDENT_EPOCHS = 2, 3
STEPS_PER_EPOCH = 2  # TinyRGBD(8) in batches of 4


def _model():
    torch.manual_seed(0)
    return TinySegmenter(dropout=0.0, norm=False)  # the student's train-mode forward is its frozen copy's


def _poly(step, total):
    """DeepLab's poly rate at optimiser step ``step`` (from 0) of ``total``."""
    return LR * (1 - step / total) ** POWER


class _Recorder:
    """Per phase: the learning rate of every optimiser step, Adam's state when the phase begins and ends."""

    def __init__(self):
        self.lrs, self.first, self.last = {}, {}, {}

    def __call__(self, state):
        if state.event == "epoch_start":  # the rate the next step uses (the schedule stepped after the last one)
            self.lrs.setdefault(state.phase, []).append(state.optimizer.param_groups[0]["lr"])
            if state.epoch == 0:
                self.first[state.phase] = _adam_state(state.optimizer)
        elif state.event == "step_end":
            self.lrs[state.phase].append(state.optimizer.param_groups[0]["lr"])
            self.last[state.phase] = _adam_state(state.optimizer)
        elif state.event == "epoch_end":
            self.lrs[state.phase].pop()  # the rate after the epoch's last step: the next epoch_start repeats it


def _adam_state(optimizer):
    return {id(p): {k: v.clone() for k, v in s.items()} for p, s in optimizer.state.items()}


def _train(schedule, **kwargs):
    recorder = _Recorder()
    d = Distiller(_model(), NUM_CLASSES, "paper", schedule=schedule, callbacks=[recorder],
                  optimizer=lambda params: torch.optim.Adam(params, lr=LR), **COMMON, **kwargs)
    d.train(TinyRGBD(8), teacher_epochs=TEACHER_EPOCHS, student_epochs=STUDENT_EPOCHS)
    return d, recorder


def test_one_schedule_decays_once_over_both_phases_and_the_student_carries_the_teachers_adam_state():
    teacher_steps, student_steps = TEACHER_EPOCHS * STEPS_PER_EPOCH, STUDENT_EPOCHS * STEPS_PER_EPOCH
    total = teacher_steps + student_steps
    _, one = _train("one")
    assert one.lrs["tn"] == pytest.approx([_poly(t, total) for t in range(teacher_steps)])
    assert one.lrs["sn"] == pytest.approx([_poly(t, total) for t in range(teacher_steps, total)])
    teacher_end, student_start = one.last["tn"], one.first["sn"]
    assert student_start.keys() == teacher_end.keys() and teacher_end  # the same Parameters (shared weights)
    for key, state in teacher_end.items():
        assert int(student_start[key]["step"]) == teacher_steps
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(student_start[key][name], state[name])

    # each phase its own decay, and the student a new optimiser
    _, per_phase = _train("per_phase")
    assert per_phase.lrs["tn"] == pytest.approx([_poly(t, teacher_steps) for t in range(teacher_steps)])
    assert per_phase.lrs["sn"] == pytest.approx([_poly(t, student_steps) for t in range(student_steps)])
    assert per_phase.first["sn"] == {}


def test_one_schedule_needs_the_students_epochs_up_front_and_the_same_lr_for_both_phases():
    d = Distiller(_model(), NUM_CLASSES, schedule="one", **COMMON)
    with pytest.raises(ConfigError, match="pass student_epochs="):
        d.train_teacher(TinyRGBD(8), 1)
    d.train_teacher(TinyRGBD(8), 1, student_epochs=2)
    with pytest.raises(ConfigError, match="planned the teacher's learning-rate decay for 2 student epochs, got "
                                          "epochs=3"):
        d.train_student(TinyRGBD(8), 3)
    with pytest.raises(ConfigError, match="student_lr_scale must be 1.0"):
        Distiller(_model(), NUM_CLASSES, schedule="one", student_lr_scale=0.5)
    with pytest.raises(ConfigError, match=r"method 'unlabelled' trains with schedule \['per_phase'\] only, got "
                                          r"schedule='one'"):
        Distiller(_model(), NUM_CLASSES, method="unlabelled", schedule="one")


@pytest.mark.parametrize("schedule", ["per_phase", "one"])
def test_the_control_is_the_same_pipeline_with_an_rgb_teacher_and_no_depth(schedule):
    data = TinyRGBD(8, with_depth=False)  # a teacher phase, or any read of depth, would fail on these
    depth_aware_runs = []
    hook = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda module, args: depth_aware_runs.append(type(module).__name__)
        if isinstance(module, DepthAwareModule) else None)
    seen = {}
    loss = CEPlusVTCE(ignore_index=255)

    def recording_loss(student_logits, teacher_logits, labels, epoch):
        seen.setdefault("first", (student_logits.detach().clone(), teacher_logits.clone()))
        return loss(student_logits, teacher_logits, labels, epoch)

    def spy(state):
        if state.event == "epoch_start" and state.phase == "sn_rgb" and state.epoch == 0:
            seen["start"] = {k: v.clone() for k, v in state.model.state_dict().items()}

    d = Distiller(_model(), NUM_CLASSES, "paper", schedule=schedule, student_loss=recording_loss, callbacks=[spy],
                  **COMMON)
    try:
        control = d.train_control(data, teacher_epochs=TEACHER_EPOCHS, student_epochs=STUDENT_EPOCHS)
    finally:
        hook.remove()
    assert depth_aware_runs == [] and d.teacher is None and d.depth_aware_layers == []
    teacher_phase = "bl_tn" if schedule == "per_phase" else "sn_rgb_tn"
    assert list(d.fits) == [teacher_phase, "sn_rgb"] and "vtce" in d.fits["sn_rgb"].history[0]
    # the student starts as its teacher: at its first step the frozen copy's logits are its own
    student_logits, teacher_logits = seen["first"]
    torch.testing.assert_close(teacher_logits, student_logits, rtol=0, atol=0)
    assert not all(torch.equal(p, seen["start"][k]) for k, p in control.state_dict().items())  # and trains on

    # per phase, the control's teacher is BL@TN itself: the plain model trained with CE for the teacher's epochs
    if schedule == "per_phase":
        baseline = Distiller(_model(), NUM_CLASSES, "paper", **COMMON).train_baseline(data, TEACHER_EPOCHS)
        for key, value in baseline.state_dict().items():
            assert torch.equal(seen["start"][key], value), key
    else:  # on one schedule the student's rate goes on from its teacher's (the rate after each of its epochs)
        total = (TEACHER_EPOCHS + STUDENT_EPOCHS) * STEPS_PER_EPOCH
        after = [(TEACHER_EPOCHS + e + 1) * STEPS_PER_EPOCH for e in range(STUDENT_EPOCHS)]
        assert [r["lr"] for r in d.fits["sn_rgb"].history] == pytest.approx([_poly(t, total) for t in after])


def test_the_sn_rgb_row_of_an_experiment_is_the_removal_control():
    d = Distiller(_model(), NUM_CLASSES, "paper", schedule="one", **COMMON)
    table = d.run_experiment(TinyRGBD(8), TinyRGBD(4, seed=1), teacher_epochs=1, student_epochs=1,
                             rows=["BL@TN", "SN", "SN-RGB"])
    assert [r.name for r in table] == ["BL@TN", "SN", "SN-RGB"]
    assert {"bl_tn", "tn", "sn", "sn_rgb_tn", "sn_rgb"} == set(d.fits)
    assert all(math.isfinite(r.mean_iou) for r in table)


def test_per_phase_the_controls_teacher_is_the_experiments_bl_at_tn_trained_once():
    starts = []
    d = Distiller(_model(), NUM_CLASSES, "paper", **COMMON,
                  callbacks=[lambda state: starts.append(state.phase) if state.event == "epoch_start" else None])
    table = d.run_experiment(TinyRGBD(8), TinyRGBD(4, seed=1), teacher_epochs=2, student_epochs=1,
                             rows=["BL@TN", "SN-RGB"])
    assert starts.count("bl_tn") == 2 and starts.count("sn_rgb") == 1  # two epochs, one training
    assert [r.name for r in table] == ["BL@TN", "SN-RGB"]
    # the row's model is not the one the control trained on
    reference = Distiller(_model(), NUM_CLASSES, "paper", **COMMON).train_baseline(TinyRGBD(8), 2)
    assert all(torch.equal(p, q) for p, q in zip(d.models["BL@TN"].parameters(), reference.parameters(), strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(d.models["SN-RGB"].parameters(), reference.parameters(),
                                                        strict=True))


def _resumable_run(path, stop_at=None):
    """Teacher 2 epochs, student 2 epochs on one schedule; optionally killed at (phase, epoch, batch)."""
    def killer(state):
        if stop_at and state.event == "step_end" and (state.phase, state.epoch, state.batch) == stop_at:
            raise KeyboardInterrupt("simulated kill")

    d = Distiller(_model(), NUM_CLASSES, "paper", schedule="one", out_dir=path, resume=True, callbacks=[killer],
                  optimizer=lambda params: torch.optim.Adam(params, lr=LR), **COMMON)
    return d.train(TinyRGBD(8), teacher_epochs=2, student_epochs=2)


@pytest.mark.parametrize("stop_at", [("tn", 1, 0), ("sn", 1, 0)])
def test_an_interrupted_run_on_one_schedule_resumes_to_the_same_weights(tmp_path, stop_at):
    reference = _resumable_run(tmp_path / "uninterrupted").state_dict()
    with pytest.raises(KeyboardInterrupt):
        _resumable_run(tmp_path / "killed", stop_at=stop_at)
    resumed = _resumable_run(tmp_path / "killed").state_dict()
    for key, value in reference.items():
        assert torch.equal(resumed[key], value), key


def test_resuming_on_another_schedule_is_refused_naming_it(tmp_path):
    kwargs = dict(out_dir=tmp_path, **COMMON)
    Distiller(_model(), NUM_CLASSES, "paper", schedule="one", **kwargs).train_teacher(TinyRGBD(8), 1,
                                                                                      student_epochs=1)
    per_phase = Distiller(_model(), NUM_CLASSES, "paper", resume=True, **kwargs)
    with pytest.raises(TrainingError, match=r"distill\.schedule='one' \(now 'per_phase'\)"):
        per_phase.train_teacher(TinyRGBD(8), 1)
    longer = Distiller(_model(), NUM_CLASSES, "paper", schedule="one", resume=True, **kwargs)
    with pytest.raises(TrainingError, match=r"0 epochs before this phase and 1 after it \(now 0 and 2\)"):
        longer.train_teacher(TinyRGBD(8), 1, student_epochs=2)
