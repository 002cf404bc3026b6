"""The documentation stays true: the site builds, every code block of README.md and docs/*.md runs (or at least
parses), and the numbers the pages quote from result files are those files' numbers.

Code blocks. Every ```` ```python ```` block runs, the blocks of a page in order in one namespace (like a doctest
session), in a temporary working directory. Names a page leaves to the reader (``model``, ``rgb``, ``depth``,
``train_data``, ``teacher`` …) are bound beforehand to tiny stand-ins (:func:`_stand_ins`), so a block runs as
written but in seconds. Every ```` ```bash ```` block must parse (``bash -n``); every ``depthdistill`` command in
it (also after ``python -m`` or ``torchrun … -m``) must parse with the command's own parser; a ``python
benchmarks/…`` or ``examples/…`` script must exist; and each ``depthdistill demo`` command runs, with ``--quick``
added.

A block that needs NYUv2, SUN RGB-D, a GPU, files of an earlier run, a download or many minutes is marked in the
Markdown, on the line before its fence (invisible on the site)::

    <!-- docs-test: syntax-only (needs NYUv2) -->

and is then only compiled (Python) or parsed and flag-checked (bash).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARK = re.compile(r"<!--\s*docs-test:\s*(syntax-only|skip)\b.*-->")


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    run: bool  # False: marked syntax-only

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The ```python and ```bash blocks of a Markdown page, with their docs-test marks."""
    lines = page.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        fence = re.match(r"^(\s*)```(\w*)", lines[i])
        if not fence:
            i += 1
            continue
        indent, lang = fence.groups()
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("```"))
        if lang in ("python", "bash"):
            before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            code = "\n".join(line[len(indent):] for line in lines[i + 1:end])
            found.append(Block(page, i + 1, lang, code, run=not MARK.search(before)))
        i = end + 1
    return found


ALL_BLOCKS = [b for page in PAGES for b in blocks(page)]
PYTHON_PAGES = sorted({b.page for b in ALL_BLOCKS if b.lang == "python"})


@pytest.mark.skipif(shutil.which("mkdocs") is None and not (Path(sys.prefix) / "bin" / "mkdocs").exists(),
                    reason="mkdocs is not installed (pip install -e '.[dev]')")
def test_docs_build_strict(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "api" / "index.html").read_text().count("depth_aware_conv2d") > 0


# ------------------------------------------------------------------------------------------------ code blocks
def test_the_harness_finds_blocks_and_marks():
    assert len([b for b in ALL_BLOCKS if b.lang == "python"]) >= 10
    readme = [b for b in ALL_BLOCKS if b.page.name == "README.md"]
    assert readme[0].lang == "bash" and readme[0].run and "depthdistill demo" in readme[0].code
    assert any(not b.run and "download.pytorch.org/whl/cpu" in b.code for b in readme)
    assert all(b.code.strip() for b in ALL_BLOCKS)


def _stand_ins() -> dict:
    """Tiny objects for the names pages leave to the reader: a 3-class RGB-D set of 4 samples at 16×16 and a
    two-convolution segmenter (any number of classes)."""
    import torch.nn as nn

    import depthdistill
    from depthdistill import Distiller
    from tests.tiny_rgbd import TinyRGBD, TinySegmenter

    class MySegmenter(TinySegmenter):
        def __init__(self, num_classes: int = 40) -> None:
            super().__init__(num_classes, width=4, dropout=0.0)

    torch.manual_seed(0)
    batch = torch.utils.data.default_collate([TinyRGBD(2)[i] for i in range(2)])
    teacher = depthdistill.convert_to_depth_aware(MySegmenter())
    distiller = Distiller(MySegmenter(), 40, device="cpu", progress=False, log_echo=False)
    return {
        "torch": torch, "nn": nn, "depthdistill": depthdistill, "MySegmenter": MySegmenter, "num_classes": 40,
        "model": MySegmenter(), "teacher": teacher, "distiller": distiller,
        "rgb": batch["rgb"], "depth": batch["depth"], "label": batch["label"], "rgb_tensor": batch["rgb"][0],
        "train_data": TinyRGBD(4), "val_data": TinyRGBD(2, split="test"), "test_data": TinyRGBD(2, split="test"),
    }


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if b.lang == "python"], ids=str)
def test_python_blocks_compile(block):
    compile(block.code, str(block), "exec")


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(page, tmp_path, monkeypatch, capsys):
    runnable = [b for b in blocks(page) if b.lang == "python" and b.run]
    if not runnable:
        pytest.skip("every Python block of the page is marked syntax-only")
    from depthdistill.nn import mapping

    monkeypatch.chdir(tmp_path)  # relative paths (runs/…) land in the test's folder
    # a page's register_depth_aware stays in the page
    monkeypatch.setattr(mapping, "_REGISTERED", dict(mapping._REGISTERED))
    namespace = _stand_ins()
    for block in runnable:
        try:
            exec(compile(block.code, str(block), "exec"), namespace)
        except Exception as error:
            raise AssertionError(f"the block at {block} fails: {type(error).__name__}: {error}") from error


