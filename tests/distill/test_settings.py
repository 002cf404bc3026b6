"""DistillSettings: presets, checks over a table of bad values, run-file round trips, identity, and the resume
check the Distiller builds from it."""

from __future__ import annotations

import dataclasses
import math

import pytest

from depthdistill.distill import PRESETS, Distiller, DistillSettings
from depthdistill.errors import ConfigError, ConfigTypeError, TrainingError
from depthdistill.losses import CEPlusVTCE
from tests.tiny_rgbd import NUM_CLASSES, TinyRGBD, TinySegmenter


def test_the_dataclass_defaults_are_the_default_preset_and_the_paper_preset_is_the_paper():
    assert DistillSettings() == DistillSettings.from_preset("default")
    paper = DistillSettings.from_preset("paper")
    assert (paper.layers, paper.depth_resize, paper.depth_dropout) == ("all", "nearest", 0.0)
    assert (paper.alpha, paper.beta, paper.student_lr_scale, paper.student_optimizer) == (8.3, 0.9, 1.0, "fresh")
    for name, values in PRESETS.items():  # every preset field is a real field and the preset applies it
        settings = DistillSettings.from_preset(name)
        assert all(getattr(settings, key) == value for key, value in values.items())


BAD = [
    ("alpha", -1.0, ConfigError), ("alpha", math.nan, ConfigError), ("alpha", "8.3", ConfigTypeError),
    ("layers", "some", ConfigError), ("include", [1, 2], ConfigTypeError), ("exclude", 3, ConfigTypeError),
    ("depth_resize", "bogus", ConfigError), ("depth_dropout", 1.5, ConfigError), ("depth_dropout", -0.1, ConfigError),
    ("depth_dropout", True, ConfigTypeError), ("calibrate_removal", "yes", ConfigTypeError),
    ("calibration_batches", 0, ConfigError), ("calibration_batches", 2.5, ConfigError),
    ("share_parameters", 1, ConfigTypeError), ("vtce", None, ConfigTypeError),
    ("teacher_source", "shared", ConfigError), ("beta", math.inf, ConfigError),
    ("vtce_schedule", "not-a-name", ConfigTypeError), ("student_loss", 3, ConfigTypeError),
    ("student_lr_scale", 0, ConfigError), ("student_lr_scale", -1.0, ConfigError),
    ("student_optimizer", "keep", ConfigError), ("method", "", ConfigTypeError),
    ("online_weight", -0.5, ConfigError), ("online_weight", "1", ConfigTypeError),
    ("online_temperature", 0.0, ConfigError), ("online_temperature", math.inf, ConfigError),
    ("online_ramp_epochs", -1, ConfigError), ("online_ramp_epochs", 2.5, ConfigError),
    ("online_ramp_epochs", True, ConfigError),
    ("aux_depth_layer", "", ConfigTypeError), ("aux_depth_layer", 3, ConfigTypeError),
    ("aux_depth_weight", -0.5, ConfigError), ("aux_depth_weight", math.nan, ConfigError),
    ("aux_depth_weight", "1", ConfigTypeError), ("aux_depth_scale_invariance", 1.5, ConfigError),
    ("aux_depth_scale_invariance", -0.1, ConfigError),
    ("consistency_weight", -0.5, ConfigError), ("consistency_weight", math.inf, ConfigError),
    ("consistency_weight", "1", ConfigTypeError), ("consistency_temperature", 0.0, ConfigError),
    ("consistency_temperature", math.nan, ConfigError), ("consistency_depth_ce", 1, ConfigTypeError),
    ("consistency_control", "rgb", ConfigError),
    ("schedule", "joint", ConfigError), ("schedule", None, ConfigError),
]


@pytest.mark.parametrize(("field", "value", "error"), BAD, ids=[f"{f}={v!r}" for f, v, _ in BAD])
def test_bad_values_are_refused_naming_the_field_and_the_value(field, value, error):
    with pytest.raises(error, match=field) as caught:
        DistillSettings(**{field: value})
    assert repr(value) in str(caught.value) or str(value) in str(caught.value)


