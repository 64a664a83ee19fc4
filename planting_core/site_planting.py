"""Planting at a site of any network: new output channels on the producer (and its BatchNorm), new input channels
on the consumer; every old weight and every old BatchNorm statistic stays frozen.

The planted network is a copy of the user's module with three submodules swapped (PlantedLayer for producer and
consumer, GrownNorm for the BatchNorm between them) and every other BatchNorm frozen (FrozenNorm: it normalises
with its running statistics in training too, and never updates them). merge_site() swaps plain modules back: the
same class as the user's network, with the grown widths.
"""
from __future__ import annotations

import copy
import math
import re

import torch
from torch import nn

from .errors import PlantingError
from .layers import FrozenNorm, GrownNorm, PlantedLayer
from .sites import NORMS, Site, check_site


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule called `name` (dotted, as in named_modules()) by `module`, in place."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def he(shape: tuple[int, ...], fan_in: int, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """N(0, 2 / fan_in) weights of `shape`, on `like`'s device and dtype (He init, as the paper's networks use)."""
    return (torch.randn(shape, generator=generator) * math.sqrt(2.0 / fan_in)).to(like.device, like.dtype)


def plant_site(model: nn.Module, site: Site, channels: int, init: str = "zero",
               generator: torch.Generator | None = None) -> nn.Module:
    """A copy of `model` with `channels` new channels at `site`; only the new weights (and the new channels'
    BatchNorm) train. init="zero": the consumer's new input weights are zero, so the outputs are unchanged."""
    check_site(model, site)
    net = copy.deepcopy(merge_site(model) if is_site_planted(model) else model)
    for p in net.parameters():
        p.requires_grad_(False)
    modules = dict(net.named_modules())
    producer, consumer = modules[site.producer], modules[site.consumer]
    w = producer.weight  # conv: (C_out, C_in, kh, kw); linear: (out, in)
    new_w = he((channels, *w.shape[1:]), w[0].numel(), w, generator)
    new_b = None if producer.bias is None else torch.zeros(channels, device=w.device, dtype=w.dtype)
    set_module(net, site.producer, PlantedLayer(producer, new_w, new_b, dim=0))
    v = consumer.weight  # (C_out, C_in, kh, kw) or (out, C * area)
    cols = channels * site.area if isinstance(consumer, nn.Linear) else channels
    shape = (v.shape[0], cols, *v.shape[2:])
    out_w = torch.zeros(shape, device=v.device, dtype=v.dtype) if init == "zero" else \
        he(shape, (v.shape[1] + cols) * v[0, 0].numel(), v, generator)
    set_module(net, site.consumer, PlantedLayer(consumer, out_w, None, dim=1))
    for name, module in modules.items():
        if isinstance(module, NORMS):
            set_module(net, name, GrownNorm(module, channels) if name == site.norm else FrozenNorm(module))
    net.planted_site = site
    return net


def is_site_planted(model: nn.Module) -> bool:
    """True if `model` came from plant_site() (it holds planted layers or frozen BatchNorms)."""
    return any(isinstance(m, (PlantedLayer, FrozenNorm, GrownNorm)) for m in model.modules())


def merge_site(model: nn.Module) -> nn.Module:
    """A plain copy of a planted network: the user's class, the grown widths, every weight trainable, same outputs."""
    split = model.__dict__.get("_site_prefix")  # the frozen-prefix split (prefix.py) is not copied
    net = copy.deepcopy(model, {id(split): None} if split is not None else None)
    swapped: list[str] = []  # modules replaced so far: their own submodules (GrownNorm's old part) go with them
    for name, module in list(net.named_modules()):
        if isinstance(module, (PlantedLayer, FrozenNorm, GrownNorm)) and not any(name.startswith(f"{s}.") for s in swapped):
            set_module(net, name, module.merged())
            swapped.append(name)
    for p in net.parameters():
        p.requires_grad_(True)
    net.__dict__.pop("planted_site", None)
    net.__dict__.pop("_site_prefix", None)  # the planted network's frozen-prefix split (prefix.py)
    return net


# --- a grown network's shapes, as checkpoints record them (no code: names and sizes only) ---

SIZE_FIELDS = {nn.Conv2d: ("in_channels", "out_channels"), nn.Linear: ("in_features", "out_features"),
               nn.BatchNorm1d: ("num_features",), nn.BatchNorm2d: ("num_features",)}
MAX_SIZE = 1 << 16  # a recorded width above this is refused before anything is allocated


def module_sizes(model: nn.Module) -> dict[str, list[int]]:
    """Every Conv2d, Linear and BatchNorm's sizes by module name, e.g. {"conv1": [3, 20], "bn1": [20]}."""
    return {name: [getattr(m, f) for f in SIZE_FIELDS[type(m)]]
            for name, m in model.named_modules() if type(m) in SIZE_FIELDS}


def resized(template: nn.Module, sizes: dict[str, list[int]]) -> nn.Module:
    """A copy of `template` whose Conv2d, Linear and BatchNorm modules have `sizes` (as module_sizes() gives); the
    weights of resized modules are fresh (a checkpoint's state is loaded into them next)."""
    own = module_sizes(template)
    if set(sizes) != set(own):
        missing, extra = sorted(set(own) - set(sizes)), sorted(set(sizes) - set(own))
        raise PlantingError(f"the recorded network does not match {type(template).__name__}: modules missing "
                            f"{missing[:3]}, unknown {extra[:3]}")
    for name, values in sizes.items():
        if not (isinstance(values, list) and len(values) == len(own[name])
                and all(type(v) is int and 1 <= v <= MAX_SIZE for v in values)):
            raise PlantingError(f"module {name}: recorded sizes {values!r} are not {len(own[name])} integers from 1 "
                                f"to {MAX_SIZE}")
    net = copy.deepcopy(template)
    for name, module in list(net.named_modules()):
        if name in sizes and sizes[name] != own[name]:
            set_module(net, name, _resized_module(module, sizes[name]))
    return net


def _resized_module(m: nn.Module, sizes: list[int]) -> nn.Module:
    ref = next(iter(m.parameters()), None)
    if ref is None:
        ref = next(m.buffers())
    if isinstance(m, nn.Conv2d):
        new = nn.Conv2d(sizes[0], sizes[1], m.kernel_size, m.stride, m.padding, m.dilation, bias=m.bias is not None,
                        padding_mode=m.padding_mode)
    elif isinstance(m, nn.Linear):
        new = nn.Linear(sizes[0], sizes[1], bias=m.bias is not None)
    else:
        new = type(m)(sizes[0], eps=m.eps, momentum=m.momentum, affine=m.affine)
    return new.to(ref.device, ref.dtype)


def site_label(site: Site) -> str:
    """A site's short name in candidate keys: the paper's "conv3" for PlainCNN's convs.2, else the producer's name."""
    match = re.fullmatch(r"convs\.(\d+)", site.producer)
    return f"conv{int(match.group(1)) + 1}" if match else site.producer
