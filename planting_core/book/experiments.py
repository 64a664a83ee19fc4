"""Load-or-train building blocks for the notebooks and the main job.

Every result lands in a run folder; rerunning reuses what is there (and resumes what was interrupted). A saved
result is reused only if it was made with the same settings, teacher and data split; otherwise the error says
what differs and what to delete.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from ..speed import distributed
from ..checkpoint import fingerprint, load_checkpoint, save_checkpoint, write_csv
from ..data import Data
from ..errors import PlantingError
from ..models import PlainCNN
from .report import SUMMARY_COLUMNS, result_row
from .runfolder import LEFT_OUT, RunFolder, left_out_rows
from ..records import settings_record, training_record, with_later_defaults
from ..search import GrowConfig, GrowResult, grow
from ..train import TrainConfig, evaluate, fit



def _refuse_if_changed(path: Path, saved: dict, wanted: dict, what: str = "trained") -> None:
    changed = sorted(k for k in wanted if saved.get(k) != wanted[k])
    if changed:  # never reuse a result made otherwise: say so instead
        diff = ", ".join(f"{k}: {saved.get(k)!r} there, {wanted[k]!r} now" for k in changed)
        raise PlantingError(f"{path} was {what} with other settings ({diff}); use another run folder, "
                            f"or delete {path} to make it again")


def _refuse_other_images(path: Path, saved: dict, data: Data) -> None:
    """A saved result made from other pixels (same names and counts, other image files) is never reused: a run
    folder of one dataset must not answer for another. Results saved before this was recorded are not checked."""
    there = saved.get("images", "")
    if there and data.images and there != data.images:
        raise PlantingError(f"{path} was made from other images than the ones loaded now (pixel digest {there} "
                            f"there, {data.images} now: another dataset or data_root with the same layout); use "
                            f"another run folder (--out) for this data, or delete {path} to make it again")


def load_or_train(path: str | Path, widths: list[int] | None, data: Data, cfg: TrainConfig,
                  teacher: PlainCNN | None = None, seed: int = 0, desc: str = "train",
                  start: Callable[[], PlainCNN] | None = None, origin: dict | None = None,
                  penalty: Callable[[torch.nn.Module], torch.Tensor] | None = None, **meta) -> PlainCNN:
    """Load the network saved at `path`, or train it (resumably, epoch by epoch) and save it there.

    It trains a fresh PlainCNN(widths), or the network `start()` builds (e.g. a pruned one; `origin` then says
    what that network depends on, and is checked like the settings), with `penalty(net)` added to the loss if
    given (its repr is recorded). The checkpoint's metadata holds the test loss and accuracy, the per-epoch
    history and the settings.
    """
    path = Path(path)
    dev = data.train.x.device
    wanted = {**training_record(cfg), "widths": None if widths is None else list(widths), "data": data.describe(),
              "teacher": None if teacher is None else fingerprint(teacher), **(origin or {}),
              **({"penalty": repr(penalty)} if penalty is not None else {})}
    if path.exists():  # a network of the user's own class is rebuilt from the one start() makes
        net = load_checkpoint(path, device=dev, template=start)  # start() only for a network of the user's class
        _refuse_other_images(path, net.meta.get("settings", {}), data)
        _refuse_if_changed(path, net.meta.get("settings", {}), wanted)
        return net
    if RunFolder.is_left_out(path) and distributed.is_main():
        commit = left_out_rows(path.parent / LEFT_OUT).get(path.name, {}).get("commit")
        origin = f"; the original is in commit {commit[:12]} of the book's repository" if commit else ""
        print(f"{path.name} was left out of the published run folder (left-out.csv{origin}): training it again here "
              "(retraining reproduces it within seed noise, not exactly: on other hardware or thread counts its "
              "accuracy differs from the one in the published tables)", flush=True)
    torch.manual_seed(seed)
    net = (start() if start is not None else PlainCNN(widths, **data.model_kwargs())).to(dev)
    state = path.with_name(path.stem + ".state.pt")
    hist = fit(net, data, cfg, teacher=teacher, checkpoint=state, desc=desc, data_parallel=True, penalty=penalty)
    test = evaluate(net, data.test, cfg.eval_batch_size)
    save_checkpoint(net, path, widths=list(getattr(net, "widths", None) or widths or []), loss_fn=cfg.loss, seed=seed, epochs=cfg.epochs,
                    test_loss=test["loss"], test_acc=test["acc"], history=hist,
                    settings={**wanted, "images": data.images}, **meta)
    distributed.barrier()  # under torchrun: rank 0 has written it; every process loads the same file
    if distributed.is_main():
        state.unlink(missing_ok=True)
    return load_checkpoint(path, device=dev, template=net)


def train_students(data: Data, student_widths: list[int], losses: list[str], seeds: list[int], cfg: TrainConfig,
                   teacher: PlainCNN | None, out_dir: str | Path, single_seed_from: int | None = None) -> pd.DataFrame:
    """Fixed-width students [w]*5 for every width, loss ("ce" or "kd") and seed; load-or-train each.

    Widths of `single_seed_from` and more are trained with the first seed only (to save time on big data).
    The table (summary.csv form) is also written as students.csv.
    """
    folder = RunFolder(out_dir)
    rows = []
    for w in student_widths:
        for loss in losses:
            for seed in seeds[:1] if single_seed_from is not None and w >= single_seed_from else seeds:
                net = load_or_train(folder.student(w, loss, seed), [w] * 5, data, replace(cfg, loss=loss, seed=seed),
                                    teacher if loss == "kd" else None, seed=seed, desc=f"[{w}] {loss} seed {seed}")
                rows.append(result_row("student", net, loss, seed))
    table = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    write_csv(table, folder.students_csv)
    return table


def growth_settings(cfg: GrowConfig, initial: PlainCNN, teacher: PlainCNN, data: Data) -> dict:
    """What a grown network depends on: the search's settings, and the initial network, teacher and split."""
    return {**{k: v for k, v in settings_record(cfg).items() if k not in ("train", "max_rounds")},
            "train": training_record(cfg.train), "initial": fingerprint(initial), "teacher": fingerprint(teacher),
            "data": data.fingerprint()}


