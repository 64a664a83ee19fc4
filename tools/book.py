"""Build the book: execute the notebooks whose outputs are missing or stale, then run Jupyter Book.

    python -m tools.book [--strict] [--force]

The executed notebooks live in results/<run>/notebooks/ and are committed; a notebook is re-executed only if its
source notebook or its parameters changed since, or a file it read or wrote did (see batch.stale_reason); with
--strict such a notebook is an error instead, so that nothing stale is published.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

from planting_core.book.configs import with_defaults
from planting_core.checkpoint import atomic_write
from planting_core.errors import PlantingError, cli
from planting_core.book.fetch import write_manifest
from planting_core.book.params import profile_params
from tools.batch import notebooks, run_batch, write_notebook

ROOT = Path(__file__).resolve().parents[1]
# the book's runs: run folder under results/ -> (dataset, profile, parameter overrides, notebooks or None for all)
BOOK_RUNS: dict[str, tuple[str, str, dict, list[str] | None]] = {
    # the study (06) shows every condition of pb.study.CONDITIONS, 3 seeds each (10 for study.VERDICT_CONDITIONS:
    # seeds 3-9 and the compute-matched students from verdict_dir, the resampled variant from resampled_dir)
    # the compared methods (07-09) tune their one setting on the first seed's validation loss (three values each);
    # projection guides [8] and [16] only (11 layer pairs x 3 guided epochs each is the costliest method here)
    # the [128] students: the first seed only (three seeds' checkpoints would add 18 MB to the repository)
    "fashion-mnist-5k": ("fashion-mnist", "full", {"subset": 5000, "seeds": [0, 1, 2], "single_seed_from": 128,
                                                   "conditions": ["paper", "finetune-old", "epochs-3", "drop-per-param",
                                                                  "lr-0.01", "lr-0.1", "initial-4", "train-head",
                                                                  "stop-split", "teacher-aug", "teacher-128", "T1-valkd",
                                                                  "T2-valkd", "T4-valkd", "T8-valkd", "epochs-30"],
                                                   "verdict_dir": "../../verdict/fashion-mnist-5k",
                                                   "tune_lr": [0.01, 0.02, 0.05], "tune_epochs": [15, 30],
                                                   "resampled_dir": "../../verdict/fashion-mnist-5k-resampled",
                                                   "sparsity": [1e-5, 1e-4, 1e-3], "ddnn_T": [1.0, 2.0, 4.0],
                                                   "hint_weight": [0.1, 1.0, 10.0], "project_widths": [8, 16]},
                         ["00", "01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11"]),
    # all 54,000 training images: 3 seeds up to [32] (1 for [64]), 3 epochs per candidate, at most 10 rounds,
    # ablations of 2 rounds; no performance appendix (it is the same machine)
    # the compared methods use the settings tuned on 5,000 images (one value each: no second tuning here)
    # the study (06) grows three conditions to their own stop (at most 50 rounds), in its own folders
    "fashion-mnist-full": ("fashion-mnist", "full", {"subset": None, "plant_epochs": 3, "max_rounds": 10,
                                                     "student_widths": [8, 16, 32, 64], "single_seed_from": 64,
                                                     "seeds": [0, 1, 2], "ablation_rounds": 2, "ddnn_T": [1.0],
                                                     "hint_weight": [1.0], "project_widths": [8, 16],
                                                     "sparsity": [1e-3], "study_rounds": 50,
                                                     "conditions": ["paper", "finetune-old", "lr-0.1"]},
                           ["01", "02", "03", "04", "06", "07", "08", "09", "10"]),
    # 1,000 training images (500 for validation, as on 5,000): chapters 1-3 and the study (paper, finetune-old,
    # train-head, stop-split), capped at the study's 50 rounds; students up to [64]
    "fashion-mnist-1k": ("fashion-mnist", "full", {"subset": 1000, "val_size": 500, "seeds": [0, 1, 2],
                                                   "student_widths": [8, 16, 32, 64], "max_rounds": 50,
                                                   "conditions": ["paper", "finetune-old", "train-head", "stop-split"],
                                                   "verdict_dir": "../../verdict/fashion-mnist-1k",
                                                   "tune_lr": [0.01, 0.02, 0.05], "tune_epochs": [15, 30],
                                                   "resampled_dir": "../../verdict/fashion-mnist-1k-resampled"},
                         ["01", "02", "03", "06"]),
}


# how each run's pages say which regime they show, after the notebook's own title
REGIME = {"fashion-mnist-5k": "5,000 images", "fashion-mnist-1k": "1,000 images",
          "fashion-mnist-full": "all training images"}


def present(run: str) -> None:
    """Ready a run's executed notebooks for the book: the regime in each title (no two pages share one), and
    the parameters cell folded (its defaults would mislead), so the injected parameters are what a reader sees.

    Only the presentation changes (first heading, cell tags); outputs and freshness stamps stay as executed.
    """
    import json
    for name in book_notebooks(run):
        path = ROOT / "results" / run / "notebooks" / name
        if not path.exists():
            continue
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            tags = cell.setdefault("metadata", {}).setdefault("tags", [])
            if "parameters" in tags and "hide-cell" not in tags:
                tags.append("hide-cell")
        for cell in nb["cells"]:
            if cell["cell_type"] == "markdown":
                text = "".join(cell["source"])
                new = linked_across_runs(text, run, name)
                if new != text:
                    cell["source"] = new.splitlines(keepends=True)
        head = nb["cells"][0]
        text = "".join(head["source"])
        title, rest = text.split("\n", 1) if "\n" in text else (text, "")
        suffix = f" ({REGIME[run]})"
        if title.startswith("# ") and not title.endswith(suffix):
            new = title + suffix + "\n" + rest
            head["source"] = new.splitlines(keepends=True) if isinstance(head["source"], list) else new
        write_notebook(path, nb)


def linked_across_runs(text: str, run: str, name: str) -> str:
    """A page's text as one run's copy of a notebook says it: exercise labels made its own where an earlier run
    shows the same notebook (ex-name -> ex-name-<run>), and links to chapters this run does not show pointed at the
    first run that does."""
    shown = {Path(n).stem for n in book_notebooks(run)}
    earlier = list(BOOK_RUNS)[:list(BOOK_RUNS).index(run)]

    def label(m: re.Match) -> str:
        name = m.group(2)
        return m.group(0) if name.endswith(f"-{run}") else f"{m.group(1)}{name}-{run}"

    def doc(m: re.Match) -> str:
        target = m.group(1)
        owner = next((r for r in BOOK_RUNS if target in {Path(n).stem for n in book_notebooks(r)}), None)
        return m.group(0) if target in shown or owner is None else f"{{doc}}`/results/{owner}/notebooks/{target}`"
    if any(name in book_notebooks(r) for r in earlier):
        text = re.sub(r"(:label: |\{solution\} |\{ref\}`)(ex-[\w-]+)", label, text)
    return re.sub(r"\{doc\}`(\d\d_\w+)`", doc, text)


def book_notebooks(run: str) -> list[str]:
    """The source notebook names that the book shows for one of its runs."""
    return [nb.name for nb in notebooks(only=BOOK_RUNS[run][3])]


def run_params(run: str) -> dict:
    """Every parameter of a book run (its profile and overrides over the table's defaults)."""
    dataset, profile, sets, _ = BOOK_RUNS[run]
    return with_defaults({**profile_params(profile, dataset), "dataset": dataset, **sets})


def execute_book_runs(force: bool = False, strict: bool = False) -> None:
    """Bring every book run's executed notebooks up to date (load-or-train: only what is missing runs), and
    write each run's checkpoint manifest (what notebooks fetch with checkpoint_url). With `strict`, a notebook
    that is not up to date (its source, parameters or a file it read or wrote changed) is an error instead."""
    for run, (dataset, profile, sets, only) in BOOK_RUNS.items():
        run_batch(dataset, profile, sets, ROOT / "results" / run, only=only, force=force, strict=strict)
        present(run)
        write_manifest(ROOT / "results" / run, run_params(run))


README = ROOT / "README.md"
RESULTS_START = "<!-- results: written by `python -m tools.book` from results/*/summary.csv; do not edit -->"
RESULTS_END = "<!-- end of results -->"


def results_markdown() -> str:
    """The README's results block: every book run's summary.csv in the poster's form (mean ± std over seeds)."""
    import pandas as pd

    from planting_core.book import poster_table
    from planting_core.book.study import conditions_view as study_view
    parts = []
    for run in BOOK_RUNS:
        path = ROOT / "results" / run / "summary.csv"
        if path.exists():
            table = poster_table(pd.read_csv(path)).to_markdown(index=False)
            parts.append(f"`results/{run}/summary.csv`:\n\n{table}")
        study = ROOT / "results" / run / "conditions.csv"
        if study.exists():  # the study "when does planting help?": which conditions meet the paper's claim
            table = pd.read_csv(study)
            shown = study_view(table).to_markdown()
            said = {(f, v): ", ".join(table.loc[table[f"verdict_{f}"] == v, "condition"]) or "none"
                    for f in ("1x", "2x") for v in ("helps", "inconclusive")}
            parts.append(f"`results/{run}/conditions.csv` (the study; accuracies in %, mean ± std over seeds; "
                         f"differences in points with their 95% Welch interval over seeds; verdicts by the study "
                         f"protocol as amended on 2026-12-02, the first rule's in brackets where it differs):\n\n"
                         f"{shown}\n\nConditions whose interval lies above the best student with at most twice the "
                         f"parameters (the paper's claim): **{said['2x', 'helps']}** (inconclusive: "
                         f"{said['2x', 'inconclusive']}); with at most as many: **{said['1x', 'helps']}** "
                         f"(inconclusive: {said['1x', 'inconclusive']}).")
        if (ROOT / "results" / run / "methods.csv").exists():  # the comparison chapter: every method at planting's size
            parts.append(methods_markdown(run))
    return "\n\n".join(parts)


def methods_markdown(run: str) -> str:
    """The README's line-up of methods for a run: each method's best network within the paper's planted size."""
    from planting_core.book import RunFolder, comparison
    table = comparison.comparison_table(comparison.comparison_rows(RunFolder(ROOT / "results" / run)))
    planted = table[(table["method"] == comparison.PLANTING) & (table["variant"] == "the paper's search")]
    budget = float(planted["params"].iloc[0])
    best = comparison.best_within(table, budget)
    best = best.assign(params=best["params"].round().astype(int), acc=(best["acc"] * 100).round(2),
                       acc_std=(best["acc_std"] * 100).round(2))
    return (f"Every method's most accurate network within the paper's planted size ({budget:,.0f} parameters; "
            f"`results/{run}/methods.csv`, accuracies in %, mean ± std over seeds):\n\n"
            f"{best.to_markdown(index=False)}")


def update_readme() -> bool:
    """Rewrite the README's results block from the summaries; True if it changed."""
    text = README.read_text()
    if RESULTS_START not in text or RESULTS_END not in text:
        raise PlantingError(f"{README} has lost its results markers ({RESULTS_START!r} ... {RESULTS_END!r})")
    head, rest = text.split(RESULTS_START, 1)
    new = f"{head}{RESULTS_START}\n{results_markdown()}\n{RESULTS_END}{rest.split(RESULTS_END, 1)[1]}"
    atomic_write(README, lambda tmp: tmp.write_text(new))
    return new != text


def build(strict: bool = False, out: Path | None = None) -> Path:
    """jupyter-book build of the repository root; returns the folder holding index.html."""
    exe = shutil.which("jupyter-book")
    if exe is None:
        raise PlantingError("jupyter-book is not installed: run `bash scripts/setup.sh` or "
                            "`pip install 'jupyter-book>=1.0.4.post1,<2'`")
    cmd = [exe, "build", str(ROOT)]
    if out:
        cmd += ["--path-output", str(out)]
    if strict:
        cmd += ["-W", "--keep-going"]
    if subprocess.run(cmd).returncode:
        raise PlantingError("jupyter-book build failed (see the messages above)")
    return (out or ROOT) / "_build" / "html"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.book", description=__doc__.splitlines()[0])
    ap.add_argument("--strict", action="store_true", help="publish only what is up to date (a stale notebook is an "
                    "error, naming why) and treat every Sphinx warning as an error (as CI does)")
    ap.add_argument("--force", action="store_true", help="re-execute every notebook")
    ap.add_argument("--no-execute", action="store_true", help="build from the committed outputs only")
    a = ap.parse_args(argv)

    def job() -> None:
        if not a.no_execute:
            execute_book_runs(a.force, a.strict)
        if update_readme():
            print(f"updated the results in {README}")
        print(f"the book is in {build(a.strict) / 'index.html'}")
    return cli(job)

if __name__ == "__main__":
    sys.exit(main())
