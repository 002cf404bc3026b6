"""Every example's --synthetic smoke run: it trains BL, TN and SN and writes the student."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from depthdistill.engine.registry import load_model

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ["own_model.py", "deeplab_vgg16_nyuv2.py", "smp_models.py", "timm_backbone.py"]


@pytest.mark.parametrize("script", EXAMPLES)
def test_example_synthetic_smoke_run(script, tmp_path, monkeypatch):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, str(ROOT / "examples" / script), "--synthetic", "--out", str(tmp_path),
                             "--device", "cpu"], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "| SN | RGB |" in result.stdout
    assert (tmp_path / "sn" / "model.pt").is_file() and (tmp_path / "results.json").is_file()
    monkeypatch.syspath_prepend(str(ROOT / "examples"))  # where own_model's class lives
    model, meta = load_model(tmp_path / "sn" / "model.pt")  # the checkpoint names its model: export/predict work
    assert meta["phase"] == "sn" and not meta["depth_aware_layers"]


def test_nyuv2_example_requires_root():
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "deeplab_vgg16_nyuv2.py")], capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert result.returncode == 2 and "--root is required" in result.stderr
