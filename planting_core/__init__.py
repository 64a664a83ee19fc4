"""planting_core: channel planting (Mitsuno, Nomura, Kurita, ICPR 2020) in a thin PyTorch package.

The library: find where a network can grow (sites), plant channels there, train them by distillation, and grow a
network round by round. The book's experiment apparatus (parameter table, run folders, the study, the compared
methods, plots, the command line and the benchmark) lives in planting_core.book; the speed paths (fused
candidates, CUDA graphs, threads, torchrun) in planting_core.speed.
"""
from .floor import check_torch

check_torch()  # before anything loads a file: one line if torch is too old

from .checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from .data import Data, Split, load_data
from .device import pick_device
from .distill import kd_loss, teacher_logits
from .errors import CheckpointError, PlantingError
from .models import PlainCNN, count_parameters, param_count
from .planting import is_planted, merge, plant
from .search import GrowConfig, GrowResult, grow
from .sites import Site, find_sites, survey
from .train import TrainConfig, evaluate, fit

__version__ = "0.2.0"
__all__ = [
    "Site", "find_sites", "survey", "plant", "merge", "is_planted",
    "PlainCNN", "count_parameters", "param_count",
    "TrainConfig", "fit", "evaluate", "kd_loss", "teacher_logits",
    "GrowConfig", "GrowResult", "grow",
    "Data", "Split", "load_data", "pick_device",
    "save_checkpoint", "load_checkpoint",
    "PlantingError", "CheckpointError",
]


def __getattr__(name: str):
    """The subpackages, imported on first use: planting_core.book (the book's apparatus) and planting_core.speed.
    Any other unknown name is an error that says where the name lives, if anywhere."""
    import importlib
    if name in ("book", "speed"):
        return importlib.import_module(f"{__name__}.{name}")
    if name.startswith("__"):
        raise AttributeError(name)
    homes = [f"planting_core.{m}.{name}" for m in ("checkpoint", "data", "device", "distill", "errors", "models",
                                                    "planting", "layers", "train", "search", "selection", "proposals")
             if hasattr(importlib.import_module(f"{__name__}.{m}"), name)]
    if not homes and hasattr(importlib.import_module(f"{__name__}.book"), name):
        homes = [f"planting_core.book.{name} (from planting_core import book as pb)"]
    where = f": it is {homes[0]}" if homes else ""
    raise AttributeError(f"module 'planting_core' has no attribute {name!r}{where}")


def __dir__() -> list[str]:
    return sorted(__all__)
