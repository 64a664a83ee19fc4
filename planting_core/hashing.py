"""Digests of tensors, to tell whether a network or a data split is the one a saved run was made with."""
from __future__ import annotations

import hashlib

import torch


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 (first 16 hex digits) of named tensors' values: the same values give the same digest."""
    h = hashlib.sha256()
    for name, t in tensors.items():
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
