"""The planting search (paper steps 3-7) as a short loop: propose candidates, train them, select one, stop or not.

Each part is replaceable by name: proposals.PROPOSALS, selection.SELECTIONS, stopping.STOP_RULES.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from .speed import distributed
from .checkpoint import atomic_save, fingerprint, network_from_record, network_record, safe_load, write_csv
from .data import Data
from .device import to_device
from .distill import teacher_logits
from .errors import NonFiniteLossError, PlantingError
from .models import PlainCNN, count_parameters
from .fields import check_field, default
from .speed.fused import fit_fused, use_fused
from .speed.parallel import candidate_threads, map_concurrently
from .planting import merge
from .policies import Training, training_policy, validation_policy
from .prefix import site_prefix
from .sites import Site, check_site, survey
from .proposals import PROPOSALS, Candidate
from .selection import SELECTIONS
from .stopping import STOP_RULES
from .records import settings_record
from .train import TrainConfig, check_pair, evaluate, fit, warn_if_collapsed


if TYPE_CHECKING:  # pandas is imported only where a table is written or returned
    import pandas as pd

PLANT_EPOCHS, PLANT_LR = 10, 0.03  # a candidate's training by default (10 epochs beat 3 on validation loss, 5k images)


def planting_train_config() -> TrainConfig:
    """How a candidate's new channels are trained by default: KD, PLANT_EPOCHS epochs at PLANT_LR."""
    return TrainConfig(epochs=PLANT_EPOCHS, lr=PLANT_LR, loss="kd")


@dataclass
class GrowConfig:
    """How the network grows; `train` says how each candidate's new channels are trained."""
    channels: int = default("channels")  # channels planted per step
    init: str = default("init")  # new outgoing weights: "zero" (function-preserving) or "random"
    max_rounds: int | None = default("max_rounds")  # stop after this many rounds (None: when the stop rule says)
    max_params: int | None = default("max_params")  # never keep a network with more parameters than this
    min_delta: float = default("min_delta")  # a kept candidate must lower the selection metric by more than this
    propose: str = default("propose")  # proposals.PROPOSALS: "all-layers" (the paper) or "round-robin"
    select: str = default("select")  # selection.SELECTIONS: "val_loss", "val_kd" or "drop_per_param"
    stop: str = default("stop")  # stopping.STOP_RULES: "no-improvement" (the paper) or "fixed-rounds"
    finetune_old: bool = default("finetune_old")  # ablation: train every weight, not only the planted ones
    finetune_head: bool = default("finetune_head")  # study: fc1 and fc2 train with the planted channels (convs frozen)
    stop_split: bool = default("stop_split")  # study: one half of the validation split chooses, the other stops
    fused: str = default("fused")  # candidates trained together: "auto" (on CUDA), "on" or "off"; speed only
    candidate_threads: int | None = default("candidate_threads")  # CPU: candidates at once, one thread each; speed only
    train: TrainConfig = field(default_factory=planting_train_config)

    def check(self) -> "GrowConfig":
        """Raise a PlantingError naming the first field the parameter table does not allow."""
        for name, value in asdict(self).items():
            if name != "train":
                check_field(name, value)
        if self.finetune_old and self.finetune_head:
            raise PlantingError("finetune_old=True already trains every weight, fc1 and fc2 included; set "
                                "finetune_head=False, or finetune_old=False to train only the head with the new channels")
        if self.stop == "fixed-rounds" and self.max_rounds is None and self.max_params is None:
            raise PlantingError("stop='fixed-rounds' keeps every round's winner, so it needs max_rounds (or "
                                "max_params) to end; set one, or use stop='no-improvement'")
        self.train.check()
        return self


@dataclass
class GrowResult:
    """The grown network, the per-candidate history, and why the search stopped."""
    model: nn.Module
    history: pd.DataFrame
    stop_reason: str

    def chosen(self) -> pd.DataFrame:
        """One row per kept network: the initial one and each round's winner."""
        return self.history[self.history["chosen"]].reset_index(drop=True)


NAN = float("nan")
FAILED = {"loss": NAN, "acc": NAN, "kd": NAN}


