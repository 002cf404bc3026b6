"""Every example's --synthetic smoke run: it trains BL, TN and SN and writes the student.

The scripts run in this process (``runpy``, as ``__main__`` with their own command line): a subprocess would pay
for importing torch and the model zoos again each time. The smp and timm runs convert ResNet-18 encoders and take
minutes on a CPU: they are marked slow (``python -m pytest -m slow``).
"""

import runpy
import sys
from pathlib import Path

import pytest

from depthdistill.engine.registry import load_model

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ["own_model.py", "deeplab_vgg16_nyuv2.py",
            pytest.param("smp_models.py", marks=pytest.mark.slow),
            pytest.param("timm_backbone.py", marks=pytest.mark.slow)]


def _run_example(script: str, monkeypatch, *args: str) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "examples"))  # for _common, and where own_model's class lives
    monkeypatch.setattr(sys, "argv", [script, *args])
    monkeypatch.delitem(sys.modules, "_common", raising=False)
    runpy.run_path(str(ROOT / "examples" / script), run_name="__main__")


@pytest.mark.parametrize("script", EXAMPLES)
def test_example_synthetic_smoke_run(script, tmp_path, monkeypatch, capsys):
    _run_example(script, monkeypatch, "--synthetic", "--out", str(tmp_path), "--device", "cpu")
    assert "| SN | RGB |" in capsys.readouterr().out
    assert (tmp_path / "sn" / "model.pt").is_file() and (tmp_path / "results.json").is_file()
    model, meta = load_model(tmp_path / "sn" / "model.pt")  # the checkpoint names its model: export/predict work
    assert meta["phase"] == "sn" and not meta["depth_aware_layers"]


def test_nyuv2_example_requires_root(monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _run_example("deeplab_vgg16_nyuv2.py", monkeypatch)
    assert exit_info.value.code == 2 and "--root is required" in capsys.readouterr().err


def test_own_training_loop_trains_the_distillers_student(monkeypatch):
    # the example's loop, written out in plain PyTorch, against the Distiller with the same settings and seed
    import torch

    from depthdistill.distill import Distiller
    from tests.tiny_rgbd import NUM_CLASSES, TinyRGBD, TinySegmenter

    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    from own_training_loop import teacher_then_student

    data = TinyRGBD(8)
    for preset in ("default", "paper"):
        torch.manual_seed(0)
        own, _ = teacher_then_student(TinySegmenter(), data, teacher_epochs=2, student_epochs=2, settings=preset,
                                      lr=0.05, batch_size=4)
        torch.manual_seed(0)
        d = Distiller(TinySegmenter(), NUM_CLASSES, preset, lr=0.05, batch_size=4, device="cpu", progress=False,
                      log_echo=False)
        library = d.train(data, teacher_epochs=2, student_epochs=2)
        for (name, p), q in zip(own.named_parameters(), library.parameters(), strict=True):
            assert torch.equal(p, q), (preset, name)


def test_own_training_loop_synthetic_run(tmp_path, monkeypatch, capsys):
    _run_example("own_training_loop.py", monkeypatch, "--synthetic", "--out", str(tmp_path))
    assert "student (RGB): mIoU" in capsys.readouterr().out
    model, meta = load_model(tmp_path / "sn" / "model.pt")
    assert meta["rgb_normalization"] is not None and not meta["depth_aware_layers"]
