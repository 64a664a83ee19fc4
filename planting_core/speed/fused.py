"""Fused candidates: a planting round's candidates trained together, one batched computation per step.

Every candidate of a round is the same frozen network with its own new channels in one layer. Here each
candidate becomes one copy of a "union" network, `channels` wider in every conv, whose extra channels hold zeros
except the candidate's own; torch.func.vmap runs all copies at once (each convolution becomes one grouped
convolution over the candidates), each copy on its own batch order, and a masked SGD step moves only each
candidate's new weights. The update is the one fit() makes (same seeds, batch orders, learning-rate schedule,
momentum and weight decay), so the result equals training the candidates one at a time up to float rounding.
On CUDA the full batches' steps are replayed from one CUDA graph, as fit() replays its own (graphstep.py).

It pays where kernel launches dominate (a GPU). On a CPU the one-at-a-time path does fewer operations (it skips
the frozen layers before the planted one), so `fused="auto"` uses this path on CUDA only.
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from ..data import Data
from ..device import autocast
from .graphstep import StaticStep, use_graph
from ..distill import kd_losses
from ..models import NUM_CONVS, PlainCNN
from ..planting import PlantedCNN, PlantedLayer, merge
from ..train import TrainConfig, lr_schedule

MODES = ("auto", "on", "off")


def fusable(nets: list[torch.nn.Module]) -> str | None:
    """Why these candidates cannot train fused (None: they can): the union network is the paper's PlainCNN with
    the same number of channels planted in every candidate."""
    if not all(isinstance(net, PlantedCNN) for net in nets):
        return "fused candidates need the paper's PlainCNN with only the new channels training"
    if len({net.convs[net.planted_layer].new_weight.shape[0] for net in nets}) > 1:
        return "fused candidates need the same number of new channels in every candidate"
    return None


def use_fused(mode: str, device: torch.device, nets: list[torch.nn.Module], cfg: TrainConfig) -> bool:
    """Whether a round trains its candidates fused: `mode` "on", or "auto" on CUDA; never for one candidate, with
    augmentation (each candidate would need the teacher live on its own augmented batch), or for candidates the
    union network cannot hold (fusable(): then one at a time, with one warning when "on" asked for it)."""
    wanted = mode == "on" or (mode == "auto" and device.type == "cuda")
    if not (wanted and len(nets) > 1 and not cfg.augment):
        return False
    reason = fusable(nets)
    if reason and mode == "on":
        warnings.warn(f"fused='on': {reason}; these candidates train one at a time", stacklevel=2)
    return reason is None


def union_parts(net: PlantedCNN) -> tuple[list[int], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A planted candidate as the union network: its widths (every conv `channels` wider than the frozen network),
    the candidate's weights placed in it (zeros elsewhere), and masks of the entries that train (its new ones)."""
    layer = net.planted_layer
    k = net.convs[layer].new_weight.shape[0]
    base = list(net.widths)
    base[layer] -= k  # the frozen network's widths
    union = [w + k for w in base]
    merged = merge(net)
    ins, union_ins = [net.in_channels, *base], [net.in_channels, *union]
    params, masks = {}, {}
    for j, conv in enumerate(merged.convs):
        w = torch.zeros(union[j], union_ins[j], 3, 3, dtype=conv.weight.dtype, device=conv.weight.device)
        w[: conv.weight.shape[0], : conv.weight.shape[1]] = conv.weight.detach()
        b = torch.zeros(union[j], dtype=conv.bias.dtype, device=conv.bias.device)
        b[: conv.bias.shape[0]] = conv.bias.detach()
        mw, mb = torch.zeros_like(w), torch.zeros_like(b)
        if j == layer:  # the new filters read the real input channels: (k, C_in, 3, 3), and their biases
            mw[base[j]:, : ins[j]] = 1
            mb[base[j]:] = 1
        if j == layer + 1:  # the next conv's input columns for the new channels: (C_out, k, 3, 3)
            mw[: base[j], base[layer]: base[layer] + k] = 1
        params[f"convs.{j}.weight"], params[f"convs.{j}.bias"] = w, b
        masks[f"convs.{j}.weight"], masks[f"convs.{j}.bias"] = mw, mb
    area = net.side ** 2  # fc1 reads conv5 flattened channel-major: channel c owns columns [c * area, (c+1) * area)
    fc1 = torch.zeros(net.hidden, union[-1] * area, dtype=merged.fc1.weight.dtype, device=merged.fc1.weight.device)
    fc1[:, : merged.fc1.weight.shape[1]] = merged.fc1.weight.detach()
    m1 = torch.zeros_like(fc1)
    if layer == NUM_CONVS - 1:  # conv5 planted: fc1's columns of the new channels
        m1[:, base[-1] * area: (base[-1] + k) * area] = 1
    params.update({"fc1.weight": fc1, "fc1.bias": merged.fc1.bias.detach().clone(),
                   "fc2.weight": merged.fc2.weight.detach().clone(), "fc2.bias": merged.fc2.bias.detach().clone()})
    masks.update({"fc1.weight": m1, **{n: torch.zeros_like(params[n]) for n in ("fc1.bias", "fc2.weight", "fc2.bias")}})
    return union, params, masks


