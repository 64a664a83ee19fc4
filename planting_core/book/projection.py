"""Knowledge projection (Zhang et al.): a 1x1-convolution projection carries a teacher's intermediate features
onto a thinner student's layer to guide its training on little labelled data; the teacher layer and the student
layer are chosen by a joint loss on the validation split, then the student trains normally.

Choices the source leaves open, made here (the comparison chapter lists them):
- candidate pairs: a teacher block t and a student block s whose outputs have the same spatial size (after
  each conv's ReLU and pool), so that a 1x1 convolution can map one onto the other;
- the guidance: the student's block-s output is pulled towards ReLU(P(teacher block-t output)) by a mean
  squared error (weight `hint_weight`), while the student also learns the labels (cross-entropy); P is learnt
  with the student. The joint loss is cross-entropy + hint_weight x MSE;
- selection: every pair is trained for `guide_epochs`; the pair with the lowest joint loss on the validation
  split wins; its student (with the guidance dropped) then trains `epochs` more on the labels alone.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import fingerprint, write_csv
from ..data import Data
from .experiments import load_or_train
from ..models import LAYOUTS, NUM_CONVS, PlainCNN
from ..train import TrainConfig, fit


def block_sides(net: PlainCNN) -> list[int]:
    """The spatial side of each block's output (conv i, ReLU, and its pool if the layout has one)."""
    side, sides = net.image_size, []
    for i in range(NUM_CONVS):
        side = side // 2 if i in LAYOUTS[net.layout] else side
        sides.append(side)
    return sides


def layer_pairs(teacher: PlainCNN, student: PlainCNN) -> list[tuple[int, int]]:
    """Every (teacher block, student block) pair whose outputs have the same spatial size (0-based)."""
    ts, ss = block_sides(teacher), block_sides(student)
    return [(t, s) for t in range(NUM_CONVS) for s in range(NUM_CONVS) if ts[t] == ss[s]]


class Guided(nn.Module):
    """The student with a projection from teacher block `t` to its own block `s`. forward(x) returns the
    student's logits and keeps the hint loss (MSE to the projected teacher features) in `self.hint`."""

    def __init__(self, student: PlainCNN, teacher: PlainCNN, t: int, s: int):
        super().__init__()
        self.student, self.t, self.s = student, t, s
        self.teacher = [teacher.eval()]  # in a list: not a submodule, so never trained, moved or saved with it
        self.proj = nn.Conv2d(teacher.widths[t], student.widths[s], kernel_size=1)  # (C_t -> C_s) per pixel
        self.hint = torch.zeros(())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.teacher[0].features(x, 0, self.t + 1)  # (B, C_t, h, w)
        own = self.student.features(x, 0, self.s + 1)  # (B, C_s, h, w)
        self.hint = F.mse_loss(own, torch.relu(self.proj(target)))
        return self.student.head(self.student.features(own, self.s + 1))  # (B, classes)


class HintPenalty:
    """fit's penalty: hint_weight x the hint loss of the guided network's last forward pass."""

    def __init__(self, hint_weight: float):
        self.hint_weight = hint_weight

    def __call__(self, model: nn.Module) -> torch.Tensor:
        return self.hint_weight * model.hint

    def __repr__(self) -> str:
        return f"knowledge_projection_hint(weight={self.hint_weight:g})"


def joint_loss(guided: Guided, data: Data, hint_weight: float, batch_size: int = 256) -> float:
    """Cross-entropy + hint_weight x hint loss of a guided student on the validation split."""
    guided.eval()
    total, n = 0.0, len(data.val)
    with torch.no_grad():
        for i in range(0, n, batch_size):
            x, y = data.val.x[i:i + batch_size], data.val.y[i:i + batch_size]
            ce = F.cross_entropy(guided(x), y)
            total += (ce.item() + hint_weight * guided.hint.item()) * len(y)
    guided.train()
    return total / n


def choose_pair(teacher: PlainCNN, make_student, data: Data, cfg: TrainConfig, guide_epochs: int,
                hint_weight: float) -> tuple[Guided, pd.DataFrame]:
    """Train a guided student for every layer pair (`make_student()` gives a fresh one, same seed) for
    `guide_epochs`; returns the guided student with the lowest validation joint loss, and one row per pair."""
    rows, best = [], None
    for t, s in layer_pairs(teacher, make_student()):
        t0 = time.perf_counter()
        torch.manual_seed(cfg.seed)
        guided = Guided(make_student(), teacher, t, s).to(data.train.x.device)
        fit(guided, data, replace(cfg, epochs=guide_epochs, loss="ce", eval_each_epoch=False),
            penalty=HintPenalty(hint_weight), desc=f"pair t{t + 1}->s{s + 1}")
        loss = joint_loss(guided, data, hint_weight, cfg.eval_batch_size)
        rows.append(dict(teacher_layer=t + 1, student_layer=s + 1, val_joint_loss=loss,
                         seconds=time.perf_counter() - t0))
        if best is None or loss < best[0]:
            best = (loss, guided)
    return best[1], pd.DataFrame(rows)


def load_or_project(path: str | Path, teacher: PlainCNN, widths: list[int], data: Data, cfg: TrainConfig,
                    guide_epochs: int, hint_weight: float, seed: int = 0, desc: str = "projected") -> PlainCNN:
    """Load the student at `path`, or make it: choose the layer pair (choose_pair; its table is written
    beside `path` as <name>-pairs.csv), then train the chosen student `cfg.epochs` on the labels alone."""
    path = Path(path)

    def guided_student() -> PlainCNN:
        def fresh() -> PlainCNN:
            torch.manual_seed(seed)
            return PlainCNN(widths, **data.model_kwargs())
        guided, pairs = choose_pair(teacher, fresh, data, replace(cfg, seed=seed), guide_epochs, hint_weight)
        write_csv(pairs, path.with_name(path.stem + "-pairs.csv"))
        return guided.student
    origin = {"projected_from": fingerprint(teacher), "guide_epochs": guide_epochs, "hint_weight": hint_weight,
              "student_widths": list(widths)}
    return load_or_train(path, None, data, replace(cfg, loss="ce"), seed=seed, desc=desc, start=guided_student,
                         origin=origin)
