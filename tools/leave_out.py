"""Leave trained networks out of the repository (large ones that are quick to retrain, or tuning's losers).

    python -m tools.leave_out results/fashion-mnist-1k/students/w64-*.pt
    python -m tools.leave_out --restore results     # bring back every left-out file whose commit is known

Each file is listed in a left-out.csv beside it with its training seconds and the commit that holds it (compute_time
still counts it, git show <commit>:<path> restores it, and the
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
from planting_core.book.runfolder import LEFT_OUT, left_out_rows


def training_seconds(path: Path) -> float:
    """The seconds of training recorded in a checkpoint's per-epoch history."""
    return float(sum(e["seconds"] for e in load_checkpoint(path).meta.get("history", [])))


def git(*args: str) -> tuple[int, str]:
    """Run git; (exit code, stdout), (1, "") when git cannot run here."""
    try:
        proc = subprocess.run(["git", *args], capture_output=True, text=True)
    except OSError:
        return 1, ""
    return (proc.returncode, proc.stdout.strip()) if proc is not None else (1, "")


def holding_commit(path: Path) -> str:
    """The commit (HEAD) whose tree holds `path` as it is now, or '' if git does not hold it there."""
    code, head = git("rev-parse", "HEAD")
    if code or git("diff", "--quiet", "HEAD", "--", str(path))[0]:
        return ""  # not a repository, or the file differs from (or is missing in) HEAD
    try:
        inside = path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:  # outside the repository
        return ""
    return head if git("cat-file", "-e", f"HEAD:{inside}")[0] == 0 else ""


def add_rows(table: Path, rows: dict[str, tuple[float, str]]) -> None:
    """Add (or update) file -> (seconds, commit holding the original) rows of a left-out.csv."""
    known = {name: (float(r["seconds"]), r["commit"]) for name, r in left_out_rows(table).items()}
    known.update(rows)
    with open(table, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["file", "seconds", "commit"])
        out.writerows([name, seconds, commit] for name, (seconds, commit) in sorted(known.items()))


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
        by_folder.setdefault(path.parent, {})[path.name] = (training_seconds(path), holding_commit(path))
    for folder, rows in by_folder.items():
        add_rows(folder / LEFT_OUT, rows)
        add_ignored(folder / ".gitignore", sorted(rows))
        print(f"{folder}: {len(rows)} left out ({sum(s for s, _ in rows.values()) / 60:.1f} min of training recorded)")
    subprocess.run(["git", "rm", "--cached", "--quiet", "--ignore-unmatch", *map(str, paths)], check=True)


def restore(roots: list[Path]) -> None:
    """Write back every left-out file under `roots` that is missing here, from the commit its left-out.csv names
    (so a notebook loads the original instead of retraining it); those without a commit are listed."""
    restored, unknown = 0, []
    for table in sorted(p for root in roots for p in root.rglob(LEFT_OUT)):
        for name, row in left_out_rows(table).items():
            path = table.parent / name
            if path.exists():
                continue
            if not row.get("commit"):
                unknown.append(str(path))
                continue
            blob = subprocess.run(["git", "show", f"{row['commit']}:{path.resolve().relative_to(Path.cwd().resolve())}"],
                                  capture_output=True, check=True).stdout
            path.write_bytes(blob)
            restored += 1
    print(f"restored {restored} left-out files" + (f"; no commit holds {', '.join(unknown)}" if unknown else ""))


def main(argv: list[str] | None = None) -> None:
    """Command line: the checkpoints to leave out, or --restore and the folders to restore them in."""
    ap = argparse.ArgumentParser(prog="python -m tools.leave_out", description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", type=Path)
    ap.add_argument("--restore", action="store_true", help="restore the left-out files under these folders")
    args = ap.parse_args(argv)
    try:
        restore(args.paths) if args.restore else leave_out(args.paths)
    except PlantingError as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
