"""The search's switches as policies: which parameters a candidate trains, and on which validation images a round's
winner is chosen and the stop decided.

GrowConfig keeps its fields (finetune_old, finetune_head, stop_split: saved runs record them); `training_policy`
and `validation_policy` turn them into the objects the search calls, so the search loop branches on none of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from .data import Split
from .errors import PlantingError
from .models import PlainCNN
from .planting import merge, train_head
from .train import evaluate

if TYPE_CHECKING:
    from .search import GrowConfig


@dataclass(frozen=True)
class Training:
    """Which of a planted candidate's parameters train."""
    name: str
    trainable: Callable[[nn.Module], nn.Module]  # planted candidate -> the network to train (the same, or merged)
    new_only: bool  # only the planted channels train (what fused training supports)
    revives: bool  # the old convolutions train too, so a dead (collapsed) channel may come back


TRAININGS = {
    "new": Training("new", lambda net: net, new_only=True, revives=False),  # the paper: planted channels only
    "all": Training("all", merge, new_only=False, revives=True),  # finetune_old: every weight
    "head": Training("head", train_head, new_only=False, revives=False),  # finetune_head: fc1, fc2; convs frozen
}


def training_policy(cfg: GrowConfig, model: nn.Module) -> Training:
    """The training policy a GrowConfig's switches name, checked against the network it will grow."""
    policy = TRAININGS["all" if cfg.finetune_old else "head" if cfg.finetune_head else "new"]
    if policy.name == "head" and not isinstance(model, PlainCNN):
        raise PlantingError(f"finetune_head=True trains the paper's PlainCNN classifier (fc1, fc2); a "
                            f"{type(model).__name__} has none by those names: use finetune_old or neither")
    return policy


class Validation:
    """The paper's validation: one split both chooses each round's winner and decides the stop."""

    def __init__(self, val: Split, targets: torch.Tensor, batch_size: int, T: float):
        self.val, self.targets, self.batch_size, self.T = val, targets, batch_size, T  # targets: (N_val, K)

    def __call__(self, net: nn.Module) -> dict:
        """Validation cross-entropy, accuracy and KD loss to the teacher."""
        return evaluate(net, self.val, self.batch_size, self.targets, self.T)

    def stop_metric(self, selection_metric: str) -> str:
        """The history column whose fall keeps a winner: the one the selection chose by."""
        return selection_metric


class SplitHalves(Validation):
    """stop_split: the first half of the validation images chooses the winner, the second half decides the stop."""

    def __call__(self, net: nn.Module) -> dict:
        """The first half's metrics, plus stop_loss: the cross-entropy on the second half."""
        h, val = len(self.val) // 2, self.val
        choose = evaluate(net, Split(val.x[:h], val.y[:h]), self.batch_size, self.targets[:h], self.T)
        stop = evaluate(net, Split(val.x[h:], val.y[h:]), self.batch_size, self.targets[h:], self.T)
        return {**choose, "stop_loss": stop["loss"]}

    def stop_metric(self, selection_metric: str) -> str:
        """The second half's cross-entropy decides whether a winner is kept."""
        return "stop_loss"


def validation_policy(cfg: GrowConfig, val: Split, targets: torch.Tensor) -> Validation:
    """The validation policy a GrowConfig's switches name (targets: the teacher's (N_val, K) logits)."""
    kind = SplitHalves if cfg.stop_split else Validation
    return kind(val, targets, cfg.train.eval_batch_size, cfg.train.T)
