"""The Distiller on tiny RGB-D data: phases, parameter sharing, VTCE schedule, ablations, resume, errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from tests.tiny_rgbd import NUM_CLASSES, TinyRGBD, TinySegmenter, sample_logits

from depthdistill import DepthAwareConv2d, current_depth, depth_context, list_depth_aware, vtce_temperature
from depthdistill.distill import drop_depth
from depthdistill.distill import Distiller, ResultsTable
from depthdistill.engine import load_checkpoint
from depthdistill.errors import ConfigError, DatasetError, DepthError, TrainingError

FAST = dict(progress=False, log_echo=False, device="cpu")


def _distiller(model=None, settings="paper", **kwargs):  # the paper: every conv, no dropout
    return Distiller(model or TinySegmenter(), NUM_CLASSES, settings, **{**FAST, **kwargs})


def _spatial_convs(model):
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]


def test_teacher_is_depth_aware_student_plain_and_shares_the_parameter_objects():
    data = TinyRGBD(4)
    d = _distiller()
    teacher = d.train_teacher(data, epochs=1)
    assert list_depth_aware(teacher) == _spatial_convs(teacher) == ["conv1", "conv2"]
    assert all(isinstance(teacher.get_submodule(n), DepthAwareConv2d) for n in ("conv1", "conv2"))
    teacher_params = list(teacher.parameters())
    teacher_values = [p.detach().clone() for p in teacher_params]

    seen = {}

    def at_student_start(state):
        if state.phase == "sn" and state.event == "epoch_start" and state.epoch == 0:
            seen["params"] = list(state.model.parameters())
            seen["optimized"] = [p for g in state.optimizer.param_groups for p in g["params"]]
            seen["values"] = [p.detach().clone() for p in state.model.parameters()]

    d.callbacks.append(at_student_start)
    student = d.train_student(data, epochs=1)
    assert student is teacher and list_depth_aware(student) == []
    assert type(student.conv1) is torch.nn.Conv2d
    assert len(seen["params"]) == len(teacher_params)
    assert all(a is b for a, b in zip(seen["params"], teacher_params, strict=True))
    assert all(a is b for a, b in zip(seen["optimized"], teacher_params, strict=True))
    # the student starts from the trained teacher's values, and the frozen teacher keeps them
    assert all(torch.equal(a, b) for a, b in zip(seen["values"], teacher_values, strict=True))
    frozen = list(d.teacher.parameters())
    assert all(not p.requires_grad for p in frozen) and not d.teacher.training
    assert all(p is not q for p, q in zip(frozen, teacher_params, strict=True))
    assert all(torch.equal(p, v) for p, v in zip(frozen, teacher_values, strict=True))
    # the student trained
    assert not all(torch.equal(p, v) for p, v in zip(student.parameters(), teacher_values, strict=True))
    assert list_depth_aware(d.teacher) == ["conv1", "conv2"]


def test_teacher_loss_is_cross_entropy_of_the_depth_aware_forward():
    """With lr 0 nothing moves: the logged teacher loss must be CE of the D-Conv forward under each sample's depth."""
    data = TinyRGBD(3)
    model = TinySegmenter(norm=False, dropout=0.0)
    d = _distiller(model, optimizer=lambda p: torch.optim.SGD(p, lr=0.0))
    d.train_teacher(data, epochs=1)
    expected = []
    for i in range(len(data)):
        s = data[i]
        with torch.no_grad(), depth_context(s["depth"][None]):
            logits = model(s["rgb"][None])
        expected.append(F.cross_entropy(logits, s["label"][None], ignore_index=255).item())
    assert d.fits["tn"].history[0]["loss"] == pytest.approx(sum(expected) / len(expected), rel=1e-5)
    # and the depth matters: the same forward without depth is refused
    with pytest.raises(DepthError, match="no depth is set"):
        model(data[0]["rgb"][None])


def _vtce_by_hand(student_logits, teacher_logits, label, temperature):
    q_t = torch.softmax(teacher_logits / temperature, dim=1)
    log_q_s = torch.log_softmax(student_logits / temperature, dim=1)
    per_pixel = -temperature * (q_t * log_q_s).sum(dim=1)
    valid = label != 255
    return per_pixel[valid].sum() / valid.sum()


