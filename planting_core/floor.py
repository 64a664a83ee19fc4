"""The oldest torch this package runs on, checked at import with one line."""
from __future__ import annotations

import re

import torch

# torch 2.6 is the first whose weights_only loading has no known way around it (CVE-2025-32434); planting_core
# loads checkpoints from addresses its users give it (checkpoint_url)
MIN_TORCH = (2, 6)


def check_torch(version: str | None = None) -> None:
    """Raise an ImportError naming the installed torch if it is older than MIN_TORCH."""
    version = torch.__version__ if version is None else version
    found = tuple(int(v) for v in re.findall(r"\d+", version)[:2])
    if found < MIN_TORCH:
        raise ImportError(f"planting_core needs torch {'.'.join(map(str, MIN_TORCH))} or newer (older versions can "
                          f"be made to run code from a checkpoint file); this is torch {version}: "
                          f"pip install -U 'torch>={'.'.join(map(str, MIN_TORCH))}'")
