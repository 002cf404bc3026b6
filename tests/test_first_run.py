"""The first run file of docs/config.md runs as printed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from depthdistill.cli import main
from depthdistill.data import SyntheticRGBD

DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def _first_run_file(tmp_path: Path) -> Path:
    text = re.search(r"```yaml\n(.*?)```", DOC.read_text(), re.S).group(1)
    assert yaml.safe_load(text)["data"]["name"] == "synthetic"  # the first block is the synthetic first run
    (tmp_path / "first.yaml").write_text(text)
    return tmp_path / "first.yaml"


def test_the_documented_first_run_trains(tmp_path):
    """Its keys, data and model as printed; fewer samples and epochs, to keep the suite fast."""
    assert main(["train", "--config", str(_first_run_file(tmp_path)), "--out-dir", str(tmp_path / "out"),
                 "--set", "data.train.num_samples=8", "--set", "data.test.num_samples=4",
                 "--set", "experiment.teacher_epochs=1", "--set", "experiment.student_epochs=1"]) == 0
    rows = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["BL", "TN", "SN"]


@pytest.mark.slow
def test_the_documented_first_run_beats_the_commonest_class(tmp_path):
    """As printed (about 30 s): every row predicts better than the commonest class of the test set."""
    assert main(["train", "--config", str(_first_run_file(tmp_path)), "--out-dir", str(tmp_path / "out"),
                 "--set", "train.device=cpu"]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    test = SyntheticRGBD(num_samples=16, size=(48, 64), split="test")
    counts = sum(torch.bincount(test[i]["label"].flatten(), minlength=256) for i in range(len(test)))
    commonest = float(counts[:255].max() / counts[:255].sum())
    for row in results["rows"]:
        assert row["pixel_accuracy"] > commonest + 0.05, row
