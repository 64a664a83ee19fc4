"""A depth-level dynamic network with embedded knowledge distillation (DDNN-EKD): one set of weights holds
sub-networks of several depths (the first k conv blocks, k = 3, 4, 5, each with its classifier head); every
training step distils the full network's class posteriors into every shallower sub-network, and transfers
attention between same-resolution features.

Choices the source leaves open, made here (the comparison chapter lists them):
- heads: the full network (k = 5) keeps the plain CNN's fc1/fc2; a sub-network of depth k < 5 gets its own
  fc1/fc2 (128 hidden units, as everywhere in this book) on block k's output max-pooled to the full network's
  final side and flattened, so that a shallower sub-network is also a smaller one (its head reads as many
  positions as the full network's fc1; unpooled, a depth-3 head on 8x8 maps outweighed the whole network);
- losses: cross-entropy on the labels for the full network; for each shallower sub-network, T^2 x KL from the
  full network's softened posteriors (held fixed, as a teacher) plus `attention_weight` x the attention transfer
  loss between its last block's output and the deepest block of the full network with the same spatial size
  (the squared L2 distance of the L2-normalised maps mean_c(f^2)); none where that block is its own;
- sub-networks train only through these terms (no labels of their own), as in "embedded" distillation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models import NETWORK_KINDS, NUM_CONVS, PlainCNN
from .projection import block_sides

DEPTHS = (3, 4, 5)


def attention_map(f: torch.Tensor) -> torch.Tensor:
    """The L2-normalised spatial attention of features: (B, C, H, W) -> (B, H*W)."""
    return F.normalize(f.pow(2).mean(1).flatten(1), dim=1)


class DepthNet(nn.Module):
    """A plain CNN whose first k blocks, with head k, are a network of their own for every k in `depths`.

    forward(x) returns the full network's logits and keeps the embedded-distillation loss of the shallower
    sub-networks in `self.embedded` (read by `EmbeddedLoss`, fit's penalty)."""

    def __init__(self, widths: list[int], depths: tuple[int, ...] | list[int] = DEPTHS, T: float = 2.0,
                 attention_weight: float = 1.0, **model_kwargs):
        super().__init__()
        self.full = PlainCNN(widths, **model_kwargs)
        self.depths, self.T, self.attention_weight = tuple(sorted(depths)), T, attention_weight
        sides, side = block_sides(self.full), self.full.side
        self.heads = nn.ModuleDict({str(k): nn.Sequential(  # (B, C_k, H_k, W_k) -> (B, C_k, side, side) -> logits
            nn.AdaptiveMaxPool2d(side), nn.Flatten(), nn.Linear(self.full.widths[k - 1] * side ** 2, self.full.hidden),
            nn.ReLU(), nn.Linear(self.full.hidden, self.full.num_classes)) for k in self.depths if k < NUM_CONVS})
        # the deepest block with the same spatial size as block k (0-based), for attention transfer
        self.partner = {k: max(j for j in range(NUM_CONVS) if sides[j] == sides[k - 1]) for k in self.depths}
        self.embedded = torch.zeros(())
        self.meta: dict = {}

    @property
    def widths(self) -> list[int]:
        """The conv widths (of the full depth)."""
        return self.full.widths

    def arch(self) -> dict:
        """Everything needed to rebuild this network (checkpoints store it; load_checkpoint rebuilds it)."""
        return {**self.full.arch(), "kind": "depthnet", "depths": list(self.depths), "T": self.T,
                "attention_weight": self.attention_weight}

    def blocks(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every block's output: 5 tensors (B, C_i, H_i, W_i)."""
        outs = []
        for i in range(NUM_CONVS):
            x = self.full.activate(i, self.full.convs[i](x))
            outs.append(x)
        return outs

    def sub_logits(self, k: int, feats: list[torch.Tensor]) -> torch.Tensor:
        """Logits of the depth-k sub-network from the block outputs: (B, classes)."""
        return self.full.head(feats[-1]) if k == NUM_CONVS else self.heads[str(k)](feats[k - 1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.blocks(x)
        full = self.full.head(feats[-1])  # (B, classes)
        soft = F.softmax(full.detach() / self.T, dim=1)
        loss = full.new_zeros(())
        for k in self.depths:
            if k == NUM_CONVS:
                continue
            sub = self.sub_logits(k, feats)
            loss = loss + F.kl_div(F.log_softmax(sub / self.T, dim=1), soft, reduction="batchmean") * self.T ** 2
            j = self.partner[k]
            if j != k - 1:
                gap = attention_map(feats[k - 1]) - attention_map(feats[j].detach())
                loss = loss + self.attention_weight * gap.pow(2).sum(1).mean()
        self.embedded = loss
        return full

    def subnetwork(self, k: int) -> "SubNetwork":
        """The depth-k sub-network as a network of its own (sharing these weights)."""
        return SubNetwork(self, k)


class SubNetwork(nn.Module):
    """The first k blocks of a DepthNet and head k: a network on its own, whose weights are the DepthNet's."""

    def __init__(self, net: DepthNet, k: int):
        super().__init__()
        self.k, self.activate = k, net.full.activate
        self.convs = net.full.convs[:k]  # the same modules (shared weights), not copies
        # head k: the plain CNN's fc1/fc2 for the full depth, else the sub-network's own
        self.head_layers = nn.ModuleList([net.full.fc1, net.full.fc2] if k == NUM_CONVS else [net.heads[str(k)]])
        self.head = net.full.head if k == NUM_CONVS else net.heads[str(k)]
        self.widths = list(net.full.widths[:k])
        self.meta = {"settings": getattr(net, "meta", {}).get("settings", {})}  # its DepthNet's (trained with it)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.k):
            x = self.activate(i, self.convs[i](x))
        return self.head(x)


class EmbeddedLoss:
    """fit's penalty: the embedded-distillation loss of the DepthNet's last forward pass."""

    def __call__(self, model: nn.Module) -> torch.Tensor:
        return model.embedded

    def __repr__(self) -> str:
        return "ddnn_embedded_kd"


NETWORK_KINDS["depthnet"] = DepthNet  # so that load_checkpoint rebuilds it
