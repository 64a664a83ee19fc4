"""The paper's plain CNNs: five 3x3 convs, 2x2 max pools, fc1 (128 units) and fc2."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from .errors import PlantingError

# After which conv (0-based) a 2x2 max pool follows, per layout (paper.md, "The networks").
LAYOUTS: dict[str, tuple[int, ...]] = {
    "cifar": (0, 1, 4),  # conv1, pool, conv2, pool, conv3, conv4, conv5, pool
    "stl": (0, 1, 2, 4),  # conv1, pool, conv2, pool, conv3, pool, conv4, conv5, pool
}
NUM_CONVS = 5


def check_widths(widths: Sequence[int]) -> list[int]:
    """Return widths as a list of five positive ints, or raise a PlantingError saying why not."""
    try:
        ws = list(widths)
    except TypeError:
        raise PlantingError(f"widths must be a list of {NUM_CONVS} positive integers, got {widths!r}") from None
    if len(ws) != NUM_CONVS or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in ws):
        raise PlantingError(f"widths must be a list of {NUM_CONVS} positive integers, got {widths!r}")
    return ws


def feature_size(layout: str, image_size: int) -> int:
    """Spatial side of conv5's pooled output for a square input of `image_size` pixels."""
    side = image_size
    for _ in LAYOUTS[layout]:
        side //= 2
    return side


class PlainCNN(nn.Module):
    """conv(3x3, pad 1)+ReLU x5 with max pools per `layout`, then ReLU(fc1) and fc2."""
    meta: dict[str, Any]  # what a checkpoint says about this network: test metrics, history, settings

    def __init__(self, widths: Sequence[int], layout: str = "cifar", in_channels: int = 3,
                 num_classes: int = 10, image_size: int = 32, hidden: int = 128):
        super().__init__()
        if layout not in LAYOUTS:
            raise PlantingError(f"layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes),
                            ("image_size", image_size), ("hidden", hidden)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise PlantingError(f"{name} must be a positive integer, got {value!r}")
        side = feature_size(layout, image_size)
        if side < 1:
            raise PlantingError(f"image_size {image_size} is too small for layout {layout!r}: "
                                f"it needs at least {2 ** len(LAYOUTS[layout])} pixels")
        self.widths = check_widths(widths)
        self.layout, self.in_channels, self.num_classes = layout, in_channels, num_classes
        self.image_size, self.hidden, self.side = image_size, hidden, side
        self.meta = {}
        chans = [in_channels, *self.widths]
        self.convs = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 3, padding=1) for i in range(NUM_CONVS))
        self.fc1 = nn.Linear(self.widths[-1] * side * side, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)
        self.pool = nn.MaxPool2d(2)
        for layer in [*self.convs, self.fc1, self.fc2]:  # He init: a plain 7-layer ReLU net without BN trains from it
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)

    def arch(self) -> dict:
        """Everything needed to rebuild this network's shape (stored in checkpoints)."""
        return dict(widths=list(self.widths), layout=self.layout, in_channels=self.in_channels,
                    num_classes=self.num_classes, image_size=self.image_size, hidden=self.hidden)

    def activate(self, i: int, z: torch.Tensor) -> torch.Tensor:
        """ReLU of conv i's fresh output z (in place), then its 2x2 pool if the layout has one there."""
        x = torch.relu_(z)
        return self.pool(x) if i in LAYOUTS[self.layout] else x

    def features(self, x: torch.Tensor, start: int = 0, stop: int = NUM_CONVS) -> torch.Tensor:
        """Run convs start..stop-1 (each with ReLU and its pool): (B, C_in, H, W) -> (B, C, H', W')."""
        for i in range(start, stop):
            x = self.activate(i, self.convs[i](x))
        return x

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Classifier on conv5's pooled output: (B, C5, s, s) -> (B, classes)."""
        x = torch.flatten(x, 1)  # (B, C5*s*s), channel-major, so a planted conv5 channel adds columns at the end
        return self.fc2(torch.relu(self.fc1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) images -> (B, classes) logits."""
        return self.head(self.features(x))


NORM_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")  # BatchNorm's, not parameters


def count_parameters(model: nn.Module) -> int:
    """Number of weights and biases, trainable or frozen (frozen ones are buffers in a planted net); BatchNorm's
    running statistics are not counted."""
    return sum(p.numel() for p in model.parameters()) + sum(
        b.numel() for name, b in model.named_buffers() if name.rpartition(".")[2] not in NORM_STATISTICS)


def param_count(widths: Sequence[int], layout: str = "cifar", in_channels: int = 3, num_classes: int = 10,
                image_size: int = 32, hidden: int = 128) -> int:
    """Parameter count of PlainCNN(widths, ...) by formula, without building it."""
    ws = check_widths(widths)
    chans = [in_channels, *ws]
    conv = sum(chans[i] * chans[i + 1] * 9 + chans[i + 1] for i in range(NUM_CONVS))
    flat = ws[-1] * feature_size(layout, image_size) ** 2
    return conv + flat * hidden + hidden + hidden * num_classes + num_classes


# other kinds of network that checkpoints may hold register their class here (e.g. depthnet.DepthNet)
NETWORK_KINDS: dict[str, type[nn.Module]] = {}


def build_network(arch: dict) -> nn.Module:
    """The network an arch() dict describes: a PlainCNN, or a registered kind named by arch["kind"]."""
    kind, args = arch.get("kind", "plain"), {k: v for k, v in arch.items() if k != "kind"}
    if kind == "plain":
        return PlainCNN(**args)
    if kind not in NETWORK_KINDS:
        raise PlantingError(f"unknown network kind {kind!r}; known: plain, {', '.join(NETWORK_KINDS)}")
    return NETWORK_KINDS[kind](**args)
