"""What a saved run records: the one home that decides which settings a training state, a checkpoint or a planting
run is written with (and must match to be resumed or reused), and which it leaves out.

Left out are the switches that change how fast or how visibly a run goes, never what it learns (beyond float
rounding), so that runs made before such a switch existed still load. Fields added to GrowConfig after runs were
saved are recorded only when set away from their default, for the same reason.
"""
from __future__ import annotations

from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .search import GrowConfig
    from .train import TrainConfig

TRAIN_SPEED = {"cuda_graph"}  # TrainConfig: how fast only (added later): no saved state or setting records it
TRAIN_NOT_LEARNING = {"progress", "eval_batch_size", "eval_each_epoch", "cache_frozen", "cache_bytes"}  # nor these
DISTILLATION_ONLY = {"T", "alpha"}  # TrainConfig: meaningful only with loss "kd"
GROW_SPEED = {"fused", "candidate_threads"}  # GrowConfig: how fast only
GROW_LATER = {"finetune_head": False, "stop_split": False}  # GrowConfig fields added later, with their defaults


def resume_record(cfg: TrainConfig) -> dict:
    """What a training state is saved with and must match to resume: every field but the speed switches,
    progress bars always recorded as on."""
    return {k: v for k, v in asdict(replace(cfg, progress=True)).items() if k not in TRAIN_SPEED}


def training_record(cfg: TrainConfig) -> dict:
    """The TrainConfig fields that change what is learnt (T and alpha only for distillation)."""
    skip = TRAIN_SPEED | TRAIN_NOT_LEARNING | (DISTILLATION_ONLY if cfg.loss == "ce" else set())
    return {k: v for k, v in asdict(cfg).items() if k not in skip}


def settings_record(cfg: GrowConfig) -> dict:
    """A planting search's settings as its saved state records them: less the speed switches, and less the later
    fields left at their default."""
    record = {k: v for k, v in asdict(cfg).items()
              if k not in GROW_SPEED and not (k in GROW_LATER and v == GROW_LATER[k])}
    record["train"] = {k: v for k, v in record["train"].items() if k not in TRAIN_SPEED}
    return record


def with_later_defaults(record: dict[str, Any]) -> dict[str, Any]:
    """A saved settings record with every later field filled in at its default (absent when saved at it)."""
    return {**GROW_LATER, **record}
