"""Compute-matched students: a fixed-width network given the compute of a planting search (a baseline of the study).

A planting search with fine-tuned old channels (`finetune-old`) trains its initial network once (`epochs`), then
per round several candidates (`plant_epochs` each, every weight training, each from the current network, with its
own warm restart of the learning rate), keeps the one with the lowest validation loss, and so on. A
compute-matched student gets the same: a fixed-width network trained once like a student, then `rounds` rounds of
`candidates` copies, each trained from the best network so far for `plant_epochs` epochs with the search's
learning rate and loss; the round's copy with the lowest validation loss replaces the best if it is lower. Its
training epochs (and images seen) equal the search's; only validation data choose.
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from ..checkpoint import fingerprint, load_checkpoint, save_checkpoint
from ..data import Data
from ..models import PlainCNN, count_parameters
from ..distill import teacher_logits
from ..train import TrainConfig, evaluate, fit
from ..records import training_record
from .experiments import _refuse_if_changed


def search_budget(history: pd.DataFrame, candidates_per_round: int) -> int:
    """Rounds of `candidates_per_round` that train at least as many candidates as a search's history.csv did."""
    trained = int((history["round"] > 0).sum())  # row 0 is the initial network
    return max(1, math.ceil(trained / candidates_per_round))


def matched_settings(student: TrainConfig, rounds_cfg: TrainConfig, rounds: int, candidates: int, data: Data,
                     teacher: torch.nn.Module | None) -> dict:
    """What a compute-matched student's checkpoint is checked against before it is reused."""
    return {"student": training_record(student), "rounds_training": training_record(rounds_cfg),
            "rounds": rounds, "candidates": candidates, "data": data.describe(),
            "teacher": None if teacher is None else fingerprint(teacher)}


def sweep_row(net: PlainCNN, seed: int) -> dict:
    """A compute-matched student's sweep.csv row (kind "matched"): its kept network's validation and test figures,
    its rounds, candidates and seconds."""
    meta, log = net.meta, net.meta["rounds_log"]
    kept = [r for r in log if r["kept"]][-1]
    settings = meta["settings"]
    return dict(kind="matched", condition=f"matched {settings['rounds_training']['loss'].upper()}", seed=seed,
                varied=f"widths=[{net.widths[0]}]*5, {settings['rounds']} rounds x {settings['candidates']}",
                settings=json.dumps(settings, sort_keys=True), rounds=int(kept["round"]), widths=str(list(net.widths)),
                params=count_parameters(net), val_loss=float(kept["val_loss"]), val_acc=float(kept["val_acc"]),
                test_acc=float(meta["test_acc"]), candidates=settings["rounds"] * settings["candidates"],
                seconds=float(sum(r["seconds"] for r in log)), stop_reason="")


def round_seed(seed: int, rnd: int, candidate: int) -> int:
    """The seed of one candidate copy (its batch order): from the student's seed, the round and its index."""
    return seed * 1_000_003 + rnd * 101 + candidate


def train_matched(path: str | Path, widths: list[int], data: Data, student: TrainConfig, rounds_cfg: TrainConfig,
                  rounds: int, candidates: int, teacher: torch.nn.Module | None = None) -> PlainCNN:
    """Load the compute-matched student saved at `path`, or train it (resuming after the last finished round).

    `student` trains the fixed-width start ([w]*5 as a student); `rounds_cfg` trains every candidate copy (the
    search's plant_epochs, plant_lr, loss). The checkpoint's metadata holds one row per round (best validation
    loss so far, seconds), the total epochs and the test accuracy of the network kept.
    """
    path, dev = Path(path), data.train.x.device
    wanted = matched_settings(student, rounds_cfg, rounds, candidates, data, teacher)
    if path.exists():
        net = load_checkpoint(path, device=dev)
        _refuse_if_changed(path, net.meta.get("settings", {}), wanted)
        return net
    state = path.with_name(path.stem + ".state.pt")
    if state.exists():  # the best network after the last finished round, with the rounds' log
        best = load_checkpoint(state, device=dev)
        _refuse_if_changed(state, best.meta.get("settings", {}), wanted)
        log = list(best.meta["rounds_log"])
    else:
        torch.manual_seed(student.seed)
        best = PlainCNN(widths, **data.model_kwargs()).to(dev)
        t0 = time.perf_counter()
        fit(best, data, student, teacher=teacher if student.loss == "kd" else None)
        val = evaluate(best, data.val)
        log = [dict(round=0, val_loss=val["loss"], val_acc=val["acc"], kept=True, seconds=time.perf_counter() - t0)]
    targets = None if teacher is None else teacher_logits(teacher, data.train.x, rounds_cfg.eval_batch_size)  # (N, K)
    for rnd in range(len(log), rounds + 1):
        best, row = _one_round(best, data, rounds_cfg, teacher, targets, rnd, candidates, log[-1]["val_loss"])
        log.append(row)
        save_checkpoint(best, state, settings=wanted, rounds_log=log)
    test = evaluate(best, data.test)
    epochs = student.epochs + rounds * candidates * rounds_cfg.epochs
    save_checkpoint(best, path, widths=list(widths), loss_fn=rounds_cfg.loss, seed=student.seed, epochs=epochs,
                    test_loss=test["loss"], test_acc=test["acc"], settings=wanted, rounds_log=log,
                    history=[{"seconds": r["seconds"], "val_loss": r["val_loss"], "val_acc": r.get("val_acc")}
                             for r in log])
    state.unlink(missing_ok=True)
    return load_checkpoint(path, device=dev)


def _one_round(best: PlainCNN, data: Data, cfg: TrainConfig, teacher: torch.nn.Module | None,
               targets: torch.Tensor | None, rnd: int, candidates: int, best_loss: float) -> tuple[PlainCNN, dict]:
    """Train `candidates` copies of `best`; the copy with the lowest validation loss replaces it if lower."""
    t0 = time.perf_counter()
    scored = []  # (validation loss, validation accuracy, copy)
    for c in range(candidates):
        net = copy.deepcopy(best)
        fit(net, data, replace(cfg, seed=round_seed(cfg.seed, rnd, c), progress=False), teacher=teacher,
            targets=targets, warn_collapse=False)
        val = evaluate(net, data.val)
        scored.append((val["loss"], val["acc"], net))
    loss, acc, winner = min(scored, key=lambda s: s[0] if s[0] == s[0] else math.inf)
    kept = loss < best_loss
    row = dict(round=rnd, val_loss=loss if kept else best_loss, val_acc=acc if kept else None, kept=bool(kept),
               seconds=time.perf_counter() - t0)
    return (winner if kept else best), row
