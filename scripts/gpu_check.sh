#!/usr/bin/env bash
# The project's GPU check in one call (tools/gpu_check.py): CUDA-only tests, the benchmark on CUDA, and the
# 5,000-image book regime, into results/gpu/gpu_check.csv. `--dry-run` lists the steps; without CUDA the CUDA
# steps are skipped and say so.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 -m tools.gpu_check "$@"
