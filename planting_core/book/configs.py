"""From flat parameters (a notebook's parameters cell, the command line) to the library's config objects.

This is the one mapping from names like `plant_epochs` to TrainConfig and GrowConfig fields; notebooks and the
main job both use it, so a parameter takes the same path everywhere.
"""
from __future__ import annotations

from dataclasses import fields, replace
from typing import Any, Mapping

import torch

from ..data import Data, load_data
from .params import DEFAULTS, check_params
from ..search import GrowConfig
from ..train import TrainConfig

# TrainConfig fields that a parameter of the same name sets directly (epochs, lr and seed depend on the network)
_SHARED_TRAIN_FIELDS = [f.name for f in fields(TrainConfig) if f.name in DEFAULTS and f.name not in ("epochs", "seed")]
_GROW_FIELDS = [f.name for f in fields(GrowConfig) if f.name in DEFAULTS]


def with_defaults(params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters, checked against the table, with the table's default for every one not given."""
    return {**DEFAULTS, **check_params(params)}


def _train(p: Mapping[str, Any], **fields_: Any) -> TrainConfig:
    return TrainConfig(**{**{k: p[k] for k in _SHARED_TRAIN_FIELDS}, **fields_})


def teacher_config(params: Mapping[str, Any]) -> TrainConfig:
    """The teacher: cross-entropy, teacher_epochs at lr, seeded by `seed`."""
    p = with_defaults(params)
    return _train(p, epochs=p["teacher_epochs"], seed=p["seed"], loss="ce")


def student_config(params: Mapping[str, Any], seed: int, loss: str = "ce") -> TrainConfig:
    """A fixed-width student or the initial network: `epochs` at lr, on labels ("ce") or by distillation ("kd")."""
    p = with_defaults(params)
    return _train(p, epochs=p["epochs"], seed=seed, loss=loss)


def grow_config(params: Mapping[str, Any], seed: int, **changes: Any) -> GrowConfig:
    """The planting search of one seed: candidates trained by KD, plant_epochs at plant_lr; `changes` to GrowConfig
    fields (e.g. finetune_old=True), or to its training as train_<field> (e.g. train_loss="ce")."""
    p = with_defaults(params)
    train = _train(p, epochs=p["plant_epochs"], lr=p["plant_lr"], seed=seed, loss="kd")
    train = replace(train, **{k[6:]: v for k, v in changes.items() if k.startswith("train_")})
    grow = {k: p[k] for k in _GROW_FIELDS}
    grow.update({k: v for k, v in changes.items() if not k.startswith("train_")})
    return GrowConfig(**grow, train=train)


def load_run_data(params: Mapping[str, Any], device: str | torch.device | None = None) -> Data:
    """The dataset and split the parameters name (the split is drawn by `seed`), on `device` (default: `device`)."""
    p = with_defaults(params)
    return load_data(p["dataset"], p["data_root"], subset=p["subset"], val_size=p["val_size"], seed=p["seed"],
                     device=p["device"] if device is None else device, image_size=p["image_size"],
                     skip_bad_images=p["skip_bad_images"])
