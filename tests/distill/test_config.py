"""Run files: defaults, overrides, unknown keys; names resolved to datasets and models."""

from __future__ import annotations

import pytest
import torch
import yaml

from depthdistill.distill import DistillSettings
from depthdistill.engine import TrainSettings
from depthdistill.distill.config import RunConfig, load_config, parse_key_value
from depthdistill.engine.registry import build_dataset, build_model, resolve
from depthdistill.errors import ConfigError


def test_empty_file_gives_every_default(tmp_path):
    (tmp_path / "run.yaml").write_text("")
    cfg = load_config(tmp_path / "run.yaml")
    assert cfg == RunConfig()
    assert cfg.train == TrainSettings() and cfg.train.lr == 2.5e-4 and cfg.train.batch_size == 1
    assert (cfg.distill.alpha, cfg.distill.beta, cfg.ignore_index) == (8.3, 0.9, 255)
    assert cfg.distill == DistillSettings()
    assert cfg.experiment.rows == ["TN", "SN"] and cfg.data.test == {"split": "test"}


def test_values_and_overrides(tmp_path):
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({
        "num_classes": 40, "data": {"name": "nyuv2", "args": {"root": "/data"}, "val": {"split": "val"}},
        "train": {"batch_size": 8, "amp": True}, "experiment": {"rows": ["BL", "TN", "SN", "BL+PS"]},
    }))
    cfg = load_config(tmp_path / "run.yaml", ["train.batch_size=2", "distill.alpha=7", "model.args={width: 0.5}"])
    assert cfg.num_classes == 40 and cfg.data.args == {"root": "/data"} and cfg.data.val == {"split": "val"}
    assert (cfg.train.batch_size, cfg.train.amp, cfg.distill.alpha) == (2, True, 7)
    assert cfg.model.args == {"width": 0.5} and cfg.experiment.rows[-1] == "BL+PS"
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


def test_bad_run_files(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['distill.alfa'\].*'alpha'"):
        RunConfig.from_dict({"distill": {"alfa": 1}})
    with pytest.raises(ConfigError, match="unknown key"):
        RunConfig.from_dict({"epochs": 3})
    with pytest.raises(ConfigError, match="must be a mapping"):
        RunConfig.from_dict({"train": [1, 2]})
    with pytest.raises(ConfigError, match="batch_size"):
        RunConfig.from_dict({"train": {"batch_size": -1}})
    (tmp_path / "bad.yaml").write_text("train: {lr: [")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["train.lr"])
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(None, ["train.lr=[0.1"])


def test_command_line_key_values_share_one_parser():
    from depthdistill.cli import _key_values

    assert parse_key_value("a=b=c") == ("a", "b=c")  # split at the first '='
    assert _key_values(["n=3", "size=[8, 6]", "root="], "--data-arg") == {"n": 3, "size": [8, 6], "root": None}
    with pytest.raises(ConfigError, match="--model-arg 'width' must look like KEY=VALUE"):
        _key_values(["width"], "--model-arg")
    with pytest.raises(ConfigError, match="--data-arg 'size=\\[8': the value is not valid YAML"):
        _key_values(["size=[8"], "--data-arg")


def test_model_and_dataset_names():
    model = build_model("tests.tiny_rgbd:tiny_segmenter", 5, width=4)
    assert model(torch.zeros(1, 3, 8, 8)).shape == (1, 5, 8, 8)
    unet = build_model("smp:Unet/resnet18", 4, encoder_depth=3, decoder_channels=(8, 8, 8))
    assert unet(torch.zeros(1, 3, 32, 32)).shape == (1, 4, 32, 32)
    data = build_dataset("tests.tiny_rgbd:TinyRGBD", n=2, split="test")
    assert len(data) == 2 and data.seed == 1
    with pytest.raises(ConfigError, match="unknown model 'vgg'"):
        build_model("vgg", 3)
    with pytest.raises(ConfigError, match="smp:<Arch>/<encoder>"):
        build_model("smp:Unet", 3)
    # smp names go through models.smp_model and its checks: a misspelt encoder gets a suggestion.
    with pytest.raises(ConfigError, match="unknown smp encoder 'resnet81'. Did you mean 'resnet18'"):
        build_model("smp:Unet/resnet81", 3)
    with pytest.raises(ConfigError, match="does not accept"):
        build_model("tests.tiny_rgbd:tiny_segmenter", 3, depth=2)
    with pytest.raises(ConfigError, match="unknown dataset 'nyu'"):
        build_dataset("nyu")
    with pytest.raises(ConfigError, match="cannot import"):
        resolve("no_such_module_xyz:thing")
    with pytest.raises(ConfigError, match="has no attribute"):
        resolve("tests.tiny_rgbd:Nothing")


