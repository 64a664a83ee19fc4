"""Proposal policies: which candidate networks a planting round tries.

A policy is a function (current network, round number, channels per step) -> list of Candidates; register it in
PROPOSALS under the name that `GrowConfig.propose` (and the parameter `propose`) uses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .models import NUM_CONVS, PlainCNN
from .planting import PlantedCNN, plant


@dataclass(frozen=True)
class Candidate:
    """One way to grow the current network: `channels` new channels in conv `layer` (0-based)."""
    layer: int
    channels: int

    @property
    def key(self) -> str:
        """A name that identifies the candidate within its round (the planting state is keyed by it)."""
        return f"conv{self.layer + 1}+{self.channels}"

    def build(self, current: PlainCNN, init: str, generator: torch.Generator) -> PlantedCNN:
        """The candidate network: `current` with the new channels planted (their outgoing weights per `init`)."""
        return plant(current, self.layer, self.channels, init, generator=generator)


Proposal = Callable[[PlainCNN, int, int], list[Candidate]]


def all_layers(current: PlainCNN, rnd: int, channels: int) -> list[Candidate]:
    """The paper's search: plant in each of the five convolutions, one candidate per layer."""
    return [Candidate(layer, channels) for layer in range(NUM_CONVS)]


def round_robin(current: PlainCNN, rnd: int, channels: int) -> list[Candidate]:
    """The ablation without search: round r plants in conv ((r - 1) mod 5) + 1 only."""
    return [Candidate((rnd - 1) % NUM_CONVS, channels)]


PROPOSALS: dict[str, Proposal] = {"all-layers": all_layers, "round-robin": round_robin}