def test_student_loss_is_ce_plus_vtce_at_the_scheduled_temperature():
    data = TinyRGBD(3)
    model = TinySegmenter(norm=False, dropout=0.0)
    d = _distiller(model, beta=0.7)
    d.train_teacher(data, epochs=1)
    d.optimizer = lambda p: torch.optim.SGD(p, lr=0.0)  # the student keeps the teacher's values
    d.train_student(data, epochs=3)
    history = d.fits["sn"].history
    for epoch, record in enumerate(history):
        T = math.exp(-0.7 * (epoch * epoch - epoch + 2) / 2)  # Eq. 10, e counted from 0
        assert record["temperature"] == pytest.approx(T, rel=1e-6)
        assert T == pytest.approx(vtce_temperature(epoch, 0.7))
        ce, vt = [], []
        for i in range(len(data)):
            s = data[i]
            student_logits, teacher_logits = sample_logits(model, d.teacher, s)
            ce.append(F.cross_entropy(student_logits, s["label"][None], ignore_index=255).item())
            vt.append(_vtce_by_hand(student_logits, teacher_logits, s["label"][None], T).item())
        assert record["vtce"] == pytest.approx(sum(vt) / 3, rel=1e-5)
        assert record["ce"] == pytest.approx(sum(ce) / 3, rel=1e-5)
        assert record["loss"] == pytest.approx(record["ce"] + record["vtce"], rel=1e-6)


def test_ablation_switches():
    data = TinyRGBD(4)
    d = _distiller()
    initial = {k: v.clone() for k, v in d.model.state_dict().items()}
    starts = {}

    def record_start(state):
        if state.event == "epoch_start" and state.epoch == 0:
            starts[state.phase] = ({k: v.clone() for k, v in state.model.state_dict().items()}, state.model)

    d.callbacks.append(record_start)
    baseline = d.train_baseline(data, epochs=1)
    teacher = d.train_teacher(data, epochs=1)
    calls = []
    d.teacher.register_forward_hook(lambda *a: calls.append(1))

    # vtce off: CE only, the teacher is never asked
    d.train_student(data, epochs=1, share_parameters=False, vtce=False, name="no_vtce")
    assert calls == [] and "vtce" not in d.fits["no_vtce"].history[0]
    # PS off: a new plain model from the initial weights; the live teacher is untouched
    bl_vtce = d.train_student(data, epochs=1, share_parameters=False, vtce=True, name="bl_vtce")
    assert len(calls) == len(data) and "vtce" in d.fits["bl_vtce"].history[0]
    assert bl_vtce is not teacher and list_depth_aware(bl_vtce) == []
    assert list_depth_aware(teacher) == ["conv1", "conv2"]
    for phase in ("bl", "tn", "no_vtce", "bl_vtce"):
        assert all(torch.equal(starts[phase][0][k], initial[k]) for k in initial), phase
    assert starts["bl"][1] is baseline and baseline is not teacher and list_depth_aware(baseline) == []


def test_live_teacher_source_uses_the_shared_weights_not_the_frozen_copy():
    data = TinyRGBD(3)
    d = _distiller(teacher_source="live")
    d.train_teacher(data, epochs=1)
    d.teacher.forward = lambda *a: (_ for _ in ()).throw(AssertionError("frozen teacher used"))
    depth_seen = []

    def spy(module, inputs, output):  # a D-Conv layer of the live model, called only by the live teacher
        depth_seen.append(isinstance(module, DepthAwareConv2d))

    d.model.conv1.register_forward_hook(spy)
    student = d.train_student(data, epochs=1)
    assert list_depth_aware(student) == [] and student.training
    # plain: every student step, plus the one forward on the first batch that logs the student's starting CE
    assert depth_seen.count(True) == len(data) and depth_seen.count(False) == len(data) + 1


