#!/usr/bin/env bash
# The published package at its floor: build the wheel, install it into a fresh virtual environment with the lowest
# torch and torchvision that pyproject.toml allows (every other dependency as pip resolves it), and run the main job
# on a small Fashion-MNIST subset with it. Downloads about 3 GB (PyPI's torch brings its CUDA libraries).
#
#   bash scripts/floor_check.sh [folder]      (default /tmp/planting-floor; its log: <folder>/floor.log)
set -euo pipefail
cd "$(dirname "$0")/.."
HOME_DIR=${1:-/tmp/planting-floor}
floor() {  # the lowest version pyproject.toml allows for package $1
  python3 -c "import re, sys, tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
print(next(re.fullmatch(r'$1>=([\w.]+)', d).group(1) for d in deps if re.fullmatch(r'$1>=[\w.]+', d)))"
}
TORCH=$(floor torch)
VISION=$(floor torchvision)
rm -rf "$HOME_DIR" && mkdir -p "$HOME_DIR"
python3 -m venv "$HOME_DIR/venv"
PY="$HOME_DIR/venv/bin/python"
python3 -m pip wheel -q --no-deps --no-build-isolation -w "$HOME_DIR/wheel" .
"$PY" -m pip install -q "torch==$TORCH" "torchvision==$VISION" "$HOME_DIR"/wheel/planting_core-*.whl
"$PY" -c "import numpy, torch, torchvision, planting_core; print('torch', torch.__version__, '| torchvision', \
torchvision.__version__, '| numpy', numpy.__version__, '| planting_core', planting_core.__version__)"
cd "$HOME_DIR"  # not the checkout: the installed wheel is what runs
OMP_NUM_THREADS=1 "$PY" -m planting_core --dataset fashion-mnist --subset 1000 --val-size 200 --teacher-width 16 \
  --teacher-epochs 2 --epochs 2 --plant-epochs 1 --max-rounds 2 --device cpu --no-progress --out "$HOME_DIR/run"
test -f "$HOME_DIR/run/planting/seed0/planted.pt" && echo "floor check passed: torch $TORCH, torchvision $VISION"