def growth_sites(model: nn.Module, example_input: torch.Tensor) -> list[Site]:
    """Where grow() plants: a PlainCNN's five convolutions (the paper), any other network's find_sites()."""
    found = survey(model, example_input)
    if isinstance(model, PlainCNN):
        return [s for s in found.sites if s.producer.startswith("convs.")]
    if not found.sites:
        raise PlantingError(f"{type(model).__name__} has no site to plant at: "
                            + "; ".join(f"{k}: {v}" for k, v in list(found.refused.items())[:3]))
    return found.sites


def widths_of(net: nn.Module, sites: list[Site]) -> list[int]:
    """The network's widths: a PlainCNN's conv widths, else each site's producer's output channels."""
    if isinstance(net, PlainCNN):
        return list(net.widths)
    modules = dict(net.named_modules())
    return [int(modules[s.producer].weight.shape[0]) for s in sites]


def history_row(rnd: int, layer: int | None, net: nn.Module, val: dict, seconds: float, status: str,
                widths: list[int]) -> dict:
    """One row of the planting history (test columns are filled in for kept networks only); `widths` as
    widths_of() gives them."""
    row = dict(round=rnd, layer=layer, widths=str(widths), params=count_parameters(net),
               val_loss=val["loss"], val_acc=val["acc"], val_kd=val["kd"], seconds=seconds, chosen=False,
               status=status, test_loss=NAN, test_acc=NAN)
    if "stop_loss" in val:  # stop_split: the loss on the validation half that decides whether to keep growing
        row["stop_loss"] = val["stop_loss"]
    return row


def unpack(obj: dict, device: torch.device, template: nn.Module) -> nn.Module:
    """A network of the planting state file (network_record()), on `device`; a network other than a PlainCNN is
    rebuilt from `template` (the initial network), resized."""
    return to_device(network_from_record(obj, template), device)