def test_transform_presets_from_a_run_file():
    from depthdistill.data import SyntheticRGBD
    from depthdistill.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from depthdistill.engine.registry import build_transform

    raw = SyntheticRGBD(num_samples=1, size=(16, 20))[0]
    data = build_dataset("synthetic", num_samples=1, size=(16, 20), transform="eval")
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(data[0]["rgb"], (raw["rgb"] - mean) / std)
    crop = build_dataset("synthetic", num_samples=1, size=(16, 20),
                         transform={"preset": "train", "crop_size": [8, 8], "scale_range": None})
    assert crop[0]["label"].shape == (8, 8)
    with pytest.raises(ConfigError, match="transform must be"):
        build_transform("augment")
    with pytest.raises(ConfigError, match="does not accept"):
        build_transform({"preset": "eval", "crop": 3})


def test_run_file_defaults_are_the_librarys_defaults():
    # The run file's sections are the library's own settings objects, so neither can drift from the other.
    import inspect

    from depthdistill.distill import Distiller
    from depthdistill.distill.settings import default_preset
    from depthdistill.engine.loop import TrainSettings
    from depthdistill.engine.optim import poly_schedule, sgd

    cfg, distiller = RunConfig(), inspect.signature(Distiller).parameters
    # no settings: the library chooses by the data, as the run file does
    assert distiller["settings"].default is None
    assert cfg.distill == DistillSettings.from_preset(default_preset(has_unlabelled=False))
    assert cfg.ignore_index == distiller["ignore_index"].default == 255
    settings, optimiser = TrainSettings(), inspect.signature(sgd).parameters
    assert (settings.lr, settings.momentum, settings.weight_decay) == (2.5e-4, 0.9, 5e-4)
    assert all(getattr(settings, name) == optimiser[name].default for name in ("lr", "momentum", "weight_decay"))
    assert settings.poly_power == inspect.signature(poly_schedule).parameters["power"].default


WRONG_KINDS = [
    ({"experiment": {"rows": "TN"}}, "experiment.rows"), ({"experiment": {"rows": ["XX"]}}, "experiment.rows"),
    ({"experiment": {"teacher_epochs": "3"}}, "experiment.teacher_epochs"),
    ({"experiment": {"student_epochs": 0}}, "experiment.student_epochs"),
    ({"experiment": {"baseline_epochs": 2.5}}, "experiment.baseline_epochs"),
    ({"distill": {"depth_dropout": "half"}}, "depth_dropout"), ({"distill": {"preset": "tuned"}}, "preset"),
    ({"distill": [1]}, "distill"), ({"model": {"args": [1]}}, "model.args"), ({"data": {"name": 3}}, "data.name"),
    ({"num_classes": "40"}, "num_classes"), ({"ignore_index": 2.5}, "ignore_index"), ({"resume": "yes"}, "resume"),
]


@pytest.mark.parametrize(("values", "key"), WRONG_KINDS, ids=[k for _, k in WRONG_KINDS])
def test_values_of_the_wrong_kind_are_refused_naming_the_key(values, key):
    with pytest.raises(ConfigError, match=key):
        RunConfig.from_dict(values)


def test_the_distill_section_starts_from_its_preset_and_round_trips():
    cfg = load_config(None, ["distill.preset=paper", "distill.depth_dropout=0.25",
                             "distill.student_loss=depthdistill.losses:CEPlusVTCE"])
    assert cfg.distill == DistillSettings.from_preset("paper", depth_dropout=0.25,
                                                      student_loss="depthdistill.losses:CEPlusVTCE")
    assert RunConfig.from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict()))) == cfg


def test_a_run_file_trains_the_unlabelled_method_with_its_control(tmp_path, capsys):
    from depthdistill.cli import main

    run = {"out_dir": str(tmp_path / "run"), "model": {"name": "tests.tiny_rgbd:tiny_segmenter"},
           "data": {"name": "tests.tiny_rgbd:TinyRGBD", "train": {"n": 8}, "test": {"n": 4, "split": "test"},
                    "unlabelled": {"n": 8, "seed": 5, "labelled": False}},
           "distill": {"preset": "paper", "method": "unlabelled"},
           "experiment": {"rows": ["BL", "SN", "SN-RGB"], "teacher_epochs": 1, "student_epochs": 1},
           "train": {"batch_size": 4, "lr": 0.05, "device": "cpu", "progress": False}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    assert main(["train", "--config", str(tmp_path / "run.yaml")]) == 0
    out = capsys.readouterr().out
    assert "| SN | RGB |" in out and "| SN-RGB | RGB |" in out
    assert (tmp_path / "run" / "sn_rgb" / "model.pt").is_file()