def _resume_run(tmp_path, stop_at=None):
    """Teacher 2 epochs, student 2 epochs; optionally killed by a callback at (phase, epoch, batch)."""
    def killer(state):
        if stop_at and state.event == "step_end" and (state.phase, state.epoch, state.batch) == stop_at:
            raise KeyboardInterrupt("simulated kill")

    torch.manual_seed(1)
    d = Distiller(TinySegmenter(), NUM_CLASSES, "paper", out_dir=tmp_path, callbacks=[killer], resume=True,
                  batch_size=2, lr=0.05, **FAST)
    data = TinyRGBD(6)
    d.train_teacher(data, epochs=2)
    return d.train_student(data, epochs=2)


@pytest.mark.parametrize("stop_at", [("tn", 1, 1), ("sn", 1, 0)])
def test_killed_and_resumed_run_ends_with_identical_weights(tmp_path, stop_at):
    reference = _resume_run(tmp_path / "uninterrupted").state_dict()
    with pytest.raises(KeyboardInterrupt):
        _resume_run(tmp_path / "killed", stop_at=stop_at)
    last = load_checkpoint(tmp_path / "killed" / stop_at[0] / "last.pt")
    assert last["epoch"] == 1 and last["phase"] == stop_at[0]
    resumed = _resume_run(tmp_path / "killed").state_dict()
    assert resumed.keys() == reference.keys()
    for key in reference:
        assert torch.equal(resumed[key], reference[key]), key


def test_checkpoint_holds_the_full_state(tmp_path):
    d = _distiller(out_dir=tmp_path)
    d.train_teacher(TinyRGBD(4), epochs=1, val_data=TinyRGBD(2, seed=1))
    state = load_checkpoint(tmp_path / "tn" / "last.pt")
    for key in ("model", "optimizer", "scheduler", "phase", "epoch", "rng", "best_metric", "history"):
        assert key in state
    assert set(state["rng"]) == {"torch", "cuda", "numpy", "python"}
    assert state["meta"]["depth_aware_layers"] == ["conv1", "conv2"]
    assert state["best_metric"] == pytest.approx(state["history"][0]["val_mean_iou"])
    model_file = load_checkpoint(tmp_path / "tn" / "model.pt")
    assert all(torch.equal(model_file["model"][k], v) for k, v in d.model.state_dict().items())
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["phase"] == "tn" and lines[-1]["epoch"] == 0 and "val_mean_iou" in lines[-1]


def test_labels_out_of_range_fail_before_training(tmp_path):
    d = _distiller(out_dir=tmp_path)
    with pytest.raises(DatasetError, match=r"labels \[7\] are >= num_classes=3.*tiny0"):
        d.train_teacher(TinyRGBD(4, bad_label=7), epochs=1)
    assert not (tmp_path / "tn" / "last.pt").exists()


