"""The planting search (paper steps 3-7): plant in every layer, keep the best candidate, repeat."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from .checkpoint import atomic_save, safe_load
from .data import Data
from .distill import teacher_logits
from .errors import NonFiniteLossError, PlantingError
from .models import NUM_CONVS, PlainCNN, count_parameters, to_device
from .planting import INITS, merge, plant
from .train import TrainConfig, check_pair, evaluate, fit

ORDERS = ("search", "round-robin")
SELECT_BY = ("val_loss", "val_kd")


@dataclass
class GrowConfig:
    """How the network grows; `train` says how each candidate's new channels are trained."""
    channels: int = 4  # channels planted per step
    init: str = "zero"  # new outgoing weights: "zero" (function-preserving) or "random"
    max_rounds: int | None = None  # stop after this many rounds (None: until validation loss stops falling)
    max_params: int | None = None  # never keep a network with more parameters than this
    min_delta: float = 0.0  # a round must lower the validation loss by more than this
    order: str = "search"  # "search": try all five layers; "round-robin": conv1..conv5 in turn (ablation)
    finetune_old: bool = False  # ablation: train every weight, not only the planted ones
    select_by: str = "val_loss"  # "val_loss": CE on validation labels; "val_kd": KD loss to the teacher
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=3, loss="kd"))

    def check(self) -> "GrowConfig":
        """Raise a PlantingError naming the first bad field."""
        if not isinstance(self.channels, int) or isinstance(self.channels, bool) or self.channels <= 0:
            raise PlantingError(f"channels must be a positive integer, got {self.channels!r}")
        if self.init not in INITS:
            raise PlantingError(f"init must be one of {INITS}, got {self.init!r}")
        if self.select_by not in SELECT_BY:
            raise PlantingError(f"select_by must be one of {SELECT_BY}, got {self.select_by!r}")
        if self.order not in ORDERS:
            raise PlantingError(f"order must be one of {ORDERS}, got {self.order!r}")
        for name in ("max_rounds", "max_params"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise PlantingError(f"{name} must be a positive integer or None, got {v!r}")
        self.train.check()
        return self


@dataclass
class GrowResult:
    """The grown network, the per-candidate history, and why the search stopped."""
    model: PlainCNN
    history: pd.DataFrame
    stop_reason: str

    def chosen(self) -> pd.DataFrame:
        """One row per kept network: the initial one and each round's winner."""
        return self.history[self.history["chosen"]].reset_index(drop=True)


NAN = float("nan")
FAILED = {"loss": NAN, "acc": NAN, "kd": NAN}


def _row(rnd: int, layer: int | None, net: PlainCNN, val: dict, seconds: float, status: str = "ok") -> dict:
    return dict(round=rnd, layer=layer, widths=str(list(net.widths)), params=count_parameters(net),
                val_loss=val["loss"], val_acc=val["acc"], val_kd=val["kd"], seconds=seconds, chosen=False,
                status=status, test_loss=NAN, test_acc=NAN)


def _pack(net: PlainCNN) -> dict:
    return {"arch": net.arch(), "state": {k: v.detach().cpu() for k, v in net.state_dict().items()}}


def _unpack(obj: dict, device: torch.device) -> PlainCNN:
    net = PlainCNN(**obj["arch"])
    net.load_state_dict(obj["state"])
    return to_device(net, device)


def grow(initial: PlainCNN, teacher: torch.nn.Module, data: Data, cfg: GrowConfig | None = None,
         out_dir: str | Path | None = None, progress: bool = True) -> GrowResult:
    """Grow `initial` by planting until validation loss stops falling (or a round/parameter limit).

    With `out_dir`, the state is written after every candidate (grow_state.pt) and the history as
    history.csv after every round; rerunning with the same arguments resumes and gives the same history.
    """
    cfg = (cfg or GrowConfig()).check()
    check_pair(initial, teacher)
    dev = data.train.x.device
    to_device(teacher, dev).eval()
    tcfg = replace(cfg.train, progress=False, eval_each_epoch=False)  # candidates: validated once, below
    # teacher logits once per split, reused by every candidate and round (unless augmentation needs it live)
    targets = None if tcfg.augment or tcfg.loss != "kd" else teacher_logits(teacher, data.train.x, tcfg.eval_batch_size)
    val_targets = teacher_logits(teacher, data.val.x, tcfg.eval_batch_size)  # (N_val, K) for the val_kd column

    def validate(net: PlainCNN) -> dict:
        return evaluate(net, data.val, tcfg.eval_batch_size, val_targets, tcfg.T)
    key = cfg.select_by  # the history column the search minimises
    state_path = Path(out_dir) / "grow_state.pt" if out_dir else None
    settings = asdict(replace(cfg, train=tcfg))
    initial_arch, teacher_widths = initial.arch(), getattr(teacher, "widths", None)  # what a saved state must match
    current = to_device(merge(initial), dev)
    if state_path and state_path.exists():
        state = safe_load(state_path, "planting state")
        saved = dict(state.get("settings") or {})
        if {**saved, "max_rounds": None} != {**settings, "max_rounds": None} or state.get("initial") != initial_arch \
                or state.get("teacher") != teacher_widths:
            raise PlantingError(f"{state_path}: this planting run was started with other settings or another "
                                f"initial network; use another out_dir, or delete the file to start over")
        current, rows, rnd, done = _unpack(state["current"], dev), state["rows"], state["round"], state["done"]
        # max_rounds only decides when to stop, so it may change on a run in progress (e.g. to cap a long run)
        kept_rounds = max(r["round"] for r in rows if r["chosen"])
        if cfg.max_rounds is not None and kept_rounds > cfg.max_rounds:
            raise PlantingError(f"{state_path}: this run already kept {kept_rounds} rounds, more than "
                                f"max_rounds={cfg.max_rounds}; allowed: max_rounds >= {kept_rounds} or None")
        capped = str(state.get("stop_reason", "")).startswith("reached max_rounds")
        if state.get("stop_reason") and not (capped and saved.get("max_rounds") != cfg.max_rounds):
            return _result(current, rows, state["stop_reason"])  # the run had finished: its result as it was
    else:
        init_val = validate(current)
        rows = [_row(0, None, current, init_val, 0.0)]
        test = evaluate(current, data.test, tcfg.eval_batch_size)
        rows[0].update(chosen=True, test_loss=test["loss"], test_acc=test["acc"])
        rnd, done = 1, {}
    best_val = min(r[key] for r in rows if r["chosen"])
    stop_reason = ""
    bar = tqdm(desc="planting", unit="candidate", disable=not progress)

    def save_state() -> None:
        if state_path:
            atomic_save({"settings": settings, "initial": initial_arch, "teacher": teacher_widths,
                         "current": _pack(current),
                         "rows": rows, "round": rnd, "done": done, "stop_reason": stop_reason}, state_path)

    while True:
        if cfg.max_rounds is not None and rnd > cfg.max_rounds:
            stop_reason = f"reached max_rounds={cfg.max_rounds}"
            break
        layers = range(NUM_CONVS) if cfg.order == "search" else [(rnd - 1) % NUM_CONVS]
        for layer in layers:
            if layer in done:
                continue
            t0 = time.perf_counter()
            seed = tcfg.seed * 1_000_003 + rnd * 101 + layer  # each candidate seeded on its own: resumable
            torch.manual_seed(seed)
            cand = plant(current, layer, cfg.channels, cfg.init, generator=torch.Generator().manual_seed(seed))
            if cfg.max_params is not None and count_parameters(cand) > cfg.max_params:
                done[layer] = {"row": _row(rnd, layer, cand, FAILED, 0.0, "over max_params"), "net": None}
                continue
            if cfg.finetune_old:
                cand = merge(cand)
            bar.set_description(f"round {rnd} conv{layer + 1}")
            try:
                fit(cand, data, replace(tcfg, seed=seed), teacher=teacher, targets=targets,
                    desc=f"round {rnd} conv{layer + 1}")
                val, status = validate(cand), "ok"
            except NonFiniteLossError:  # this candidate is dropped and reported; the others go on
                val, status = FAILED, "diverged"
            done[layer] = {"row": _row(rnd, layer, cand, val, time.perf_counter() - t0, status),
                           "net": _pack(merge(cand)) if status == "ok" else None}
            save_state()
            bar.update(1)
        ok = [d for d in done.values() if d["net"] is not None]
        round_rows = [done[k]["row"] for k in sorted(done)]
        if not ok:
            rows.extend(round_rows)
            stop_reason = "no candidate could be trained within the limits"
            break
        best = min(ok, key=lambda d: d["row"][key])
        if not best["row"][key] < best_val - cfg.min_delta:
            rows.extend(round_rows)
            stop_reason = f"validation loss stopped falling (best candidate's {key} {best['row'][key]:.4f} " \
                          f">= {best_val:.4f} - {cfg.min_delta})"
            break
        current = _unpack(best["net"], dev)
        test = evaluate(current, data.test, tcfg.eval_batch_size)
        best["row"].update(chosen=True, test_loss=test["loss"], test_acc=test["acc"])
        rows.extend(round_rows)
        best_val = best["row"][key]
        rnd, done = rnd + 1, {}
        save_state()
        if out_dir:
            pd.DataFrame(rows).to_csv(Path(out_dir) / "history.csv", index=False)
    bar.close()
    if out_dir:
        pd.DataFrame(rows).to_csv(Path(out_dir) / "history.csv", index=False)
        save_state()
    return _result(current, rows, stop_reason)


def _result(current: PlainCNN, rows: list[dict], stop_reason: str) -> GrowResult:
    history = pd.DataFrame(rows)
    history["layer"] = history["layer"].astype("Int64")
    return GrowResult(current, history, stop_reason)
