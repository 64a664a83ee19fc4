"""Tuning on validation data, logged: every configuration tried becomes a sweep.csv row, and the winner is the
value whose networks have the lowest mean validation loss (test accuracy is recorded, never read)."""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..checkpoint import write_csv
from ..models import count_parameters

SWEEP_COLUMNS = ["kind", "condition", "seed", "varied", "settings", "rounds", "widths", "params", "val_loss", "val_acc",
                 "test_acc", "candidates", "seconds", "stop_reason"]


def network_row(kind: str, condition: str, seed: int, varied: str, net: torch.nn.Module, val: dict | None = None,
                test: dict | None = None) -> dict:
    """One sweep.csv row for a trained network: its validation figures (`val`, else its last epoch's), its test
    accuracy (`test`, else its checkpoint's) and its training seconds and settings from its metadata."""
    meta = getattr(net, "meta", {})
    history = meta.get("history", [])
    last = history[-1] if history else {}
    val = val or {"loss": last.get("val_loss", float("nan")), "acc": last.get("val_acc", float("nan"))}
    return dict(kind=kind, condition=condition, seed=seed, varied=varied,
                settings=json.dumps(meta.get("settings", {}), sort_keys=True, default=str), rounds=0,
                widths=str(list(net.widths)), params=count_parameters(net), val_loss=float(val["loss"]),
                val_acc=float(val["acc"]), test_acc=float((test or {"acc": meta.get("test_acc", float("nan"))})["acc"]),
                candidates=0, seconds=float(sum(e.get("seconds", 0.0) for e in history)), stop_reason="")


def value_text(value: Any) -> str:
    """A tried value as sweep.csv's `varied` column writes it: numbers with :g, tuples as 'a/b'."""
    if isinstance(value, tuple):
        return "/".join(value_text(v) for v in value)
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def tune(setting: str, values: list, networks: Callable[[Any], Iterable[dict]]) -> tuple[Any, pd.DataFrame]:
    """Try each value of `setting`: networks(value) yields the sweep.csv rows of the networks it trains (with
    varied left to this function). The value whose rows have the lowest mean validation loss wins (ties: the
    first listed; NaN, a diverged run, never). Returns the winner and every row, the winner's marked in `stop_reason`."""
    rows, means = [], []
    for value in values:
        tried = [{**row, "varied": f"{setting}={value_text(value)}"} for row in networks(value)]
        rows += tried
        mean = sum(r["val_loss"] for r in tried) / len(tried)
        means.append(mean if mean == mean else float("inf"))  # a diverged value (NaN) never wins
    best = values[means.index(min(means))]
    table = pd.DataFrame(rows, columns=SWEEP_COLUMNS)
    table.loc[table["varied"] == f"{setting}={value_text(best)}", "stop_reason"] = "chosen: lowest mean validation loss"
    return best, table


def replace_rows(path: str | Path, rows: pd.DataFrame, column: str, values: Iterable[str]) -> pd.DataFrame:
    """Replace the rows of a CSV table whose `column` is one of `values` with `rows`; the others stay (each
    notebook owns its rows of a shared table). Returns the whole table."""
    path, values = Path(path), set(values)
    old = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=rows.columns)
    table = pd.concat([old[~old[column].isin(values)], rows], ignore_index=True)
    write_csv(table, path)
    return table
