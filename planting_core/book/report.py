"""Tables and numbers for the book: result rows, the poster's table, the paper's claims tested, compute time."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..checkpoint import load_checkpoint
from ..models import PlainCNN, count_parameters
from .runfolder import LEFT_OUT, RunFolder
from .tuning import replace_rows

SUMMARY_COLUMNS = ["model", "widths", "params", "loss_fn", "seed", "test_acc", "test_loss"]
METHOD_COLUMNS = ["method", "variant", "widths", "params", "seed", "test_acc", "test_loss"]


def result_row(model: str, net: PlainCNN, loss_fn: str, seed: int, test: dict | None = None) -> dict:
    """One row of a results table in the summary.csv form (test metrics from the checkpoint's metadata)."""
    meta = getattr(net, "meta", {})
    test = test or {"acc": meta["test_acc"], "loss": meta["test_loss"]}
    return dict(model=model, widths=str(list(net.widths)), params=count_parameters(net), loss_fn=loss_fn, seed=seed,
                test_acc=test["acc"], test_loss=test["loss"])


def student_means(students: pd.DataFrame) -> pd.DataFrame:
    """Fixed-width students averaged over seeds: one row per (widths, loss_fn) with params, acc and seeds."""
    return (students.groupby(["widths", "loss_fn"]).agg(params=("params", "first"), acc=("test_acc", "mean"),
                                                        seeds=("seed", "count")).reset_index())


def claims(students: pd.DataFrame, acc: float, params: float, teacher: PlainCNN) -> dict:
    """The paper's claims tested for a grown network of mean test accuracy `acc` and mean size `params`.

    Against the best fixed-width student (mean over seeds, any loss) with at most twice `params`, and against
    the teacher (within 0.5 points with at most 20% of its parameters). Gaps are in percentage points.
    """
    means = student_means(students)
    near = means[means["params"] <= 2 * params]
    teacher_params = count_parameters(teacher)
    teacher_gap = (teacher.meta["test_acc"] - acc) * 100
    out = dict(near_student="none (no student was trained that small)", near_student_acc=float("nan"),
               near_gap=float("nan"), size_target="not tested")
    if len(near):
        best = near.loc[near["acc"].idxmax()]
        out = dict(near_student=f"{best['widths']} ({best['loss_fn'].upper()}, {best['params']:,} parameters)",
                   near_student_acc=float(best["acc"]), near_gap=float((acc - best["acc"]) * 100),
                   size_target="met" if acc >= best["acc"] else "missed")
    return {**out, "teacher_gap": float(teacher_gap), "fraction": float(params / teacher_params),
            "teacher_target": "met" if teacher_gap <= 0.5 and params <= 0.2 * teacher_params else "missed"}


def compute_time(out_dir: str | Path) -> pd.DataFrame:
    """Seconds of training (and per-epoch validation) behind a run folder, per stage, from what it saved.

    Read from the checkpoints' per-epoch histories and the planting histories, so the time of a run that
    was interrupted and resumed, or of notebooks re-executed on saved results, is counted once. A network left
    out of the folder (left-out.csv) counts with its recorded seconds, unless it was retrained since.
    """
    folder = RunFolder(out_dir)
    gone = {path: seconds for path, seconds in folder.left_out().items() if not path.exists()}

    def gone_under(where: Path) -> list[float]:  # seconds of the networks left out of one folder and below
        return [seconds for path, seconds in gone.items() if where in path.parents]
    stages = {"teacher": [folder.teacher], "initial networks": folder.initials(),
              "fixed-width students": [s.path for s in folder.students()]}
    rows = []
    for stage, paths in stages.items():
        nets = [load_checkpoint(p) for p in paths if p.exists()]
        extra = gone_under(folder.root / "students") if stage == "fixed-width students" else []
        rows.append(dict(stage=stage, runs=len(nets) + len(extra),
                         seconds=sum(e["seconds"] for n in nets for e in n.meta.get("history", [])) + sum(extra)))
    for stage, name in (("planting (every candidate)", "planting"), ("ablations (every candidate)", "ablations"),
                        ("grown variants (every candidate)", "variants"),
                        ("study conditions (every candidate)", "study")):
        histories = [pd.read_csv(RunFolder.history(run)) for run in folder.planting_runs(name)]
        if histories or name == "planting":  # one row per candidate, after the initial network's row
            rows.append(dict(stage=stage, runs=sum(len(h) - 1 for h in histories),
                             seconds=float(sum(h["seconds"].sum() for h in histories))))
    made = [load_checkpoint(p) for p in sorted((folder.root / "study").glob("*/*.pt"))]  # a condition's own networks
    if made:
        rows.append(dict(stage="study teachers and initial networks", runs=len(made),
                         seconds=sum(e["seconds"] for n in made for e in n.meta.get("history", []))))
    for method in sorted(p for p in (folder.root / "methods").glob("*") if p.is_dir()):
        # every network trained (tuning included), plus the steps written beside them (pruning's scoring,
        # projection's layer-pair trials): each CSV there with a seconds column
        nets = [load_checkpoint(p) for p in sorted(method.rglob("*.pt")) if not p.name.endswith(".state.pt")]
        extra = [pd.read_csv(c) for c in sorted(method.rglob("*.csv")) if c.name != LEFT_OUT]
        left = gone_under(method)
        rows.append(dict(stage=f"{method.name} (every network tried)", runs=len(nets) + len(left),
                         seconds=sum(e["seconds"] for n in nets for e in n.meta.get("history", []))
                         + float(sum(t["seconds"].sum() for t in extra if "seconds" in t)) + sum(left)))
    table = pd.DataFrame(rows)
    table.loc[len(table)] = dict(stage="total", runs=table["runs"].sum(), seconds=table["seconds"].sum())
    table["minutes"] = (table["seconds"] / 60).round(1)
    return table


def glue(name: str, value, display: bool = False) -> None:
    """myst-nb's glue where it is installed (the book build); a no-op elsewhere (e.g. Colab)."""
    try:
        from myst_nb import glue as _glue
    except ImportError:
        return
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy/torch scalar -> float or int,
        value = value.item()  # so that {glue:text}`name:.2%` can format it
    _glue(name, value, display=display)


def mean_std_text(mean: float, std: float, scale: float = 100, digits: int = 2) -> str:
    """A mean and its std over seeds as text, e.g. '84.89 ± 0.45' (no '±' part when std is NaN: one seed)."""
    return f"{mean * scale:.{digits}f}" + ("" if pd.isna(std) else f" ± {std * scale:.{digits}f}")


def poster_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The poster's results table from summary.csv rows: one line per network and loss, mean ± std over seeds."""
    order = {"teacher": 0, "initial": 1, "student": 2, "planted": 3}
    summary = summary.copy()
    grown = summary["model"] == "planted"
    if summary.loc[grown, "widths"].nunique() > 1:  # each seed grows its own widths: one line, mean params
        summary["widths"] = summary["widths"].astype(object)
        summary.loc[grown, "widths"] = "grown (varies by seed)"
    g = summary.groupby(["model", "widths", "loss_fn"], sort=False)
    table = g.agg(params=("params", "mean"), test_loss=("test_loss", "mean"), test_loss_std=("test_loss", "std"),
                  test_acc=("test_acc", "mean"), test_acc_std=("test_acc", "std"), seeds=("seed", "count"))
    table = table.reset_index()
    table["params"] = table["params"].round().astype(int)

    table["test loss"] = [mean_std_text(m, s, 1, 4) for m, s in zip(table["test_loss"], table["test_loss_std"])]
    table["test acc (%)"] = [mean_std_text(m, s, 100, 2) for m, s in zip(table["test_acc"], table["test_acc_std"])]
    table["loss"] = table["loss_fn"].map({"ce": "CE", "kd": "KD"})
    table = table.sort_values(["model", "params", "loss"], key=lambda c: c.map(order) if c.name == "model" else c)
    return table[["model", "widths", "params", "test loss", "test acc (%)", "loss", "seeds"]].reset_index(drop=True)


def write_method_rows(path: str | Path, method: str, rows: pd.DataFrame) -> pd.DataFrame:
    """Replace `method`'s rows of methods.csv (one row per trained network and seed) with `rows`; other
    methods' rows stay. Returns the whole table."""
    return replace_rows(path, rows[METHOD_COLUMNS], "method", [method])


def comparison_points(folder: RunFolder, students: pd.DataFrame, rows: pd.DataFrame, seeds: list[int]) -> pd.DataFrame:
    """Points for plot_accuracy_vs_params: the fixed-width students, a method's networks (`rows` in
    methods.csv form, one line per variant and seed) and every seed's planting rounds found in `folder`."""
    points = [students.assign(model="student " + students["loss_fn"].str.upper(), final=False),
              rows.assign(model=rows["method"] + " " + rows["variant"], final=True)]
    for s in seeds:
        history = RunFolder.history(folder.planting(s))
        if history.exists():
            chosen = pd.read_csv(history).query("chosen")
            points.append(chosen.assign(model="planted", seed=s, final=chosen["round"] == chosen["round"].max()))
    return pd.concat(points, ignore_index=True)[["model", "params", "test_acc", "seed", "final"]]
