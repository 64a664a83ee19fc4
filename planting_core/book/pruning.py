"""Filter pruning with hierarchical group-sparse regularisation (Mitsuno and Kurita), planting's opposite:
train a wide network with a penalty that drives whole channels to zero, remove the channels whose removal
raises the loss on random training images least until a parameter budget is met, then fine-tune.

Choices the source leaves open, made here (the comparison chapter lists them):
- groups: a channel's group is every weight tied to it (its filter, its bias and the next layer's input
  columns it feeds, fc1's for conv5); inside it, each kernel of its filter (one per input channel) is a group
  too. The penalty is the sum of both levels' L2 norms, times `strength`.
- removal: scored on `samples` (256) random training images by the rise of the cross-entropy when the
  channel's output is zeroed; the lowest `fraction` (10%) of the remaining channels goes per step (at least
  one), rescored after each step; a layer keeps at least one channel. Several budgets share one pruning path.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import fingerprint, write_csv
from ..data import Data
from .experiments import load_or_train
from ..models import NUM_CONVS, PlainCNN, param_count
from ..train import TrainConfig

EPS = 1e-12  # keeps the gradient of a norm finite at zero
SAMPLES = 256  # random training images that score a channel's removal
FRACTION = 0.1  # share of the remaining channels removed per scoring step


def next_columns(net: PlainCNN, layer: int) -> torch.Tensor:
    """The next layer's weights fed by each channel of conv `layer`: (C_layer, fan-out) (fc1's for conv5)."""
    if layer + 1 < NUM_CONVS:
        w = net.convs[layer + 1].weight  # (C_next, C_layer, 3, 3)
        return w.transpose(0, 1).reshape(w.shape[1], -1)
    w = net.fc1.weight.view(net.hidden, net.widths[-1], net.side * net.side)  # (hidden, C5, s*s)
    return w.transpose(0, 1).reshape(net.widths[-1], -1)


def tied_squares(net: PlainCNN, layer: int) -> torch.Tensor:
    """Per channel of conv `layer`, the sum of squares of every weight tied to it (filter, bias, next-layer
    columns): (C_layer,)."""
    conv = net.convs[layer]
    return conv.weight.pow(2).sum((1, 2, 3)) + conv.bias.pow(2) + next_columns(net, layer).pow(2).sum(1)


def group_sparse_penalty(net: PlainCNN, strength: float) -> torch.Tensor:
    """`strength` x the hierarchical group lasso: per channel, the L2 norm of every weight tied to it, plus per
    kernel of its filter the kernel's L2 norm. Zero only when every conv weight is zero."""
    total = net.fc2.weight.new_zeros(())
    for layer in range(NUM_CONVS):
        kernels = net.convs[layer].weight.pow(2).sum((2, 3))  # (C_out, C_in)
        total = total + (tied_squares(net, layer) + EPS).sqrt().sum() + (kernels + EPS).sqrt().sum()
    return strength * total


class SparsePenalty:
    """The penalty as train.fit takes it (a function of the network), named by its strength."""

    def __init__(self, strength: float):
        self.strength = strength

    def __call__(self, net: nn.Module) -> torch.Tensor:
        return group_sparse_penalty(net, self.strength)

    def __repr__(self) -> str:
        return f"hierarchical_group_sparse(strength={self.strength:g})"


def sparse_penalty(strength: float) -> SparsePenalty:
    """The hierarchical group-sparse penalty of `strength`, as train.fit and load_or_train take it."""
    return SparsePenalty(strength)


def channel_norms(net: PlainCNN) -> list[torch.Tensor]:
    """Per conv, the L2 norm of each channel's tied weights (what the penalty drives to zero): (C_layer,) each."""
    with torch.no_grad():
        return [tied_squares(net, i).sqrt() for i in range(NUM_CONVS)]


def prune(net: PlainCNN, keep: list[list[int]]) -> PlainCNN:
    """The smaller network with only the channels `keep[layer]` of each conv: it computes what `net` computes
    with every other channel's output zeroed."""
    widths = [len(k) for k in keep]
    small = PlainCNN(widths, **{k: v for k, v in net.arch().items() if k != "widths"})
    small = small.to(net.fc2.weight.device)
    with torch.no_grad():
        inputs = torch.arange(net.in_channels)
        for layer, idx in enumerate(keep):
            idx = torch.as_tensor(idx, dtype=torch.long)
            small.convs[layer].weight.copy_(net.convs[layer].weight[idx][:, inputs])
            small.convs[layer].bias.copy_(net.convs[layer].bias[idx])
            inputs = idx
        fc1 = net.fc1.weight.view(net.hidden, net.widths[-1], net.side * net.side)[:, inputs]  # (hidden, c5, s*s)
        small.fc1.weight.copy_(fc1.reshape(net.hidden, -1))
        small.fc1.bias.copy_(net.fc1.bias)
        small.fc2.load_state_dict(net.fc2.state_dict())
    return small