class CandidateTrainer:
    """Trains candidates of a round, with the teacher's logits computed once for every candidate and round."""

    def __init__(self, teacher: torch.nn.Module, data: Data, cfg: GrowConfig, sites: list[Site], training: Training):
        self.data, self.cfg, self.teacher, self.sites = data, cfg, teacher, sites
        self.tcfg = replace(cfg.train, progress=False, eval_each_epoch=False)  # validated once, after training
        bs = self.tcfg.eval_batch_size
        # teacher logits once per split (unless augmentation needs the teacher live on each augmented batch)
        self.targets = None if self.tcfg.augment or self.tcfg.loss != "kd" else teacher_logits(teacher, data.train.x, bs)
        self.training = training  # which of a candidate's parameters train (policies.py)
        # net -> validation metrics (the teacher's (N_val, K) logits for the val_kd column); which metric stops
        self.validate = validation_policy(cfg, data.val, teacher_logits(teacher, data.val.x, bs))

    def row(self, rnd: int, layer: int | None, net: nn.Module, val: dict, seconds: float, status: str = "ok") -> dict:
        """history_row() with this search's widths."""
        return history_row(rnd, layer, net, val, seconds, status, widths_of(net, self.sites))

    def train(self, current: nn.Module, candidates: list[Candidate], rnd: int) -> Iterator[tuple[str, dict]]:
        """Train each candidate; yields (key, {"row": history row, "net": packed network or None}) one by one, in
        candidate order (fused: all of them after one batched training, see fused.py)."""
        built = []  # (candidate, its seed, its network) of those within max_params
        for cand in candidates:
            torch.manual_seed(seed := candidate_seed(self.tcfg.seed, rnd, cand, self.cfg.channels))
            net = cand.build(current, self.cfg.init, torch.Generator().manual_seed(seed))
            if self.cfg.max_params is not None and count_parameters(net) > self.cfg.max_params:
                yield cand.key, {"row": self.row(rnd, cand.layer, net, FAILED, 0.0, "over max_params"), "net": None}
                continue
            built.append((cand, seed, self.training.trainable(net)))
        if self.training.new_only and use_fused(self.cfg.fused, self.data.train.x.device, [net for _, _, net in built], self.tcfg):
            t0 = time.perf_counter()
            try:  # fit_fused writes into the candidates only when it has finished: a failure leaves them untouched
                finite = fit_fused([net for _, _, net in built], self.data,
                                   [replace(self.tcfg, seed=seed) for _, seed, _ in built], self.targets)
            except RuntimeError as err:
                warnings.warn(f"fused candidates failed on {self.data.train.x.device} ({str(err).splitlines()[0]}); "
                              f"training them one at a time", stacklevel=2)
            else:
                seconds = (time.perf_counter() - t0) / len(built)  # the batched training's time, shared out
                for (cand, _, net), ok in zip(built, finite):
                    yield cand.key, self._outcome(rnd, cand, net, ok, seconds)
                return
        for _, _, net in built:  # traced here, on the main thread: tracing is not safe beside concurrent training
            site_prefix(net)
        # on a CPU, several candidates at once, one thread each (parallel.py), sharing the frozen-prefix memory budget
        threads = candidate_threads(self.cfg.candidate_threads, self.data.train.x.device)
        tcfg = replace(self.tcfg, cache_bytes=self.tcfg.cache_bytes // min(threads, max(1, len(built))))

        def train_one(item: tuple[Candidate, int, PlainCNN]) -> tuple[str, dict]:
            cand, seed, net = item
            t0 = time.perf_counter()
            try:
                fit(net, self.data, replace(tcfg, seed=seed), teacher=self.teacher, targets=self.targets,
                    desc=f"round {rnd} {cand.key}", warn_collapse=False)  # grow warns about the initial network
                ok = True
            except NonFiniteLossError:  # this candidate is dropped and reported; the others go on
                ok = False
            return cand.key, self._outcome(rnd, cand, net, ok, time.perf_counter() - t0)
        yield from map_concurrently(train_one, built, threads)  # in candidate order, each as soon as it is done

    def _outcome(self, rnd: int, cand: Candidate, net: PlainCNN, trained: bool, train_seconds: float) -> dict:
        """A trained candidate's history row (validated here; its seconds: training plus validation) and packed
        network; no network if its loss diverged."""
        t0 = time.perf_counter()
        val = self.validate(net) if trained else FAILED
        status = "ok" if trained and all(math.isfinite(v) for v in val.values()) else "diverged"
        seconds = train_seconds + time.perf_counter() - t0
        row = self.row(rnd, cand.layer, net, val if status == "ok" else FAILED, seconds, status)
        return {"row": row, "net": network_record(merge(net)) if status == "ok" else None}


def candidate_seed(base: int, rnd: int, cand: Candidate, step: int) -> int:
    """A candidate's own seed (the same on resume and on every torchrun rank): from the run's seed, the round, its
    site and, for a size other than the run's `step` channels, that size (the paper's candidates keep the seeds
    they always had)."""
    return base * 1_000_003 + rnd * 101 + cand.layer + (0 if cand.channels == step else 7_919 * cand.channels)


def no_winner_reason(rows: list[dict], cfg: GrowConfig) -> str:
    """Why a round ended with no candidate to keep, and what to change."""
    diverged = sum(r["status"] == "diverged" for r in rows)
    if diverged == len(rows):
        return (f"every candidate of round {rows[0]['round']} diverged (NaN or infinite loss): lower the planting "
                f"learning rate (plant_lr, now {cfg.train.lr})")
    if diverged == 0:
        return f"no candidate fits within max_params={cfg.max_params}"
    return (f"no candidate could be trained: {diverged} diverged (lower plant_lr, now {cfg.train.lr}), "
            f"{len(rows) - diverged} over max_params={cfg.max_params}")


def grow(initial: nn.Module, teacher: torch.nn.Module, data: Data, cfg: GrowConfig | None = None,
         out_dir: str | Path | None = None, progress: bool = True, sites: list[Site] | None = None) -> GrowResult:
    """Grow `initial` by planting until the stop rule (or a round or parameter limit) ends it.

    `initial` is the paper's PlainCNN (grown at its five convolutions) or any network (grown at its sites:
    find_sites(), or `sites` named by hand). With `out_dir`, the state is written after every candidate
    (grow_state.pt) and the history as history.csv after every round; rerunning with the same arguments resumes
    and gives the same history.
    """
    cfg = (cfg or GrowConfig()).check()
    check_pair(initial, teacher)
    dev = data.train.x.device
    to_device(teacher, dev).eval()
    sites = [check_site(initial, s) for s in sites] if sites else growth_sites(merge(initial), data.train.x[:2].cpu())
    propose, selection, stop_rule = PROPOSALS[cfg.propose], SELECTIONS[cfg.select], STOP_RULES[cfg.stop]
    trainer = CandidateTrainer(teacher, data, cfg, sites, training_policy(cfg, initial))
    state = PlantingState(Path(out_dir) if out_dir else None, cfg, initial, teacher, data, trainer)
    if state.stop_reason:
        return state.result()  # the run had finished: its result as it was
    bar = tqdm(desc="planting", unit="candidate", disable=not progress)
    while True:
        if cfg.max_rounds is not None and state.round > cfg.max_rounds:
            state.stop_reason = f"reached max_rounds={cfg.max_rounds}"
            break
        pending = [c for c in propose(sites, state.round, cfg.channels) if c.key not in state.done]
        # under torchrun each process trains its share of the candidates; every process gets all the outcomes
        for key, outcome in distributed.shared_map(lambda share: trainer.train(state.current, share, state.round),
                                                   pending, key=lambda cand: cand.key):
            state.done[key] = outcome
            state.save()
            bar.update(1)
        round_rows = [d["row"] for d in state.done.values()]
        trained = [d["row"] for d in state.done.values() if d["net"] is not None]
        if not trained:
            state.rows.extend(round_rows)
            state.stop_reason = no_winner_reason(round_rows, cfg)
            break
        winner = selection.choose(trained, state.kept_row())
        stop_metric = trainer.validate.stop_metric(selection.metric)
        keep, reason = stop_rule(winner, state.kept_row(), stop_metric, cfg.min_delta)
        if not keep:
            state.rows.extend(round_rows)
            state.stop_reason = reason
            break
        state.keep(winner, next(d["net"] for d in state.done.values() if d["row"] is winner))
        state.rows.extend(round_rows)
        state.next_round()
    bar.close()
    state.finish()
    return state.result()


def state_inconsistency(state: object) -> str:
    """Why a loaded grow_state.pt cannot be the one grow() saved (rounds that skip or run ahead, a round with two
    winners, finished candidates of another round), or "" when it can be."""
    if not isinstance(state, dict) or not isinstance(state.get("rows"), list) or not state["rows"]:
        return "no history rows"
    rnd, done = state.get("round"), state.get("done")
    if type(rnd) is not int or rnd < 1 or not isinstance(done, dict):
        return f"round {rnd!r}"
    try:
        rounds = [r["round"] for r in state["rows"]]
        chosen = [r["round"] for r in state["rows"] if r["chosen"]]
        pending = {d["row"]["round"] for d in done.values()}
    except (KeyError, TypeError) as err:
        return f"a history row lacks {err}"
    # a run in progress has rows up to the round before `round`; one that stopped in a round also has its rows
    ends = (rnd - 1, rnd) if state.get("stop_reason") else (rnd - 1,)
    if not any(sorted(set(rounds)) == list(range(last + 1)) for last in ends):
        return f"history rounds {sorted(set(rounds))} with the next round {rnd}"
    if chosen != list(range(len(chosen))):
        return f"kept networks of rounds {chosen}"
    if pending - {rnd}:
        return f"finished candidates of round {sorted(pending - {rnd})} during round {rnd}"
    return ""


class PlantingState:
    """Everything a planting run has done so far, saved after every candidate so that a rerun resumes exactly."""

    def __init__(self, out_dir: Path | None, cfg: GrowConfig, initial: nn.Module, teacher: torch.nn.Module, data: Data,
                 trainer: CandidateTrainer):
        self.path = out_dir / "grow_state.pt" if out_dir else None
        self.out_dir, self.data, self.trainer = out_dir, data, trainer
        # what a saved state must match to be resumed: settings (max_rounds may change), networks, data split
        self.settings = settings_record(replace(cfg, train=trainer.tcfg))
        self.identity = {"initial": fingerprint(initial), "teacher": fingerprint(teacher), "data": data.fingerprint(),
                         "images": data.images}  # images: compared where both sides have it (older states lack it)
        self.stop_reason = ""
        self.template = merge(initial)  # what a saved network other than a PlainCNN is rebuilt from (resized)
        if self.path and self.path.exists():
            self._resume(cfg)
        else:
            self.current = to_device(merge(initial), data.train.x.device)
            self.rows = [trainer.row(0, None, self.current, trainer.validate(self.current), 0.0)]
            revive = "it may not revive it" if trainer.training.revives else "planting trains only new channels and cannot revive it"
            warn_if_collapsed(self.rows[0]["val_acc"], data.val, "the initial network", f"{revive}: train the initial "
                              f"network again (another seed, a lower learning rate or a longer warm-up)")
            self._measure_test(self.rows[0])
            self.round, self.done = 1, {}

    def _resume(self, cfg: GrowConfig) -> None:
        state = safe_load(self.path, "planting state")
        why = state_inconsistency(state)
        if why:
            raise PlantingError(f"{self.path}: not a consistent planting state ({why}); it was damaged or edited: "
                                f"delete {self.path.parent} to grow this run again")
        saved = dict(state.get("settings") or {})
        changed = sorted(k for k in set(saved) | set(self.settings)
                         if k != "max_rounds" and saved.get(k) != self.settings.get(k))
        saved_identity = state.get("identity") or {}
        changed += [k for k in self.identity if saved_identity.get(k) != self.identity[k]
                    and (k != "images" or (saved_identity.get(k) and self.identity[k]))]
        if changed:
            what = {"initial": "another initial network", "teacher": "another teacher (its weights differ)",
                    "data": "another data split", "images": "other images (another dataset or data root)"}
            named = ", ".join(what.get(k, f"{k}") for k in changed)
            raise PlantingError(f"{self.path}: this planting run was started with other settings ({named}); use "
                                f"another out_dir, or delete {self.path.parent} to start over with these")
        self.current, self.rows = unpack(state["current"], self.data.train.x.device, self.template), state["rows"]
        self.round, self.done = state["round"], state["done"]
        # max_rounds only decides when to stop, so it may change on a run in progress (e.g. to cap a long run)
        kept_rounds = max(r["round"] for r in self.rows if r["chosen"])
        if cfg.max_rounds is not None and kept_rounds > cfg.max_rounds:
            raise PlantingError(f"{self.path}: this run already kept {kept_rounds} rounds, more than "
                                f"max_rounds={cfg.max_rounds}; allowed: max_rounds >= {kept_rounds} or None")
        capped = str(state.get("stop_reason", "")).startswith("reached max_rounds")
        if state.get("stop_reason") and not (capped and saved.get("max_rounds") != cfg.max_rounds):
            self.stop_reason = state["stop_reason"]

    def _measure_test(self, row: dict) -> None:
        test = evaluate(self.current, self.data.test, self.trainer.tcfg.eval_batch_size)
        row.update(chosen=True, test_loss=test["loss"], test_acc=test["acc"])

    def kept_row(self) -> dict:
        """The history row of the network kept so far."""
        return [r for r in self.rows if r["chosen"]][-1]

    def keep(self, row: dict, packed: dict) -> None:
        """Make a round's winner the current network (its test metrics recorded for the history only)."""
        self.current = unpack(packed, self.data.train.x.device, self.template)
        self._measure_test(row)

    def next_round(self) -> None:
        self.round, self.done = self.round + 1, {}
        self.save()
        self.write_history()

    def save(self) -> None:
        if self.path:
            atomic_save({"settings": self.settings, "identity": self.identity, "current": network_record(self.current),
                         "rows": self.rows, "round": self.round, "done": self.done, "stop_reason": self.stop_reason},
                        self.path)

    def write_history(self) -> None:
        if self.out_dir:
            import pandas as pd  # the library imports pandas only when it writes or returns a table
            write_csv(pd.DataFrame(self.rows), self.out_dir / "history.csv")

    def finish(self) -> None:
        self.write_history()
        self.save()

    def result(self) -> GrowResult:
        import pandas as pd
        history = pd.DataFrame(self.rows)
        history["layer"] = history["layer"].astype("Int64")
        return GrowResult(self.current, history, self.stop_reason)
