"""The benchmark scripts run end to end at toy sizes and print their tables (their figures go to docs/)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from depthdistill.data import SyntheticRGBD, train_transforms
from depthdistill.models import deeplab_vgg16

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str) -> list[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines()


def _table(lines: list[str]) -> list[list[str]]:
    rows = [line.strip("|").split("|") for line in lines if line.startswith("|") and not line.startswith("|---")]
    return [[cell.strip() for cell in row] for row in rows[1:]]


def test_bench_dconv_prints_ratios_for_every_impl():
    lines = _run("bench_dconv.py", "--layers", "conv4_3", "fc6", "--input", "64", "80", "--width", "0.03",
                 "--repeats", "1", "--device", "cpu")
    assert lines[0].startswith("# CPU") and "width 0.03" in lines[0]
    rows = _table(lines)
    assert {(row[0], row[4]) for row in rows} == {
        (layer, impl) for layer in ("conv4_3", "fc6")
        for impl in ("nn.Conv2d", "cols", "stacked", "unfold (reference)")}
    for row in rows:
        if row[4] == "nn.Conv2d":
            assert row[6] == "1.00" and row[9] == "1.00"  # the baseline against itself
        assert row[1] in ("15→15", "15→31")  # round(512 * 0.03), round(1024 * 0.03)


def test_bench_dconv_strided_and_depthwise_shapes_skip_the_stride_1_only_impl():
    lines = _run("bench_dconv.py", "--layers", "stem7x7s2", "dw3x3s2", "conv4_3", "--stride", "2", "--input", "32",
                 "48", "--width", "0.1", "--repeats", "1", "--device", "cpu")
    rows = _table(lines)
    impls = {layer: {row[4] for row in rows if row[0] == layer} for layer in ("stem7x7s2", "dw3x3s2", "conv4_3")}
    assert all(found == {"nn.Conv2d", "cols", "unfold (reference)"} for found in impls.values())
    shapes = {row[0]: (row[1], row[2]) for row in rows}
    assert shapes == {"stem7x7s2": ("3→6", "7/2/1"), "dw3x3s2": ("10→10 dw", "3/2/1"), "conv4_3": ("51→51", "3/2/1")}


def test_bench_dconv_profiles_every_candidate_and_takes_the_block_size():
    lines = _run("bench_dconv.py", "--layers", "conv3_3", "--impls", "stacked", "--input", "32", "48", "--width",
                 "0.05", "--repeats", "1", "--device", "cpu", "--profile", "--block-mib", "0.01")
    assert "stacked blocks 0.01 MiB" in lines[0]
    profiles = [line for line in lines if line.startswith("# profile conv3_3")]
    assert [line.split(",")[0] for line in profiles] == [
        "# profile conv3_3 nn.Conv2d", "# profile conv3_3 stacked", "# profile conv3_3 unfold (reference)"]
    for line in profiles:  # "op ms" pairs, the most expensive first
        self_ms = [float(item.rsplit(" ", 1)[1]) for item in line.split(": ", 1)[1].split(", ")]
        assert 1 <= len(self_ms) <= 6 and self_ms == sorted(self_ms, reverse=True)


def test_bench_train_step_prints_every_step():
    lines = _run("bench_train_step.py", "--width", "0.0625", "--batch", "1", "--input", "32", "32",
                 "--repeats", "1")
    rows = {row[0]: row for row in _table(lines)}
    assert set(rows) == {"baseline", "student", "teacher"} and rows["baseline"][2] == "1.00"
    assert not any(line.startswith("# first step") for line in lines)  # only with --compile


def test_bench_depth_gain_prints_both_rows_and_the_gap():
    lines = _run("bench_depth_gain.py", "--seeds", "0", "--train", "4", "--test", "2", "--epochs", "1",
                 "--size", "32", "32", "--width", "0.0625")
    rows = {row[1]: row for row in _table(lines)}
    assert set(rows) == {"BL", "TN", "TN − BL"}
    gap = float(rows["TN"][3]) - float(rows["BL"][3])
    assert float(rows["TN − BL"][3]) == pytest.approx(gap, abs=0.11)  # the printed gap is TN − BL, rounded


def test_bench_fidelity_records_every_row_resumes_and_summarises(tmp_path):
    out = tmp_path / "study.jsonl"
    args = ["--out", str(out), "--seeds", "0", "1", "--train", "8", "--test", "4", "--size", "32", "40",
            "--teacher-epochs", "1", "--student-epochs", "1", "--width", "0.0625", "--batch", "4",
            "--variants", "all14/fresh", "dacnn6+drop/carry", "nodepth/ce"]
    _run("bench_fidelity.py", *args)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    rows = sorted((r["seed"], r["row"], r["teacher"], r["student"]) for r in records)
    expected = sorted((seed, *row) for seed in (0, 1) for row in (
        ("BL", "-", "-"), ("TN", "all14", "-"), ("TN→RGB", "all14", "-"), ("SN", "all14", "fresh"),
        ("BL+PS", "all14", "fresh"), ("BL+VTCE", "all14", "fresh"), ("TN", "dacnn6+drop", "-"),
        ("TN→RGB", "dacnn6+drop", "-"), ("SN", "dacnn6+drop", "carry"),
        ("TN", "nodepth", "-"), ("TN→RGB", "nodepth", "-"), ("SN", "nodepth", "ce")))
    assert rows == expected
    assert {r["epochs"] for r in records if r["row"] in ("BL", "BL+VTCE")} == {2}
    # each teacher recipe converts the layers it is named after, whatever the Distiller's default recipe picks
    assert {r["teacher"]: r["depth_aware_layers"] for r in records if r["row"] == "TN"} == {
        "all14": 14, "dacnn6+drop": 6, "nodepth": 6}
    # the CE-only student trains without VTCE: its log has no CE part apart from the loss
    assert {r["first_epoch_ce"] is None for r in records if r["student"] == "ce"} == {True}
    assert {r["first_epoch_ce"] is None for r in records if r["student"] == "fresh" and r["row"] == "SN"} == {False}
    # a rerun finds every row in the file and trains nothing more
    _run("bench_fidelity.py", *args)
    assert len(out.read_text().splitlines()) == len(records)
    # a row found in two files (a later study retraining its baseline) counts once: the file given twice
    lines = _run("bench_fidelity.py", "--summarize", str(out), str(out), "--plot", str(tmp_path / "plot.png"))
    sn = next(row for row in _table(lines) if row[:3] == ["SN", "all14", "fresh"])
    bl = {r["seed"]: r["miou"] for r in records if r["row"] == "BL"}
    gaps = [r["miou"] - bl[r["seed"]] for r in records if (r["row"], r["teacher"]) == ("SN", "all14")]
    assert sn[3] == "2" and sn[6].startswith(f"{100 * sum(gaps) / 2:.1f} ±")  # mean of per-seed differences
    assert (tmp_path / "plot.png").stat().st_size > 1000


def test_compile_graphs_gives_the_counts_performance_md_quotes():
    rows = _table(_run("compile_graphs.py"))
    assert rows == [["outside the compiled call", "1", "0", "1"], ["inside the compiled call", "2", "1", "2"]]
    page = (ROOT / "docs" / "performance.md").read_text()
    assert "with the context outside, **1 graph, 0 graph breaks**" in page
    assert "enters\n  the context itself, **2 graphs, 1 graph break**" in page


def test_bench_unlabelled_measures_every_row_once_and_summarizes_per_seed_differences(tmp_path):
    out = tmp_path / "u.jsonl"
    toy = ["--out", str(out), "--seeds", "0", "--train", "4", "--test", "2", "--size", "16", "24", "--width",
           "0.03", "--teacher-epochs", "1", "--student-epochs", "1", "--batch", "2", "--long-factor", "2"]
    _run("bench_unlabelled.py", *toy, "--ratio", "1")
    _run("bench_unlabelled.py", *toy, "--ratio", "1", "2")  # the 1x cell is done; 2x copies BL, BL@cost, BL@long
    records = [json.loads(line) for line in out.read_text().splitlines()]
    rows = [(r["ratio"], r["row"], r.get("copied", False)) for r in records]
    trained = ["BL", "BL@cost", "BL@long", "TN", "SN", "SN-RGB", "SN-RGB@long"]
    assert rows == [(1.0, row, False) for row in trained] + [(2.0, row, row.startswith("BL")) for row in trained]
    assert [r["epochs"] for r in records if r["row"] in ("BL@long", "SN-RGB@long")] == [2, 2, 2, 2]
    only = tmp_path / "only.jsonl"  # --rows trains those rows and nothing else
    _run("bench_unlabelled.py", *toy[2:], "--out", str(only), "--ratio", "1", "--rows", "BL", "TN")
    assert [json.loads(line)["row"] for line in only.read_text().splitlines()] == ["BL", "TN"]
    first, copied = (next(r for r in records if r["row"] == "BL" and r["ratio"] == ratio) for ratio in (1.0, 2.0))
    assert first["miou"] == copied["miou"]
    lines = _run("bench_unlabelled.py", "--summarize", str(out))
    for ratio in ("1x", "2x"):
        cell = lines[lines.index(next(line for line in lines if f", {ratio} unlabelled" in line)):]
        cell = cell[cell.index("| difference (per seed) | mIoU points | per seed |"):]
        diffs = {row[0]: row for row in _table(cell[:cell.index("")])}
        sn, bl = (100 * next(r["miou"] for r in records if r["row"] == row and f"{r['ratio']:g}x" == ratio)
                  for row in ("SN", "BL"))
        assert diffs["SN − BL"][1] == f"{sn - bl:+.1f}"
    overview = _table(_run("bench_unlabelled.py", "--summarize", str(out), "--overview"))
    assert [(row[0], row[3]) for row in overview] == [("unlabelled (soft-init)", ratio) for ratio in ("1×", "2×")]
    for row, ratio in zip(overview, (1.0, 2.0), strict=True):
        sn, bl = (100 * next(r["miou"] for r in records if r["row"] == name and r["ratio"] == ratio)
                  for name in ("SN", "BL"))
        assert row[6] == f"{sn - bl:+.1f}" and row[9].endswith("(2 ep)")


def test_bench_unlabelled_start_epochs_starts_every_row_from_the_baseline_trained_that_long(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_unlabelled

    starts = []  # the initial weights of every Distiller the study builds

    def spy(model, *args, **kwargs):
        starts.append({k: v.clone() for k, v in model.state_dict().items()})
        return real(model, *args, **kwargs)

    real = bench_unlabelled.Distiller
    monkeypatch.setattr(bench_unlabelled, "Distiller", spy)
    out = tmp_path / "u.jsonl"
    monkeypatch.setattr(sys, "argv", [
        "bench_unlabelled.py", "--out", str(out), "--seeds", "0", "--train", "4", "--test", "2", "--size", "16", "24",
        "--width", "0.03", "--teacher-epochs", "1", "--student-epochs", "1", "--batch", "2", "--ratio", "1",
        "--start-epochs", "2"])
    bench_unlabelled.main()
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["row"], r["start_epochs"]) for r in records] == [
        (row, 2) for row in ("start", "BL", "BL@cost", "TN", "SN", "SN-RGB")]

    # by hand: BL, CE on the labelled RGB for 2 epochs from the seed's initial weights
    torch.manual_seed(0)
    model = deeplab_vgg16(8, width=0.03)
    train = SyntheticRGBD(4, (16, 24), split="train", seed=0, realistic=True, cache=True,
                          transform=train_transforms((16, 24), scale_range=None, color_jitter=0.0))
    assert all(torch.equal(starts[0][k], v) for k, v in model.state_dict().items())
    d = real(model, 8, "default", **bench_unlabelled._settings("soft-init"), batch_size=2, lr=2e-3, seed=0,
             device="cpu", progress=False, log_every=0, log_echo=False,
             optimizer=lambda params: torch.optim.Adam(params, lr=2e-3))
    expected = d.train_baseline(train, 2).state_dict()
    assert len(starts) == 2 and not torch.equal(starts[1]["classifier.6.weight"], starts[0]["classifier.6.weight"])
    assert all(torch.equal(starts[1][k], v) for k, v in expected.items())

    rows = {r["row"]: r for r in records}
    overview = bench_unlabelled.overview([out])
    assert [row[4] for row in _table(overview.splitlines())] == ["BL 2 → 1 + 1"]
    lines = bench_unlabelled.summarize([out]).splitlines()
    assert lines[0].startswith("### realistic, 4 labelled, 1x unlabelled, soft-init (every row from BL trained 2 ")
    diffs = {row[0]: row[1] for row in _table(lines) if row[0] in ("BL − start", "SN − start")}
    assert diffs == {f"{a} − start": f"{100 * (rows[a]['miou'] - rows['start']['miou']):+.1f}" for a in ("BL", "SN")}
