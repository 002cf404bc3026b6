"""The shared training loop: accumulation, schedule, callbacks, logging, progress, AMP and channels_last."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from tests.tiny_rgbd import TinyRGBD, TinySegmenter

from depthdistill.engine import LoopState, RunLog, TrainSettings, fit, progress
from depthdistill.errors import CheckpointError, ConfigError, TrainingError


def _ce(model, batch, epoch):
    return {"loss": F.cross_entropy(model(batch["rgb"]), batch["label"], ignore_index=255)}


def _quiet(**kwargs):
    return TrainSettings(device="cpu", progress=False, **kwargs)


def _train(settings, epochs=1, **kwargs):
    torch.manual_seed(0)
    model = TinySegmenter(norm=False, dropout=0.0)
    result = fit(model, _ce, TinyRGBD(4, void=False), epochs, settings=settings, log=RunLog(None, echo=False), **kwargs)
    return model, result


def test_gradient_accumulation_equals_the_larger_batch():
    big, _ = _train(_quiet(batch_size=4, lr=0.1))
    accumulated, _ = _train(_quiet(batch_size=2, grad_accum_steps=2, lr=0.1))
    single, _ = _train(_quiet(batch_size=2, lr=0.1))
    for (name, a), b in zip(big.named_parameters(), accumulated.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert not all(torch.allclose(a, c) for a, c in zip(big.parameters(), single.parameters(), strict=True))


def test_poly_schedule_per_optimizer_step_and_callback_events():
    events = []
    lrs = []

    def spy(state: LoopState):
        events.append((state.event, state.epoch, state.batch, state.global_step))
        if state.event == "step_end":
            lrs.append(state.optimizer.param_groups[0]["lr"])

    _, result = _train(_quiet(batch_size=2, lr=0.5, poly_power=0.9), epochs=2, callbacks=[spy])
    total = 4  # 2 epochs x 2 steps
    assert lrs == pytest.approx([0.5 * (1 - t / total) ** 0.9 for t in range(1, total + 1)])
    assert events == [("epoch_start", 0, 0, 0), ("step_end", 0, 0, 1), ("step_end", 0, 1, 2), ("epoch_end", 0, 1, 2),
                      ("epoch_start", 1, 0, 2), ("step_end", 1, 0, 3), ("step_end", 1, 1, 4), ("epoch_end", 1, 1, 4)]
    assert [r["epoch"] for r in result.history] == [0, 1] and result.resumed_from is None


def test_lr_scale_trains_as_the_scaled_learning_rate_and_is_part_of_the_resume_check(tmp_path):
    scaled, _ = _train(_quiet(batch_size=2, lr=0.4), epochs=2, lr_scale=0.25)
    direct, _ = _train(_quiet(batch_size=2, lr=0.1), epochs=2)
    for (name, a), b in zip(scaled.named_parameters(), direct.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)
    # a custom optimiser's groups are scaled too
    adam, _ = _train(_quiet(batch_size=2), lr_scale=0.5,
                     optimizer=lambda params: torch.optim.Adam(params, lr=2e-3))
    plain_adam, _ = _train(_quiet(batch_size=2), optimizer=lambda params: torch.optim.Adam(params, lr=1e-3))
    for a, b in zip(adam.parameters(), plain_adam.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)

    _train(_quiet(batch_size=2), run_dir=tmp_path, lr_scale=0.5)
    with pytest.raises(TrainingError, match=r"lr_scale=0.5 \(now 1.0\)"):
        _train(_quiet(batch_size=2), run_dir=tmp_path, resume=True)
    with pytest.raises(ConfigError, match="lr_scale"):
        _train(_quiet(), lr_scale=0.0)


def test_json_lines_log_and_epoch_line(tmp_path, capsys):
    log = RunLog(tmp_path / "metrics.jsonl", echo=True)
    torch.manual_seed(0)
    fit(TinySegmenter(), _ce, TinyRGBD(4), 2, phase="p", settings=_quiet(batch_size=2, log_every=1), log=log,
        evaluate=lambda m: {"mean_iou": float("nan"), "per_class_iou": [0.1]})
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "step" in r]
    epochs = [r for r in records if "step" not in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4] and [r["epoch"] for r in epochs] == [0, 1]
    assert epochs[0]["val_mean_iou"] is None  # NaN is written as null, the line stays valid JSON
    assert all(math.isfinite(r["loss"]) and r["phase"] == "p" for r in records)
    out = capsys.readouterr().out
    assert "[p] epoch 1/2  loss " in out and "[p] epoch 2/2" in out


def test_progress_bars_are_quiet_when_not_a_terminal(capsys):
    assert list(progress(range(5), desc="x")) == list(range(5))  # pytest's stderr is not a terminal
    assert capsys.readouterr().err == ""
    list(progress(range(5), enabled=True, desc="forced"))
    assert "forced" in capsys.readouterr().err


@pytest.mark.parametrize("amp, compute_dtype", [(True, torch.bfloat16), (False, torch.float32)])
def test_amp_and_channels_last_train_on_cpu(amp, compute_dtype):
    seen = []

    def record(module, inputs, output):
        seen.append((output.dtype, inputs[0].is_contiguous(memory_format=torch.channels_last)))

    torch.manual_seed(0)
    model = TinySegmenter(norm=False, dropout=0.0)
    model.conv2.register_forward_hook(record)
    result = fit(model, _ce, TinyRGBD(4, void=False), 1, settings=_quiet(batch_size=2, amp=amp, channels_last=True),
                 log=RunLog(None, echo=False))
    assert seen == [(compute_dtype, True)] * 2  # both steps' convolutions ran in that dtype on channels_last input
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert model.conv1.weight.dtype == torch.float32  # the weights themselves stay float32
    assert math.isfinite(result.history[0]["loss"])


def test_settings_validation():
    with pytest.raises(ConfigError, match="batch_size"):
        TrainSettings(batch_size=0)
    with pytest.raises(ConfigError, match="lr"):
        TrainSettings(lr=0)
    with pytest.raises(ConfigError, match="epochs"):
        fit(nn.Conv2d(3, 2, 1), _ce, TinyRGBD(1), 0, settings=_quiet())


def test_a_phase_continues_a_schedule_an_earlier_phase_began(tmp_path):
    lrs = []

    def spy(state: LoopState):
        if state.event == "step_end":
            lrs.append(state.optimizer.param_groups[0]["lr"])

    # epochs 1..2 of a schedule over 4 epochs of 2 steps: the rates after steps 3..6 of 8
    _train(_quiet(batch_size=2, lr=0.5, poly_power=0.9), epochs=2, callbacks=[spy], schedule_start=1,
           schedule_epochs=4, run_dir=tmp_path)
    assert lrs == pytest.approx([0.5 * (1 - t / 8) ** 0.9 for t in range(3, 7)])
    with pytest.raises(TrainingError, match=r"schedule with 1 epochs before this phase and 1 after it \(now 0 and 0\)"):
        _train(_quiet(batch_size=2, lr=0.5, poly_power=0.9), epochs=2, run_dir=tmp_path, resume=True)
    with pytest.raises(ConfigError, match="schedule_epochs must be an integer >= 3"):
        _train(_quiet(), epochs=2, schedule_start=1, schedule_epochs=2)
    with pytest.raises(ConfigError, match="schedule_start must be an integer >= 0"):
        _train(_quiet(), schedule_start=-1)


def test_a_carried_optimizer_state_is_copied_not_trained_in_place():
    _, first = _train(_quiet(batch_size=2), keep_optimizer_state=True,
                      optimizer=lambda params: torch.optim.Adam(params, lr=1e-2))
    before = {k: {n: v.clone() for n, v in s.items()} for k, s in first.optimizer_state["state"].items()}
    _train(_quiet(batch_size=2), optimizer_state=first.optimizer_state,
           optimizer=lambda params: torch.optim.Adam(params, lr=1e-2))
    # a second phase carrying the same state (SN after BL+PS) starts from it as the first phase left it
    for key, state in first.optimizer_state["state"].items():
        for name, value in state.items():
            assert torch.equal(value, before[key][name]), (key, name)


def test_a_deployable_part_is_what_model_pt_and_best_pt_hold_and_last_pt_holds_everything(tmp_path):
    torch.manual_seed(0)
    student, head = TinySegmenter(norm=False, dropout=0.0), nn.Conv2d(3, 1, 1)  # the head: training only
    model = nn.ModuleDict({"student": student, "head": head})

    def loss(m, batch, epoch):
        extra = m["head"](batch["rgb"]).pow(2).mean()
        return {"loss": _ce(m["student"], batch, epoch)["loss"] + extra}

    data, settings = TinyRGBD(4, void=False), _quiet(batch_size=2, lr=0.1)
    fit(model, loss, data, 1, settings=settings, run_dir=tmp_path, log=RunLog(None, echo=False),
        evaluate=lambda m: {"mean_iou": 0.5}, deployable=student)
    for name in ("model.pt", "best.pt"):
        saved = torch.load(tmp_path / name, weights_only=False)["model"]
        assert saved.keys() == student.state_dict().keys()
        assert all(torch.equal(v, student.state_dict()[k]) for k, v in saved.items())
    assert torch.load(tmp_path / "last.pt", weights_only=False)["model"].keys() == model.state_dict().keys()
    # a finished phase resumes from last.pt; with it unreadable, model.pt alone cannot restore the head
    fit(model, loss, data, 1, settings=settings, run_dir=tmp_path, log=RunLog(None, echo=False), resume=True,
        deployable=student)
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"last.pt is unreadable, and .*model.pt holds only the deployed part"):
        fit(model, loss, data, 1, settings=settings, run_dir=tmp_path, log=RunLog(None, echo=False), resume=True,
            deployable=student)