def _commands(code: str) -> list[list[str]]:
    """The simple commands of a bash block, each as its words (comments, continuations and ``&&`` handled)."""
    code = code.replace("\\\n", " ")
    commands = []
    for line in code.splitlines():
        for part in re.split(r"&&|\|\||;", line):
            words = shlex.split(part, comments=True)
            while words and "=" in words[0] and not words[0].startswith("-"):  # VAR=value prefixes
                words = words[1:]
            if words:
                commands.append(words)
    return commands


def _depthdistill_argv(words: list[str]) -> list[str] | None:
    """The arguments of a ``depthdistill`` command (also ``python -m depthdistill``, ``torchrun … -m``)."""
    if words[0] == "depthdistill":
        return words[1:]
    if "-m" in words and words.index("-m") + 1 < len(words) and words[words.index("-m") + 1] == "depthdistill":
        return words[words.index("-m") + 2:]
    return None


BASH_BLOCKS = [b for b in ALL_BLOCKS if b.lang == "bash"]


@pytest.mark.parametrize("block", BASH_BLOCKS, ids=str)
def test_bash_blocks_parse_and_name_real_commands_and_flags(block):
    from depthdistill.cli import build_parser

    done = subprocess.run(["bash", "-n"], input=block.code, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{block}: {done.stderr}"
    for words in _commands(block.code):
        argv = _depthdistill_argv(words)
        if argv is not None:
            try:
                build_parser().parse_args(argv)
            except SystemExit as exit_:
                raise AssertionError(f"{block}: `depthdistill {shlex.join(argv)}` does not parse") from exit_
        elif words[0] == "python" and len(words) > 1 and words[1].endswith(".py"):
            assert (ROOT / words[1]).is_file(), f"{block}: no script {words[1]}"


RUNNABLE = [(b, argv) for b in BASH_BLOCKS if b.run for words in _commands(b.code)
            if (argv := _depthdistill_argv(words)) is not None]


def test_every_runnable_command_is_one_the_harness_can_run():
    """An unmarked bash block's ``depthdistill`` commands must be ones that run in seconds here (the demo with
    ``--quick``); anything else needs the syntax-only mark."""
    for block, argv in RUNNABLE:
        assert argv[0] == "demo", f"{block}: `depthdistill {shlex.join(argv)}` cannot run here in seconds: mark it"


@pytest.mark.parametrize("argv", sorted({tuple(argv) for _, argv in RUNNABLE if argv[0] == "demo"}), ids=" ".join)
def test_depthdistill_demo_commands_run_quick(argv, tmp_path, monkeypatch, capsys):
    from depthdistill.cli import main

    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--quick"]) == 0
    out = Path(argv[argv.index("--out") + 1]) if "--out" in argv else None
    assert out is None or (out / "results.json").is_file()


# -------------------------------------------------------------------------------- numbers from result files
FIDELITY_FILES = sorted((ROOT / "benchmarks" / "results" / "fidelity").glob("*.jsonl"))


def _fidelity_records() -> list[dict]:
    """The study's rows, each counted once, as ``bench_fidelity.summarize`` counts them."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_fidelity import load_records

    return load_records(FIDELITY_FILES)


def test_fidelity_tables_are_the_summary_of_the_result_files():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from bench_fidelity import summarize
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    page = (ROOT / "docs" / "fidelity.md").read_text()
    results = page.index("\n## Results")
    tables = page[page.index("\n### ", results):page.index("\nThe files behind these tables")]
    want = summarize(FIDELITY_FILES, None)
    assert tables.strip() == want.strip()


def test_fidelity_ranges_quoted_in_prose_are_the_result_files():
    """SN − BL of the two named recipes in the study's main protocol (Adam, 20 + 10 epochs), every setting and
    size: the ranges the README and the fidelity page state."""
    records = _fidelity_records()

    def cell(r):
        return r["setting"], r["optim"], r["teacher_epochs"], r["student_epochs"], r["n_train"]

    baseline = {(*cell(r), r["seed"]): r["miou"] for r in records if r["row"] == "BL"}
    gaps: dict[tuple, list[float]] = {}
    for r in records:
        if r["row"] == "SN" and r["optim"] == "adam" and (r["teacher_epochs"], r["student_epochs"]) == (20, 10):
            gaps.setdefault((r["teacher"], r["student"], cell(r)), []).append(
                100 * (r["miou"] - baseline[(*cell(r), r["seed"])]))
    means = {key: statistics.fmean(v) for key, v in gaps.items()}

    def span(teacher, student):
        values = [m for (t, s, _), m in means.items() if (t, s) == (teacher, student)]
        return f"{-max(values):.1f}", f"{-min(values):.1f}"

    paper, default = span("all14", "fresh"), span("dacnn6+drop", "fresh")
    assert (paper, default) == (("0.8", "4.2"), ("0.2", "2.2"))
    readme = " ".join((ROOT / "README.md").read_text().split())
    fidelity = " ".join((ROOT / "docs" / "fidelity.md").read_text().split())
    assert f"the paper's recipe ends {paper[0]}–{paper[1]} mIoU below" in readme
    assert f"depth dropout) {default[0]}–{default[1]} below" in readme
    assert (f"({default[0]} to {default[1]} mIoU below); the paper's recipe ends {paper[0]} to {paper[1]} below"
            in fidelity)
    positive = {key: m for key, m in means.items() if m > 0 and key[0] != "nodepth"}
    assert {(t, s, c[4]): round(m, 2) for (t, s, c), m in positive.items()} == {("dacnn6+drop", "ce", 384): 0.02}
    assert "at 384 images, +0.02 ± 0.1" in fidelity
    single = {(r["teacher"], r["student"], r["n_train"], r["seed"]) for r in records
              if r["student"] == "calib" and r["n_train"] == 64}
    assert single == {("all14", "calib", 64, 2)} and "at 64 images, seed 2 only" in fidelity


DEMO_RUNS = [ROOT / "docs" / "images" / name / "results.json" for name in ("demo", "demo-removal")]


@pytest.mark.parametrize("results", DEMO_RUNS, ids=["demo", "demo-removal"])
def test_demo_tables_are_the_committed_demo_results(results):
    """docs/demo.md's tables, row by row, are results.json of the runs they quote (rounded as the demo prints
    them): the default demo's first, then ``--removal``'s."""
    if not results.is_file():
        pytest.skip(f"{results.relative_to(ROOT)} (a demo run the page quotes) is not committed")
    page = (ROOT / "docs" / "demo.md").read_text()
    tables = page.split("| row | input | mPA % |")[1:]
    table = tables[DEMO_RUNS.index(results)]
    table = [line for line in table[:table.index("\n\n")].splitlines()[2:]]
    want = [f"| {r['name']} | {r['input']} | {100 * r['mean_pixel_accuracy']:.1f} | {100 * r['mean_iou']:.1f} | "
            f"{100 * r['pixel_accuracy']:.1f} | {r['epochs']} |" for r in json.loads(results.read_text())["rows"]]
    assert table == want


UNLABELLED_FILES = sorted((ROOT / "benchmarks" / "results" / "unlabelled").glob("*.jsonl"))


@pytest.mark.skipif(not UNLABELLED_FILES, reason="no result file of the unlabelled-data study is committed")
def test_unlabelled_study_tables_are_the_summary_of_the_result_files():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_unlabelled import overview, summarize

    page = (ROOT / "docs" / "fidelity.md").read_text()
    for path in UNLABELLED_FILES:  # each file's tables, unedited, somewhere on the page
        assert summarize([path]).strip() in page, path.name
    assert overview(UNLABELLED_FILES).strip() in page  # the table the page opens with
