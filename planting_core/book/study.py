"""The study "when does planting help?": its conditions, their run folders, and the verdict rule.

Each condition changes one thing in the paper's search (chapter 3's settings) to test one suspected cause of
planting's shortfall; it is grown for every seed and judged against the fixed-width students of the same run:
planting helps at a size factor f if the planted networks' mean test accuracy is at least that of the best
student (mean over seeds, CE or KD) with at most f times the planted networks' mean parameter count. Only
validation data choose inside a run; test accuracy is recorded, never used to choose.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..checkpoint import load_checkpoint
from .report import mean_std_text, student_means
from .runfolder import RunFolder
from .configs import teacher_config
from ..search import GrowResult
from ..train import TrainConfig
from .tuning import SWEEP_COLUMNS, network_row

MAX_ROUNDS = 50  # the budget of every run: at most this many planting rounds (200 channels at 4 per step)
CONDITION_COLUMNS = ["condition", "seeds", "planted_params_mean", "planted_acc_mean", "planted_acc_std",
                     "best_student_le_1x", "best_student_le_2x", "verdict_1x", "verdict_2x"]


@dataclass(frozen=True)
class Condition:
    """One study condition: what it changes in the paper's search, and which suspected cause it tests."""
    name: str
    cause: str  # the suspected cause of the shortfall it tests (the study protocol's list)
    changes: dict = field(default_factory=dict)  # grow_config changes: GrowConfig fields, or train_<field>
    widths: list[int] | None = None  # the initial network's widths (None: the run's `widths`)
    teacher: dict = field(default_factory=dict)  # changes to the teacher's parameters, e.g. {"teacher_width": 128}

    def describe(self) -> str:
        """The changes in words, e.g. 'train_epochs=30' ('none' for the paper's search)."""
        parts = ([f"{k}={v}" for k, v in self.changes.items()] + ([f"initial={self.widths}"] if self.widths else [])
                 + [f"teacher {k}={v}" for k, v in self.teacher.items()])
        return ", ".join(parts) or "none"


# cheapest first, so that a study stopped early has the most conditions finished
CONDITIONS: list[Condition] = [
    Condition("paper", "reference: the paper's search with this book's settings"),
    Condition("finetune-old", "frozen old channels", {"finetune_old": True}),
    Condition("epochs-3", "under-trained candidates", {"train_epochs": 3}),
    Condition("T1-valkd", "selection by validation CE rejects T > 1", {"select": "val_kd"}),
    Condition("drop-per-param", "selection ignores parameter cost", {"select": "drop_per_param"}),
    Condition("initial-4", "little headroom", widths=[4] * 5),
    Condition("teacher-aug", "little headroom: a teacher trained without augmentation", teacher={"augment": True}),
    Condition("teacher-128", "little headroom: a [64] teacher no better than a [128] student",
              teacher={"teacher_width": 128}),
    Condition("stop-split", "one validation split both chooses and stops", {"stop_split": True}),
    Condition("train-head", "frozen classifier: fc1 and fc2 never adapt to the new channels", {"finetune_head": True}),
    Condition("T2-valkd", "selection by validation CE rejects T > 1", {"train_T": 2.0, "select": "val_kd"}),
    Condition("T4-valkd", "selection by validation CE rejects T > 1", {"train_T": 4.0, "select": "val_kd"}),
    Condition("lr-0.01", "under-trained candidates", {"train_lr": 0.01}),
    Condition("lr-0.1", "under-trained candidates", {"train_lr": 0.1}),
    Condition("T8-valkd", "selection by validation CE rejects T > 1", {"train_T": 8.0, "select": "val_kd"}),
    Condition("epochs-30", "under-trained candidates", {"train_epochs": 30}),
]
BY_NAME = {c.name: c for c in CONDITIONS}


def study_rounds(params: dict) -> int:
    """The study's round budget: `study_rounds`, else the run's `max_rounds`, and never more than MAX_ROUNDS."""
    return min(params.get("study_rounds") or params.get("max_rounds") or MAX_ROUNDS, MAX_ROUNDS)


def reuses_chapter_runs(params: dict) -> bool:
    """Whether the study's `paper` and `finetune-old` are chapters 3 and 4's runs: only if those had the same
    round budget (a run capped at fewer rounds, e.g. full data's 10, is grown again in the study's folder)."""
    return params.get("max_rounds") in (None, study_rounds(params))


def grow_changes(cond: Condition, rounds: int = MAX_ROUNDS) -> dict:
    """The condition's changes to the search, with the study's round budget (study_rounds())."""
    return {"max_rounds": min(rounds, MAX_ROUNDS), **cond.changes}


