"""Every public function of the library answers a bad argument with a DepthDistillError (and the built-in type a
caller may already catch); the command line prints it as one line."""

from __future__ import annotations

import pytest
import torch
from tests.tiny_rgbd import NUM_CLASSES, TinySegmenter

import depthdistill
from depthdistill import (
    CEPlusVTCE,
    ConfigError,
    ConfigTypeError,
    DepthDistillError,
    DepthError,
    Distiller,
    MissingFileError,
    SegmentationMetrics,
    VTCELoss,
    convert_to_depth_aware,
    vtce_loss,
    vtce_temperature,
)
from depthdistill.cli import arg, command, main
from depthdistill.data import prepare_dataset
from depthdistill.demo import run_demo
from depthdistill.engine import load_checkpoint, sgd
from depthdistill.distill.config import load_config

PLAIN = torch.nn.Conv2d(3, 2, 1)
x, y = torch.randn(1, 2, 2, 2), torch.randn(1, 2, 2, 2)

BAD_CALLS = {
    "predict: a teacher": (DepthError, lambda: depthdistill.predict(convert_to_depth_aware(TinySegmenter()),
                                                                    torch.rand(3, 4, 4))),
    "predict: opacity": (ConfigError, lambda: depthdistill.predict(PLAIN, torch.rand(3, 4, 4), opacity=2)),
    "predict: no such image": (MissingFileError, lambda tmp: depthdistill.predict(PLAIN, tmp / "nothing.png")),
    "predict: normalised tensor": (ConfigError, lambda: depthdistill.predict(PLAIN, torch.rand(3, 4, 4) - 2)),
    "predict: not an image": (ConfigTypeError, lambda: depthdistill.predict(PLAIN, [3])),
    "predict: not a model": (ConfigTypeError, lambda: depthdistill.predict(3, torch.rand(3, 4, 4))),
    "predict: short palette": (ConfigError, lambda: depthdistill.predict(PLAIN, torch.rand(3, 4, 4),
                                                                         palette=[[0, 0, 0]])),
    "predict: no checkpoint": (MissingFileError, lambda tmp: depthdistill.predict(tmp / "model.pt",
                                                                                   torch.rand(3, 4, 4))),
    "export: format": (ConfigError, lambda tmp: depthdistill.export(PLAIN, "tflite", tmp / "m")),
    "export: size": (ConfigError, lambda tmp: depthdistill.export(PLAIN, "torchscript", tmp / "m", height=0)),
    "export: no out": (ConfigError, lambda: depthdistill.export(PLAIN, "torchscript")),
    "export: a teacher": (DepthError, lambda tmp: depthdistill.export(convert_to_depth_aware(TinySegmenter()),
                                                                       "torchscript", tmp / "m")),
    "prepare_dataset": (ConfigError, lambda tmp: prepare_dataset("cityscapes", tmp, tmp / "out")),
    "run_demo": (ConfigError, lambda tmp: run_demo(tmp, quick=True, device="tpu")),
    "Distiller: model": (ConfigTypeError, lambda: Distiller("deeplab", NUM_CLASSES)),
    "Distiller: student_loss": (ConfigTypeError, lambda: Distiller(TinySegmenter(), NUM_CLASSES, student_loss=1)),
    "vtce_temperature": (ConfigError, lambda: vtce_temperature(-1)),
    "vtce_loss: shapes": (ConfigError, lambda: vtce_loss(x, torch.randn(1, 3, 2, 2), 1.0)),
    "vtce_loss: temperature": (ConfigError, lambda: vtce_loss(x, y, float("nan"))),
    "vtce_loss: mask": (ConfigError, lambda: vtce_loss(x, y, 1.0, torch.ones(2, 2, dtype=torch.bool))),
    "VTCELoss": (ConfigError, lambda: VTCELoss()(x, y, epoch=-2)),
    "CEPlusVTCE": (ConfigError, lambda: CEPlusVTCE()(x, torch.randn(1, 3, 2, 2), torch.zeros(1, 2, 2).long(), 0)),
    "SegmentationMetrics: classes": (ConfigError, lambda: SegmentationMetrics(0)),
    "SegmentationMetrics.update: shapes": (ConfigError, lambda: SegmentationMetrics(2).update(
        torch.zeros(1, 2, 2), torch.zeros(1, 3, 3))),
    "SegmentationMetrics.update: labels": (DepthDistillError, lambda: SegmentationMetrics(2).update(
        torch.zeros(1, 2, 2), torch.full((1, 2, 2), 5))),
    "SegmentationMetrics.merge": (ConfigError, lambda: SegmentationMetrics(2).merge(SegmentationMetrics(3))),
    "sgd": (ConfigError, lambda: sgd(lr=0)),
    "load_config": (MissingFileError, lambda tmp: load_config(tmp / "run.yaml")),
    "load_checkpoint": (MissingFileError, lambda tmp: load_checkpoint(tmp / "last.pt")),
    "cli.command: twice": (ConfigError, lambda: command("train", help="again")(lambda args: 0)),
}


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_a_bad_argument_raises_a_depthdistill_error(name, tmp_path):
    family, call = BAD_CALLS[name]
    with pytest.raises(DepthDistillError) as raised:
        call(tmp_path) if call.__code__.co_argcount else call()
    assert isinstance(raised.value, family), type(raised.value)
    assert str(raised.value)  # a message saying what was wrong


