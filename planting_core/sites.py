"""Sites: the places where a network can grow, found by tracing it with torch.fx.

A site is a producer (a Conv2d with groups=1, or a Linear) whose output reaches exactly one consumer (a Conv2d with
groups=1, or a Linear, through a flatten if the output is spatial) through channel-wise steps only: activations,
BatchNorm, pooling, dropout, flatten. Planting there adds output channels to the producer (and its BatchNorm) and
the matching input channels to the consumer; nothing else in the network changes shape.

Anything else is refused with one line naming the module and the reason: an output that is also added to a
residual sum or concatenated, a grouped or depthwise conv, a reshape the method cannot follow. A model that
torch.fx cannot trace can still name its sites by hand: Site(producer="conv1", consumer="conv2", norm="bn1").
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from .errors import PlantingError

# modules and functions that act on each channel alone: growing the channels they see changes nothing else
CHANNELWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
                       nn.Mish, nn.Identity, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
                       nn.Dropout, nn.Dropout2d, nn.Dropout1d)
CHANNELWISE_FUNCTIONS = {torch.relu, torch.relu_, F.relu, F.relu_, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu,
                         torch.sigmoid, torch.tanh, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d,
                         F.adaptive_max_pool2d, torch.max_pool2d,
                         F.dropout, F.dropout2d, torch.dropout}
CHANNELWISE_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous"}
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass(frozen=True)
class Site:
    """One place to grow: `producer` gains channels, `consumer` reads them; module names as in named_modules().

    norm: the BatchNorm between them, if any (it gains the same channels). area: how many consumer inputs each
    producer channel feeds (a Linear after a flatten of (C, H, W) maps: H * W; else 1).
    """
    producer: str
    consumer: str
    norm: str | None = None
    area: int = 1

    def __str__(self) -> str:
        return self.producer


class Survey:
    """Every Conv2d and Linear of a network, judged: the sites it offers, and why the others are refused."""

    def __init__(self, sites: list[Site], refused: dict[str, str]):
        self.sites, self.refused = sites, refused

    def site(self, producer: str) -> Site:
        """The site whose producer is `producer`, or a PlantingError saying why there is none."""
        for s in self.sites:
            if s.producer == producer:
                return s
        if producer in self.refused:
            raise PlantingError(f"cannot plant at {producer}: {self.refused[producer]}")
        raise PlantingError(f"{producer!r} is not a Conv2d or Linear of this network; sites: "
                            f"{', '.join(s.producer for s in self.sites) or 'none'}")


def _producer_problem(module: nn.Module) -> str | None:
    if isinstance(module, nn.Conv2d) and module.groups != 1:
        kind = "depthwise" if module.groups == module.in_channels else "grouped"
        return f"a {kind} conv (groups={module.groups}): its channels are not independent of each other's inputs"
    if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
        return f"padding_mode={module.padding_mode!r}: only zero padding is supported"
    return None


def _follow(start: fx.Node, modules: dict[str, nn.Module], channels: int) -> Site | str:
    """Walk from a producer's node along channel-wise steps to its consumer: the Site, or why there is none."""
    name, node, norm, area, flat = start.target, start, None, 1, False
    while True:
        users = [u for u in node.users if not _reads_shape_only(u)]
        if len(users) != 1:
            kinds = ", ".join(sorted({_describe(u) for u in users})) or "nothing"
            return (f"its output feeds {len(users)} places ({kinds}), e.g. a block and its residual sum: growing "
                    f"it would change the width of more than one path" if users else "its output is not used")
        node = users[0]
        target = modules.get(node.target) if node.op == "call_module" else None
        if node.op == "output":
            return "its output is the network's output (growing it would add outputs)"
        if isinstance(target, (nn.Conv2d, nn.Linear)):
            problem = _producer_problem(target) if isinstance(target, nn.Conv2d) else None
            if problem:
                return f"its consumer {node.target} is {problem}"
            if isinstance(target, nn.Linear) and _rank(start) == 4 and not flat:
                return f"its consumer {node.target} is a Linear applied to a 4-D map without a flatten"
            if isinstance(target, nn.Conv2d) and flat:
                return f"its consumer {node.target} is a Conv2d after a flatten"
            return Site(name, node.target, norm, area)
        if isinstance(target, NORMS):
            if norm is not None:
                return f"two BatchNorms ({norm}, {node.target}) between it and its consumer"
            if target.num_features != channels or not target.track_running_stats:
                return f"{node.target} is not a BatchNorm of its {channels} channels with running statistics"
            norm = node.target
            continue
        if isinstance(target, nn.Flatten) or _is_flatten_call(node):
            if _flatten_start(node, target) != 1:
                return f"{_describe(node)} flattens from a dimension other than 1"
            shape = node.args[0].meta["tensor_meta"].shape  # (B, C, H, W) entering the flatten
            area, flat = int(torch.Size(shape[2:]).numel()), True
            continue
        if isinstance(target, CHANNELWISE_MODULES) or (node.op == "call_function" and node.target in CHANNELWISE_FUNCTIONS) \
                or (node.op == "call_method" and node.target in CHANNELWISE_METHODS):
            if node.op != "call_module" and any(isinstance(a, fx.Node) for a in [*node.args[1:], *node.kwargs.values()]):
                return f"{_describe(node)} mixes its output with another tensor"
            continue
        if node.op == "call_function" and node.target in (operator.add, operator.iadd, torch.add):
            return ("its output joins a residual sum (add): the sum's width is shared with the other path, so it "
                    "cannot grow alone")
        if node.op == "call_function" and node.target in (torch.cat, torch.concat):
            return "its output is concatenated (cat) with other tensors"
        return f"its output goes through {_describe(node)}, which is not a channel-wise step the method can follow"


