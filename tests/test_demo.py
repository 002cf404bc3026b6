"""`depthdistill demo --quick` end to end: every promised file, the table as measured, the report."""

import json

from depthdistill.cli import main
from depthdistill.engine.registry import load_model


def test_quick_demo_writes_everything_it_promises(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    names = [row["name"] for row in results["rows"]]
    assert names == ["BL", "BL@TN", "TN", "TN→RGB", "SN", "BL+VTCE", "BL+PS", "BL@TN+PS"]
    report = (tmp_path / "report.md").read_text()
    for row in results["rows"]:
        # the printed table and the report carry exactly the measured numbers
        cells = f"| {row['name']} | {row['input']} | {100 * row['mean_pixel_accuracy']:.1f} | {100 * row['mean_iou']:.1f} |"
        assert cells in printed and cells in report
    for image in ("training_curves.png", "vtce_temperature.png", "per_class_iou.png", "samples.png"):
        assert (tmp_path / image).stat().st_size > 1000
        assert f"]({image})" in report
    assert (tmp_path / "report.html").is_file() and (tmp_path / "metrics.jsonl").is_file()
    # the teacher's removal report: one row per depth-aware layer (the default recipe: Depth-aware CNN's six)
    assert "What removing depth changes in the teacher" in report
    layers = results["info"]["depth_aware_layers"]
    assert layers == ["features.0", "features.5", "features.10", "features.17", "features.24", "classifier.0"]
    assert all(f"| {name} |" in report for name in layers)
    assert (tmp_path / "sn" / "model.pt").is_file()
    assert "A smoke run" in report and results["info"]["quick"] is True
    assert load_model(tmp_path / "sn" / "model.pt")[0].__class__.__name__ == "DeepLabVGG16"  # it names its model
