"""The project's GPU check in one call: the CUDA-only tests, the benchmark on CUDA, and the 5,000-image book
regime (notebooks 01-04, 3 seeds) from an empty run folder, timed, into one CSV that the performance page shows.

    bash scripts/gpu_check.sh [--dry-run] [--data-root DIR] [--out results/gpu/gpu_check.csv]

Each step's figures land in the CSV as rows (step, metric, value, seconds, device, torch, when). Without CUDA,
the CUDA steps are skipped and say so (`--dry-run` lists the steps and their commands, runs nothing and writes
nothing). The book regime runs only where papermill is installed (on the device machine: carried wheels). Each
step stops at its DEADLINE_S; a step that fails or runs out of time is a row saying so, and the later steps run.
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from planting_core.checkpoint import write_csv
from planting_core.errors import cli

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "gpu" / "gpu_check.csv"
# every test that needs CUDA (tests/test_gpu_check.py checks that this list names all of them)
CUDA_TESTS = ["tests/test_fused.py::test_fused_on_cuda_matches_the_cpu_choice",
              "tests/test_fused.py::test_fused_steps_replayed_from_a_cuda_graph_train_as_eager_ones",
              "tests/test_graphstep.py::test_cuda_graph_replays_train_as_eager_steps_do"]
BENCH = [sys.executable, "-m", "planting_core.bench", "--quick", "--device", "cuda"]
BENCH_FIGURES = {"planting_round_speedup": r"^planting_round_speedup=([\d.]+)",
                 "fused_round_speedup": r"^fused_round_speedup=([\d.]+)",
                 "peak_fraction_w8": r"^peak_fraction_w8=([\d.]+)",
                 "fit_img_per_s_w8": r"^g8: .*ours ([\d,.]+) img/s", "fit_img_per_s_w64": r"^g64: .*ours ([\d,.]+) img/s"}
BOOK_RUN, BOOK_NOTEBOOKS = "fashion-mnist-5k", ["01", "02", "03", "04"]
DEADLINE_S = {"cuda-tests": 120, "bench": 180, "book-5k": 240}  # 9 minutes at most in all, 8 planned
COLUMNS = ["step", "metric", "value", "seconds", "device", "torch", "when"]


def steps(data_root: str | None) -> list[tuple[str, str]]:
    """(step, what it runs) in order."""
    root = ["--data-root", data_root] if data_root else []
    return [("cuda-tests", " ".join([sys.executable, "-m", "pytest", "-q", *CUDA_TESTS])),
            ("bench", " ".join(BENCH) + (f" (PLANTING_DATA={data_root})" if data_root else "")),
            ("book-5k", f"tools.batch on {BOOK_RUN}'s parameters, notebooks {', '.join(BOOK_NOTEBOOKS)}, device cuda, "
                        f"an empty run folder{' and ' + ' '.join(root) if root else ''}")]


def timed(name: str, cmd: list[str], env: dict | None = None) -> tuple[subprocess.CompletedProcess | None, float]:
    """Run one step's command within its deadline: (the finished process, or None if it ran out of time; seconds)."""
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                             start_new_session=True)  # its own process group: a kernel it starts ends with it
    try:
        out, err = child.communicate(timeout=DEADLINE_S[name])
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)  # the step and every process it started (notebook kernels)
        child.communicate()
        return None, time.perf_counter() - t0
    return subprocess.CompletedProcess(cmd, child.returncode, out, err), time.perf_counter() - t0


def failure(name: str, proc: subprocess.CompletedProcess | None, seconds: float) -> list[dict]:
    """The row of a step that ran out of time or failed: why, in one line."""
    why = (f"stopped at its deadline of {DEADLINE_S[name]} s" if proc is None else
           (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["exit code"])[-1][:300])
    return [{"metric": "failed", "value": why, "seconds": seconds}]