def test_unknown_fields_presets_and_relabelling_are_refused():
    with pytest.raises(ConfigError, match=r"unknown distill setting\(s\) \['alfa'\].*'alpha'"):
        DistillSettings().replace(alfa=1.0)
    with pytest.raises(ConfigError, match="preset must be one of"):
        DistillSettings.from_preset("tuned")
    with pytest.raises(ConfigError, match="from_preset"):  # a new name alone would not change any value
        DistillSettings().replace(preset="paper")
    with pytest.raises(ConfigError, match="student_loss replaces"):
        DistillSettings(student_loss=CEPlusVTCE(), beta=0.5)
    with pytest.raises(ConfigError, match=r"schedule='one' continues .* student_lr_scale must be 1.0, got 0.5"):
        DistillSettings(schedule="one", student_lr_scale=0.5)


def test_settings_are_frozen_and_lists_of_globs_become_tuples():
    settings = DistillSettings(include=["conv1", "conv2"])
    assert settings.include == ("conv1", "conv2")
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.alpha = 1.0  # type: ignore[misc]


def test_run_file_sections_round_trip_and_name_callables_by_module_and_name():
    section = {"preset": "paper", "alpha": 4.0, "student_loss": "depthdistill.losses:CEPlusVTCE"}
    settings = DistillSettings.from_dict(section)
    assert (settings.preset, settings.alpha, settings.depth_resize) == ("paper", 4.0, "nearest")
    assert isinstance(settings.build_student_loss(255), CEPlusVTCE)  # a class named so is built without arguments
    assert DistillSettings.from_dict(settings.to_dict()) == settings
    schedule = DistillSettings(vtce_schedule="math:exp").build_student_loss(7)
    assert schedule.vtce.schedule is math.exp and schedule.ignore_index == 7
    with pytest.raises(ConfigError, match="cannot import"):
        DistillSettings(student_loss="no_such_module_xyz:loss").build_student_loss(255)
    assert DistillSettings(vtce_schedule=math.exp).to_dict()["vtce_schedule"] == "math:exp"


def test_identity_names_every_field_but_the_preset_and_differs_when_any_value_does():
    base = DistillSettings()
    assert set(base.identity()) == {f.name for f in dataclasses.fields(DistillSettings)} - {"preset"}
    assert DistillSettings.from_preset("paper", layers="model", depth_resize="avgpool",
                                       depth_dropout=0.5).identity() == base.identity()  # same values, same run
    for field, value in [("alpha", 4.0), ("depth_dropout", 0.0), ("student_lr_scale", 0.5), ("beta", 0.5),
                         ("schedule", "one")]:
        assert base.replace(**{field: value}).identity() != base.identity(), field


def test_the_distiller_takes_the_settings_whole_or_by_preset_with_keyword_overrides():
    settings = DistillSettings.from_preset("paper", alpha=4.0)
    d = Distiller(TinySegmenter(), NUM_CLASSES, settings, depth_dropout=0.25, lr=0.01, progress=False,
                  log_echo=False)
    assert d.settings == settings.replace(depth_dropout=0.25) and d.train_settings.lr == 0.01
    assert Distiller(TinySegmenter(), NUM_CLASSES, "paper", log_echo=False).settings == DistillSettings.from_preset(
        "paper")
    with pytest.raises(ConfigTypeError, match="settings must be"):
        Distiller(TinySegmenter(), NUM_CLASSES, {"alpha": 1.0})
    with pytest.raises(ConfigError, match="unknown method 'toy'"):
        Distiller(TinySegmenter(), NUM_CLASSES, method="toy")


def test_resuming_with_other_settings_is_refused_by_name(tmp_path):
    kwargs = dict(out_dir=tmp_path, progress=False, log_echo=False, device="cpu", batch_size=2)
    Distiller(TinySegmenter(), NUM_CLASSES, "paper", **kwargs).train_teacher(TinyRGBD(4), epochs=1)
    again = Distiller(TinySegmenter(), NUM_CLASSES, "paper", resume=True, depth_dropout=0.5, **kwargs)
    with pytest.raises(TrainingError, match=r"distill\.depth_dropout=0\.0 \(now 0\.5\)"):
        again.train_teacher(TinyRGBD(4), epochs=1)
    same = Distiller(TinySegmenter(), NUM_CLASSES, "paper", resume=True, **kwargs)
    same.train_teacher(TinyRGBD(4), epochs=1)  # the finished phase loads
    assert same.fits["tn"].resumed_from == 1
