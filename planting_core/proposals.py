"""Proposal policies: which candidate networks a planting round tries.

A policy is a function (the network's sites, round number, channels per step) -> list of Candidates; register it
in PROPOSALS under the name that `GrowConfig.propose` (and the parameter `propose`) uses. The paper's PlainCNN
offers its five convolutions as sites (convs.0 .. convs.4); any other network the sites find_sites() returns.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .planting import plant
from .site_planting import site_label
from .sites import Site


@dataclass(frozen=True)
class Candidate:
    """One way to grow the current network: `channels` new channels at site number `layer` of the network's sites."""
    layer: int
    channels: int
    site: Site

    @property
    def key(self) -> str:
        """A name that identifies the candidate within its round (the planting state is keyed by it): "conv3+4"."""
        return f"{site_label(self.site)}+{self.channels}"

    def build(self, current: nn.Module, init: str, generator: torch.Generator) -> nn.Module:
        """The candidate network: `current` with the new channels planted (their outgoing weights per `init`)."""
        return plant(current, self.site, self.channels, init, generator=generator)


Proposal = Callable[[list[Site], int, int], list[Candidate]]


def all_layers(sites: list[Site], rnd: int, channels: int) -> list[Candidate]:
    """The paper's search: plant at every site (the paper: each of the five convolutions), one candidate each."""
    return [Candidate(i, channels, site) for i, site in enumerate(sites)]


def round_robin(sites: list[Site], rnd: int, channels: int) -> list[Candidate]:
    """The ablation without search: round r plants at site (r - 1) mod (number of sites) only."""
    i = (rnd - 1) % len(sites)
    return [Candidate(i, channels, sites[i])]


PROPOSALS: dict[str, Proposal] = {"all-layers": all_layers, "round-robin": round_robin}
