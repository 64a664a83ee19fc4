"""Selection policies: which of a round's trained candidates wins.

A policy names the validation metric whose fall counts as improvement (the stop rules read it) and a function
(history rows of the candidates that trained, row of the network kept so far) -> the winning row. Register it in
SELECTIONS under the name that `GrowConfig.select` (and the parameter `select`) uses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

Row = dict  # one history row: round, layer, widths, params, val_loss, val_acc, val_kd, ...


@dataclass(frozen=True)
class Selection:
    """How a round's winner is chosen, and by which validation metric improvement is judged."""
    metric: str  # history column: "val_loss" (cross-entropy on validation labels) or "val_kd"
    choose: Callable[[list[Row], Row], Row]  # (candidate rows, kept row) -> winner


def lowest(metric: str) -> Callable[[list[Row], Row], Row]:
    """The candidate with the lowest `metric` (the first one on a tie)."""
    return lambda rows, kept: min(rows, key=lambda r: r[metric])


def largest_drop_per_parameter(rows: list[Row], kept: Row) -> Row:
    """The candidate that lowers the validation loss most per parameter it adds (cheap layers get a fair chance)."""
    return max(rows, key=lambda r: (kept["val_loss"] - r["val_loss"]) / max(r["params"] - kept["params"], 1))


SELECTIONS: dict[str, Selection] = {
    "val_loss": Selection("val_loss", lowest("val_loss")),  # the paper: lowest validation loss
    "val_kd": Selection("val_kd", lowest("val_kd")),  # lowest distillation loss to the teacher on validation
    "drop_per_param": Selection("val_loss", largest_drop_per_parameter),
}