def test_teacher_data_without_depth_is_refused():
    d = _distiller()
    with pytest.raises(DepthError, match="no 'depth'"):
        d.train_teacher(TinyRGBD(2, with_depth=False), epochs=1)
    # the baseline and a CE-only student need no depth
    d.train_baseline(TinyRGBD(2, with_depth=False), epochs=1)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    data = TinyRGBD(4)
    poison_after_first_epoch = lambda s: setattr(data, "poison", s.event == "epoch_end" or data.poison)  # noqa: E731
    d = _distiller(out_dir=tmp_path, callbacks=[poison_after_first_epoch])
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 1 batch 0.*last good checkpoint.*epoch 0"):
        d.train_teacher(data, epochs=3)
    state = load_checkpoint(tmp_path / "tn" / "last.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_misuse_errors(tmp_path):
    d = _distiller()
    with pytest.raises(TrainingError, match="call train_teacher first"):
        d.train_student(TinyRGBD(2), epochs=1)
    with pytest.raises(ConfigError, match=r"logits are \(1, 3, 16, 16\).*num_classes=5"):
        Distiller(TinySegmenter(), 5, "paper", **FAST).train_baseline(TinyRGBD(1), epochs=1)
    with pytest.raises(ConfigError, match="teacher_source"):
        _distiller(teacher_source="shared")
    with pytest.raises(ConfigError, match=r"unknown Distiller argument\(s\) \['learning_rate'\]"):
        _distiller(learning_rate=0.1)
    first = _distiller(out_dir=tmp_path)
    first.train_baseline(TinyRGBD(2), epochs=1)
    with pytest.raises(TrainingError, match="planned for 1 epochs"):
        _distiller(out_dir=tmp_path, resume=True).train_baseline(TinyRGBD(2), epochs=2)


def test_evaluate_counts_every_pixel_of_the_set():
    data = TinyRGBD(5, size=12)
    d = _distiller(eval_batch_size=2)
    model = d.model.eval()
    correct = valid = 0
    for i in range(len(data)):
        s = data[i]
        with torch.no_grad():
            pred = model(s["rgb"][None]).argmax(1)[0]
        keep = s["label"] != 255
        correct += int((pred[keep] == s["label"][keep]).sum())
        valid += int(keep.sum())
    metrics = d.evaluate(model, data)
    assert metrics["pixel_accuracy"] == pytest.approx(correct / valid)
    assert sum(map(sum, metrics["confusion_matrix"])) == valid


def test_run_experiment_trains_every_row_and_writes_the_table(tmp_path):
    train, test = TinyRGBD(4), TinyRGBD(2, seed=1)
    d = _distiller(out_dir=tmp_path, batch_size=4)
    table = d.run_experiment(train, test, teacher_epochs=2, student_epochs=1, ablations=True)
    assert isinstance(table, ResultsTable)
    assert [r.name for r in table] == ["BL", "TN", "TN→RGB", "SN", "BL+VTCE", "BL+PS"]
    assert [r.input for r in table] == ["RGB", "RGB-D", "RGB", "RGB", "RGB", "RGB"]
    assert [r.epochs for r in table] == [3, 2, 0, 1, 3, 1]
    for row in table:
        assert 0 <= row.mean_iou <= row.mean_pixel_accuracy <= 1 and 0 <= row.pixel_accuracy <= 1
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["name"] for r in saved["rows"]] == [r.name for r in table]
    assert saved["rows"][1]["mean_iou"] == pytest.approx(table["TN"].mean_iou)
    for folder in ("bl", "tn", "sn", "bl_vtce", "bl_ps"):
        assert (tmp_path / folder / "model.pt").is_file()
    assert "| TN | RGB-D |" in table.to_markdown()
    assert list(d.models) == ["BL", "TN", "TN→RGB", "BL+VTCE", "BL+PS", "SN"]
    assert list_depth_aware(d.models["TN"]) and not list_depth_aware(d.models["SN"])
    assert d.evaluate(d.models["SN"], test, use_depth=False)["mean_iou"] == pytest.approx(table["SN"].mean_iou)
    with pytest.raises(ConfigError, match="unknown experiment row"):
        d.run_experiment(train, test, teacher_epochs=1, student_epochs=1, rows=["XX"])


# ------------------------------------------------------------------------------------------ fidelity rows
def _constant_depth(data):
    """The same samples with every depth map constant: a depth-aware forward then equals the plain one."""
    return [{**data[i], "depth": torch.ones_like(data[i]["depth"])} for i in range(len(data))]


def test_tn_to_rgb_row_is_the_teacher_weights_run_plain_on_rgb(tmp_path):
    train, test = TinyRGBD(8), TinyRGBD(4, seed=1)
    d = _distiller(batch_size=4)
    table = d.run_experiment(train, test, teacher_epochs=2, student_epochs=1, rows=["TN", "TN→RGB"])
    assert [r.name for r in table] == ["TN", "TN→RGB"] and table["TN→RGB"].epochs == 0
    # independent path: the depth-aware teacher under constant depth (H = 1 at every tap) is the plain network
    expected = d.evaluate(d.teacher, _constant_depth(test), use_depth=True)
    assert table["TN→RGB"].mean_iou == pytest.approx(expected["mean_iou"], abs=1e-6)
    assert table["TN→RGB"].mean_iou != pytest.approx(table["TN"].mean_iou, abs=1e-4)  # depth matters here
    assert list_depth_aware(d.teacher) and not list_depth_aware(d.models["TN→RGB"])


def _seeded_model(**kwargs):
    torch.manual_seed(0)
    return TinySegmenter(**kwargs)


