"""Filter pruning with hierarchical group-sparse regularisation (Mitsuno and Kurita), planting's opposite:
train a wide network with a penalty that drives whole channels to zero, remove the channels whose removal
raises the loss on random training images least until a parameter budget is met, then fine-tune.

Choices the source leaves open, made here (the comparison chapter lists them):
- groups: a channel's group is every weight tied to it (its filter, its bias and the next layer's input
  columns it feeds, fc1's for conv5); inside it, each kernel of its filter (one per input channel) is a group
  too. The penalty is the sum of both levels' L2 norms, times `strength`.
- removal: scored on `samples` random training images by the rise of the cross-entropy when the channel's
  output is zeroed; the lowest `fraction` of the remaining channels goes per step (at least one), rescored
  after each step; a layer keeps at least one channel.
"""
from __future__ import annotations

import math
from pathlib import Path
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import fingerprint
from .data import Data
from .experiments import load_or_train
from .models import NUM_CONVS, PlainCNN, param_count
from .train import TrainConfig

EPS = 1e-12  # keeps the gradient of a norm finite at zero


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
    Rows: layer, channel, rise (channels already removed stay zeroed)."""
    removed = [sorted(set(range(w)) - set(k)) for w, k in zip(net.widths, keep)]
    extra: list[tuple[int, int] | None] = [None]

    def hook(layer: int):
        def zero(module: nn.Module, inputs, out: torch.Tensor) -> torch.Tensor:
            out = out.clone()
            out[:, removed[layer]] = 0.0  # a zero conv output stays zero after ReLU and pooling
            if extra[0] is not None and extra[0][0] == layer:
                out[:, extra[0][1]] = 0.0
            return out
        return zero
    handles = [net.convs[i].register_forward_hook(hook(i)) for i in range(NUM_CONVS)]
    rows = []
    try:
        with torch.no_grad():
            base = F.cross_entropy(net(x), y).item()
            for layer, idx in enumerate(keep):
                for channel in idx:
                    extra[0] = (layer, channel)
                    rows.append(dict(layer=layer, channel=channel, rise=F.cross_entropy(net(x), y).item() - base))
                extra[0] = None
    finally:
        for h in handles:
            h.remove()
    return pd.DataFrame(rows)


def prune_to_budget(net: PlainCNN, data: Data, budget: int, samples: int = 512, fraction: float = 0.05,
                    seed: int = 0) -> tuple[PlainCNN, pd.DataFrame]:
    """Remove channels of `net` (lowest loss rise first, `fraction` of those left per step) until the network
    has at most `budget` parameters; returns the pruned network and one row per step (widths, params)."""
    arch = {k: v for k, v in net.arch().items() if k != "widths"}
    keep = [list(range(w)) for w in net.widths]
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(data.train), generator=g)[:samples].to(data.train.x.device)
    x, y = data.train.x[pick], data.train.y[pick]  # (samples, C, H, W), (samples,)
    steps = []
    net = net.eval()
    while param_count([len(k) for k in keep], **arch) > budget:
        scores = removal_scores(net, x, y, keep)
        scores = scores[scores["layer"].map(lambda i: len(keep[i]) > 1)].sort_values("rise", kind="stable")
        if scores.empty:
            break  # one channel per layer is the floor
        take = max(1, math.floor(fraction * sum(len(k) for k in keep)))
        for layer, channel in zip(scores["layer"].head(take), scores["channel"].head(take)):
            if len(keep[layer]) > 1 and param_count([len(k) for k in keep], **arch) > budget:
                keep[layer].remove(channel)
        widths = [len(k) for k in keep]
        steps.append(dict(step=len(steps) + 1, widths=str(widths), params=param_count(widths, **arch),
                          max_rise=float(scores.head(take)["rise"].max())))
    return prune(net, keep), pd.DataFrame(steps)


def load_or_prune(path: str | Path, sparse: PlainCNN, data: Data, budget: int, cfg: TrainConfig, seed: int = 0,
                  samples: int = 512, fraction: float = 0.05, desc: str = "pruned") -> PlainCNN:
    """Load the pruned, fine-tuned network at `path`, or prune `sparse` to at most `budget` parameters and
    fine-tune it with `cfg` (load-or-train: resumable, refused if made from another network or budget)."""
    origin = {"pruned_from": fingerprint(sparse), "budget": budget, "samples": samples, "fraction": fraction}
    return load_or_train(path, None, data, cfg, seed=seed, desc=desc, origin=origin,
                         start=lambda: prune_to_budget(sparse, data, budget, samples, fraction, seed)[0])
