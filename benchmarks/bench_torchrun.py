"""Wall time of one small planting job with 1 and 2 processes (torchrun, gloo on CPUs or nccl on GPUs).

    python benchmarks/bench_torchrun.py [--out book/running/torchrun-scaling-cpu.csv] [--device cpu]

Each setting runs the main job (teacher, initial network, planting) from scratch in a fresh folder; the
settings run one after the other on the same machine, so their ratio is a side-by-side measurement.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

JOB = ["--dataset", "fashion-mnist", "--subset", "3000", "--val-size", "500", "--teacher-width", "16",
       "--teacher-epochs", "2", "--widths", "4,4,4,4,4", "--epochs", "2", "--plant-epochs", "2", "--max-rounds", "2",
       "--no-progress"]
# (processes, threads per process)
SETTINGS = [(1, 1), (1, 2), (2, 1)]


def machine(device: str) -> str:
    """The machine in words: GPU name, or the CPU and its core count."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def timed_job(processes: int, threads: int, device: str) -> float:
    """Seconds of wall time for the job with `processes` processes of `threads` threads each."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
              if processes > 1 else [sys.executable])
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        subprocess.run([*launch, "-m", "planting_core", *JOB, "--device", device, "--out", out], env=env,
                       check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write the table here as CSV")
    ap.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (nccl, one GPU per process)")
    a = ap.parse_args()
    rows = [dict(processes=p, threads_per_process=t, seconds=round(timed_job(p, t, a.device), 1))
            for p, t in SETTINGS]
    table = pd.DataFrame(rows)
    table["speedup_vs_1x1"] = (table["seconds"].iloc[0] / table["seconds"]).round(2)
    table["machine"] = machine(a.device)
    print(table.to_string(index=False))
    if a.out:
        table.to_csv(a.out, index=False)


if __name__ == "__main__":
    main()
