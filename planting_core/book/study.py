"""The study "when does planting help?": its conditions, their run folders, and the verdict rule.

Each condition changes one thing in the paper's search (chapter 3's settings) to test one suspected cause of
planting's shortfall; it is grown for every seed and judged against the fixed-width students of the same run:
the yardstick at a size factor f is the student (CE or KD) with the best mean test accuracy among those with at most
f times the planted networks' mean parameter count, and planting helps only if the 95% Welch interval of the
difference of mean test accuracies lies above 0 (does not help: below; else inconclusive). Collapsed networks (at
most twice chance on validation) are left out of both sides. Only validation data choose inside a run; test
accuracy is recorded, never used to choose.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats

from ..checkpoint import load_checkpoint
from .report import mean_std_text
from .runfolder import RunFolder
from .configs import grow_config, student_config, teacher_config
from .experiments import growth_settings, load_or_train, plant_and_save
from ..data import Data
from ..errors import PlantingError
from ..search import GrowResult
from ..train import TrainConfig
from .tuning import SWEEP_COLUMNS, network_row

MAX_ROUNDS = 50  # the budget of every run: at most this many planting rounds (200 channels at 4 per step)
# conditions.csv: accuracies and differences as fractions (test accuracy); verdict_* by the Welch interval
# (amended rule), point_verdict_* by the first protocol's rule; matched_*: against the compute-matched students
CONDITION_COLUMNS = ["condition", "seeds", "collapsed", "planted_params_mean", "planted_acc_mean", "planted_acc_std",
                     "compute_epochs", "compute_minutes"] + [
    col for prefix in ("", "matched_") for f in ("1x", "2x") for col in (
        f"best_student_le_{f}" if not prefix else f"matched_le_{f}", f"yardstick_{prefix}{f}",
        f"yardstick_{prefix}{f}_epochs", f"diff_{prefix}{f}",
        f"diff_{prefix}{f}_lo", f"diff_{prefix}{f}_hi", f"verdict_{prefix}{f}", f"point_verdict_{prefix}{f}")]


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
# the amended protocol's extra seeds (tools/verdict_runs.py): these conditions, and the students of these widths
VERDICT_CONDITIONS = ["paper", "finetune-old", "train-head", "stop-split"]
VERDICT_WIDTHS = [8, 16, 32]


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


def grow_condition(folder: RunFolder, cond: Condition, seed: int, params: dict, data: Data,
                   teacher: torch.nn.Module) -> tuple[GrowResult, dict]:
    """Grow (or load) one condition's planting run of one seed in `folder`, from that seed's initial network;
    returns the result and its sweep.csv row."""
    initial = load_or_train(condition_initial(folder, cond, seed), cond.widths or params["widths"], data,
                            student_config(params, seed), seed=seed, desc=f"initial {cond.name} seed {seed}")
    cfg = grow_config(params, seed, **grow_changes(cond, study_rounds(params)))
    res = plant_and_save(initial, teacher, data, cfg, condition_run(folder, cond, seed, reuses_chapter_runs(params)),
                         progress=False)
    return res, sweep_row(cond, seed, res, growth_settings(cfg, initial, teacher, data))


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


def welch_interval(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """mean(a) - mean(b) with its Welch t interval (unequal variances, Welch-Satterthwaite degrees of freedom);
    NaN bounds when a side has fewer than 2 values (no spread to judge by)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(a.mean() - b.mean()) if len(a) and len(b) else float("nan")
    if min(len(a), len(b)) < 2:
        return diff, float("nan"), float("nan")
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:  # no spread on either side (e.g. identical seeds): nothing to judge the difference by
        return diff, float("nan"), float("nan")
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(stats.t.ppf(0.5 + level / 2, dof) * (va + vb) ** 0.5)
    return diff, diff - half, diff + half


def verdict(lo: float, hi: float) -> str:
    """The amended rule: 'helps' if the interval lies above 0, 'does not help' if below, else 'inconclusive'."""
    if lo > 0:
        return "helps"
    if hi < 0:
        return "does not help"
    return "inconclusive"  # the interval holds 0, or there is none (a side with one seed, or no yardstick)


def point_verdict(planted_acc: float, student_acc: float) -> str:
    """The first protocol's rule: 'helps' if the planted mean reaches the student's ('no student' if none)."""
    if student_acc != student_acc:  # NaN: no student that small was trained
        return "no student that small"
    return "helps" if planted_acc >= student_acc else "does not help"


