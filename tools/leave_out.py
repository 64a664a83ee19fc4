"""Leave trained networks out of the repository (large ones that are quick to retrain, or tuning's losers).

    python -m tools.leave_out results/fashion-mnist-1k/students/w64-*.pt

Each file is listed in a left-out.csv beside it with its training seconds (compute_time still counts it, and the
run's manifest no longer publishes it) and in a .gitignore there (git stops tracking it; the file stays here).
A notebook that needs a left-out network trains it again (load-or-train), and prints a line saying so.
"""
from __future__ import annotations

import argparse
import csv
import subprocess
from pathlib import Path

from planting_core.checkpoint import load_checkpoint
from planting_core.errors import PlantingError
from planting_core.book.runfolder import LEFT_OUT, read_left_out


def training_seconds(path: Path) -> float:
    """The seconds of training recorded in a checkpoint's per-epoch history."""
    return float(sum(e["seconds"] for e in load_checkpoint(path).meta.get("history", [])))


def add_rows(table: Path, rows: dict[str, float]) -> None:
    """Add (or update) file -> seconds rows of a left-out.csv."""
    known = {**read_left_out(table), **rows}
    with open(table, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["file", "seconds"])
        out.writerows(sorted(known.items()))


def add_ignored(gitignore: Path, names: list[str]) -> None:
    """Add `/name` lines to a folder's .gitignore, once each."""
    lines = gitignore.read_text().splitlines() if gitignore.exists() else []
    lines += [f"/{n}" for n in names if f"/{n}" not in lines]
    gitignore.write_text("\n".join(lines) + "\n")


def leave_out(paths: list[Path]) -> None:
    """List each checkpoint in left-out.csv and .gitignore beside it, and stop tracking it in git."""
    missing = [str(p) for p in paths if not p.is_file() or p.suffix != ".pt"]
    if missing:
        raise PlantingError(f"not a checkpoint file (.pt): {', '.join(missing)}")
    by_folder: dict[Path, dict[str, float]] = {}
    for path in paths:
        by_folder.setdefault(path.parent, {})[path.name] = training_seconds(path)
    for folder, rows in by_folder.items():
        add_rows(folder / LEFT_OUT, rows)
        add_ignored(folder / ".gitignore", sorted(rows))
        print(f"{folder}: {len(rows)} left out ({sum(rows.values()) / 60:.1f} min of training recorded)")
    subprocess.run(["git", "rm", "--cached", "--quiet", "--ignore-unmatch", *map(str, paths)], check=True)


def main(argv: list[str] | None = None) -> None:
    """Command line: the checkpoints to leave out."""
    ap = argparse.ArgumentParser(prog="python -m tools.leave_out", description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", type=Path)
    try:
        leave_out(ap.parse_args(argv).paths)
    except PlantingError as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