def test_bl_tn_ps_row_is_the_students_two_schedules_without_depth():
    from depthdistill.engine import RunLog, fit

    train, test = TinyRGBD(8), TinyRGBD(4, seed=1)
    d = _distiller(_seeded_model(norm=False, dropout=0.0), batch_size=4, lr=0.05, student_lr_scale=0.5)
    table = d.run_experiment(train, test, teacher_epochs=2, student_epochs=1, rows=["BL@TN+PS"])
    assert [(r.name, r.epochs) for r in table] == [("BL@TN+PS", 1)]
    assert list(d.models) == ["BL@TN+PS"] and sorted(d.fits) == ["bl_tn", "bl_tn_ps"]  # no teacher trained for it
    # by hand: BL for the teacher's epochs, then a new CE phase with a fresh optimiser at the student's lr scale
    alone = _distiller(_seeded_model(norm=False, dropout=0.0), batch_size=4, lr=0.05)
    model = alone.train_baseline(train, 2)
    ce = lambda m, b, e: {"loss": F.cross_entropy(m(b["rgb"]), b["label"], ignore_index=255)}  # noqa: E731
    fit(model, ce, train, 1, phase="by_hand", settings=alone.train_settings, lr_scale=0.5, log=RunLog(None, echo=False))
    for p, q in zip(d.models["BL@TN+PS"].parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert table["BL@TN+PS"].mean_iou == pytest.approx(alone.evaluate(model, test)["mean_iou"], abs=1e-6)


def test_bl_at_teacher_epochs_row_trains_the_baseline_for_the_teacher_epochs():
    train, test = TinyRGBD(8), TinyRGBD(4, seed=1)
    table = _distiller(_seeded_model(), batch_size=4).run_experiment(train, test, teacher_epochs=2, student_epochs=1,
                                                                      rows=["BL", "BL@TN"])
    assert [(r.name, r.epochs) for r in table] == [("BL", 3), ("BL@TN", 2)]
    alone = _distiller(_seeded_model(), batch_size=4)
    expected = alone.evaluate(alone.train_baseline(train, 2), test)
    assert table["BL@TN"].mean_iou == pytest.approx(expected["mean_iou"], abs=1e-9)


def test_depth_dropout_one_trains_the_teacher_exactly_as_the_plain_network():
    data = TinyRGBD(8)
    # no dropout layer: the dropout draws would otherwise shift the random stream between the two runs
    d = _distiller(_seeded_model(norm=False, dropout=0.0), batch_size=4, lr=0.05, depth_dropout=1.0)
    baseline = d.train_baseline(data, 2)
    teacher = d.train_teacher(data, 2)
    for p, q in zip(teacher.parameters(), baseline.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    with_depth = _distiller(_seeded_model(norm=False, dropout=0.0), batch_size=4, lr=0.05).train_teacher(data, 2)
    assert not all(torch.allclose(p, q, atol=1e-3)
                   for p, q in zip(with_depth.parameters(), baseline.parameters(), strict=True))


def test_depth_dropout_replaces_a_share_of_the_depth_maps_by_a_constant():
    depth = torch.rand(4000, 1, 2, 2) + 1
    torch.manual_seed(0)
    out = drop_depth(depth, 0.5)
    constant = (out == 1.0).flatten(1).all(1)
    untouched = (out == depth).flatten(1).all(1)
    assert bool((constant ^ untouched).all())
    assert 0.45 < constant.float().mean().item() < 0.55
    assert drop_depth(depth, 0.0) is depth
    with pytest.raises(ConfigError, match="depth_dropout"):
        _distiller(depth_dropout=1.5)
    with pytest.raises(ConfigError, match="probability"):
        drop_depth(depth, -0.1)


def test_the_teacher_phase_trains_on_dropped_depth():
    # what the depth-aware layers see in a teacher step: each sample's own depth map, or a constant one
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x):
            seen.append(current_depth().clone())
            return x

    model = TinySegmenter()
    model.conv1 = torch.nn.Sequential(Spy(), model.conv1)
    d = _distiller(model, depth_dropout=0.5, batch_size=16, optimizer=lambda p: torch.optim.SGD(p, lr=0.0))
    data = TinyRGBD(16)
    d.train_teacher(data, 1)
    originals = [data[i]["depth"] for i in range(16)]
    dropped = (seen[0] == 1.0).flatten(1).all(1)
    assert 0 < int(dropped.sum()) < 16  # some samples lost their depth, the others kept it
    assert all(any(torch.equal(kept, o) for o in originals) for kept in seen[0][~dropped])


def test_depth_dropout_ranks_take_their_own_share_of_one_global_draw(monkeypatch):
    import depthdistill.distill.teacher as teacher_module

    depth = torch.rand(64, 1, 2, 2) + 1
    torch.manual_seed(3)
    whole = (drop_depth(depth, 0.5) == 1.0).flatten(1).all(1)  # one process, the global batch of 64
    shares = []
    for rank in range(4):  # four processes of 16 samples each, the same generator state on each
        monkeypatch.setattr(teacher_module, "get_world_size", lambda: 4)
        monkeypatch.setattr(teacher_module, "get_rank", lambda rank=rank: rank)
        torch.manual_seed(3)
        shares.append((drop_depth(depth[16 * rank:16 * (rank + 1)], 0.5) == 1.0).flatten(1).all(1))
    assert torch.equal(torch.cat(shares), whole)
    assert not all(torch.equal(shares[0], share) for share in shares[1:])  # ranks do not drop in lockstep


def test_student_lr_scale_and_carried_optimizer_state():
    data = TinyRGBD(8)
    seen = {}

    def spy(state):
        if state.event == "epoch_end" and state.phase == "tn":
            seen["teacher"] = {id(p): s["momentum_buffer"].clone() for p, s in state.optimizer.state.items()}
        if state.event == "epoch_start" and state.phase == "sn" and state.epoch == 0:
            seen["lr"] = state.optimizer.param_groups[0]["lr"]
            seen["student"] = {id(p): s["momentum_buffer"].clone() for p, s in state.optimizer.state.items()}

    d = _distiller(batch_size=4, lr=0.01, student_lr_scale=0.25, student_optimizer="carry", callbacks=[spy])
    d.train_teacher(data, 1)
    d.train_student(data, 1)
    assert seen["lr"] == pytest.approx(0.0025)
    assert seen["student"].keys() == seen["teacher"].keys() and seen["teacher"]
    for key, buffer in seen["teacher"].items():
        assert torch.equal(seen["student"][key], buffer)

    fresh = {}
    d2 = _distiller(batch_size=4, lr=0.01, callbacks=[lambda s: s.phase == "sn" and s.event == "epoch_start"
                                                      and fresh.setdefault("state", dict(s.optimizer.state))])
    d2.train_teacher(data, 1)
    d2.train_student(data, 1)
    assert fresh["state"] == {}
    with pytest.raises(ConfigError, match="student_optimizer"):
        _distiller(student_optimizer="keep")
    with pytest.raises(ConfigError, match="student_lr_scale"):
        _distiller(student_lr_scale=0)


def test_student_start_is_logged(tmp_path):
    data = TinyRGBD(4)
    d = _distiller(out_dir=tmp_path, batch_size=4)
    d.train_teacher(data, 1)
    student = d.train_student(data, 1)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    start = next(r for r in records if r.get("event") == "student_start")
    assert start["optimizer"] == "fresh" and start["lr_scale"] == 1.0 and start["calibrated"] is False
    teacher_start = next(r for r in records if r.get("event") == "teacher_start")
    assert teacher_start["depth_aware_layers"] == list_depth_aware(d.teacher) != []
    assert (teacher_start["depth_resize"], teacher_start["depth_dropout"]) == (d.settings.depth_resize,
                                                                               d.settings.depth_dropout)
    del student
    # the logged CE is the teacher's weights run plain on the first batch, before any student step
    first = [data[i] for i in range(4)]
    plain = copy_plain(d.teacher)
    with torch.no_grad():
        ce = F.cross_entropy(plain(torch.stack([s["rgb"] for s in first])),
                             torch.stack([s["label"] for s in first]), ignore_index=255).item()
    assert start["start_ce"] == pytest.approx(ce, rel=1e-5)


def copy_plain(teacher):
    import copy

    from depthdistill import convert_to_plain

    return convert_to_plain(copy.deepcopy(teacher)).eval()


def test_calibrated_removal_rescales_the_shared_parameters_in_place(tmp_path):
    data = TinyRGBD(8)
    d = _distiller(TinySegmenter(norm=False, dropout=0.0), out_dir=tmp_path, batch_size=4, calibrate_removal=True,
                   calibration_batches=2, optimizer=lambda p: torch.optim.SGD(p, lr=0.0))
    teacher = d.train_teacher(data, 1)
    params = {n: p for n, p in teacher.named_parameters()}
    before = {n: p.detach().clone() for n, p in params.items()}
    student = d.train_student(data, 1, vtce=False)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    scales = next(r["scales"] for r in records if r.get("event") == "calibrate_removal")
    assert set(scales) == {"conv1", "conv2"} and all(s != 1.0 for s in scales.values())
    for name, p in student.named_parameters():
        assert p is params[name]
        layer = name.rsplit(".", 1)[0]
        torch.testing.assert_close(p.detach(), before[name] * scales.get(layer, 1.0))


def test_presets_set_the_teacher_and_the_switch_and_explicit_arguments_win():
    from depthdistill.distill import PRESETS
    from depthdistill.models import DEPTH_AWARE_CNN_LAYERS, deeplab_vgg16

    data = TinyRGBD(2, size=16)
    default = Distiller(deeplab_vgg16(NUM_CLASSES, width=0.0625), NUM_CLASSES, progress=False, log_echo=False)
    s = default.settings
    assert (s.preset, s.depth_resize, s.depth_dropout, s.student_optimizer) == ("default", "avgpool", 0.5, "fresh")
    default.train_teacher(data, 1)
    assert list_depth_aware(default.teacher) == list(DEPTH_AWARE_CNN_LAYERS)  # the model names its own layers
    assert {default.teacher.get_submodule(n).depth_resize for n in DEPTH_AWARE_CNN_LAYERS} == {"avgpool"}

    paper = Distiller(deeplab_vgg16(NUM_CLASSES, width=0.0625), NUM_CLASSES, "paper", progress=False,
                      log_echo=False)
    assert (paper.settings.depth_resize, paper.settings.depth_dropout) == ("nearest", 0.0)
    paper.train_teacher(data, 1)
    assert len(list_depth_aware(paper.teacher)) == 14  # every spatial convolution

    # a model that names no layers: every spatial convolution under either preset
    plain = _distiller(TinySegmenter(), "default")
    assert plain.settings.layer_filter(plain.model) is None
    assert plain.settings.depth_dropout == PRESETS["default"]["depth_dropout"]
    mixed = _distiller(settings="default", depth_dropout=0.0, depth_resize="nearest", include="conv1")
    assert (mixed.settings.depth_dropout, mixed.settings.depth_resize, mixed.settings.include) == (0.0, "nearest",
                                                                                                   "conv1")
    with pytest.raises(ConfigError, match="preset"):
        _distiller(settings="tuned")


def test_a_default_preset_teacher_runs_under_a_bare_depth_context_as_it_trained():
    # the teacher carries its depth resize ("avgpool" in the default preset): a context that names none uses it
    from depthdistill.models import deeplab_vgg16

    data = TinyRGBD(2, size=32)
    torch.manual_seed(0)
    d = _distiller(deeplab_vgg16(NUM_CLASSES, width=0.0625), settings="default", batch_size=2)
    d.train_teacher(data, 1)  # Depth-aware CNN's six layers, four of them below the input's resolution
    rgb = torch.stack([data[i]["rgb"] for i in range(2)])
    depth = torch.stack([data[i]["depth"] for i in range(2)])
    with torch.no_grad():
        with depth_context(depth):
            bare = d.teacher(rgb)
        with depth_context(depth, resize="avgpool"):
            trained_as = d.teacher(rgb)
        with depth_context(depth, resize="nearest"):
            nearest = d.teacher(rgb)
    assert torch.equal(bare, trained_as) and not torch.allclose(bare, nearest)
