"""The `depthdistill` command end to end on the tiny data set and model of tiny_rgbd (in-process, via main())."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from depthdistill.cli import _COMMANDS, build_parser, main
from depthdistill.engine import load_checkpoint
from depthdistill.engine.registry import load_model
from depthdistill.viz import label_palette
from tests.tiny_rgbd import NUM_CLASSES, TinyRGBD, TinySegmenter

RUN = {
    "data": {"name": "tests.tiny_rgbd:TinyRGBD", "args": {"n": 4}},
    "model": {"name": "tests.tiny_rgbd:tiny_segmenter", "args": {"width": 4}},
    "experiment": {"rows": ["BL", "TN", "SN"], "teacher_epochs": 1, "student_epochs": 1},
    "train": {"device": "cpu", "batch_size": 2, "progress": False},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    (root / "run.yaml").write_text(yaml.safe_dump(RUN))
    assert main(["train", "--config", str(root / "run.yaml"), "--out-dir", str(root / "out")]) == 0
    return root


def test_every_command_has_complete_help(capsys):
    parser = build_parser()
    assert {"train", "evaluate", "predict", "export", "demo", "prepare"} <= set(_COMMANDS)
    for name, cmd in _COMMANDS.items():
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([name, "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        assert cmd.description.split()[0] in text
        for flags, kwargs in cmd.arguments:
            assert (kwargs.get("metavar") if flags[0][0] != "-" else flags[0]) in text and kwargs.get("help"), flags


def test_train_writes_every_row_results_and_the_config(trained, capsys):
    out = trained / "out"
    results = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in results["rows"]] == ["BL", "TN", "SN"]
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["train"]["lr"] == 2.5e-4 and config["distill"]["alpha"] == 8.3  # defaults filled in
    meta = load_checkpoint(out / "sn" / "model.pt")["meta"]
    assert meta["model"] == {"name": "tests.tiny_rgbd:tiny_segmenter", "args": {"width": 4}}
    assert meta["depth_aware_layers"] == []
    assert load_checkpoint(out / "tn" / "model.pt")["meta"]["depth_aware_layers"] == ["conv1", "conv2"]


def test_evaluate_reproduces_the_training_runs_numbers(trained, capsys):
    out = trained / "out"
    rows = {r["name"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    for folder, row in (("sn", "SN"), ("tn", "TN")):
        report = trained / f"{folder}.json"
        assert main(["evaluate", "--checkpoint", str(out / folder / "model.pt"), "--json", str(report)]) == 0
        metrics = json.loads(report.read_text())
        assert metrics["mean_iou"] == pytest.approx(rows[row]["mean_iou"])
        assert metrics["mean_pixel_accuracy"] == pytest.approx(rows[row]["mean_pixel_accuracy"])
    assert "(tn, RGB-D)" in capsys.readouterr().out
    # data named on the command line instead of the stored run file
    assert main(["evaluate", "--checkpoint", str(out / "sn" / "model.pt"), "--data", "tests.tiny_rgbd:TinyRGBD",
                 "--data-arg", "n=2", "--split", "train"]) == 0


def test_predict_writes_label_mask_and_overlay(trained):
    out = trained / "out"
    image = (np.random.default_rng(0).random((20, 24, 3)) * 255).astype(np.uint8)
    Image.fromarray(image).save(trained / "room.png")
    assert main(["predict", "--checkpoint", str(out / "sn" / "model.pt"), str(trained / "room.png"),
                 "--out", str(trained / "pred"), "--opacity", "0.5"]) == 0
    label = np.asarray(Image.open(trained / "pred" / "room_label.png"))
    mask = np.asarray(Image.open(trained / "pred" / "room_mask.png"))
    overlay = np.asarray(Image.open(trained / "pred" / "room_overlay.png")).astype(float)
    model, _ = load_model(out / "sn" / "model.pt")
    with torch.no_grad():
        expected = model(torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255).argmax(1)[0].numpy()
    assert label.shape == (20, 24) and np.array_equal(label, expected)
    assert np.array_equal(mask, label_palette(3)[expected])  # TinyRGBD has no palette of its own
    assert np.abs(overlay - (0.5 * mask + 0.5 * image)).max() <= 0.5 + 1e-6


def test_predict_paints_with_the_training_sets_palette(tmp_path):
    from depthdistill import Distiller

    class Painted(TinyRGBD):
        palette = np.array([[10, 20, 30], [40, 50, 60], [70, 80, 90]], dtype=np.uint8)

    torch.manual_seed(0)
    d = Distiller(TinySegmenter(), NUM_CLASSES, out_dir=tmp_path / "run", progress=False, log_echo=False,
                  device="cpu", meta={"model": {"name": "tests.tiny_rgbd:tiny_segmenter", "args": {}}})
    d.train_baseline(Painted(2), 1, name="bl")
    image = (np.random.default_rng(1).random((16, 16, 3)) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "room.png")
    assert main(["predict", "--checkpoint", str(tmp_path / "run" / "bl" / "model.pt"), str(tmp_path / "room.png"),
                 "--out", str(tmp_path / "pred")]) == 0
    label = np.asarray(Image.open(tmp_path / "pred" / "room_label.png"))
    mask = np.asarray(Image.open(tmp_path / "pred" / "room_mask.png"))
    assert np.array_equal(mask, Painted.palette[label])


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.load is deprecated upstream
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_round_trip(trained, fmt, capsys):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    out = trained / "out"
    target = trained / f"student.{fmt}"
    assert main(["export", "--checkpoint", str(out / "sn" / "model.pt"), "--format", fmt, "--out", str(target),
                 "--height", "16", "--width", "16"]) == 0
    assert "logits match PyTorch" in capsys.readouterr().out
    model, _ = load_model(out / "sn" / "model.pt")
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        expected = model(x)
    if fmt == "torchscript":
        got = torch.jit.load(str(target))(x)
    else:
        import onnxruntime
        session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {"rgb": x.numpy()})[0])
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_errors_are_one_line_messages(trained, tmp_path, capsys):
    out = trained / "out"
    assert main(["predict", "--checkpoint", str(out / "tn" / "model.pt"), "x.png", "--out", str(tmp_path)]) == 2
    assert "holds a depth-aware teacher" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(out / "tn" / "model.pt"), "--format", "onnx"]) == 2
    assert "holds a depth-aware teacher" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"train": {"learning_rate": 1}}))
    assert main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("depthdistill: error: unknown key(s) ['train.learning_rate']") and "'lr'" in err
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "--set", "model.name=nonsense", "--set", "num_classes=3",
                 "--set", "data.name=tests.tiny_rgbd:TinyRGBD"]) == 2
    assert "unknown model 'nonsense'" in capsys.readouterr().err


def test_print_config_shows_every_default(capsys):
    assert main(["train", "--print-config", "--set", "train.lr=0.01"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["lr"] == 0.01 and printed["train"]["momentum"] == 0.9
    assert printed["experiment"]["rows"] == ["TN", "SN"] and printed["model"]["name"] == "deeplab_vgg16"


def test_evaluate_feeds_rgb_as_the_checkpoint_was_trained(tmp_path, capsys):
    # a model trained on ImageNet-normalised RGB, evaluated on --data synthetic (no transform): the checkpoint's
    # recorded normalisation is applied, and the numbers are the ones the Distiller measured on normalised data
    from depthdistill.data import SyntheticRGBD, eval_transforms
    from depthdistill.distill import Distiller
    from depthdistill.models import deeplab_vgg16

    size = (32, 40)
    train = SyntheticRGBD(num_samples=4, size=size, split="train", transform=eval_transforms())
    test = SyntheticRGBD(num_samples=3, size=size, split="test", transform=eval_transforms())
    torch.manual_seed(0)
    d = Distiller(deeplab_vgg16(train.num_classes, width=0.0625), train.num_classes, out_dir=tmp_path, batch_size=4,
                  progress=False, log_echo=False, device="cpu", meta={"model": {"name": "deeplab_vgg16",
                                                                               "args": {"width": 0.0625}}})
    expected = d.evaluate(d.train_baseline(train, 1), test)["mean_iou"]
    report = tmp_path / "m.json"
    args = ["evaluate", "--checkpoint", str(tmp_path / "bl" / "model.pt"), "--data", "synthetic", "--data-arg",
            "num_samples=3", "--data-arg", f"size=[{size[0]}, {size[1]}]", "--json", str(report)]
    assert main(args) == 0
    assert "normalising RGB as in training" in capsys.readouterr().err
    assert json.loads(report.read_text())["mean_iou"] == pytest.approx(expected, abs=1e-9)
    # data normalised otherwise is refused, not silently evaluated
    other = args + ["--data-arg", "transform={preset: eval, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}"]
    assert main(other) == 2
    assert "not the one the checkpoint was trained with" in capsys.readouterr().err
