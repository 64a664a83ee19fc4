"""The GPU check (scripts/gpu_check.sh): on the CPU it lists its steps and skips the CUDA ones, saying so; it names
every CUDA-only test; and it reads the bench's headline figures from the bench's own output."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch

from tools import gpu_check

ROOT = Path(__file__).resolve().parents[1]


def test_dry_run_lists_every_step_and_writes_nothing(tmp_path):
    out = tmp_path / "gpu.csv"
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "--dry-run", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["cuda-tests", "bench", "book-5k"]
    assert all(t in lines[0] for t in gpu_check.CUDA_TESTS) and "--device cuda" in lines[1]
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU half: a CUDA machine runs the steps")
def test_without_cuda_every_step_is_a_row_saying_it_was_skipped(tmp_path):
    out = tmp_path / "gpu.csv"
    assert gpu_check.main(["--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert list(table["step"]) == ["cuda-tests", "bench", "book-5k"]
    assert set(table["metric"]) == {"skipped"} and set(table["device"]) == {"no CUDA device"}


def test_the_check_names_every_test_that_needs_cuda():
    marked = set()
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        text = path.read_text()
        for m in re.finditer(r'skipif\(not torch\.cuda\.is_available\(\), reason="needs CUDA"\)\s*\ndef (\w+)', text):
            marked.add(f"tests/{path.name}::{m.group(1)}")
    assert marked == set(gpu_check.CUDA_TESTS)


def test_the_bench_figures_are_read_from_its_output():
    text = (ROOT / "results" / "fashion-mnist-5k" / "bench_planting.txt").read_text()
    figures = gpu_check.bench_figures(text)
    assert figures["planting_round_speedup"] == float(re.search(r"planting_round_speedup=([\d.]+)", text).group(1))
    assert figures["fit_img_per_s_w8"] > 0 and figures["fit_img_per_s_w64"] > 0
    assert (figures["peak_fraction_w8"] is None) == ("peak_fraction_w8=" not in text)  # benches before it lack it
    assert None not in {k: v for k, v in figures.items() if k != "peak_fraction_w8"}.values()


def test_the_bench_counts_a_training_step_and_measures_the_peak(data):
    from planting_core.book.bench import matmul_peak, train_step_flops
    small, wide = train_step_flops(data, 8, batch=16), train_step_flops(data, 32, batch=16)
    assert 0 < small < wide  # more channels, more arithmetic
    assert train_step_flops(data, 8, batch=32) == pytest.approx(2 * small, rel=0.01)  # linear in the batch
    assert matmul_peak(torch.device("cpu"), n=256) > 1e8  # any machine multiplies faster than 0.1 GFLOP/s