def collapsed(rows: pd.DataFrame, classes: int = 10) -> pd.Series:
    """Networks whose validation accuracy is at most twice chance (1/classes): collapsed, e.g. every ReLU died.
    Decided on validation data only; such runs are left out of both sides of a verdict and counted."""
    return ~(rows["val_acc"] > 2.0 / classes)  # a network with no validation figure (NaN) counts as collapsed


def run_epochs(row: pd.Series, initial_epochs: int) -> int:
    """Epochs over the training split a sweep.csv row's network had in all (its initial network's included; the
    teacher's not: every KD student and planting condition shares it)."""
    settings = json.loads(row["settings"])
    if row["kind"] == "planting":
        return initial_epochs + int(row["candidates"]) * settings["train"]["epochs"]
    if row["kind"] == "matched":
        return settings["student"]["epochs"] + settings["rounds"] * settings["candidates"] * settings["rounds_training"]["epochs"]
    return int(settings["epochs"])


def yardsticks(sweep: pd.DataFrame, kind: str, classes: int = 10) -> pd.DataFrame:
    """The fixed-width networks of one kind ("student", or "matched": compute-matched) as groups: one row per
    (condition, widths) with params, mean test accuracy, the non-collapsed seeds' accuracies and epochs."""
    rows = sweep[(sweep["kind"] == kind) & ~collapsed(sweep, classes)]
    groups = []
    for (name, widths), g in rows.groupby(["condition", "widths"], sort=False):
        width = json.loads(widths)[0]  # "student CE" -> "[16] CE", "matched KD" -> "[16] matched KD"
        groups.append(dict(name=f"[{width}] {name.removeprefix('student ')}", params=int(g["params"].iloc[0]),
                           acc=float(g["test_acc"].mean()), accs=g["test_acc"].to_numpy(),
                           epochs=float(np.mean([run_epochs(r, 0) for _, r in g.iterrows()]))))  # mean: budgets vary
    return pd.DataFrame(groups, columns=["name", "params", "acc", "accs", "epochs"])


def compare(accs: np.ndarray, sticks: pd.DataFrame, max_params: float) -> dict:
    """Planted accuracies against the most accurate yardstick (mean over seeds) with at most `max_params`
    parameters: which one, its mean accuracy, the difference with its 95% Welch interval, and both verdicts."""
    fit = sticks[sticks["params"] <= max_params]
    if fit.empty or not len(accs):
        return dict(name="none that small", acc=float("nan"), epochs=float("nan"), diff=float("nan"), lo=float("nan"),
                    hi=float("nan"),
                    verdict="inconclusive", point=point_verdict(float(np.mean(accs)) if len(accs) else float("nan"),
                                                                float("nan")))
    best = fit.loc[fit["acc"].idxmax()]
    diff, lo, hi = welch_interval(accs, best["accs"])
    return dict(name=best["name"], acc=float(best["acc"]), epochs=float(best["epochs"]), diff=diff, lo=lo, hi=hi,
                verdict=verdict(lo, hi),
                point=point_verdict(float(np.mean(accs)), float(best["acc"])))


def check_unique(sweep: pd.DataFrame) -> None:
    """Refuse a sweep that holds one network twice (the same kind, condition, widths and seed): it would count
    twice and narrow every interval."""
    rows = sweep[sweep["kind"].isin(["planting", "student", "matched"])]
    keys = rows[["kind", "condition", "seed"]].assign(widths=rows["widths"].where(rows["kind"] != "planting", ""))
    twice = keys[keys.duplicated()]
    if len(twice):
        first = twice.iloc[0]
        raise PlantingError(f"sweep.csv holds {len(twice)} network(s) twice, e.g. {first['kind']} {first['condition']} "
                            f"seed {first['seed']}: remove the duplicate rows before computing verdicts")


