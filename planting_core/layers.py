"""The modules of a planted network: a layer with frozen old and trainable new weights, and BatchNorms that keep
their old channels' statistics frozen."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PlantedLayer(nn.Module):
    """A conv or linear layer = frozen old weights (buffers) + trainable new weights, concatenated along `dim`.

    dim=0: new output channels (the planted conv: new filters and new biases).
    dim=1: new input channels (the next layer: new input weights; its bias stays frozen).
    """

    def __init__(self, layer: nn.Conv2d | nn.Linear, new_weight: torch.Tensor, new_bias: torch.Tensor | None, dim: int):
        super().__init__()
        self.is_conv, self.dim = isinstance(layer, nn.Conv2d), dim
        # the layer's own geometry (kernel, stride, padding, dilation), so that old and new parts compute as it does
        self.conv_args = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation) if self.is_conv else {}
        self.register_buffer("old_weight", layer.weight.detach().clone())  # conv: (C_out, C_in, kh, kw); fc: (out, in)
        self.register_buffer("old_bias", None if layer.bias is None else layer.bias.detach().clone())
        self.new_weight = nn.Parameter(new_weight)
        self.new_bias = nn.Parameter(new_bias) if new_bias is not None else None

    @property
    def weight(self) -> torch.Tensor:
        """The full weight: old and new along `dim`."""
        return torch.cat([self.old_weight, self.new_weight.to(self.old_weight.dtype)], self.dim)

    @property
    def bias(self) -> torch.Tensor | None:
        """The full bias (old biases, then the new ones for a planted conv); None for a layer without bias."""
        if self.new_bias is None or self.old_bias is None:
            return self.old_bias
        return torch.cat([self.old_bias, self.new_bias.to(self.old_bias.dtype)])

    def _run(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return F.conv2d(x, w, b, **self.conv_args) if self.is_conv else F.linear(x, w, b)

    def merged(self) -> nn.Conv2d | nn.Linear:
        """The plain layer with the full weight and bias (trainable): what this layer computes, in one piece."""
        w, b = self.weight.detach(), self.bias
        if self.is_conv:
            layer = nn.Conv2d(w.shape[1], w.shape[0], tuple(w.shape[2:]), bias=b is not None, **self.conv_args)
        else:
            layer = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
        layer = layer.to(device=w.device, dtype=w.dtype)
        with torch.no_grad():
            layer.weight.copy_(w)
            if b is not None:
                layer.bias.copy_(b.detach())
        return layer

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


class FrozenNorm(nn.Module):
    """A BatchNorm that always normalises with its running statistics and never updates them (old channels).

    Its tensors keep the BatchNorm's names (weight, bias, running_mean, running_var, num_batches_tracked)."""

    def __init__(self, norm: nn.BatchNorm1d | nn.BatchNorm2d):
        super().__init__()
        self.kind, self.eps, self.momentum = type(norm), norm.eps, norm.momentum
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            value = getattr(norm, name)
            self.register_buffer(name, None if value is None else value.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, ...) -> (B, C, ...), normalised as in evaluation."""
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)

    def merged(self) -> nn.Module:
        """A plain, trainable BatchNorm with these statistics and affine parameters."""
        norm = self.kind(self.running_mean.numel(), eps=self.eps, momentum=self.momentum, affine=self.weight is not None)
        norm = norm.to(self.running_mean.device, self.running_mean.dtype)
        norm.load_state_dict(self.state_dict())
        return norm


class GrownNorm(nn.Module):
    """The site's BatchNorm: the old channels frozen (FrozenNorm), the planted ones a fresh, trainable BatchNorm."""

    def __init__(self, norm: nn.BatchNorm1d | nn.BatchNorm2d, channels: int):
        super().__init__()
        self.old = FrozenNorm(norm)
        ref = norm.running_mean
        self.new = type(norm)(channels, eps=norm.eps, momentum=norm.momentum, affine=norm.affine).to(ref.device, ref.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_old + k, ...) -> the same shape: old channels as before, new channels by their own BatchNorm."""
        n_old = self.old.running_mean.numel()
        return torch.cat([self.old(x[:, :n_old]), self.new(x[:, n_old:])], 1)

    def merged(self) -> nn.Module:
        """One plain BatchNorm over old and new channels (statistics and affine parameters concatenated)."""
        old, new = self.old.merged(), self.new
        norm = old.__class__(old.num_features + new.num_features, eps=old.eps, momentum=old.momentum, affine=old.affine)
        norm = norm.to(old.running_mean.device, old.running_mean.dtype)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                if getattr(old, name) is not None:
                    getattr(norm, name).copy_(torch.cat([getattr(old, name), getattr(new, name).detach()]))
            norm.num_batches_tracked.copy_(old.num_batches_tracked)
        return norm
