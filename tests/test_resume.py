"""Killed with SIGKILL at any point, rerunning the same job resumes and ends with the same results."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch

import planting_core as pc

JOB = Path(__file__).with_name("resume_job.py")


def start(out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(JOB), str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 240) -> bool:
    """SIGKILL `proc` as soon as ready() is true; False if it ended first."""
    t0 = time.time()
    while proc.poll() is None and time.time() - t0 < timeout:
        if ready():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.05)
    return False


def done_candidates(path: Path) -> int:
    try:
        state = torch.load(path, weights_only=True)
    except Exception:  # not there yet
        return 0
    return (state["round"] - 1) * 5 + len(state["done"])


def test_sigkill_mid_teacher_and_mid_round_then_resume(tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert start(ref).wait() == 0
    proc = start(run)
    assert kill_when(proc, lambda: (run / "teacher.state.pt").exists()), "job ended before the teacher was killed"
    assert not (run / "teacher.pt").exists()
    proc = start(run)
    state = run / "grow_state.pt"
    assert kill_when(proc, lambda: done_candidates(state) in (2, 3, 7, 8)), "job ended before planting was killed"
    killed_at = done_candidates(state)
    assert start(run).wait() == 0
    a = pd.read_csv(ref / "history.csv").drop(columns="seconds")
    b = pd.read_csv(run / "history.csv").drop(columns="seconds")
    pd.testing.assert_frame_equal(a, b)
    assert killed_at % 5 != 0  # it was killed in the middle of a round
    ta, tb = (pc.checkpoint.read_checkpoint(p / "teacher.pt")["state"] for p in (ref, run))
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))
