"""The main job: train (or load) a teacher and an initial network, then grow the network by planting.

    python -m planting_core --dataset fashion-mnist --out runs/fashion-mnist
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path


from .checkpoint import load_checkpoint
from .data import check_dataset_name, load_data
from .errors import cli
from .experiments import load_or_train, plant_and_save
from .models import count_parameters
from .search import GrowConfig
from .train import TrainConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m planting_core", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--root", default=None, help="data folder (default $PLANTING_DATA or ~/.cache/planting-book/data)")
    p.add_argument("--subset", type=int, default=None, help="number of training images (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--teacher-width", type=int, default=64)
    p.add_argument("--initial-width", type=int, default=8)
    p.add_argument("--teacher-epochs", type=int, default=15)
    p.add_argument("--initial-epochs", type=int, default=15)
    p.add_argument("--plant-epochs", type=int, default=3)
    p.add_argument("--channels", type=int, default=4, help="channels planted per step")
    p.add_argument("--max-rounds", type=int, default=None)
    p.add_argument("--lr", type=float, default=0.02, help="learning rate of the teacher and initial network")
    p.add_argument("--plant-lr", type=float, default=0.03, help="learning rate of the planted channels (KD)")
    p.add_argument("--T", type=float, default=1.0, help="distillation temperature")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--out", default=None, help="run folder (default runs/<dataset>)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the whole job; bad input ends with a one-line message and exit code 2."""
    a = parse_args(argv)
    return cli(lambda: job(a))


def job(a: argparse.Namespace) -> None:
    """Teacher and initial network (load-or-train), then the search; results in the run folder."""
    name = check_dataset_name(a.dataset)
    out = Path(a.out or f"runs/{name}")
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(name, a.root, subset=a.subset, seed=a.seed, device=a.device)
    print(data.describe(), "on", data.train.x.device, flush=True)
    base = TrainConfig(epochs=a.teacher_epochs, lr=a.lr, batch_size=a.batch_size, seed=a.seed,
                       progress=not a.no_progress)
    teacher = load_or_train(out / "teacher.pt", [a.teacher_width] * 5, data, base, desc="teacher", seed=a.seed)
    initial = load_or_train(out / "initial.pt", [a.initial_width] * 5, data, replace(base, epochs=a.initial_epochs),
                            desc="initial", seed=a.seed)
    for tag, net in (("teacher", teacher), ("initial", initial)):
        print(f"{tag}: widths {net.widths}, {count_parameters(net):,} params, test acc {net.meta['test_acc']:.4f}")
    cfg = GrowConfig(channels=a.channels, max_rounds=a.max_rounds,
                     train=replace(base, epochs=a.plant_epochs, lr=a.plant_lr, T=a.T, loss="kd"))
    result = plant_and_save(initial, teacher, data, cfg, out, progress=not a.no_progress)
    test = load_checkpoint(out / "planted.pt").meta
    print(result.chosen()[["round", "layer", "widths", "params", "val_loss", "val_acc", "test_acc"]].to_string())
    print(f"stopped: {result.stop_reason}")
    print(f"planted: widths {result.model.widths}, {count_parameters(result.model):,} params, "
          f"test acc {test['test_acc']:.4f}; history in {out / 'history.csv'}")
    (out / "summary.json").write_text(json.dumps({
        "teacher": teacher.meta | {"params": count_parameters(teacher)},
        "initial": initial.meta | {"params": count_parameters(initial)},
        "planted": {"widths": result.model.widths, "params": count_parameters(result.model), **test},
        "stop_reason": result.stop_reason}, indent=1, default=str))
