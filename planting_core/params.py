"""The one table of parameters: name, type, default, meaning and allowed values of every setting.

The library's config objects (TrainConfig, GrowConfig) take their defaults from it, the command line builds its
options from it, the notebooks' `parameters` cells must agree with it (a test checks), and the batch runner and
the notebooks check values against it before any work starts.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .errors import PlantingError
from .models import NUM_CONVS


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
    """Words and check for a value that must be a key of `planting_core.<module>.<name>`: looked up when used,
    so that a new policy is one function in one file and this table needs no change."""
    def keys() -> list[str]:
        return list(getattr(importlib.import_module(f"planting_core.{module}"), name))
    return (lambda: "one of " + ", ".join(keys())), (lambda v: isinstance(v, str) and v in keys())


def _optional_list(words: Callable[[], str], valid: Callable[[Any], bool]) -> tuple[Callable[[], str],
                                                                                    Callable[[Any], bool]]:
    """Words and check for None or a list of distinct values that each pass `valid`."""
    return (lambda: f"None, or a list of distinct names, each {words()}"), optional(list_of(valid, unique=True))


MAX_SEED = 1_000_000  # candidates and epochs derive seeds from it; this keeps them within 64 bits
MAX_WIDTH = 4096
MAX_EPOCHS = 10_000

_TABLE = [
    # data
    Param("dataset", "fashion-mnist", "dataset name", *registry("data", "DATASETS")),
    Param("data_root", None, "folder with the data (None: $PLANTING_DATA or ~/.cache/planting-book/data)",
          "a folder path or None", optional(non_empty_str)),
    Param("subset", None, "training images (None: all); the validation split is drawn from the rest",
          "a positive integer (at most 10,000,000) or None for all", optional(int_in(1, 10_000_000))),
    Param("val_size", 0.1, "validation images: a count, or a fraction of the training images",
          "a positive integer count, or a fraction between 0 and 1", val_size_ok),
    Param("image_size", 32, "imagefolder only: images are resized to this many pixels a side",
          "an integer from 8 to 512", int_in(8, 512)),
    Param("skip_bad_images", False, "imagefolder only: skip unreadable image files (and print how many)",
          "True or False", is_bool),
    # seeds and networks
    Param("seed", 0, "data split, initialisation and batch order", f"an integer from 0 to {MAX_SEED}",
          int_in(0, MAX_SEED)),
    Param("seeds", [0], "students and planting are repeated for each seed",
          f"a non-empty list of distinct integers from 0 to {MAX_SEED}", list_of(int_in(0, MAX_SEED), unique=True)),
    Param("teacher_width", 64, "the teacher is [teacher_width]*5", f"an integer from 1 to {MAX_WIDTH}",
          int_in(1, MAX_WIDTH)),
    Param("widths", [8, 8, 8, 8, 8], "the initial network's conv widths",
          f"a list of {NUM_CONVS} integers from 1 to {MAX_WIDTH}", list_of(int_in(1, MAX_WIDTH), NUM_CONVS)),
    Param("student_widths", [8, 16, 32, 64, 128], "the fixed-width students [w]*5",
          f"a non-empty list of distinct integers from 1 to {MAX_WIDTH}", list_of(int_in(1, MAX_WIDTH), unique=True)),
    Param("single_seed_from", None, "student widths from this one up use only the first seed (None: every seed)",
          f"an integer from 1 to {MAX_WIDTH}, or None", optional(int_in(1, MAX_WIDTH))),
    # training (teacher, students, initial network)
    Param("teacher_epochs", 15, "epochs of the teacher", f"an integer from 1 to {MAX_EPOCHS}", int_in(1, MAX_EPOCHS)),
    Param("epochs", 15, "epochs of the fixed-width students and the initial network",
          f"an integer from 1 to {MAX_EPOCHS}", int_in(1, MAX_EPOCHS)),
    Param("batch_size", 128, "images per SGD step", "an integer from 1 to 65536", int_in(1, 65536)),
    Param("lr", 0.02, "peak SGD learning rate (momentum, weight decay, warm-up, then cosine to 0)",
          "a number above 0 and at most 10", num_in(0, 10, lo_open=True)),
    Param("warmup", 1.0, "epochs of linear learning-rate warm-up (keeps plain, BN-free nets from dying early)",
          "a number from 0 to 1000", num_in(0, 1000)),
    Param("momentum", 0.9, "SGD momentum", "a number from 0 to 1 (below 1)", num_in(0, 0.999)),
    Param("weight_decay", 5e-4, "L2 on the trainable weights only (frozen weights never see it)",
          "a number from 0 to 1", num_in(0, 1)),
    Param("T", 1.0, "distillation temperature (of the KD students and of planting)",
          "a number above 0 and at most 100", num_in(0, 100, lo_open=True)),
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
    # planting
    Param("plant_epochs", 10, "epochs per planting candidate (10 beat 3 on validation loss, 5k images)",
          f"an integer from 1 to {MAX_EPOCHS}", int_in(1, MAX_EPOCHS)),
    Param("plant_lr", 0.03, "learning rate of the planted channels", "a number above 0 and at most 10",
          num_in(0, 10, lo_open=True)),
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
    Param("ablation_rounds", 4, "planting rounds per ablation variant", "an integer from 1 to 10000",
          int_in(1, 10_000)),
    Param("conditions", None, "study: the conditions to grow, by name (None: every one in study.CONDITIONS)",
          *_optional_list(*registry("study", "BY_NAME"))),
    Param("study_rounds", None, "study: planting rounds at most per condition, at most 50 (None: max_rounds, or 50)",
          "an integer from 1 to 50, or None", optional(int_in(1, 50))),
    # compared methods
    Param("prune_from", [32, 64], "pruning: the widths [w]*5 trained with the group-sparse penalty, then pruned",
          f"a non-empty list of distinct integers from 1 to {MAX_WIDTH}", list_of(int_in(1, MAX_WIDTH), unique=True)),
    Param("sparsity", [1e-4], "pruning: strengths of the hierarchical group-sparse penalty; with several, each is "
          "tried on the first seed and the lowest mean validation loss of its pruned networks wins",
          "a non-empty list of distinct numbers from 0 to 1", list_of(num_in(0, 1), unique=True)),
    Param("prune_budgets", None, "pruning: parameter budgets to prune to (None: the sizes of the smaller "
          "fixed-width students and of each seed's planted network)",
          "None, or a non-empty list of distinct positive integers", optional(list_of(int_in(1, 10 ** 9), unique=True))),
    Param("project_widths", [8, 16, 32], "knowledge projection: the student widths [w]*5 guided by the teacher",
          f"a non-empty list of distinct integers from 1 to {MAX_WIDTH}", list_of(int_in(1, MAX_WIDTH), unique=True)),
    Param("hint_weight", [1.0], "knowledge projection: weights of the projected-feature (hint) loss; with several, "
          "each is tried on the first seed and the lowest mean validation loss of its networks wins",
          "a non-empty list of distinct numbers from 0 to 1000", list_of(num_in(0, 1000), unique=True)),
    Param("guide_epochs", 3, "knowledge projection: epochs each teacher/student layer pair is tried",
          f"an integer from 1 to {MAX_EPOCHS}", int_in(1, MAX_EPOCHS)),
    Param("ddnn_widths", [16, 32], "DDNN-EKD: the widths [w]*5 of the full-depth network",
          f"a non-empty list of distinct integers from 1 to {MAX_WIDTH}", list_of(int_in(1, MAX_WIDTH), unique=True)),
    Param("ddnn_T", [2.0], "DDNN-EKD: temperatures of the embedded distillation; with several, each is tried on "
          "the first seed and the lowest mean validation loss of its sub-networks wins",
          "a non-empty list of distinct numbers above 0 and at most 100", list_of(num_in(0, 100, lo_open=True),
                                                                                   unique=True)),
    Param("attention_weight", 1.0, "DDNN-EKD: weight of the attention-transfer loss", "a number from 0 to 1000",
          num_in(0, 1000)),
    # running
    Param("device", "auto", "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps",
          "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'",
          lambda v: isinstance(v, str) and (v in ("auto", "cpu", "cuda", "mps") or
                                            (v.startswith("cuda:") and v[5:].isdigit()))),
    Param("out_dir", "runs/notebooks", "run folder: checkpoints, tables and figures land here",
          "a non-empty folder path", non_empty_str),
    Param("checkpoint_url", None, "address of a published run folder whose checkpoints are fetched first, "
          "verified by SHA-256 (None: train everything here)", "None, or an http://, https:// or file:// address",
          optional(lambda v: isinstance(v, str) and v.startswith(("http://", "https://", "file://")))),
    Param("progress", True, "progress bars", "True or False", is_bool),
    Param("quick", False, "performance notebook: a small benchmark (under 2 minutes on 2 CPU cores)",
          "True or False", is_bool),
]
PARAMS: dict[str, Param] = {p.name: p for p in _TABLE}
DEFAULTS: dict[str, Any] = {p.name: p.default for p in _TABLE}

# Named sets of overrides for the batch runner and the lab (anything not named keeps its default).
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": dict(subset=256, val_size=64, teacher_width=8, teacher_epochs=1, widths=[4, 4, 4, 4, 4],
                  student_widths=[4, 8], epochs=1, plant_epochs=1, max_rounds=1, ablation_rounds=1,
                  progress=False, quick=True),
    "quick": dict(subset=2000, teacher_epochs=5, epochs=5, student_widths=[8, 16, 32], plant_epochs=2, max_rounds=3,
                  ablation_rounds=2, progress=False, quick=True),
    "full": dict(progress=False),
    # the poster's experiments on a GPU: its networks per dataset (PAPER_NETWORKS), the sister pruning paper's
    # training recipe (SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 128, random crop with 4-pixel
    # padding and flips), 3 seeds; the epoch counts are this book's choice (the sources do not give them)
    "paper": dict(subset=None, lr=0.01, momentum=0.9, weight_decay=5e-4, batch_size=128, augment=True, flip=True,
                  crop_pad=4, teacher_epochs=100, epochs=100, plant_epochs=10, seeds=[0, 1, 2],
                  student_widths=[8, 16, 32, 64, 128], progress=False),
}
# the poster's teacher and initial network per dataset (paper.md, "Results on the poster")
PAPER_NETWORKS: dict[str, dict[str, Any]] = {
    "cifar10": dict(teacher_width=128, widths=[8] * 5),
    "cifar100": dict(teacher_width=128, widths=[16] * 5),
    "stl10": dict(teacher_width=64, widths=[8] * 5),
}


def profile_params(profile: str, dataset: str) -> dict[str, Any]:
    """A profile's parameter overrides for a dataset (the `paper` profile also sets the poster's networks)."""
    if profile not in PROFILES:
        raise PlantingError(f"unknown profile {profile!r}; profiles: {', '.join(PROFILES)}")
    if profile != "paper":
        return dict(PROFILES[profile])
    if dataset not in PAPER_NETWORKS:
        raise PlantingError(f"profile 'paper' reproduces the poster, so it needs one of its datasets "
                            f"({', '.join(PAPER_NETWORKS)}), got {dataset!r}; use 'full' for other data")
    return {**PROFILES["paper"], **PAPER_NETWORKS[dataset]}


def default(name: str) -> Any:
    """A dataclass field whose default is the table's (lists get a fresh copy each time)."""
    value = PARAMS[name].default
    if isinstance(value, list):
        return field(default_factory=lambda: list(value), metadata={"meaning": PARAMS[name].meaning})
    return field(default=value, metadata={"meaning": PARAMS[name].meaning})


def check_value(name: str, value: Any) -> Any:
    """Return value if the table allows it for `name`, else raise a PlantingError naming it and what is allowed."""
    if name not in PARAMS:
        raise PlantingError(f"unknown parameter {name!r}; known parameters: {', '.join(PARAMS)}")
    p = PARAMS[name]
    if not p.valid(value):
        raise PlantingError(f"parameter {name!r} must be {p.allowed_text()}, got {value!r} ({type(value).__name__})")
    return value


def check_params(values: Mapping[str, Any], known_only: bool = False) -> dict[str, Any]:
    """Check every value against the table (names it does not hold are skipped unless `known_only`)."""
    for name, value in values.items():
        if name in PARAMS or known_only:
            check_value(name, value)
    return dict(values)
