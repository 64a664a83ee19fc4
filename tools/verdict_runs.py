"""More seeds for the study's verdicts (its protocol's amendment of 2026-12-02): students and named conditions grown for extra seeds, resumably.

    python -m tools.verdict_runs --regime 5k --seeds 3-9 --out results/verdict/fashion-mnist-5k
    python -m tools.verdict_runs --regime 5k --seeds 0-2 --matched --out results/verdict/fashion-mnist-5k
    python -m tools.verdict_runs --regime 5k --seeds 1-4 --resample --out results/verdict/fashion-mnist-5k-resampled

Every network lands in `--out` with the layout of a book run folder (students/, planting/seedN, variants/, study/),
trained on the same data split and teacher as the regime's book run. With --matched, the compute-matched students
(planting_core.book.matched) of widths study.VERDICT_WIDTHS, given the compute of the same seed's finetune-old
search, land in --out/matched/. With --resample, seed s also draws its own data split (training subset and
validation images), so each seed gets its own folder data-seed<s>/ with its own teacher (seed 0's split is the
book run's). Each network is load-or-train and each planting run resumes from its grow_state.pt: rerun the same
command after an interruption. Progress is one line per finished network, with its seconds.

Each mode writes its networks' rows (sweep.csv form) into --out/sweep.csv (with --resample: each data-seed<s>/
sweep.csv, so that several processes can grow different seeds at once), replacing only the rows of the same
networks (kind, condition, widths, seed): the study notebook (06) reads them from there (parameters verdict_dir and
resampled_dir), so its tables do not need these networks' checkpoints.
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import pandas as pd
import torch

import planting_core as pc
from planting_core import book as pb
from planting_core.book import matched, study
from planting_core.book.tuning import SWEEP_COLUMNS
from planting_core.checkpoint import write_csv

REGIMES = {  # each regime's parameters, as its book run's study notebook was run (results/<run>/notebooks/06_study)
    "1k": dict(run="fashion-mnist-1k", subset=1000, val_size=500, max_rounds=50),
    "5k": dict(run="fashion-mnist-5k", subset=5000),
    "full": dict(run="fashion-mnist-full", subset=None, plant_epochs=3, max_rounds=10, study_rounds=50),
}


def seed_list(text: str) -> list[int]:
    """'3-9' or '3,4,5' -> the seeds."""
    if "-" in text:
        lo, hi = (int(v) for v in text.split("-"))
        return list(range(lo, hi + 1))
    return [int(v) for v in text.split(",")]


def main() -> None:
    """Parse the command line and run one mode into --out."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--regime", choices=sorted(REGIMES), required=True)
    ap.add_argument("--seeds", type=seed_list, required=True)
    ap.add_argument("--conditions", nargs="+", default=study.VERDICT_CONDITIONS, choices=sorted(study.BY_NAME))
    ap.add_argument("--out", type=Path, required=True)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--resample", action="store_true", help="each seed draws its own data split and teacher")
    mode.add_argument("--matched", action="store_true", help="the compute-matched students of finetune-old")
    args = ap.parse_args()
    regime = dict(REGIMES[args.regime])
    book_run = Path("results") / regime.pop("run")
    params = pb.with_defaults({"dataset": "fashion-mnist", "progress": False, "device": "cpu", **regime})
    args.out.mkdir(parents=True, exist_ok=True)
    if args.matched:
        rows = matched_students(params, book_run, args.out, args.seeds)
    elif args.resample:  # one folder per data split, with everything trained on it, and its own sweep.csv
        for s in args.seeds:
            folder = pb.RunFolder(args.out / f"data-seed{s}")
            rows = seed_runs({**params, "seed": s}, None, folder, [s], args.conditions)
            merge_rows(folder.sweep_csv, rows)
        return
    else:
        rows = seed_runs(params, book_run, pb.RunFolder(args.out), args.seeds, args.conditions)
    merge_rows(args.out / "sweep.csv", rows)


def merge_rows(path: Path, rows: list[dict]) -> None:
    """Add these networks' rows to the sweep.csv at `path`, replacing only rows of the same networks (kind,
    condition, widths, seed): runs of other seeds or conditions made by earlier invocations stay."""
    new = pd.DataFrame(rows, columns=SWEEP_COLUMNS)
    old = pd.read_csv(path) if path.exists() else new.iloc[:0]
    key = ["kind", "condition", "widths", "seed"]
    table = pd.concat([old, new], ignore_index=True)
    table = table.assign(widths=table["widths"].astype(str)).drop_duplicates(key, keep="last")
    write_csv(table, path)


def seed_runs(params: dict, book_run: Path | None, folder: pb.RunFolder, seeds: list[int],
              conditions: list[str]) -> list[dict]:
    """The students and the named conditions for `seeds`, into `folder`, with the book run's teacher (a copy) or,
    with no book run, a teacher trained there on the split `params["seed"]` draws; their sweep.csv rows."""
    folder.root.mkdir(parents=True, exist_ok=True)
    if book_run is not None and not folder.teacher.exists():  # the same targets as the book run's seeds 0-2 had
        shutil.copy2(book_run / "teacher.pt", folder.teacher)
    data = pb.load_run_data(params, "cpu")
    teacher = pb.load_or_train(folder.teacher, [params["teacher_width"]] * 5, data, pb.teacher_config(params),
                               seed=params["seed"])
    t0 = time.perf_counter()
    pb.train_students(data, study.VERDICT_WIDTHS, ["ce", "kd"], seeds, pb.student_config(params, seeds[0]), teacher,
                      folder.root)
    print(f"{folder.root}: teacher and students done ({time.perf_counter() - t0:.0f} s)", flush=True)
    rows = study.student_sweep_rows(folder).to_dict("records")
    for name in conditions:
        for s in seeds:
            t0 = time.perf_counter()
            res, row = study.grow_condition(folder, study.BY_NAME[name], s, params, data, teacher)
            rows.append(row)
            print(f"{name} seed {s}: {row['params']} params, test acc {row['test_acc']:.4f}, {res.stop_reason} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return rows


def matched_students(params: dict, book_run: Path, out: Path, seeds: list[int]) -> list[dict]:
    """For each seed and width, a compute-matched student with the budget of that seed's finetune-old search
    (the book run's for seeds 0-2, else the one in `out`), into out/matched/; their sweep.csv rows."""
    data = pb.load_run_data(params, "cpu")
    teacher = pb.load_or_train(book_run / "teacher.pt", [params["teacher_width"]] * 5, data, pb.teacher_config(params))
    cond, rows = study.BY_NAME["finetune-old"], []
    for s in seeds:
        home = pb.RunFolder(book_run if s < 3 else out)
        run = study.condition_run(home, cond, s, study.reuses_chapter_runs(params))
        if not pb.RunFolder.planted(run).exists():  # an unfinished search's history would give a smaller budget
            raise SystemExit(f"error: {run} has not finished (no planted.pt): grow it first, then match its compute")
        history = pd.read_csv(run / "history.csv")
        rounds = matched.search_budget(history, pc.models.NUM_CONVS)
        for w in study.VERDICT_WIDTHS:
            t0 = time.perf_counter()
            net = matched.train_matched(out / "matched" / f"w{w}-seed{s}.pt", [w] * 5, data,
                                        pb.student_config(params, s), pb.grow_config(params, s).train, rounds,
                                        pc.models.NUM_CONVS, teacher)
            rows.append(matched.sweep_row(net, s))
            print(f"matched [{w}] seed {s}: {rounds} rounds x {pc.models.NUM_CONVS}, test acc {net.meta['test_acc']:.4f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return rows


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