def run_tests() -> list[dict]:
    """The CUDA-only tests: how many passed, and the seconds."""
    proc, seconds = timed("cuda-tests", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *CUDA_TESTS])
    if proc is None:
        return failure("cuda-tests", proc, seconds)
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr.strip()[-200:]
    passed = int(m.group(1)) if (m := re.search(r"(\d+) passed", tail)) else 0
    return [{"metric": "tests_passed", "value": passed, "seconds": seconds},
            {"metric": "tests_summary", "value": tail, "seconds": seconds}]


def bench_figures(output: str) -> dict[str, float | None]:
    """The headline figures of a bench run's output (None where a line is missing)."""
    found = {k: re.search(p, output, re.MULTILINE) for k, p in BENCH_FIGURES.items()}
    return {k: float(m.group(1).replace(",", "")) if m else None for k, m in found.items()}


def run_bench(env: dict | None) -> list[dict]:
    """The benchmark on CUDA: its headline ratios and fit's throughput at widths 8 and 64."""
    proc, seconds = timed("bench", BENCH, env)
    if proc is None or proc.returncode:
        return failure("bench", proc, seconds)
    return [{"metric": k, "value": v, "seconds": seconds} for k, v in bench_figures(proc.stdout).items()]


def run_book(data_root: str | None, env: dict | None) -> list[dict]:
    """Notebooks 01-04 of the 5,000-image regime from an empty run folder on CUDA: the wall time."""
    try:
        import papermill  # noqa: F401  (the batch runner executes notebooks with it)
    except ModuleNotFoundError:
        return [{"metric": "skipped", "value": "papermill is not installed here (carry its wheels: the device README)"}]
    from tools.batch import notebook_parameters, notebooks
    from tools.book import BOOK_RUNS
    dataset, profile, sets, _ = BOOK_RUNS[BOOK_RUN]
    accepted = set().union(*(notebook_parameters(nb) for nb in notebooks(only=BOOK_NOTEBOOKS)))
    sets = {k: v for k, v in {**sets, "device": "cuda", "progress": False,
                              **({"data_root": data_root} if data_root else {})}.items() if k in accepted}
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "tools.batch", "--dataset", dataset, "--profile", profile, "--out", f"{out}/run",
               *[a for k, v in sets.items() for a in ("--set", f"{k}={v!r}")],
               *[a for nb in BOOK_NOTEBOOKS for a in ("--only", nb)]]
        proc, seconds = timed("book-5k", cmd, env)
    if proc is None or proc.returncode:
        return failure("book-5k", proc, seconds)
    return [{"metric": "wall_seconds", "value": round(seconds, 1), "seconds": seconds}]


def main(argv: list[str] | None = None) -> int:
    """List the steps, run them where CUDA is (each within its deadline), write the CSV; 2 on a one-line error."""
    ap = argparse.ArgumentParser(prog="bash scripts/gpu_check.sh", description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="list the steps and what each runs; run nothing")
    ap.add_argument("--data-root", help="folder with the Fashion-MNIST files (default: the package's search)")
    ap.add_argument("--out", type=Path, default=OUT, help=f"the CSV (default {OUT.relative_to(ROOT)})")
    a = ap.parse_args(argv)

    def job() -> None:
        cuda = torch.cuda.is_available()
        device = torch.cuda.get_device_name(0) if cuda else "no CUDA device"
        for name, what in steps(a.data_root):
            print(f"{name}: {what}" + ("" if cuda else "  [skipped: no CUDA device here]"), flush=True)
        if a.dry_run:
            return
        env = {**os.environ, "PLANTING_DATA": a.data_root} if a.data_root else None
        runners = {"cuda-tests": run_tests, "bench": lambda: run_bench(env), "book-5k": lambda: run_book(a.data_root, env)}
        when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        rows = []
        for name, _ in steps(a.data_root):
            found = runners[name]() if cuda else [{"metric": "skipped", "value": "no CUDA device"}]
            rows += [{"step": name, "device": device, "torch": torch.__version__, "when": when, **r} for r in found]
            for r in found:
                print(f"{name}: {r['metric']} = {r['value']}", flush=True)
        write_csv(pd.DataFrame(rows, columns=COLUMNS), a.out)
        print(f"wrote {a.out}")
    return cli(job)


if __name__ == "__main__":
    sys.exit(main())
