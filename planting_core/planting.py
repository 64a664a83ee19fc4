"""Planting: add channels to one conv layer; only the new weights are parameters, the rest are frozen buffers."""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from .errors import PlantingError
from .layers import PlantedLayer
from .models import NUM_CONVS, PlainCNN
from .site_planting import he, is_site_planted, merge_site, plant_site
from .sites import Site

INITS = ("zero", "random")


def freeze(model: nn.Module) -> nn.Module:
    """Turn every parameter of `model` into a buffer of the same name, in place: it can no longer be trained."""
    for mod in model.modules():
        for name, p in list(mod.named_parameters(recurse=False)):
            delattr(mod, name)
            mod.register_buffer(name, p.detach())
    return model


def train_head(model: PlantedCNN) -> PlantedCNN:
    """Let a planted network's classifier (fc1 and fc2, old weights included) train too, in place; the
    convolutions' old weights stay frozen. The study's `train-head` condition."""
    fc1_names = ("old_weight", "old_bias") if isinstance(model.fc1, PlantedLayer) else ("weight", "bias")
    for layer, names in ((model.fc1, fc1_names), (model.fc2, ("weight", "bias"))):
        for name in names:
            tensor = getattr(layer, name)
            delattr(layer, name)  # a buffer until now
            setattr(layer, name, nn.Parameter(tensor.detach().clone()))
    model.head_trains = True
    return model


def is_planted(model: nn.Module) -> bool:
    """True if the network has planted layers (or frozen BatchNorms) that merge() would fold."""
    return is_site_planted(model)


def check_layer(layer: int) -> int:
    """Return layer if it is a conv index 0..4, else raise a PlantingError."""
    if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer < NUM_CONVS:
        raise PlantingError(f"layer must be an integer from 0 to {NUM_CONVS - 1} (conv1..conv{NUM_CONVS}), got {layer!r}")
    return layer


