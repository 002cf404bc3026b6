"""`depthdistill demo --quick` end to end: its first line, every promised file, the table as measured, the report."""

import json
import re
from pathlib import Path

import torch

from depthdistill import demo
from depthdistill.viz import plots
from depthdistill.cli import main
from depthdistill.demo import DEMO_ROWS, PRESETS, REMOVAL_ROWS, demo_plan
from depthdistill.distill import DistillSettings
from depthdistill.engine.registry import load_model


def test_quick_demo_trains_the_default_with_unlabelled_frames_and_its_control(tmp_path, capsys, monkeypatch):
    built = []  # the weights of every model a Distiller of the demo is built on, as it is built

    class Spy(demo.Distiller):
        def __init__(self, model, *args, **kwargs):
            built.append({k: v.clone() for k, v in model.state_dict().items()})
            super().__init__(model, *args, **kwargs)

    monkeypatch.setattr(demo, "Distiller", Spy)
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    names = [row["name"] for row in results["rows"]]
    assert names == ["start", *DEMO_ROWS] == ["start", "BL", "BL@TN", "TN", "SN", "SN-RGB"]
    # every row after start is trained by a Distiller built on exactly the start model as it was saved
    start = load_model(tmp_path / "start" / "model.pt")[0].state_dict()
    assert len(built) == 2 and set(built[1]) == set(start)
    assert all(torch.equal(built[1][k], start[k]) for k in start)
    assert not all(torch.equal(built[0][k], start[k]) for k in start)  # the first one: the untrained model
    assert results["rows"][0]["epochs"] == PRESETS["quick"].start_epochs > 0
    assert results["info"]["distill"] == DistillSettings.from_preset("unlabelled").to_dict()
    quick = PRESETS["quick"]
    first = printed.splitlines()[0]
    assert first.startswith("depthdistill demo --quick, a smoke run of seconds")
    assert f"{quick.unlabelled_samples} unlabelled frames" in first
    assert re.findall(r"(\S+) \((\d+)\)", first) == [(row["name"], str(row["epochs"])) for row in results["rows"]]
    report = (tmp_path / "report.md").read_text()
    for row in results["rows"]:
        cells = (f"| {row['name']} | {row['input']} | {100 * row['mean_pixel_accuracy']:.1f} | "
                 f"{100 * row['mean_iou']:.1f} |")
        assert cells in printed and cells in report
    notes = {line.split("**")[1]: line for line in report.splitlines() if line.startswith("- **")}
    assert list(notes) == names
    assert "unlabelled frames" in notes["SN"] and "BL@TN" in notes["SN-RGB"]  # the method's rows, not the paper's
    assert "every other row starts from its weights" in notes["start"]
    assert "What removing depth changes" not in report and not (tmp_path / "vtce_temperature.png").exists()
    # the student learned from the unlabelled frames; the control's labeller is BL@TN, trained once
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("phase") == "sn" and r.get("unlabelled", 0) > 0 for r in records)
    assert [r["phase"] for r in records if r.get("epoch") == 0] == ["start", "bl", "bl_tn", "tn", "sn", "sn_rgb"]
    assert [r["row"] for r in records if "test" in r] == names


def test_quick_removal_demo_writes_everything_it_promises(tmp_path, capsys, monkeypatch):
    drawn = {}  # {file name: the matplotlib Figure saved to it}, to read the figures back
    save = plots._save

    def spy(fig, path):
        drawn[Path(path).name] = fig
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", spy)
    assert main(["demo", "--quick", "--removal", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    names = [row["name"] for row in results["rows"]]
    assert names == ["BL", "BL@TN", "TN", "TN→RGB", "SN", "BL+VTCE", "BL+PS", "BL@TN+PS"]
    report = (tmp_path / "report.md").read_text()
    for row in results["rows"]:
        # the printed table and the report carry exactly the measured numbers
        cells = (f"| {row['name']} | {row['input']} | {100 * row['mean_pixel_accuracy']:.1f} | "
                 f"{100 * row['mean_iou']:.1f} |")
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

    # The first line says what will be trained, on what and for how long, before anything is: every row with the
    # epochs it then trained, the data, the model, and the time.
    first = printed.splitlines()[0]
    assert first.startswith("depthdistill demo --removal --quick, a smoke run of seconds")
    assert "the full preset takes about 9 minutes" in first
    assert "synthetic RGB-D scenes, 24 train / 12 test at 48x64" in first and "DeepLab-VGG16 at width 0.0625" in first
    assert re.findall(r"(\S+) \((\d+)\)", first) == [(row["name"], str(row["epochs"])) for row in results["rows"]]

    # The report says in one line what every row of its table is, with its epochs and what it was tested on.
    notes = {line.split("**")[1]: line for line in report.splitlines() if line.startswith("- **")}
    assert list(notes) == names
    for row in results["rows"]:
        epochs = f"for {row['epochs']} epoch" if row["epochs"] else "not trained"
        assert epochs in notes[row["name"]] and notes[row["name"]].endswith(f"tested on {row['input']}.")

    # The training curves name the table's rows (all but TN→RGB, which trains nothing), not the phase folders.
    legend = drawn["training_curves.png"].legends[0]
    assert [text.get_text() for text in legend.get_texts()] == [name for name in names if name != "TN→RGB"]
    assert [ax.get_title() for ax in drawn["training_curves.png"].axes] == [
        "training cross-entropy (CE)", "training VTCE (the distillation term)"]


def test_the_full_demos_announce_themselves_with_their_measured_time():
    line = demo_plan()
    assert line.startswith("depthdistill demo, full preset: about 8 minutes on a 2-core CPU (--quick: a smoke run")
    full = PRESETS["full"]
    assert f"{full.train_samples} train / {full.test_samples} test at 72x96" in line
    assert f"{full.unlabelled_samples} unlabelled frames" in line
    baseline = full.teacher_epochs + full.student_epochs
    assert (f"start ({full.start_epochs}), BL ({baseline}), BL@TN ({full.teacher_epochs}), TN ({full.teacher_epochs}), "
            f"SN ({full.student_epochs}), SN-RGB ({full.student_epochs})") in line
    assert full.start_epochs == 150 and "every row after start continues from start's weights" in line
    line = demo_plan(removal=True)
    assert line.startswith("depthdistill demo --removal, full preset: about 9 minutes on a 2-core CPU")
    removal = PRESETS["removal"]
    assert f"{removal.train_samples} train / {removal.test_samples} test at 96x128" in line
    baseline = removal.teacher_epochs + removal.student_epochs
    assert (f"BL ({baseline}), BL@TN ({removal.teacher_epochs}), TN ({removal.teacher_epochs}), TN→RGB (0), "
            f"SN ({removal.student_epochs}), BL+VTCE ({baseline}), BL+PS ({removal.student_epochs}), "
            f"BL@TN+PS ({removal.student_epochs})") in line
    assert [name for name, _ in re.findall(r"(\S+) \((\d+)\)", line)] == list(REMOVAL_ROWS)