def removal_scores(net: PlainCNN, x: torch.Tensor, y: torch.Tensor, keep: list[list[int]]) -> pd.DataFrame:
    """For every kept channel: how much the cross-entropy on (x, y) rises when its output is zeroed too.
    Rows: layer, channel, rise (channels already removed stay zeroed).

    Each layer's input and pre-activation are computed once; a channel's score runs only the layers after it.
    """
    removed = [sorted(set(range(w)) - set(k)) for w, k in zip(net.widths, keep)]

    def run(layer: int, z: torch.Tensor, extra: int | None = None) -> torch.Tensor:
        z[:, removed[layer]] = 0.0  # a zero conv output stays zero after ReLU and pooling
        if extra is not None:
            z[:, extra] = 0.0
        return net.activate(layer, z)

    def loss_from(layer: int, h: torch.Tensor) -> float:  # h: the output of conv `layer - 1`, activated
        for i in range(layer, NUM_CONVS):
            h = run(i, net.convs[i](h))
        return F.cross_entropy(net.head(h), y).item()

    rows = []
    with torch.no_grad():
        h, inputs = x, []  # inputs[l]: the input of conv l, (N, C_l_in, H_l, W_l)
        for i in range(NUM_CONVS):
            inputs.append(h)
            h = run(i, net.convs[i](h))
        base = F.cross_entropy(net.head(h), y).item()
        for layer, idx in enumerate(keep):
            z = net.convs[layer](inputs[layer])  # (N, C_l, H, W): conv l's output before any channel is zeroed
            for channel in idx:
                rise = loss_from(layer + 1, run(layer, z.clone(), channel)) - base
                rows.append(dict(layer=layer, channel=channel, rise=rise))
    return pd.DataFrame(rows)


def prune_to_budgets(net: PlainCNN, data: Data, budgets: list[int], samples: int = SAMPLES,
                     fraction: float = FRACTION, seed: int = 0) -> tuple[dict[int, list[list[int]]], pd.DataFrame]:
    """Remove channels of `net` (lowest loss rise first, `fraction` of those left per step, rescored after each
    step) until it has at most min(budgets) parameters. One pruning path serves every budget: the channels kept
    when the count first falls to a budget are exactly what pruning to that budget alone keeps.
    Returns {budget: kept channel indices per layer} and one row per step (widths, params, largest rise)."""
    arch = {k: v for k, v in net.arch().items() if k != "widths"}
    keep = [list(range(w)) for w in net.widths]
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(data.train), generator=g)[:samples].to(data.train.x.device)
    x, y = data.train.x[pick], data.train.y[pick]  # (samples, C, H, W), (samples,)
    open_budgets = sorted(set(budgets), reverse=True)
    kept, steps = {}, []

    def size() -> int:
        return param_count([len(k) for k in keep], **arch)

    def settle() -> None:  # record every budget the network now meets
        while open_budgets and size() <= open_budgets[0]:
            kept[open_budgets.pop(0)] = [list(k) for k in keep]

    net = net.eval()
    settle()
    while open_budgets:
        t0 = time.perf_counter()
        scores = removal_scores(net, x, y, keep)
        scores = scores[scores["layer"].map(lambda i: len(keep[i]) > 1)].sort_values("rise", kind="stable")
        if scores.empty:  # one channel per layer is the floor: the smaller budgets get the floor
            kept.update({b: [list(k) for k in keep] for b in open_budgets})
            break
        take = max(1, math.floor(fraction * sum(len(k) for k in keep)))
        for layer, channel in zip(scores["layer"].head(take), scores["channel"].head(take)):
            if len(keep[layer]) > 1 and open_budgets:
                keep[layer].remove(channel)
                settle()
        widths = [len(k) for k in keep]
        steps.append(dict(step=len(steps) + 1, widths=str(widths), params=param_count(widths, **arch),
                          max_rise=float(scores.head(take)["rise"].max()), seconds=time.perf_counter() - t0))
    return kept, pd.DataFrame(steps, columns=["step", "widths", "params", "max_rise", "seconds"])


def prune_to_budget(net: PlainCNN, data: Data, budget: int, samples: int = SAMPLES, fraction: float = FRACTION,
                    seed: int = 0) -> tuple[PlainCNN, pd.DataFrame]:
    """prune_to_budgets for one budget: the pruned network and one row per step."""
    kept, steps = prune_to_budgets(net, data, [budget], samples, fraction, seed)
    return prune(net, kept[budget]), steps


def load_or_prune(paths: dict[int, str | Path], sparse: PlainCNN, data: Data, cfg: TrainConfig, seed: int = 0,
                  samples: int = SAMPLES, fraction: float = FRACTION, desc: str = "pruned",
                  steps_csv: str | Path | None = None) -> dict[int, PlainCNN]:
    """For each budget -> path: load the pruned, fine-tuned network there, or prune `sparse` to at most that many
    parameters and fine-tune it with `cfg` (load-or-train: resumable, refused if made from another network or
    budget). The pruning path is computed once, and only if a network is missing; its steps (with their
    seconds) are written to `steps_csv` if given."""
    kept: dict[int, list[list[int]]] = {}

    def start(budget: int) -> PlainCNN:
        if not kept:
            found, steps = prune_to_budgets(sparse, data, list(paths), samples, fraction, seed)
            kept.update(found)
            if steps_csv:
                write_csv(steps, steps_csv)
        return prune(sparse, kept[budget])

    origin = {"pruned_from": fingerprint(sparse), "samples": samples, "fraction": fraction}
    return {b: load_or_train(p, None, data, cfg, seed=seed, desc=f"{desc} {b:,}", origin={**origin, "budget": b},
                             start=lambda b=b: start(b)) for b, p in paths.items()}
