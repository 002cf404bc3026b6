"""Run records: reproducible runs, nothing overwritten, resume refusing what it cannot continue, corrupt
checkpoints caught, one log record per step, checkpoints written from Python usable by the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from tests.tiny_rgbd import NUM_CLASSES, TinyRGBD, TinySegmenter

from depthdistill.cli import main
from depthdistill.distill import Distiller
from depthdistill.engine import load_checkpoint, save_checkpoint
from depthdistill.engine.registry import build_model, load_model, model_spec
from depthdistill.errors import CheckpointError, ConfigError, TrainingError

FAST = dict(progress=False, log_echo=False, device="cpu", batch_size=2)
RUN = {
    "data": {"name": "tests.tiny_rgbd:TinyRGBD", "args": {"n": 4}},
    "model": {"name": "tests.tiny_rgbd:tiny_segmenter", "args": {"width": 4}},
    "experiment": {"rows": ["BL"], "teacher_epochs": 1, "student_epochs": 1, "baseline_epochs": 1},
    "train": {"device": "cpu", "batch_size": 2, "progress": False, "seed": 0},
}


def _train_cli(tmp_path, out, run=RUN, *extra):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(run))
    return main(["train", "--config", str(config), "--out-dir", str(out), *extra])


def test_two_runs_of_one_run_file_train_identical_weights(tmp_path):
    assert _train_cli(tmp_path, tmp_path / "a") == 0
    torch.rand(5)  # whatever the global generator did in between
    assert _train_cli(tmp_path, tmp_path / "b") == 0
    a, b = (load_checkpoint(tmp_path / run / "bl" / "model.pt")["model"] for run in ("a", "b"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_run_never_overwrites_another_runs_records(tmp_path, capsys):
    out = tmp_path / "out"
    assert _train_cli(tmp_path, out) == 0
    records = {name: (out / name).read_bytes() for name in ("config.yaml", "metrics.jsonl", "results.json")}
    changed = {**RUN, "train": {**RUN["train"], "lr": 0.01}}
    # a new run into the folder is refused, naming the folder and the ways out
    assert _train_cli(tmp_path, out, changed) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "already holds a run" in err and "--resume" in err and "--out-dir" in err
    # a resume that fails at once (bad labels) leaves the records as they were
    bad = {**RUN, "data": {**RUN["data"], "args": {"n": 4, "bad_label": 7}}}
    assert _train_cli(tmp_path, out, bad, "--resume") == 2
    assert {name: (out / name).read_bytes() for name in records} == records
    # and a new run that fails at once writes no records at all
    assert _train_cli(tmp_path, tmp_path / "fresh", bad) == 2
    assert not (tmp_path / "fresh" / "config.yaml").exists()


def _baseline(out_dir, epochs=1, model=None, **kwargs):
    torch.manual_seed(0)  # the same initial weights in every run
    d = Distiller(model or TinySegmenter(), NUM_CLASSES, out_dir=out_dir, **{**FAST, **kwargs})
    return d.train_baseline(TinyRGBD(4), epochs=epochs)


def test_resume_with_other_training_settings_is_refused_and_leaves_model_pt(tmp_path):
    _baseline(tmp_path, lr=0.1)
    final = (tmp_path / "bl" / "model.pt").read_bytes()
    with pytest.raises(TrainingError, match=r"lr=0.1 \(now 0.2\)"):
        _baseline(tmp_path, lr=0.2, resume=True)
    with pytest.raises(TrainingError, match=r"batch_size=2 \(now 4\).*momentum=0.9 \(now 0.5\)"):
        _baseline(tmp_path, lr=0.1, batch_size=4, momentum=0.5, resume=True)
    with pytest.raises(TrainingError, match=r"alpha=8.3 \(now 5.0\)"):
        _baseline(tmp_path, lr=0.1, alpha=5.0, resume=True)
    assert (tmp_path / "bl" / "model.pt").read_bytes() == final
    _baseline(tmp_path, lr=0.1, resume=True, num_workers=0, eval_batch_size=4)  # what does not change the result


def test_resume_with_another_model_names_the_mismatch(tmp_path):
    _baseline(tmp_path, model=TinySegmenter(width=4))
    with pytest.raises(ConfigError, match=r"made with another model: conv1.weight: \(4, 3, 3, 3\) in the "
                                          r"checkpoint, \(8, 3, 3, 3\) in the model"):
        _baseline(tmp_path, model=TinySegmenter(width=8), resume=True)


def _flip_tensor_bytes(path, tensor, count=64):
    """Flips bytes inside the stored data of ``tensor`` (the file stays a loadable zip)."""
    data = bytearray(path.read_bytes())
    start = data.find(tensor.numpy().tobytes())
    assert start >= 0
    for offset in range(0, min(count, tensor.numel() * tensor.element_size())):
        data[start + offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_corrupt_checkpoint_is_refused_and_an_old_one_without_checksum_loads(tmp_path):
    weights = torch.linspace(-1, 1, 500)
    path = save_checkpoint({"model": {"w": weights}, "epoch": 1}, tmp_path / "a.pt")
    _flip_tensor_bytes(path, weights)
    assert not torch.equal(torch.load(path, weights_only=True)["model"]["w"], weights)  # torch loads it silently
    with pytest.raises(CheckpointError, match="a.pt is corrupt"):
        load_checkpoint(path)
    torch.save({"model": {"w": weights}}, tmp_path / "old.pt")  # written before checksums existed
    assert torch.equal(load_checkpoint(tmp_path / "old.pt")["model"]["w"], weights)


def test_evaluate_refuses_a_corrupt_model_pt(tmp_path, capsys):
    trained = _baseline(tmp_path)
    checkpoint = tmp_path / "bl" / "model.pt"
    _flip_tensor_bytes(checkpoint, trained.state_dict()["conv1.weight"], count=200)
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", "tests.tiny_rgbd:TinyRGBD",
                 "--data-arg", "n=2"]) == 2
    assert "model.pt is corrupt" in capsys.readouterr().err


def test_a_finished_phase_with_a_corrupt_last_pt_loads_model_pt(tmp_path):
    trained = _baseline(tmp_path).state_dict()
    last = tmp_path / "bl" / "last.pt"
    _flip_tensor_bytes(last, trained["head.weight"])
    resumed = _baseline(tmp_path, resume=True).state_dict()
    for key in trained:
        assert torch.equal(resumed[key], trained[key]), key
    # an unfinished phase cannot fall back: the corrupt file is named
    with pytest.raises(KeyboardInterrupt):
        _baseline(tmp_path / "two", epochs=2, callbacks=[_kill_at(1, 0)])
    (tmp_path / "two" / "bl" / "last.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="last.pt"):
        _baseline(tmp_path / "two", epochs=2, resume=True)


def test_a_carried_optimizer_state_is_not_lost_to_a_corrupt_last_pt(tmp_path):
    def teacher(**kwargs):
        torch.manual_seed(0)
        d = Distiller(TinySegmenter(), NUM_CLASSES, out_dir=tmp_path, student_optimizer="carry", **FAST, **kwargs)
        return d.train_teacher(TinyRGBD(4), epochs=1)

    teacher()
    (tmp_path / "tn" / "last.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="optimiser state that the next phase carries"):
        teacher(resume=True)


def _kill_at(epoch, batch):
    def killer(state):
        if state.event == "step_end" and (state.epoch, state.batch) == (epoch, batch):
            raise KeyboardInterrupt("simulated kill")
    return killer


def test_metrics_log_holds_each_step_once_after_a_kill_and_resume(tmp_path):
    def records(out):
        lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in ("time", "seconds")} for r in lines]

    _baseline(tmp_path / "whole", epochs=2, log_every=1)
    with pytest.raises(KeyboardInterrupt):
        _baseline(tmp_path / "killed", epochs=2, log_every=1, callbacks=[_kill_at(1, 0)])
    assert [r.get("step") for r in records(tmp_path / "killed")] == [1, 2, None, 3]  # step 3 is past last.pt
    _baseline(tmp_path / "killed", epochs=2, log_every=1, resume=True)
    assert records(tmp_path / "killed") == records(tmp_path / "whole")
    assert [(r["epoch"], r.get("step")) for r in records(tmp_path / "whole")] == [(0, 1), (0, 2), (0, None),
                                                                                   (1, 3), (1, 4), (1, None)]


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated upstream
def test_a_checkpoint_written_from_python_works_with_predict_and_export(tmp_path, capsys):
    _baseline(tmp_path / "default")
    checkpoint = tmp_path / "default" / "bl" / "model.pt"
    assert load_checkpoint(checkpoint)["meta"]["model"] == {"name": "tests.tiny_rgbd:TinySegmenter", "args": {}}
    image = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "room.png")
    assert main(["predict", "--checkpoint", str(checkpoint), str(tmp_path / "room.png"),
                 "--out", str(tmp_path / "pred")]) == 0
    assert (tmp_path / "pred" / "room_label.png").is_file()
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "torchscript",
                 "--height", "16", "--width", "16"]) == 0
    assert "logits match PyTorch" in capsys.readouterr().out
    # a class built with other arguments than its defaults: the error says how to name it, and naming it works
    _baseline(tmp_path / "narrow", model=TinySegmenter(width=4))
    narrow = tmp_path / "narrow" / "bl" / "model.pt"
    assert main(["predict", "--checkpoint", str(narrow), str(tmp_path / "room.png"), "--out", str(tmp_path)]) == 2
    assert "--model NAME --model-arg KEY=VALUE" in capsys.readouterr().err
    model, _ = load_model(narrow, model={"name": "tests.tiny_rgbd:TinySegmenter", "args": {"width": 4}})
    assert model.conv1.out_channels == 4
    assert main(["predict", "--checkpoint", str(narrow), str(tmp_path / "room.png"), "--out", str(tmp_path / "p4"),
                 "--model", "tests.tiny_rgbd:TinySegmenter", "--model-arg", "width=4"]) == 0


@pytest.mark.parametrize("name,args", [("deeplab_vgg16", {"width": 0.0625}),
                                       ("smp:Unet/resnet18", {"encoder_depth": 3, "decoder_channels": (16, 8, 4)})])
def test_library_and_smp_models_are_named_with_their_arguments(name, args):
    model = build_model(name, 3, **args)
    spec = model_spec(model)
    assert spec["name"] == name
    rebuilt = build_model(spec["name"], 3, **spec["args"])
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_resume_with_another_custom_optimizer_is_refused(tmp_path):
    adam = lambda lr: (lambda params: torch.optim.Adam(params, lr=lr))  # noqa: E731
    _baseline(tmp_path, optimizer=adam(1e-3))
    with pytest.raises(TrainingError, match=r"Adam lr=0.001 \(now 0.01\)"):
        _baseline(tmp_path, optimizer=adam(1e-2), resume=True)
    with pytest.raises(TrainingError, match=r"optimizer Adam \(now SGD\)"):
        _baseline(tmp_path, optimizer=lambda params: torch.optim.SGD(params, lr=1e-3), resume=True)
    _baseline(tmp_path, optimizer=adam(1e-3), resume=True)


def _distilled(out_dir, **kwargs):
    torch.manual_seed(0)
    d = Distiller(TinySegmenter(), NUM_CLASSES, out_dir=out_dir, **{**FAST, **kwargs})
    d.train_teacher(TinyRGBD(4), epochs=1)
    return d.train_student(TinyRGBD(4), epochs=1)


def _sharpened(student, teacher, labels, epoch):
    return {"loss": torch.nn.functional.cross_entropy(student, labels, ignore_index=255)
            + torch.nn.functional.mse_loss(student, teacher)}


def test_resume_of_a_student_with_another_loss_or_teacher_source_is_refused(tmp_path):
    _distilled(tmp_path, beta=0.9)
    # every setting of the method is part of each phase's identity: the first phase resumed already refuses
    with pytest.raises(TrainingError, match=r"distill\.beta=0\.9 \(now 0\.5\)"):
        _distilled(tmp_path, beta=0.5, resume=True)
    with pytest.raises(TrainingError, match=r"distill\.student_loss=None \(now '[\w.]+:_sharpened'\)"):
        _distilled(tmp_path, student_loss=_sharpened, resume=True)
    with pytest.raises(TrainingError, match=r"distill\.teacher_source='frozen' \(now 'live'\)"):
        _distilled(tmp_path, teacher_source="live", resume=True)
    _distilled(tmp_path, beta=0.9, resume=True)


def test_results_and_removal_json_are_strict_json(tmp_path):
    # NaN (a class absent from the test set) and inf must not reach the files as NaN / Infinity, which strict
    # JSON readers reject: the one helper (depthdistill.serialization.jsonable) writes null and "inf".
    from depthdistill.distill import ResultRow, ResultsTable
    from depthdistill.removal import RemovalReport, RemovalRow

    table = ResultsTable([ResultRow("BL", "RGB", 0.5, float("nan"), 0.75, 2, 1.0, [0.25, float("nan")])])
    text = table.save_json(tmp_path / "results.json").read_text()
    row = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in results.json"))["rows"][0]
    assert (row["mean_iou"], row["per_class_iou"], row["pixel_accuracy"]) == (None, [0.25, None], 0.75)
    report = RemovalReport([RemovalRow("conv1", float("nan"), 0.0, 1.0, float("inf"))]).to_dict()
    assert json.loads(json.dumps(report, allow_nan=False))["layers"][0] == {
        "name": "conv1", "mean_h": None, "rms_depth_aware": 0.0, "rms_plain": 1.0, "ratio": "inf"}


@pytest.mark.parametrize("name, args, cls", [
    ("deeplab_vgg16", {"width": 0.0625}, "DeepLabVGG16"),
    ("timm:resnet18", {"head_channels": 8}, "TimmSegmenter"),
    ("smp:Unet/resnet18", {"encoder_depth": 3, "decoder_channels": (16, 8, 4)}, "Unet"),
    ("tests.tiny_rgbd:TinySegmenter", {"width": 4}, "TinySegmenter"),
])
def test_build_model_reads_names_from_its_tables(name, args, cls):
    model = build_model(name, 3, **args)
    assert type(model).__name__ == cls


@pytest.mark.parametrize("name, message", [("vgg", "unknown model 'vgg'; use deeplab_vgg16, smp:"),
                                           ("smp:Unet", "must be 'smp:<Arch>/<encoder>'"),
                                           ("deeplab_vgg16", "does not accept arguments \\['depth'\\]")])
def test_build_model_refuses_unknown_names_and_arguments(name, message):
    with pytest.raises(ConfigError, match=message):
        build_model(name, 3, **({"depth": 3} if name == "deeplab_vgg16" else {}))