def test_the_families_keep_the_built_in_bases_callers_catch():
    assert issubclass(ConfigError, ValueError) and issubclass(ConfigTypeError, TypeError)
    assert issubclass(ConfigTypeError, ConfigError) and issubclass(MissingFileError, FileNotFoundError)
    with pytest.raises(ValueError):
        vtce_temperature(-1)
    with pytest.raises(TypeError):
        Distiller("deeplab", NUM_CLASSES)


def test_the_cli_prints_a_library_error_as_one_line(tmp_path, capsys):
    @command("fail", help="raise a library error", arguments=[arg("--lr", type=float, default=0.0)])
    def _fail(args):
        sgd(lr=args.lr)

    try:
        assert main(["fail"]) == 2
    finally:
        from depthdistill.cli import _COMMANDS

        del _COMMANDS["fail"]
    err = capsys.readouterr().err
    assert err == "depthdistill: error: lr must be > 0, got 0.0\n"


def test_depth_aware_ops_and_conversion_raise_library_errors():
    from depthdistill import convert_to_depth_aware, depth_aware_conv2d, depth_context
    from depthdistill.errors import ConfigError, ConfigTypeError

    x, d, w = torch.randn(1, 2, 5, 5), torch.rand(1, 1, 5, 5) + 1, torch.randn(3, 2, 3, 3)
    # each message names the argument, the value given and what would be accepted
    bad_calls = [
        (lambda: depth_aware_conv2d(x, d, w, padding="wide"), r"padding must be .*'same'.*got 'wide'"),
        (lambda: depth_aware_conv2d(x, d, w, impl="fast"), r"impl must be one of \('auto'.*got 'fast'"),
        (lambda: depth_aware_conv2d(x, d, w, alpha=-1.0),
         r"alpha must be a finite number >= 0 \(per metre\), got -1.0"),
        (lambda: depth_aware_conv2d(x, d, w, stride=2, padding="same"), r"padding='same' needs stride 1"),
        (lambda: depth_aware_conv2d(x[0], d, w), r"x of shape \(B, C, H, W\), got \(2, 5, 5\)"),
        (lambda: depth_context(d, resize="cubic").__enter__(), r"resize must be one of .*'avgpool'.*got 'cubic'"),
    ]
    for call, message in bad_calls:
        with pytest.raises(ConfigError, match=message):
            call()
    with pytest.raises(ConfigTypeError, match=r"include must be a glob.*got \[1, 2\]"):
        convert_to_depth_aware(torch.nn.Conv2d(3, 3, 3), include=[1, 2])
