"""The book's table of parameters: name, default, meaning and allowed values of every setting of its notebooks.

It reuses the library's rows (planting_core.fields: the config dataclasses' own defaults) and adds the book's:
data, seeds, networks, the study and the compared methods. The command line builds its options from it, the
notebooks' `parameters` cells must agree with it (a test checks), and the batch runner and the notebooks check
values against it before any work starts.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from ..errors import PlantingError
from ..models import NUM_CONVS
from ..fields import (FIELDS, Param, int_in, is_bool, list_of, non_empty_str, num_in, optional,
                      registry, val_size_ok)


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
    Param("tune_lr", None, "baselines: learning rates tried for the students ([16] and [32] CE, first seed) against "
          "the lr used; the lowest mean validation loss is reported, every network logged (None: no tuning)",
          "None, or a non-empty list of distinct numbers from 0 to 10", optional(list_of(num_in(0, 10, True), unique=True))),
    Param("tune_epochs", None, "baselines: epochs tried with each of tune_lr (None: only `epochs`)",
          f"None, or a non-empty list of distinct integers from 1 to {MAX_EPOCHS}",
          optional(list_of(int_in(1, MAX_EPOCHS), unique=True))),
    # training (teacher, students, initial network)
    Param("teacher_epochs", 15, "epochs of the teacher", f"an integer from 1 to {MAX_EPOCHS}", int_in(1, MAX_EPOCHS)),
    Param("epochs", 15, "epochs of the fixed-width students and the initial network",
          f"an integer from 1 to {MAX_EPOCHS}", int_in(1, MAX_EPOCHS)),
    FIELDS["batch_size"],
    FIELDS["lr"],
    FIELDS["warmup"],
    FIELDS["momentum"],
    FIELDS["weight_decay"],
    Param("T", 1.0, "distillation temperature (of the KD students and of planting)",
          "a number above 0 and at most 100", num_in(0, 100, lo_open=True)),
    FIELDS["alpha"],
    FIELDS["augment"],
    FIELDS["flip"],
    FIELDS["crop_pad"],
    FIELDS["eval_batch_size"],
    FIELDS["cache_frozen"],
    FIELDS["cache_bytes"],
    FIELDS["cuda_graph"],
    FIELDS["eval_each_epoch"],
    # planting
    Param("plant_epochs", 10, "epochs per planting candidate (10 beat 3 on validation loss, 5k images)",
          f"an integer from 1 to {MAX_EPOCHS}", int_in(1, MAX_EPOCHS)),
    Param("plant_lr", 0.03, "learning rate of the planted channels", "a number above 0 and at most 10",
          num_in(0, 10, lo_open=True)),
    FIELDS["channels"],
    FIELDS["max_rounds"],
    FIELDS["max_params"],
    FIELDS["min_delta"],
    FIELDS["init"],
    FIELDS["propose"],
    FIELDS["select"],
    FIELDS["stop"],
    FIELDS["finetune_old"],
    FIELDS["fused"],
    FIELDS["candidate_threads"],
    FIELDS["stop_split"],
    FIELDS["finetune_head"],
    Param("ablation_rounds", 4, "planting rounds per ablation variant", "an integer from 1 to 10000",
          int_in(1, 10_000)),
    Param("conditions", None, "study: the conditions to grow, by name (None: every one in study.CONDITIONS)",
          *_optional_list(*registry("book.study", "BY_NAME"))),
    Param("study_rounds", None, "study: planting rounds at most per condition, at most 50 (None: max_rounds, or 50)",
          "an integer from 1 to 50, or None", optional(int_in(1, 50))),
    Param("verdict_dir", None, "study: a folder whose sweep.csv has more seeds of the named conditions and students and "
          "the compute-matched students, on this run's split and teacher (tools.verdict_runs; None: none)",
          "a folder path or None", optional(non_empty_str)),
    Param("resampled_dir", None, "study: a folder whose sweep.csv has the runs where each seed drew its own data "
          "split (tools.verdict_runs --resample; None: none)", "a folder path or None", optional(non_empty_str)),
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
