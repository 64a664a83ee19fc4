"""Planting: add channels to one conv layer; only the new weights are parameters, the rest are frozen buffers."""
from __future__ import annotations

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

    def _run(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return F.conv2d(x, w, b, padding=1) if self.is_conv else F.linear(x, w, b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Old and new parts computed apart: the old part is exactly the unplanted layer's computation."""
        if self.dim == 0:  # (B, C_old + k, H, W): old channels, then the new ones
            return torch.cat([self._run(x, self.old_weight, self.old_bias),
                              self._run(x, self.new_weight, self.new_bias)], 1)
        n_old = self.old_weight.shape[1]  # input channels (conv) or input features (fc1) read by the old weights
        # contiguous slices, laid out as the unplanted layer's input was, so the old part runs the same kernel
        fmt = torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
            else torch.contiguous_format
        old, new = (x[:, :n_old].contiguous(memory_format=fmt), x[:, n_old:].contiguous(memory_format=fmt))
        return self._run(old, self.old_weight, self.old_bias) + self._run(new, self.new_weight, None)


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
    """True if the network has planted layers that merge() would fold."""
    return any(isinstance(m, PlantedLayer) for m in model.modules())


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

        def he(shape: tuple[int, ...], fan_in: int) -> torch.Tensor:  # N(0, 2 / fan_in), as PlainCNN's own init
            return (torch.randn(shape, generator=generator) * math.sqrt(2.0 / fan_in)).to(dev, dtype)

        # planted conv: (channels, C_in, 3, 3) new filters and (channels,) zero biases, after the old ones
        new_w, new_b = he((channels, c_in, 3, 3), c_in * 9), torch.zeros(channels, device=dev, dtype=dtype)
        self.convs[layer] = PlantedLayer(self.convs[layer], new_w, new_b, dim=0)
        if layer + 1 < NUM_CONVS:  # next conv: (C_out, channels, 3, 3) new input weights
            nxt = self.convs[layer + 1]
            shape, fan_in = (nxt.weight.shape[0], channels, 3, 3), (nxt.weight.shape[1] + channels) * 9
        else:  # fc1 reads conv5 flattened channel-major: (hidden, channels * s * s) new columns at the end
            nxt = self.fc1
            shape, fan_in = (nxt.weight.shape[0], channels * self.side ** 2), nxt.weight.shape[1] + channels * self.side ** 2
        out_w = torch.zeros(shape, device=dev, dtype=dtype) if init == "zero" else he(shape, fan_in)
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


def plant(model: PlainCNN, layer: int, channels: int, init: str = "zero",
          generator: torch.Generator | None = None) -> PlantedCNN:
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
    return PlantedCNN(merge(model) if is_planted(model) else model, layer, channels, init, generator)


def merge(model: PlainCNN) -> PlainCNN:
    """A plain, fully trainable PlainCNN with the same widths and weights as a (planted) network.

    Its outputs equal the planted network's up to float rounding (one conv per layer instead of an old and a
    new part); a merged network whose planted channels have zero outgoing weights computes the same as before.
    """
    ref = model.convs[0].weight
    out = PlainCNN(**model.arch()).to(device=ref.device, dtype=ref.dtype)
    src_layers = [*model.convs, model.fc1, model.fc2]
    dst_layers = [*out.convs, out.fc1, out.fc2]
    with torch.no_grad():
        for src, dst in zip(src_layers, dst_layers):
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
    return out