def _reads_shape_only(node: fx.Node) -> bool:
    """x.size(0), x.dim() or x.shape: a use that reads no values (it does not stop a site)."""
    return (node.op == "call_method" and node.target in ("size", "dim")) or \
        (node.op == "call_function" and node.target is getattr and node.args[1] in ("shape", "ndim"))


def _rank(node: fx.Node) -> int:
    return len(node.meta["tensor_meta"].shape)


def _is_flatten_call(node: fx.Node) -> bool:
    return (node.op == "call_function" and node.target in (torch.flatten, torch.reshape)) or \
        (node.op == "call_method" and node.target in ("flatten", "view", "reshape"))


def _flatten_start(node: fx.Node, module: nn.Module | None) -> int:
    """The flatten's start dimension (-99: not a flatten of the trailing dimensions); a view or reshape counts as
    flatten(x, 1) when it turns (B, C, ...) into (B, C * ...)."""
    if node.target in ("view", "reshape", torch.reshape):
        before, after = node.args[0].meta["tensor_meta"].shape, node.meta["tensor_meta"].shape
        return 1 if len(after) == 2 and after[0] == before[0] and after[1] == torch.Size(before[1:]).numel() else -99
    if isinstance(module, nn.Flatten):
        return module.start_dim if module.end_dim == -1 else -99
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
    return start if end == -1 else -99


def _describe(node: fx.Node) -> str:
    """A node in words: 'add', 'cat', 'layer1.0.bn2 (BatchNorm2d)', 'view'."""
    if node.op == "call_function":
        name = getattr(node.target, "__name__", str(node.target))
        return {operator.add.__name__: "a sum (add)", operator.iadd.__name__: "a sum (add)"}.get(name, name)
    if node.op == "call_method":
        return f".{node.target}()"
    if node.op == "output":
        return "the output"
    return str(node.target)


def survey(model: nn.Module, example_input: torch.Tensor) -> Survey:
    """Trace `model` on `example_input` (a small batch) and judge every Conv2d and Linear as a producer."""
    try:
        graph = fx.symbolic_trace(model)
    except Exception as err:  # torch.fx raises many kinds (TraceError, TypeError, NotImplementedError...)
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise PlantingError(f"cannot trace {type(model).__name__} with torch.fx ({reason}); name its sites by hand, "
                            f"e.g. Site(producer='conv1', consumer='conv2', norm='bn1')") from None
    with torch.no_grad():
        ShapeProp(graph).propagate(example_input)
    modules = dict(graph.named_modules())
    sites, refused = [], {}
    for node in graph.graph.nodes:
        module = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        channels = module.out_channels if isinstance(module, nn.Conv2d) else module.out_features
        problem = _producer_problem(module)
        found = problem or _follow(node, modules, channels)
        if isinstance(found, Site):
            sites.append(found)
        else:
            refused[node.target] = found
    return Survey(sites, refused)


def find_sites(model: nn.Module, example_input: torch.Tensor) -> list[Site]:
    """The sites where `model` can grow, in the order its forward pass reaches them (see survey() for refusals)."""
    return survey(model, example_input).sites


def check_site(model: nn.Module, site: Site) -> Site:
    """Raise a PlantingError unless `site` (hand-named or found) fits `model`'s modules; return it."""
    modules = dict(model.named_modules())
    for role, name, kinds in (("producer", site.producer, (nn.Conv2d, nn.Linear)),
                              ("consumer", site.consumer, (nn.Conv2d, nn.Linear)), ("norm", site.norm, NORMS)):
        if name is None:
            continue
        if not isinstance(modules.get(name), kinds):
            found = type(modules[name]).__name__ if name in modules else "no such module"
            raise PlantingError(f"site {site.producer}: its {role} {name!r} must be one of "
                                f"{', '.join(k.__name__ for k in kinds)}, found {found}")
    problem = _producer_problem(modules[site.producer]) or _producer_problem(modules[site.consumer])
    if problem:
        raise PlantingError(f"cannot plant at {site.producer}: {problem}")
    if not isinstance(site.area, int) or site.area < 1:
        raise PlantingError(f"site {site.producer}: area must be a positive integer, got {site.area!r}")
    return site