def condition_run(folder: RunFolder, cond: Condition, seed: int, reuse: bool = True) -> Path:
    """Where a condition's planting run of one seed lives; with `reuse` (reuses_chapter_runs()), the paper's search
    and the fine-tuned variant are the runs that chapters 3 and 4 already grew with the same settings (loaded)."""
    if reuse and cond.name == "paper":
        return folder.planting(seed)
    if reuse and cond.name == "finetune-old":
        return folder.variant("finetune-old", seed)
    return folder.study(cond.name, seed)


def condition_initial(folder: RunFolder, cond: Condition, seed: int) -> Path:
    """The initial network of a condition and seed: the run's own, unless the condition changes its widths."""
    if cond.widths is None:
        return folder.initial(seed)
    return folder.study_initial(cond.name, seed)


def condition_teacher(folder: RunFolder, cond: Condition, params: dict) -> tuple[Path, list[int], TrainConfig]:
    """The teacher a condition distils from: its checkpoint, widths and training (the run's own teacher unless
    the condition changes it; then trained with those changes, in the condition's folder)."""
    p = {**params, **cond.teacher}
    path = folder.study_teacher(cond.name) if cond.teacher else folder.teacher
    return path, [p["teacher_width"]] * 5, teacher_config(p)


def sweep_row(cond: Condition, seed: int, result: GrowResult, settings: dict) -> dict:
    """One sweep.csv row: a condition's planting run of one seed (what it varied, the kept network's validation
    and test figures, its compute time). `settings` are the search's effective settings, for the record."""
    h = result.history
    kept = result.chosen().iloc[-1]
    return dict(kind="planting", condition=cond.name, seed=seed, varied=cond.describe(),
                settings=json.dumps(settings, sort_keys=True), rounds=int(kept["round"]), widths=kept["widths"],
                params=int(kept["params"]), val_loss=float(kept["val_loss"]), val_acc=float(kept["val_acc"]),
                test_acc=float(kept["test_acc"]), candidates=int((h["round"] > 0).sum()),
                seconds=float(h["seconds"].sum()), stop_reason=result.stop_reason)


def best_student_acc(means: pd.DataFrame, max_params: float) -> float:
    """The best mean test accuracy of a student with at most `max_params` parameters (NaN: none that small)."""
    fit = means[means["params"] <= max_params]
    return float(fit["acc"].max()) if len(fit) else float("nan")


def verdict(planted_acc: float, student_acc: float) -> str:
    """'helps' if the planted mean accuracy reaches the student's, 'does not help' if not ('no student' if none)."""
    if student_acc != student_acc:  # NaN: no student that small was trained
        return "no student that small"
    return "helps" if planted_acc >= student_acc else "does not help"


def conditions_table(sweep: pd.DataFrame, students: pd.DataFrame) -> pd.DataFrame:
    """conditions.csv: per condition, the planted networks' mean size and accuracy over seeds, the best students
    within 1x and 2x that size, and the verdicts (the protocol's rule)."""
    means = student_means(students)
    rows = []
    planted = sweep[sweep["kind"] == "planting"]
    for name, runs in planted.groupby("condition", sort=False):
        params, acc = runs["params"].mean(), runs["test_acc"].mean()
        le1, le2 = best_student_acc(means, params), best_student_acc(means, 2 * params)
        rows.append(dict(condition=name, seeds=len(runs), planted_params_mean=round(float(params), 1),
                         planted_acc_mean=float(acc), planted_acc_std=float(runs["test_acc"].std()),
                         best_student_le_1x=le1, best_student_le_2x=le2,
                         verdict_1x=verdict(acc, le1), verdict_2x=verdict(acc, le2)))
    return pd.DataFrame(rows, columns=CONDITION_COLUMNS)


def conditions_view(table: pd.DataFrame) -> pd.DataFrame:
    """conditions.csv for reading: one row per condition, accuracies in % (planted: mean ± std over seeds), the
    verdicts last."""
    view = pd.DataFrame({
        "seeds": table["seeds"].astype(int),
        "params (mean)": table["planted_params_mean"].round().astype(int),
        "test acc (%)": [mean_std_text(m, s) for m, s in zip(table["planted_acc_mean"], table["planted_acc_std"])],
        "best student ≤ 1x (%)": (100 * table["best_student_le_1x"]).round(2),
        "best student ≤ 2x (%)": (100 * table["best_student_le_2x"]).round(2),
        "at matched size": table["verdict_1x"],
        "at twice the size": table["verdict_2x"],
    })
    return view.set_axis(table["condition"].rename("condition"))


def student_sweep_rows(folder: RunFolder) -> pd.DataFrame:
    """The run's fixed-width students as sweep.csv rows: one per width, loss and seed, with the last epoch's
    validation figures (what a tuning choice would read) and the test accuracy."""
    rows = [network_row("student", f"student {s.loss.upper()}", s.seed, f"widths=[{s.width}]*5", load_checkpoint(s.path))
            for s in folder.students()]
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)