def conditions_table(sweep: pd.DataFrame, classes: int = 10) -> pd.DataFrame:
    """conditions.csv from sweep.csv alone: per condition, the planted networks' mean size, accuracy and compute
    over its non-collapsed seeds, and against each yardstick (the best student within 1x and 2x that size, and
    the best compute-matched student within 1x and 2x) the difference with its interval and the verdicts."""
    check_unique(sweep)
    students = sweep[sweep["kind"] == "student"]
    # the initial network is trained like a student; with no student row its epochs are unknown (NaN, not 0)
    initial_epochs = run_epochs(students.iloc[0], 0) if len(students) else float("nan")
    sticks = {"": yardsticks(sweep, "student", classes), "matched_": yardsticks(sweep, "matched", classes)}
    rows = []
    planted = sweep[sweep["kind"] == "planting"]
    for name, runs in planted.groupby("condition", sort=False):
        bad = collapsed(runs, classes)
        ok = runs[~bad]
        if ok.empty:  # every seed collapsed: no planted network to judge
            rows.append(dict(condition=name, seeds=0, collapsed=int(bad.sum()), **{
                c: "every seed collapsed" for c in CONDITION_COLUMNS if c.startswith(("verdict", "point_verdict"))}))
            continue
        params, accs = float(ok["params"].mean()), ok["test_acc"].to_numpy()
        row = dict(condition=name, seeds=len(ok), collapsed=int(bad.sum()), planted_params_mean=round(params, 1),
                   planted_acc_mean=float(accs.mean()),
                   planted_acc_std=float(ok["test_acc"].std()),
                   compute_epochs=float(np.mean([run_epochs(r, initial_epochs) for _, r in ok.iterrows()])),
                   compute_minutes=float(ok["seconds"].mean() / 60))  # wall time of the search, this machine
        for prefix, table in sticks.items():
            for factor in (1, 2):
                c, tag = compare(accs, table, factor * params), f"{prefix}{factor}x"
                row.update({(f"best_student_le_{factor}x" if not prefix else f"matched_le_{factor}x"): c["acc"],
                            f"yardstick_{tag}": c["name"], f"yardstick_{tag}_epochs": c["epochs"],
                            f"diff_{tag}": c["diff"], f"diff_{tag}_lo": c["lo"],
                            f"diff_{tag}_hi": c["hi"], f"verdict_{tag}": c["verdict"],
                            f"point_verdict_{tag}": c["point"]})
        rows.append(row)
    return pd.DataFrame(rows, columns=CONDITION_COLUMNS)


def interval_text(diff: float, lo: float, hi: float) -> str:
    """A difference of accuracies (fractions) in points with its interval, e.g. '+1.37 [+0.22, +2.52]'."""
    if diff != diff:
        return ""
    if lo != lo:
        return f"{100 * diff:+.2f} (no interval)"
    return f"{100 * diff:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]"


def conditions_view(table: pd.DataFrame, matched: bool = False, factors: tuple[str, ...] = ("1x", "2x")) -> pd.DataFrame:
    """conditions.csv for reading: one row per condition, accuracy in % (mean ± std over seeds), compute, and
    per yardstick (within 1x and 2x the planted size; `matched`: the compute-matched students instead) which
    network it is, the difference in points with its 95% interval, and the verdict (the old one in brackets
    where it differs)."""
    view = {"seeds": table["seeds"].astype(int),
            "params (mean)": table["planted_params_mean"].round().astype("Int64"),  # <NA>: every seed collapsed
            "test acc (%)": [mean_std_text(m, s) for m, s in zip(table["planted_acc_mean"], table["planted_acc_std"])],
            "epochs": table["compute_epochs"].round().astype("Int64"),
            "minutes": table["compute_minutes"].round(1)}
    prefix = "matched_" if matched else ""
    for f, words in ((f, f"≤ {f}") for f in factors):  # e.g. ("2x",): one yardstick only, a narrower table
        tag = f"{prefix}{f}"
        view[f"yardstick {words}"] = [n if e != e else f"{n}, {e:.0f} epochs" for n, e in
                                      zip(table[f"yardstick_{tag}"], table[f"yardstick_{tag}_epochs"])]
        view[f"difference {words} (points, 95% CI)"] = [interval_text(*v) for v in zip(
            table[f"diff_{tag}"], table[f"diff_{tag}_lo"], table[f"diff_{tag}_hi"])]
        view[f"verdict {words}"] = [v if v == p or p == "no student that small" else f"{v} (point rule: {p})"
                                    for v, p in zip(table[f"verdict_{tag}"], table[f"point_verdict_{tag}"])]
    return pd.DataFrame(view).set_axis(table["condition"].rename("condition"))


def student_sweep_rows(folder: RunFolder) -> pd.DataFrame:
    """The run's fixed-width students as sweep.csv rows: one per width, loss and seed, with the last epoch's
    validation figures (what a tuning choice would read) and the test accuracy."""
    rows = [network_row("student", f"student {s.loss.upper()}", s.seed, f"widths=[{s.width}]*5", load_checkpoint(s.path))
            for s in folder.students()]
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)