def write_back(net: PlantedCNN, params: dict[str, torch.Tensor]) -> None:
    """Copy a candidate's trained new weights from its union parameters into its planted layers, in place."""
    layer = net.planted_layer
    planted = net.convs[layer]
    k, c_in = planted.new_weight.shape[:2]
    base = list(net.widths)
    base[layer] -= k
    with torch.no_grad():
        planted.new_weight.copy_(params[f"convs.{layer}.weight"][base[layer]:, :c_in])
        planted.new_bias.copy_(params[f"convs.{layer}.bias"][base[layer]:])
        nxt: PlantedLayer = net._next_layer()
        if layer + 1 < NUM_CONVS:
            nxt.new_weight.copy_(params[f"convs.{layer + 1}.weight"][: base[layer + 1], base[layer]: base[layer] + k])
        else:
            area = net.side ** 2
            nxt.new_weight.copy_(params["fc1.weight"][:, base[-1] * area: (base[-1] + k) * area])


def fit_fused(nets: list[PlantedCNN], data: Data, cfgs: list[TrainConfig], targets: torch.Tensor | None) -> list[bool]:
    """Train the new weights of candidates of one round together (written back into each net); `cfgs` differ
    only in their seeds. Returns, per candidate, whether its training loss stayed finite.

    targets: the teacher's logits of the training split (N, K), needed for loss "kd".
    """
    cfg = cfgs[0]
    dev = data.train.x.device
    parts = [union_parts(net) for net in nets]
    union = PlainCNN(parts[0][0], **{k: v for k, v in nets[0].arch().items() if k != "widths"}).to(dev)
    stacked = {n: torch.stack([p[1][n] for p in parts]).requires_grad_() for n in parts[0][1]}  # (C, ...) each
    masks = {n: torch.stack([p[2][n] for p in parts]) for n in parts[0][2]}
    momentum = {n: torch.zeros_like(t) for n, t in stacked.items()}

    def logits_of(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(union, params, (x,))  # one candidate: (B, channels, H, W) -> (B, K)
    all_logits = vmap(logits_of)  # every candidate on its own batch: (C, B, channels, H, W) -> (C, B, K)

    def losses_of(x: torch.Tensor, t: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:  # (C,) losses
        logits = all_logits(stacked, x)
        if cfg.loss == "kd":
            return kd_losses(logits, t, cfg.T, y, cfg.alpha)
        c, b, k = logits.shape
        return F.cross_entropy(logits.float().reshape(c * b, k), y.reshape(-1), reduction="none").view(c, b).mean(-1)
    names = list(stacked)
    update = ([stacked[name] for name in names], [momentum[name] for name in names], cfg.momentum, cfg.weight_decay)

    def loss_of(inputs, y, t):  # (C, B, ...) images -> (the candidates' summed loss, their (C,) losses)
        with autocast(dev, cache=dev.type != "cuda"):
            losses = losses_of(inputs[0], t, y)
        return losses.sum(), losses  # candidates are independent: each gets its own loss's gradient
    n = len(data.train)
    steps = math.ceil(n / cfg.batch_size)
    # torch.optim.SGD's update (weight decay, then momentum) on the new weights only; full batches replayed from a
    # CUDA graph when fit would use one (graphstep.py), the short last batch eagerly
    graph = use_graph(cfg.cuda_graph, dev, (n // cfg.batch_size) * cfg.epochs) and dev.type == "cuda"
    full_step = StaticStep(loss_of, *update, capture=graph, masks=[masks[name] for name in names])
    eager_step = StaticStep(loss_of, *update, capture=False, masks=[masks[name] for name in names])
    factor, step = lr_schedule(cfg, steps), 0
    finite = torch.ones(len(nets), dtype=torch.bool, device=dev)
    for epoch in range(cfg.epochs):
        # each candidate's own batch order, drawn as fit() draws it from the candidate's seed
        orders = [torch.randperm(n, generator=torch.Generator().manual_seed(c.seed * 100_003 + epoch)) for c in cfgs]
        order = torch.stack(orders).to(dev)  # (C, N)
        total = torch.zeros(len(nets), device=dev)
        for i in range(0, n, cfg.batch_size):
            idx = order[:, i:i + cfg.batch_size]  # (C, B)
            x, y = data.train.x[idx], data.train.y[idx]  # (C, B, channels, H, W), (C, B)
            t = targets[idx] if targets is not None else None  # (C, B, K) teacher logits
            take = full_step if idx.shape[1] == cfg.batch_size else eager_step
            total += take((x,), y, t, cfg.lr * factor(step)) * idx.shape[1]
            step += 1
        finite &= torch.isfinite(total)
    for c, net in enumerate(nets):
        write_back(net, {name: t[c].detach() for name, t in stacked.items()})
    return finite.tolist()
