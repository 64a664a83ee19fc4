"""Load-or-train building blocks for the notebooks, the batch runner and the main job.

Every result lands in a run folder; rerunning reuses what is there (and resumes what was interrupted).
"""
from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd
import torch

from .checkpoint import load_checkpoint, save_checkpoint
from .data import Data
from .errors import PlantingError
from .models import PlainCNN, count_parameters
from .search import GrowConfig, GrowResult, grow
from .train import TrainConfig, evaluate, fit

SUMMARY_COLUMNS = ["model", "widths", "params", "loss_fn", "seed", "test_acc", "test_loss"]


def load_or_train(path: str | Path, widths: list[int], data: Data, cfg: TrainConfig, teacher: PlainCNN | None = None,
                  seed: int = 0, desc: str = "train", **meta) -> PlainCNN:
    """Load the network saved at `path`, or train it (resumably, epoch by epoch) and save it there.

    The checkpoint's metadata holds the test loss and accuracy and the per-epoch history.
    """
    path = Path(path)
    dev = data.train.x.device
    wanted = {**training_settings(cfg), "widths": list(widths), "data": data.describe(),
              "teacher": None if teacher is None else list(teacher.widths)}
    if path.exists():
        net = load_checkpoint(path, device=dev)
        saved = net.meta.get("settings", {})
        changed = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
        if changed:  # never reuse a network trained otherwise: say so instead
            diff = ", ".join(f"{k}: {saved.get(k)!r} there, {wanted.get(k)!r} now" for k in changed)
            raise PlantingError(f"{path} was trained with other settings ({diff}); use another run folder, "
                                f"or delete the file to train it again")
        return net
    torch.manual_seed(seed)
    net = PlainCNN(widths, **data.model_kwargs()).to(dev)
    state = path.with_name(path.stem + ".state.pt")
    hist = fit(net, data, cfg, teacher=teacher, checkpoint=state, desc=desc)
    test = evaluate(net, data.test, cfg.eval_batch_size)
    save_checkpoint(net, path, widths=list(widths), loss_fn=cfg.loss, seed=seed, epochs=cfg.epochs,
                    test_loss=test["loss"], test_acc=test["acc"], history=hist, settings=wanted, **meta)
    state.unlink(missing_ok=True)
    return load_checkpoint(path, device=dev)


def training_settings(cfg: TrainConfig) -> dict:
    """The TrainConfig fields that change what is learnt (not progress bars, batch sizes of evaluation, caching)."""
    skip = {"progress", "eval_batch_size", "eval_each_epoch", "cache_frozen", "cache_bytes"}
    return {k: v for k, v in asdict(cfg).items() if k not in skip}


def result_row(model: str, net: PlainCNN, loss_fn: str, seed: int, test: dict | None = None) -> dict:
    """One row of a results table in the summary.csv form (test metrics from the checkpoint's metadata)."""
    meta = getattr(net, "meta", {})
    test = test or {"acc": meta["test_acc"], "loss": meta["test_loss"]}
    return dict(model=model, widths=str(list(net.widths)), params=count_parameters(net), loss_fn=loss_fn, seed=seed,
                test_acc=test["acc"], test_loss=test["loss"])


def train_students(data: Data, student_widths: list[int], losses: list[str], seeds: list[int], cfg: TrainConfig,
                   teacher: PlainCNN | None, out_dir: str | Path, single_seed_from: int | None = None) -> pd.DataFrame:
    """Fixed-width students [w]*5 for every width, loss ("ce" or "kd") and seed; load-or-train each.

    Widths of `single_seed_from` and more are trained with the first seed only (to save time on big data).
    """
    out = Path(out_dir) / "students"
    rows = []
    for w in student_widths:
        for loss in losses:
            for seed in seeds[:1] if single_seed_from is not None and w >= single_seed_from else seeds:
                net = load_or_train(out / f"w{w}-{loss}-seed{seed}.pt", [w] * 5, data,
                                    replace(cfg, loss=loss, seed=seed),
                                    teacher if loss == "kd" else None, seed=seed, desc=f"[{w}] {loss} seed {seed}")
                rows.append(result_row("student", net, loss, seed))
    table = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    table.to_csv(Path(out_dir) / "students.csv", index=False)
    return table


