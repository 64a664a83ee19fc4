"""Checks for papermill parameters: a wrong type or value is named before any work starts."""
from __future__ import annotations

from typing import Any

from .errors import PlantingError
from .models import check_widths

# name -> (allowed types, description); None in the types tuple means the value may be None
NOTEBOOK_PARAMS: dict[str, tuple[tuple, str]] = {
    "dataset": ((str,), "a dataset name, e.g. 'fashion-mnist'"),
    "data_root": ((str, type(None)), "a folder path or None"),
    "subset": ((int, type(None)), "a positive number of training images, or None for all"),
    "val_size": ((int, float), "a count, or a fraction of the training images"),
    "seed": ((int,), "an integer"),
    "seeds": ((list,), "a list of integers"),
    "widths": ((list,), "five positive integers"),
    "teacher_width": ((int,), "a positive integer"),
    "student_widths": ((list,), "a list of positive integers"),
    "epochs": ((int,), "a positive integer"),
    "teacher_epochs": ((int,), "a positive integer"),
    "plant_epochs": ((int,), "a positive integer"),
    "batch_size": ((int,), "a positive integer"),
    "lr": ((int, float), "a positive number"),
    "plant_lr": ((int, float), "a positive number"),
    "T": ((int, float), "a positive number"),
    "channels": ((int,), "a positive integer"),
    "max_rounds": ((int, type(None)), "a positive integer or None"),
    "single_seed_from": ((int, type(None)), "a positive width, or None"),
    "device": ((str,), "'auto', 'cpu', 'cuda' or 'mps'"),
    "out_dir": ((str,), "a folder path"),
    "progress": ((bool,), "True or False"),
    "augment": ((bool,), "True or False"),
}
POSITIVE = {"subset", "teacher_width", "epochs", "teacher_epochs", "plant_epochs", "batch_size", "lr", "plant_lr", "T",
            "channels", "max_rounds", "single_seed_from"}


def check_params(values: dict[str, Any]) -> dict[str, Any]:
    """Check notebook parameters by name; raise a PlantingError naming the first bad one. Returns values."""
    for name, value in values.items():
        if name not in NOTEBOOK_PARAMS:
            continue
        types, what = NOTEBOOK_PARAMS[name]
        bad_bool = isinstance(value, bool) and bool not in types
        if bad_bool or not isinstance(value, types):
            raise PlantingError(f"parameter {name!r} must be {what}, got {value!r} ({type(value).__name__})")
        if name in POSITIVE and value is not None and value <= 0:
            raise PlantingError(f"parameter {name!r} must be {what}, got {value!r}")
        if name == "widths":
            try:
                check_widths(value)
            except PlantingError:
                raise PlantingError(f"parameter 'widths' must be {what}, got {value!r}") from None
        if name in ("seeds", "student_widths") and not all(
                isinstance(v, int) and not isinstance(v, bool) and (v > 0 or name == "seeds") for v in value):
            raise PlantingError(f"parameter {name!r} must be {what}, got {value!r}")
    return values
