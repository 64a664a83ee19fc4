"""The comparison chapter: every way to a small network that a run folder holds, side by side.

Rows come from what the notebooks saved (no training here): the fixed-width students and the paper's planting
(summary.csv), the fine-tuned variant (chapter 4's grown networks), and the compared methods (methods.csv).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..checkpoint import load_checkpoint
from ..errors import PlantingError
from ..models import count_parameters
from .report import METHOD_COLUMNS
from .runfolder import RunFolder

PLANTING = "planting"  # the method name of the paper's search and of its fine-tuned variant
TABLE_COLUMNS = ["method", "variant", "params", "acc", "acc_std", "seeds"]


def comparison_rows(folder: RunFolder) -> pd.DataFrame:
    """One row per trained network and seed, in methods.csv form: students (CE and KD), the paper's planting,
    the fine-tuned variant, and every compared method's networks."""
    for path, made_by in ((folder.summary_csv, "notebooks 01-03"), (folder.methods_csv, "notebooks 07-09")):
        if not Path(path).exists():
            raise PlantingError(f"{path} is missing: run {made_by} on this run folder first (e.g. python -m "
                                f"tools.batch ... --out {folder.root})")
    summary = pd.read_csv(folder.summary_csv)
    students = summary[summary["model"] == "student"]
    parts = [students.assign(method="student " + students["loss_fn"].str.upper(), variant=students["widths"]),
             summary[summary["model"] == "planted"].assign(method=PLANTING, variant="the paper's search")]
    finetuned = []
    for run in sorted((folder.root / "variants" / "finetune-old").glob("seed*")):
        if RunFolder.planted(run).exists():
            net = load_checkpoint(RunFolder.planted(run))
            finetuned.append(dict(method=PLANTING, variant="old channels fine-tuned", widths=str(list(net.widths)),
                                  params=count_parameters(net), seed=int(run.name.removeprefix("seed")),
                                  test_acc=net.meta["test_acc"], test_loss=net.meta["test_loss"]))
    parts += [pd.DataFrame(finetuned, columns=METHOD_COLUMNS), pd.read_csv(folder.methods_csv)]
    return pd.concat([p[METHOD_COLUMNS] for p in parts], ignore_index=True)


def comparison_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per method and variant, over seeds: mean parameter count, mean and std of test accuracy, and seeds."""
    table = (rows.groupby(["method", "variant"], sort=False)
             .agg(params=("params", "mean"), acc=("test_acc", "mean"), acc_std=("test_acc", "std"),
                  seeds=("seed", "count")).reset_index())
    return table[TABLE_COLUMNS]


def best_within(table: pd.DataFrame, max_params: float) -> pd.DataFrame:
    """Each method's most accurate variant (mean over seeds) with at most `max_params` parameters, best first;
    a method with nothing that small has no row."""
    small = table[table["params"] <= max_params]
    best = small.loc[small.groupby("method", sort=False)["acc"].idxmax()]
    return best.sort_values("acc", ascending=False).reset_index(drop=True)
