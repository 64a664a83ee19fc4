"""The library's settings: each field of TrainConfig and GrowConfig with its default, meaning and allowed values.

The config dataclasses take their defaults from FIELDS (one home each) and check values against it before any work
starts. The book's parameter table (planting_core.book.params) reuses these rows and adds its own.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import PlantingError


@dataclass(frozen=True)
class Param:
    """One parameter: its default, what it means, and what values are allowed (in words and as a check)."""
    name: str
    default: Any
    meaning: str
    allowed: str | Callable[[], str]  # in words, for error messages: "a positive integer"
    valid: Callable[[Any], bool]

    def allowed_text(self) -> str:
        """What values are allowed, in words."""
        return self.allowed() if callable(self.allowed) else self.allowed


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def int_in(lo: int, hi: int) -> Callable[[Any], bool]:
    return lambda v: _is_int(v) and lo <= v <= hi


def num_in(lo: float, hi: float, lo_open: bool = False) -> Callable[[Any], bool]:
    return lambda v: _is_num(v) and (lo < v if lo_open else lo <= v) and v <= hi


def one_of(*choices: Any) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, str) and v in choices


def optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def list_of(check: Callable[[Any], bool], length: int | None = None, unique: bool = False) -> Callable[[Any], bool]:
    def ok(v: Any) -> bool:
        return (isinstance(v, list) and len(v) > 0 and (length is None or len(v) == length)
                and all(check(x) for x in v) and (not unique or len(set(v)) == len(v)))
    return ok


def is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def non_empty_str(v: Any) -> bool:
    return isinstance(v, str) and v.strip() != ""


def val_size_ok(v: Any) -> bool:
    return (_is_int(v) and v >= 1) or (isinstance(v, float) and 0 < v < 1)


def registry(module: str, name: str) -> tuple[Callable[[], str], Callable[[Any], bool]]:
    """Words and check for a value that must be a key of `planting_core.<module>.<name>` (module may be dotted,
    e.g. "book.study"): looked up when used, so that a new policy is one function in one file and no table changes."""
    def keys() -> list[str]:
        return list(getattr(importlib.import_module(f"planting_core.{module}"), name))
    return (lambda: "one of " + ", ".join(keys())), (lambda v: isinstance(v, str) and v in keys())


_ROWS = [
    Param("epochs", 15, "passes over the training split", "an integer from 1 to 10000", int_in(1, 10_000)),
    Param("T", 1.0, "distillation temperature", "a number above 0 and at most 100", num_in(0, 100, lo_open=True)),
    Param("progress", True, "progress bars", "True or False", is_bool),
    Param("batch_size", 128, "images per SGD step", "an integer from 1 to 65536", int_in(1, 65536)),
    Param("lr", 0.02, "peak SGD learning rate (momentum, weight decay, warm-up, then cosine to 0)",
          "a number above 0 and at most 10", num_in(0, 10, lo_open=True)),
    Param("warmup", 1.0, "epochs of linear learning-rate warm-up (keeps plain, BN-free nets from dying early)",
          "a number from 0 to 1000", num_in(0, 1000)),
    Param("momentum", 0.9, "SGD momentum", "a number from 0 to 1 (below 1)", num_in(0, 0.999)),
    Param("weight_decay", 5e-4, "L2 on the trainable weights only (frozen weights never see it)",
          "a number from 0 to 1", num_in(0, 1)),
    Param("alpha", 0.0, "weight of cross-entropy mixed into the KD loss (0: pure KD, as on the poster)",
          "a number from 0 to 1", num_in(0, 1)),
    Param("augment", False, "random flip and crop on the device (the teacher then runs live)", "True or False",
          is_bool),
    Param("flip", True, "with augment: random horizontal flips", "True or False", is_bool),
    Param("crop_pad", 2, "with augment: zero padding of the random crop, in pixels", "an integer from 0 to 64",
          int_in(0, 64)),
    Param("eval_batch_size", 256, "images per forward pass when evaluating", "an integer from 1 to 65536",
          int_in(1, 65536)),
    Param("cache_frozen", True, "planted nets: compute the frozen part once, not every epoch", "True or False",
          is_bool),
    Param("cache_bytes", 2 ** 30, "...if it fits in this many bytes; else it is recomputed per batch",
          "a non-negative integer", int_in(0, 2 ** 62)),
    Param("cuda_graph", "auto", "training: each full batch's step (forward, backward, SGD) replayed from a CUDA "
          "graph ('auto': on CUDA, for fits long enough to repay the capture; 'on': always, off CUDA as the same static "
          "step run eagerly; 'off': plain eager steps); results equal eager steps up to float rounding",
          "one of auto, on, off", lambda v: v in ("auto", "on", "off")),
    Param("eval_each_epoch", True, "validate after every epoch (else only after the last one)", "True or False",
          is_bool),
    Param("channels", 4, "channels planted per step", "an integer from 1 to 512", int_in(1, 512)),
    Param("max_rounds", None, "planting rounds at most (None: until the stop rule says stop)",
          "an integer from 1 to 10000, or None", optional(int_in(1, 10_000))),
    Param("max_params", None, "never keep a grown network with more parameters than this (None: no limit)",
          "a positive integer, or None", optional(int_in(1, 2 ** 62))),
    Param("min_delta", 0.0, "a kept candidate must lower the selection loss by more than this",
          "a number from 0 to 100", num_in(0, 100)),
    Param("init", "zero", "outgoing weights of new channels: 'zero' (function-preserving) or 'random'",
          "'zero' or 'random'", one_of("zero", "random")),
    Param("propose", "all-layers", "which candidates a round tries: 'all-layers' (the paper) or 'round-robin'",
          *registry("proposals", "PROPOSALS")),
    Param("select", "val_loss", "how a round's winner is chosen: lowest validation CE ('val_loss'), lowest "
          "validation KD loss ('val_kd'), or largest validation-loss drop per added parameter ('drop_per_param')",
          *registry("selection", "SELECTIONS")),
    Param("stop", "no-improvement", "when growth stops: when no candidate improves ('no-improvement', the paper), "
          "or after max_rounds, keeping every round's winner ('fixed-rounds')",
          *registry("stopping", "STOP_RULES")),
    Param("finetune_old", False, "ablation: candidates train every weight, not only the planted ones",
          "True or False", is_bool),
    Param("fused", "auto", "planting: train a round's candidates together in one batched computation ('auto': on "
          "CUDA only, where it is faster; 'on'; 'off'); results equal one at a time up to float rounding",
          "one of auto, on, off", lambda v: v in ("auto", "on", "off")),
    Param("candidate_threads", None, "planting on a CPU: candidates trained at once, each on one thread (None: as "
          "many as torch's CPU threads; 1: one at a time, every thread on it); results equal one at a time up to float "
          "rounding", "an integer from 1 to 1024, or None", optional(int_in(1, 1024))),
    Param("stop_split", False, "study: the winner is chosen on one half of the validation images and kept only if "
          "it lowers the loss on the other half", "True or False", is_bool),
    Param("finetune_head", False, "study: candidates also train fc1 and fc2 (the convolutions' old weights stay "
          "frozen)", "True or False", is_bool),
]
FIELDS: dict[str, Param] = {p.name: p for p in _ROWS}


def default(name: str) -> Any:
    """A dataclass field whose default is FIELDS' (lists get a fresh copy each time)."""
    value = FIELDS[name].default
    if isinstance(value, list):
        return field(default_factory=lambda: list(value), metadata={"meaning": FIELDS[name].meaning})
    return field(default=value, metadata={"meaning": FIELDS[name].meaning})


def check_field(name: str, value: Any) -> Any:
    """Return value if FIELDS allows it for `name`, else raise a PlantingError naming it and what is allowed."""
    p = FIELDS[name]
    if not p.valid(value):
        raise PlantingError(f"parameter {name!r} must be {p.allowed_text()}, got {value!r} ({type(value).__name__})")
    return value