def plant_and_save(initial: PlainCNN, teacher: PlainCNN, data: Data, cfg: GrowConfig, out_dir: str | Path,
                   progress: bool = True) -> GrowResult:
    """Grow `initial` in out_dir (resumable; history.csv), and save the result as out_dir/planted.pt."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = grow(initial, teacher, data, cfg, out_dir=out_dir, progress=progress)
    kept = result.chosen().iloc[-1]  # grow measured the kept network on the test split already
    meta = dict(test_loss=float(kept["test_loss"]), test_acc=float(kept["test_acc"]), stop_reason=result.stop_reason)
    path = out_dir / "planted.pt"
    if not (path.exists() and _saved_as(path, result.model.widths, meta)):  # a rerun leaves the file alone
        save_checkpoint(result.model, path, **meta)
    return result


def _saved_as(path: Path, widths: list[int], meta: dict) -> bool:
    try:
        saved = load_checkpoint(path)
    except PlantingError:
        return False
    return saved.widths == list(widths) and all(saved.meta.get(k) == v for k, v in meta.items())


def claims(students: pd.DataFrame, acc: float, params: float, teacher: PlainCNN) -> dict:
    """The paper's claims tested for a grown network of mean test accuracy `acc` and mean size `params`.

    Against the best fixed-width student (mean over seeds, any loss) with at most twice `params`, and against
    the teacher (within 0.5 points with at most 20% of its parameters). Gaps are in percentage points.
    """
    means = (students.groupby(["widths", "loss_fn"]).agg(params=("params", "first"), acc=("test_acc", "mean"))
             .reset_index())
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
    was interrupted and resumed, or of notebooks re-executed on saved results, is counted once.
    """
    out = Path(out_dir)
    stages = {"teacher": [out / "teacher.pt"], "initial networks": sorted(out.glob("initial-seed*.pt")),
              "fixed-width students": sorted((out / "students").glob("*.pt"))}
    rows = []
    for stage, paths in stages.items():
        nets = [load_checkpoint(p) for p in paths if p.exists() and not p.name.endswith(".state.pt")]
        rows.append(dict(stage=stage, runs=len(nets),
                         seconds=sum(e["seconds"] for n in nets for e in n.meta.get("history", []))))
    for stage, folder in (("planting (every candidate)", "planting"), ("ablations (every candidate)", "ablations"),
                          ("grown variants (every candidate)", "variants")):
        histories = [pd.read_csv(h) for h in sorted((out / folder).rglob("history.csv"))]
        if histories or folder == "planting":  # one row per candidate, after the initial network's row
            rows.append(dict(stage=stage, runs=sum(len(h) - 1 for h in histories),
                             seconds=float(sum(h["seconds"].sum() for h in histories))))
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

    def pm(mean: float, std: float, scale: float, digits: int) -> str:
        return f"{mean * scale:.{digits}f}" + ("" if pd.isna(std) else f" ± {std * scale:.{digits}f}")
    table["test loss"] = [pm(m, s, 1, 4) for m, s in zip(table["test_loss"], table["test_loss_std"])]
    table["test acc (%)"] = [pm(m, s, 100, 2) for m, s in zip(table["test_acc"], table["test_acc_std"])]
    table["loss"] = table["loss_fn"].map({"ce": "CE", "kd": "KD"})
    table = table.sort_values(["model", "params", "loss"], key=lambda c: c.map(order) if c.name == "model" else c)
    return table[["model", "widths", "params", "test loss", "test acc (%)", "loss", "seeds"]].reset_index(drop=True)
