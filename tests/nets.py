"""Networks the paper never used, for planting into: a VGG-style CNN with BatchNorm and a small ResNet."""
from __future__ import annotations

import torch
from torch import nn


class VGGBN(nn.Module):
    """conv-BN-ReLU blocks (a 2x2 max pool after each), global average pool, then a linear classifier."""

    def __init__(self, widths: tuple[int, ...] = (4, 4, 4), in_channels: int = 1, num_classes: int = 4):
        super().__init__()
        layers, c = [], in_channels
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2)]
            c = w
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, classes)."""
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)  # (B, C, 1, 1)
        return self.classifier(torch.flatten(x, 1))


class Block(nn.Module):
    """A ResNet basic block: conv1 -> bn1 -> ReLU -> conv2 -> bn2, plus the input (its internal width can grow)."""

    def __init__(self, channels: int, inner: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, inner, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class SmallResNet(nn.Module):
    """A stem conv, `blocks` basic blocks of `channels` channels (internal widths `inner`), pool and a linear head."""

    def __init__(self, channels: int = 8, inner: tuple[int, ...] = (4, 4), in_channels: int = 1, num_classes: int = 4):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.blocks = nn.Sequential(*(Block(channels, w) for w in inner))
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, classes)."""
        x = self.blocks(torch.relu(self.bn(self.stem(x))))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))
