"""Planting: add channels to one conv layer; only the new weights are parameters, the rest are frozen buffers."""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from .errors import PlantingError
from .models import NUM_CONVS, PlainCNN

INITS = ("zero", "random")


class PlantedLayer(nn.Module):
    """A conv or linear layer = frozen old weights (buffers) + trainable new weights, concatenated along `dim`.

    dim=0: new output channels (the planted conv: new filters and new biases).
    dim=1: new input channels (the next layer: new input weights; its bias stays frozen).
    """

    def __init__(self, layer: nn.Conv2d | nn.Linear, new_weight: torch.Tensor, new_bias: torch.Tensor | None, dim: int):
        super().__init__()
        self.is_conv, self.dim = isinstance(layer, nn.Conv2d), dim
        self.register_buffer("old_weight", layer.weight.detach().clone())  # conv: (C_out, C_in, 3, 3); fc: (out, in)
        self.register_buffer("old_bias", layer.bias.detach().clone())
        self.new_weight = nn.Parameter(new_weight)
        self.new_bias = nn.Parameter(new_bias) if new_bias is not None else None

    @property
    def weight(self) -> torch.Tensor:
        """The full weight: old and new along `dim`."""
        return torch.cat([self.old_weight, self.new_weight.to(self.old_weight.dtype)], self.dim)

    @property
    def bias(self) -> torch.Tensor:
        """The full bias (old biases, then the new ones for a planted conv)."""
        if self.new_bias is None:
            return self.old_bias
        return torch.cat([self.old_bias, self.new_bias.to(self.old_bias.dtype)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_conv:
            return F.conv2d(x, self.weight, self.bias, padding=1)
        return F.linear(x, self.weight, self.bias)


def freeze(model: nn.Module) -> nn.Module:
    """Turn every parameter of `model` into a buffer of the same name, in place: it can no longer be trained."""
    for mod in model.modules():
        for name, p in list(mod.named_parameters(recurse=False)):
            delattr(mod, name)
            mod.register_buffer(name, p.detach())
    return model


def is_planted(model: nn.Module) -> bool:
    """True if the network has planted layers that merge() would fold."""
    return any(isinstance(m, PlantedLayer) for m in model.modules())


def check_layer(layer: int) -> int:
    """Return layer if it is a conv index 0..4, else raise a PlantingError."""
    if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer < NUM_CONVS:
        raise PlantingError(f"layer must be an integer from 0 to {NUM_CONVS - 1} (conv1..conv{NUM_CONVS}), got {layer!r}")
    return layer


def plant(model: PlainCNN, layer: int, channels: int, init: str = "zero",
          generator: torch.Generator | None = None) -> PlainCNN:
    """Return a copy of `model` with `channels` new channels appended to conv `layer` (0-4); only they train.

    init="zero": new outgoing weights are zero, so the output is unchanged (function-preserving);
    init="random": they are drawn like the network's He init (the ablation). New filters are always He-random,
    new biases zero.
    A planted network is merged first, so planting again freezes the previous round's channels.
    """
    check_layer(layer)
    if not isinstance(channels, int) or isinstance(channels, bool) or channels <= 0:
        raise PlantingError(f"channels must be a positive integer, got {channels!r}")
    if init not in INITS:
        raise PlantingError(f"init must be one of {INITS}, got {init!r}")
    if not isinstance(model, PlainCNN):
        raise PlantingError(f"plant() needs a PlainCNN, got {type(model).__name__}")
    net = freeze(copy.deepcopy(merge(model) if is_planted(model) else model))
    ref = net.convs[layer].weight
    dev, dtype = ref.device, ref.dtype
    c_in = ref.shape[1]

    def he(shape: tuple[int, ...], fan_in: int) -> torch.Tensor:  # N(0, 2 / fan_in), as PlainCNN's own init
        return (torch.randn(shape, generator=generator) * math.sqrt(2.0 / fan_in)).to(dev, dtype)

    # planted conv: (channels, C_in, 3, 3) new filters and (channels,) zero biases, appended after the old ones
    new_w, new_b = he((channels, c_in, 3, 3), c_in * 9), torch.zeros(channels, device=dev, dtype=dtype)
    net.convs[layer] = PlantedLayer(net.convs[layer], new_w, new_b, dim=0)
    if layer + 1 < NUM_CONVS:  # next conv: (C_out, channels, 3, 3) new input weights
        nxt = net.convs[layer + 1]
        shape, fan_in = (nxt.weight.shape[0], channels, 3, 3), (nxt.weight.shape[1] + channels) * 9
    else:  # fc1 reads conv5 flattened channel-major: (hidden, channels * s * s) new columns at the end
        nxt = net.fc1
        shape, fan_in = (nxt.weight.shape[0], channels * net.side ** 2), nxt.weight.shape[1] + channels * net.side ** 2
    out_w = torch.zeros(shape, device=dev, dtype=dtype) if init == "zero" else he(shape, fan_in)
    planted_next = PlantedLayer(nxt, out_w, None, dim=1)
    if layer + 1 < NUM_CONVS:
        net.convs[layer + 1] = planted_next
    else:
        net.fc1 = planted_next
    net.widths = list(net.widths)
    net.widths[layer] += channels
    net.planted_layer = layer
    return net


def merge(model: PlainCNN) -> PlainCNN:
    """A plain, fully trainable PlainCNN with the same widths and identical outputs as a (planted) network."""
    ref = model.convs[0].weight
    out = PlainCNN(**model.arch()).to(device=ref.device, dtype=ref.dtype)
    src_layers = [*model.convs, model.fc1, model.fc2]
    dst_layers = [*out.convs, out.fc1, out.fc2]
    with torch.no_grad():
        for src, dst in zip(src_layers, dst_layers):
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
    return out


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters an optimiser should see (in a planted network: only the new weights)."""
    return [p for p in model.parameters() if p.requires_grad]
