"""The frozen prefix of a network planted at a site: everything its forward pass computes before the planted
producer never trains, so fit() computes it once (without autograd) and trains through the rest.

torch.fx splits the traced forward pass at the producer: the prefix returns every value computed before it that
the rest still reads (the producer's input, and e.g. a residual branch's input), the rest starts from those.
"""
from __future__ import annotations

import threading

import torch
from torch import fx, nn

from .layers import FrozenNorm, GrownNorm, PlantedLayer

STOCHASTIC = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


class LeafTracer(fx.Tracer):
    """A tracer that keeps planted layers and frozen BatchNorms whole (their forward branches on memory layout)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (PlantedLayer, FrozenNorm, GrownNorm)) or super().is_leaf_module(m, qualname)


class SitePrefix:
    """frozen_prefix(x) and forward_from_prefix(*prefix) of a planted network (the FrozenPrefix protocol)."""

    def __init__(self, prefix: fx.GraphModule, rest: fx.GraphModule):
        self.prefix, self.rest = prefix, rest

    @torch.no_grad()
    def frozen_prefix(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Every value before the planted producer that the rest reads, for images x (B, C, H, W)."""
        return tuple(self.prefix(x))

    def forward_from_prefix(self, *values: torch.Tensor) -> torch.Tensor:
        """The network's output from frozen_prefix()'s values: only the planted layers and what follows them."""
        return self.rest(*values)


def site_prefix(model: nn.Module) -> SitePrefix | None:
    """The frozen prefix of a network from plant_site(), or None where there is none to cache (the producer comes
    first, the model cannot be traced, or a random step such as dropout runs before the producer).

    Traced once per network and kept on it. Tracing patches torch's module calls for every thread, so it happens
    only on the main thread: a network trained on another thread (concurrent candidates) uses the split traced for
    it beforehand, or none."""
    site = getattr(model, "planted_site", None)
    if site is None:
        return None
    if "_site_prefix" not in model.__dict__:
        if threading.current_thread() is not threading.main_thread():
            return None
        model.__dict__["_site_prefix"] = _split(model, site)
    return model.__dict__["_site_prefix"]


def _split(model: nn.Module, site) -> SitePrefix | None:
    try:
        graph = LeafTracer().trace(model)
    except Exception:  # an untraceable model trains without the cache, as before
        return None
    nodes = list(graph.nodes)
    start = next((i for i, n in enumerate(nodes) if n.op == "call_module" and n.target == site.producer), None)
    modules = dict(model.named_modules())
    before, after = nodes[:start] if start else [], nodes[start or 0:]
    if not start or any(n.op == "call_module" and isinstance(modules.get(n.target), STOCHASTIC) for n in before) \
            or any(n.op == "call_function" and "dropout" in getattr(n.target, "__name__", "") for n in before):
        return None
    later = set(after)
    frontier = [n for n in before if any(u in later for u in n.users)]  # what the rest reads from the prefix
    head, env = fx.Graph(), {}
    for n in before:
        env[n] = head.node_copy(n, lambda a: env[a])
    head.output(tuple(env[n] for n in frontier))
    tail, env = fx.Graph(), {}
    for n in frontier:
        env[n] = tail.placeholder(n.name)
    for n in after:
        env[n] = tail.node_copy(n, lambda a: env[a])
    return SitePrefix(fx.GraphModule(model, head), fx.GraphModule(model, tail))
