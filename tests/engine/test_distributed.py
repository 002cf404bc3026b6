"""DDP with two CPU processes on gloo, set up through the same environment variables torchrun sets."""

from __future__ import annotations

import json
import os
import socket

import torch
import torch.multiprocessing as mp
from tests.tiny_rgbd import NUM_CLASSES, TinyRGBD, TinySegmenter

from depthdistill.data import without_labels
from depthdistill.distill import Distiller
from depthdistill.engine import get_world_size, init_distributed, is_distributed, shutdown_distributed

# The default recipe, depth dropout included: each rank's draw is its share of the one the whole batch would get
SETTINGS = dict(batch_size=1, lr=0.1, device="cpu", progress=False, log_echo=False)


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    info = init_distributed()
    assert (info.rank, info.world_size, get_world_size()) == (rank, world_size, world_size)
    torch.manual_seed(0)
    d = Distiller(TinySegmenter(norm=False, dropout=0.0), NUM_CLASSES, out_dir=out_dir, **SETTINGS)
    d.train_teacher(TinyRGBD(4), epochs=1)
    student = d.train_student(TinyRGBD(4), epochs=1)
    metrics = d.evaluate(student, TinyRGBD(3, seed=1))
    torch.save({"state": student.state_dict(), "metrics": metrics}, os.path.join(out_dir, f"rank{rank}.result"))
    shutdown_distributed()
    assert not is_distributed()
    os._exit(0)  # nothing left to do: skip interpreter teardown, where gloo's threads once aborted a CI run


def test_two_processes_agree_match_one_process_with_the_whole_batch_and_only_rank_0_writes(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(2, port, str(tmp_path / "ddp")), nprocs=2, join=True)
    assert not is_distributed()
    ranks = [torch.load(tmp_path / "ddp" / f"rank{r}.result", weights_only=True) for r in range(2)]
    for key, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][key]), key
    assert ranks[0]["metrics"] == ranks[1]["metrics"]

    # one process, batch 2 = the two ranks' batches of 1 (same shuffled order, gradients averaged by DDP)
    torch.manual_seed(0)
    d = Distiller(TinySegmenter(norm=False, dropout=0.0), NUM_CLASSES, **{**SETTINGS, "batch_size": 2})
    d.train_teacher(TinyRGBD(4), epochs=1)
    student = d.train_student(TinyRGBD(4), epochs=1)
    for key, value in student.state_dict().items():
        torch.testing.assert_close(ranks[0]["state"][key], value, rtol=1e-5, atol=1e-6)
    # sharded evaluation (3 samples over 2 ranks, none padded) equals one process evaluating the whole set
    student.load_state_dict(ranks[0]["state"])
    whole = d.evaluate(student, TinyRGBD(3, seed=1))
    assert ranks[0]["metrics"]["confusion_matrix"] == whole["confusion_matrix"]

    # rank 0 alone wrote the log: one record per epoch and phase, not one per process
    records = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    epochs = [(r["phase"], r["epoch"]) for r in records if "event" not in r]
    assert epochs == [("tn", 0), ("sn", 0)]
    assert [r["event"] for r in records if "event" in r] == ["teacher_start", "student_start"]
    assert sorted(p.name for p in (tmp_path / "ddp" / "sn").iterdir()) == ["last.pt", "model.pt"]


#: Methods whose step runs more than one forward (a second batch, a second pass, a partner) under DDP.
METHODS = ("unlabelled", "online", "aux_depth", "consistency")


def _method_data(method: str) -> dict:
    return {"unlabelled_data": without_labels(TinyRGBD(8, seed=7))} if method == "unlabelled" else {}


def _methods_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    init_distributed()
    for method in METHODS:
        torch.manual_seed(0)
        d = Distiller(TinySegmenter(norm=False, dropout=0.0), NUM_CLASSES, method=method, **SETTINGS)
        student = d.train(TinyRGBD(4), teacher_epochs=1, student_epochs=1, **_method_data(method))
        torch.save(student.state_dict(), os.path.join(out_dir, f"{method}{rank}.result"))
    shutdown_distributed()
    os._exit(0)


def test_every_method_under_two_processes_matches_one_process_with_the_whole_batch(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_methods_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    for method in METHODS:
        ranks = [torch.load(tmp_path / f"{method}{r}.result", weights_only=True) for r in range(2)]
        torch.manual_seed(0)
        d = Distiller(TinySegmenter(norm=False, dropout=0.0), NUM_CLASSES, method=method,
                      **{**SETTINGS, "batch_size": 2})
        student = d.train(TinyRGBD(4), teacher_epochs=1, student_epochs=1, **_method_data(method))
        for key, value in student.state_dict().items():
            assert torch.equal(ranks[0][key], ranks[1][key]), (method, key)
            torch.testing.assert_close(ranks[0][key], value, rtol=1e-5, atol=1e-6, msg=f"{method} {key}")
        assert not all(torch.equal(v, d.initial_state[k]) for k, v in student.state_dict().items())


def test_cli_train_under_torchrun_with_two_processes(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2]
    run = {"data": {"name": "tests.tiny_rgbd:TinyRGBD", "args": {"n": 4}},
           "model": {"name": "tests.tiny_rgbd:tiny_segmenter", "args": {"width": 4}},
           "experiment": {"rows": ["TN", "SN"], "teacher_epochs": 1, "student_epochs": 1},
           "train": {"device": "cpu", "progress": False}, "out_dir": str(tmp_path / "out")}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    # TMPDIR: torchrun's agent keeps its rendezvous and error files in a folder of its own there
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                             "-m", "depthdistill", "train", "--config", str(tmp_path / "run.yaml")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("| SN | RGB |") == 1  # rank 0 alone prints
    rows = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["TN", "SN"]
    assert (tmp_path / "out" / "sn" / "model.pt").is_file()
