"""Where tensors live: picking the device, moving networks there, and mixed precision on CUDA."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from .errors import PlantingError


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The device to use: cuda, then mps, then cpu when `device` is None or "auto"; else the one named."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise PlantingError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PlantingError(f"device {device!r} was asked for, but no CUDA GPU is available; use 'auto' or 'cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise PlantingError(f"device {device!r} was asked for, but this machine has {torch.cuda.device_count()} "
                            f"CUDA device(s): allowed cuda:0..cuda:{torch.cuda.device_count() - 1}")
    if dev.type == "mps" and not mps_available():
        raise PlantingError(f"device {device!r} was asked for, but Apple's MPS is not available here; "
                            f"use 'auto' or 'cpu'")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise PlantingError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}")
    return dev


def mps_available() -> bool:
    """True on an Apple GPU with PyTorch's MPS backend."""
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def to_device(model: nn.Module, device: torch.device | str) -> nn.Module:
    """Move a network to `device` in place, channels-last (NHWC: faster convs and pools on CPU and GPU)."""
    return model.to(device, memory_format=torch.channels_last)


def autocast(device: torch.device, cache: bool = True):
    """bf16 autocast on CUDA; nothing elsewhere (CPU bf16 is slower for these small convs). Inside a CUDA graph
    capture, `cache` must be False (autocast's weight-cast cache does not survive capture)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=cache)
    return contextlib.nullcontext()