def plant_and_save(initial: torch.nn.Module, teacher: PlainCNN, data: Data, cfg: GrowConfig, out_dir: str | Path,
                   progress: bool = True) -> GrowResult:
    """Load-or-grow: the planting run in out_dir (history.csv, planted.pt), grown (resumably) if not there yet.

    A finished run is loaded if it was made with the same settings, initial network, teacher and data split;
    max_rounds may differ if the run stopped on its own before either limit.
    """
    out_dir = Path(out_dir)
    wanted = growth_settings(cfg, initial, teacher, data)
    path, history = RunFolder.planted(out_dir), RunFolder.history(out_dir)
    if path.exists() and history.exists():
        saved = load_checkpoint(path, device=data.train.x.device, template=initial)
        _refuse_other_images(out_dir, saved.meta.get("settings", {}), data)
        # a later field is absent from runs saved at its default: compare with the default filled in on both sides
        _refuse_if_changed(out_dir, with_later_defaults(saved.meta.get("settings", {})), with_later_defaults(wanted),
                           what="grown")
        rounds = saved.meta.get("max_rounds")
        capped = str(saved.meta.get("stop_reason", "")).startswith("reached max_rounds")
        kept = int(read_history(history).query("chosen")["round"].max())
        if cfg.max_rounds is not None and kept > cfg.max_rounds:
            raise PlantingError(f"{out_dir} kept {kept} rounds, more than max_rounds={cfg.max_rounds}: it was grown "
                                f"with a larger budget; use another run folder, or delete {out_dir} to grow it again")
        if not capped or rounds == cfg.max_rounds:
            return GrowResult(saved, read_history(history), saved.meta["stop_reason"])
    out_dir.mkdir(parents=True, exist_ok=True)
    result = grow(initial, teacher, data, cfg, out_dir=out_dir, progress=progress)
    kept = result.chosen().iloc[-1]  # grow measured the kept network on the test split already
    save_checkpoint(result.model, path, test_loss=float(kept["test_loss"]), test_acc=float(kept["test_acc"]),
                    stop_reason=result.stop_reason, max_rounds=cfg.max_rounds,
                    settings={**wanted, "images": data.images})
    distributed.barrier()  # under torchrun: no process goes on before rank 0 has written the run
    return result


def read_history(path: str | Path) -> pd.DataFrame:
    """A planting history.csv as grow() returns it (layer as a nullable integer)."""
    history = pd.read_csv(path)
    history["layer"] = history["layer"].astype("Int64")
    return history
