"""The main job under torchrun (2 CPU processes, gloo): the same growth as one process, and resumable after a kill."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import planting_core as pc

TINY = ["--dataset", "fashion-mnist", "--subset", "512", "--val-size", "128", "--teacher-width", "8",
        "--teacher-epochs", "1", "--widths", "4,4,4,4,4", "--epochs", "1", "--plant-epochs", "1", "--max-rounds", "2",
        "--device", "cpu", "--no-progress"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def job(out: Path, procs: int, *extra: str) -> subprocess.Popen:
    launcher = TORCHRUN if procs > 1 else [sys.executable]
    return subprocess.Popen([*launcher, "-m", "planting_core", *TINY, *extra, "--out", str(out)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    return out


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single")
    finish(job(out, 1))
    return out


def same_growth(a: Path, b: Path) -> None:
    ha, hb = (pd.read_csv(p / "planting" / "seed0" / "history.csv") for p in (a, b))
    assert list(ha["widths"]) == list(hb["widths"]) and list(ha["chosen"]) == list(hb["chosen"])
    assert ha["layer"].fillna(-1).tolist() == hb["layer"].fillna(-1).tolist()
    assert (ha["val_loss"] - hb["val_loss"]).abs().max() < 1e-3


def test_two_processes_grow_what_one_grows(single: Path, tmp_path: Path):
    finish(job(tmp_path, 2))
    same_growth(single, tmp_path)
    # the teacher trained data-parallel (half of every batch per process) learns what one process learns
    ta, tb = (pc.load_checkpoint(p / "teacher.pt") for p in (single, tmp_path))
    for (name, wa), wb in zip(ta.state_dict().items(), tb.state_dict().values()):
        assert torch.allclose(wa, wb, atol=1e-4), name
    assert json.loads((single / "summary.json").read_text())["world_size"] == 1
    assert json.loads((tmp_path / "summary.json").read_text())["world_size"] == 2
    assert not list(tmp_path.rglob("*.tmp"))


def test_killed_under_torchrun_then_rerun_resumes(single: Path, tmp_path: Path):
    proc = job(tmp_path, 2)
    state = tmp_path / "planting" / "seed0" / "grow_state.pt"
    deadline = time.time() + 300
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers, mid-search
    proc.wait()
    assert not (tmp_path / "summary.json").exists()
    rows_before = len(pc.checkpoint.safe_load(state)["rows"])
    out = finish(job(tmp_path, 2))
    assert "stopped: reached max_rounds=2" in out
    same_growth(single, tmp_path)
    assert rows_before >= 1


def test_a_rerun_with_one_process_resumes_what_two_began(single: Path, tmp_path: Path):
    run = tmp_path / "run"
    finish(job(run, 2, "--max-rounds", "1"))
    finish(job(run, 1))  # max_rounds raised from 1 to 2: the finished round is kept, round 2 is grown
    same_growth(single, run)
    shutil.rmtree(run)