class PlantedCNN(PlainCNN):
    """A PlainCNN with `channels` new channels in conv `planted_layer`: only they, and the next layer's new input
    weights, are parameters; every other weight is a frozen buffer.

    Its forward pass splits into a frozen prefix (frozen_prefix: no autograd, cacheable while the images do not
    change) and the trainable rest (forward_from_prefix), which is what fit() uses to train it fast.
    """
    planted_layer: int  # 0-based index of the conv that received the new channels
    head_trains: bool = False  # train_head(): fc1 and fc2 train too, so fc1's old weights leave the frozen prefix

    def __init__(self, base: PlainCNN, layer: int, channels: int, init: str = "zero",
                 generator: torch.Generator | None = None):
        ref = base.convs[0].weight
        with torch.random.fork_rng(devices=[]):  # the frame's own random init is overwritten at once
            super().__init__(**base.arch())
        self.to(device=ref.device, dtype=ref.dtype)
        self.load_state_dict(base.state_dict())
        freeze(self)
        dev, dtype, c_in = ref.device, ref.dtype, self.convs[layer].weight.shape[1]
        # planted conv: (channels, C_in, 3, 3) new filters and (channels,) zero biases, after the old ones
        new_w = he((channels, c_in, 3, 3), c_in * 9, ref, generator)
        new_b = torch.zeros(channels, device=dev, dtype=dtype)
        self.convs[layer] = PlantedLayer(self.convs[layer], new_w, new_b, dim=0)
        if layer + 1 < NUM_CONVS:  # next conv: (C_out, channels, 3, 3) new input weights
            nxt = self.convs[layer + 1]
            shape, fan_in = (nxt.weight.shape[0], channels, 3, 3), (nxt.weight.shape[1] + channels) * 9
        else:  # fc1 reads conv5 flattened channel-major: (hidden, channels * s * s) new columns at the end
            nxt = self.fc1
            shape, fan_in = (nxt.weight.shape[0], channels * self.side ** 2), nxt.weight.shape[1] + channels * self.side ** 2
        out_w = torch.zeros(shape, device=dev, dtype=dtype) if init == "zero" else he(shape, fan_in, ref, generator)
        if layer + 1 < NUM_CONVS:
            self.convs[layer + 1] = PlantedLayer(nxt, out_w, None, dim=1)
        else:
            self.fc1 = PlantedLayer(nxt, out_w, None, dim=1)
        self.widths = list(self.widths)
        self.widths[layer] += channels
        self.planted_layer = layer

    def _next_layer(self) -> PlantedLayer:
        return self.convs[self.planted_layer + 1] if self.planted_layer + 1 < NUM_CONVS else self.fc1

    @torch.no_grad()
    def frozen_prefix(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The parts of the forward pass that never change in training, for images x (B, C, H, W).

        Returns h, the input of the planted conv l (B, C_l_in, H_l, W_l), and z_old, the next layer's
        pre-activation from the old channels alone, bias included: (B, C_l+1, H', W'), or (B, hidden) for fc1;
        for fc1 with a training head, the old channels' flattened activations instead: (B, C_l * s * s).
        """
        layer = self.planted_layer
        h = self.features(x, 0, layer)
        planted, nxt = self.convs[layer], self._next_layer()
        a_old = self.activate(layer, F.conv2d(h, planted.old_weight, planted.old_bias, padding=1))
        if nxt.is_conv:
            return h, F.conv2d(a_old, nxt.old_weight, nxt.old_bias, padding=1)
        if self.head_trains:  # fc1's old weights train: the prefix stops before them
            return h, torch.flatten(a_old, 1)
        return h, F.linear(torch.flatten(a_old, 1), nxt.old_weight, nxt.old_bias)

    def forward_from_prefix(self, h: torch.Tensor, z_old: torch.Tensor) -> torch.Tensor:
        """Logits (B, K) from frozen_prefix(): computes only the new channels and what follows.

        Equal to self(x) up to float rounding; autograd never touches the old weights of the two planted layers.
        """
        layer = self.planted_layer
        planted, nxt = self.convs[layer], self._next_layer()
        a_new = self.activate(layer, F.conv2d(h, planted.new_weight, planted.new_bias, padding=1))  # (B, k, H', W')
        if not nxt.is_conv:  # conv5 planted: fc1's new columns read the new channels, flattened
            if self.head_trains:  # z_old holds the old channels' activations (B, C_l * s * s): fc1 reads them now
                z_old = F.linear(z_old, nxt.old_weight, nxt.old_bias)
            return self.fc2(torch.relu(z_old + F.linear(torch.flatten(a_new, 1), nxt.new_weight)))
        x = self.activate(layer + 1, z_old + F.conv2d(a_new, nxt.new_weight, None, padding=1))  # (B, C_l+1, ...)
        return self.head(self.features(x, layer + 2))


def paper_layer(model: PlainCNN, site: int | str | Site) -> int:
    """The conv index (0-4) that `site` names in a PlainCNN: an int, "convs.2", or a Site whose producer is convs.2."""
    name = site.producer if isinstance(site, Site) else site
    if isinstance(name, str):
        match = re.fullmatch(r"convs\.(\d+)", name)
        if not match:
            raise PlantingError(f"a PlainCNN grows at its convolutions, as in the paper: site convs.0 to "
                                f"convs.{NUM_CONVS - 1} (or layer 0-{NUM_CONVS - 1}), got {name!r}")
        name = int(match.group(1))
    return check_layer(name)


def plant(model: nn.Module, site: int | str | Site, channels: int, init: str = "zero",
          generator: torch.Generator | None = None) -> nn.Module:
    """Return a copy of `model` with `channels` new channels planted at `site`; only they train.

    A PlainCNN (the paper's network) takes a conv index 0-4 (or "convs.2"); any other network a Site from
    find_sites(model, example_input) (or one named by hand). init="zero": new outgoing weights are zero, so the
    output is unchanged (function-preserving); init="random": they are drawn like He init (the ablation). New
    filters are always He-random, new biases zero. A planted network is merged first, so planting again freezes
    the previous round's channels.
    """
    if not isinstance(channels, int) or isinstance(channels, bool) or channels <= 0:
        raise PlantingError(f"channels must be a positive integer, got {channels!r}")
    if init not in INITS:
        raise PlantingError(f"init must be one of {INITS}, got {init!r}")
    if isinstance(model, PlainCNN):
        layer = paper_layer(model, site)
        return PlantedCNN(merge(model) if is_planted(model) else model, layer, channels, init, generator)
    if not isinstance(model, nn.Module):
        raise PlantingError(f"plant() needs a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(site, Site):
        raise PlantingError(f"to plant into a {type(model).__name__}, pass a Site from "
                            f"find_sites(model, example_input) (or Site(producer=..., consumer=...)), got {site!r}")
    return plant_site(model, site, channels, init, generator)


def merge(model: nn.Module) -> nn.Module:
    """A plain, fully trainable network with the same widths and weights as a (planted) network: a PlainCNN for
    the paper's networks, else the user's own class with the grown widths.

    Its outputs equal the planted network's up to float rounding (one conv per layer instead of an old and a
    new part); a merged network whose planted channels have zero outgoing weights computes the same as before.
    """
    if not isinstance(model, PlainCNN):
        return merge_site(model)
    ref = model.convs[0].weight
    out = PlainCNN(**model.arch()).to(device=ref.device, dtype=ref.dtype)
    src_layers = [*model.convs, model.fc1, model.fc2]
    dst_layers = [*out.convs, out.fc1, out.fc2]
    with torch.no_grad():
        for src, dst in zip(src_layers, dst_layers):
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
    return out

