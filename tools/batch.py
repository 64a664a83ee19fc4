"""Batch reruns: execute the notebooks with papermill for one dataset into a run folder.

    python -m tools.batch --dataset fashion-mnist --profile quick
    python -m tools.batch --dataset imagefolder --set data_root=/data/flowers --set subset=None
    python -m tools.batch --list

A repository tool (it runs the repository's notebooks/); the installed library knows nothing of it.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from planting_core.checkpoint import atomic_write
from planting_core.data import DATASETS, check_dataset_name
from planting_core.device import pick_device
from planting_core.errors import PlantingError, cli
from planting_core.book.lock import HELD_ENV, folder_lock
from planting_core.book.runfolder import RunFolder
from planting_core.book.params import PROFILES, check_params, profile_params

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
# run only when --only names them: the performance appendix benchmarks Fashion-MNIST whatever the dataset
ON_REQUEST = ("05_performance", "06_study", "07_pruning", "08_projection", "09_depthnet", "10_comparison")


def notebooks(folder: Path = NOTEBOOK_DIR, only: list[str] | None = None) -> list[Path]:
    """The source notebooks, in reading order (only those whose names contain one of `only`, if given)."""
    found = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise PlantingError(f"no notebooks (NN_name.ipynb) found in {folder}")
    return [nb for nb in found if not only or any(o in nb.stem for o in only)]


def notebook_parameters(path: Path) -> dict:
    """Name -> default value of the notebook's `parameters` cell."""
    import papermill as pm
    return {name: ast.literal_eval(p["default"]) if p["default"] != "None" else None
            for name, p in pm.inspect_notebook(str(path)).items()}


def source_hash(path: Path, params: dict, text: str | None = None) -> str:
    """Hash of a notebook's cell sources and the parameters it is run with: outputs are stale if it changes.

    The run folder and progress-bar switch are left out, so a clone elsewhere finds committed outputs fresh.
    `text` is the notebook's content if already read.
    """
    nb = json.loads(path.read_text() if text is None else text)
    kept = {k: v for k, v in params.items() if k not in ("out_dir", "progress")}
    sources = ["".join(c["source"]) for c in nb["cells"]]  # a cell's source as one text, stored as list or string
    text = json.dumps(sources) + json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_notebook(path: Path, nb: dict) -> None:
    """Write a notebook (as JSON) the way every repository tool writes one: indent 1, UTF-8, final newline; atomically
    (an interrupted write never leaves half a notebook)."""
    text = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def executed_with(dest: Path) -> dict:
    """What run_notebook recorded in an executed copy (source_hash, parameters); {} if there is none."""
    if not dest.exists():
        return {}
    return json.loads(dest.read_text())["metadata"].get("planting_book", {})


def parse_set(items: list[str]) -> dict:
    """--set key=value pairs; values are Python literals (5000, None, [8, 16], 'cpu') or plain strings."""
    out = {}
    for item in items:
        if "=" not in item:
            raise PlantingError(f"--set needs key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key.strip()] = raw
    return out


@contextlib.contextmanager
def _stderr_to(stream) -> Iterator[None]:
    """Point this process's file descriptor 2 (inherited by the kernel) at `stream` for a while."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(stream.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


# An IPython startup file for the kernels the batch runner starts: an audit hook that logs every file the kernel
# opens under the run folder's parent (the run folder, and folders beside it such as a study's verdict runs), as
# "r <path>" (read) or "w <path>" (written, appended, or renamed into place), one line each.
RECORDER = """import os, sys, threading
def _planting_record():
    root, log = os.environ["PLANTING_RECORD_ROOT"] + os.sep, os.environ["PLANTING_RECORD_LOG"]
    local = threading.local()  # per thread: the hook's own write must not be recorded (nor recurse)
    def hook(event, args):
        if event == "os.rename":  # os.replace too: an atomic write lands its file by renaming a temporary one
            target, writes = args[1], True
        elif event == "open":
            target, mode, flags = args[0], args[1], args[2] or 0
            writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(
                flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND))
        else:
            return
        if getattr(local, "busy", False) or not isinstance(target, (str, bytes, os.PathLike)):
            return
        path = os.path.realpath(os.fsdecode(target))
        name = os.path.basename(path)
        if path.startswith(root) and name not in (".lock", ".lock.pid") and not name.endswith((".py", ".pyc")):
            local.busy = True
            try:
                with open(log, "a") as f:
                    f.write(("w " if writes else "r ") + path + "\\n")
            finally:
                local.busy = False
    sys.addaudithook(hook)
_planting_record()
"""


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes ('' if it is gone)."""
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


def recorded_files(log: Path, out: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(inputs, outputs) of one execution from its recorder log: every file it read but never wrote, and every one
    it wrote, as path relative to the run folder (../ for a folder beside it) -> SHA-256 now (at the end)."""
    read, written = set(), set()
    for line in log.read_text().splitlines() if log.exists() else []:
        kind, path = line.split(" ", 1)
        (written if kind == "w" else read).add(Path(path))
    root = out.resolve()

    def digests(paths: set[Path]) -> dict[str, str]:
        return {Path(os.path.relpath(p, root)).as_posix(): sha256_file(p) for p in sorted(paths)
                if p.is_file() and not RunFolder.is_resume_state(p)}
    return digests(read - written), digests(written)



def stale_reason(src: Path, dest: Path, params: dict) -> str:
    """Why the executed copy `dest` no longer shows what `src` would show with `params` ('' if it still does): its
    source or parameters changed, a run-folder file it read changed, or a file it wrote was changed since."""
    stamp = executed_with(dest)
    if stamp.get("source_hash") != source_hash(src, params):
        return "its source notebook or parameters changed" if dest.exists() else "it has not run yet"
    out = dest.parent.parent  # executed copies live in <run folder>/notebooks/
    for kind, files in (("read", stamp.get("inputs", {})), ("wrote", stamp.get("outputs", {}))):
        changed = [rel for rel, digest in files.items() if sha256_file(out / rel) != digest
                   and not (not (out / rel).exists() and RunFolder.is_left_out(out / rel))  # left out: no change
                   and (kind == "read" or not rewritten_later(dest, rel))]  # a later notebook's output now
        if changed:
            return f"{out / changed[0]}, which it {kind}, changed since it ran"
    return ""


def rewritten_later(dest: Path, rel: str) -> bool:
    """Whether another executed notebook beside `dest`, run after it, wrote `rel` too (then it owns that file)."""
    def ran(path: Path) -> str:
        return json.loads(path.read_text())["metadata"].get("papermill", {}).get("end_time") or ""
    mine = ran(dest)
    return any(rel in executed_with(other).get("outputs", {}) and ran(other) > mine
               for other in dest.parent.glob("*.ipynb") if other != dest and not other.name.endswith(".partial.ipynb"))


def run_notebook(src: Path, dest: Path, params: dict, cwd: Path) -> float:
    """Execute one notebook with papermill into `dest`; returns seconds taken.

    A failed run never replaces `dest`: it is written beside it as NN_name.failed.ipynb (and the error names it).
    The executed copy records its source hash and parameters, and the run-folder files its kernel read and wrote
    with their SHA-256 (what stale_reason compares).
    """
    import papermill as pm
    t0 = time.perf_counter()
    dest.parent.mkdir(parents=True, exist_ok=True)
    text = src.read_text()  # one snapshot: an edit during the run cannot make these outputs look fresh
    stamp = {"source_hash": source_hash(src, params, text), "parameters": params}
    partial, failed = dest.with_suffix(".partial.ipynb"), failed_copy(dest)
    out = dest.parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        startup = Path(tmp) / "ipython" / "profile_default" / "startup"
        startup.mkdir(parents=True)
        (startup / "00-planting-record.py").write_text(RECORDER)
        log_path = Path(tmp) / "files.log"
        env = {"IPYTHONDIR": str(Path(tmp) / "ipython"), "PLANTING_RECORD_ROOT": str(out.resolve().parent),
               "PLANTING_RECORD_LOG": str(log_path)}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)  # the kernel papermill starts inherits this environment
        try:
            with open(dest.with_suffix(".log"), "w") as log, _stderr_to(log):
                snapshot = Path(tmp) / src.name
                snapshot.write_text(text)
                pm.execute_notebook(str(snapshot), str(partial), parameters=params, kernel_name="python3",
                                    progress_bar=False, cwd=str(cwd), log_output=False)  # kernel chatter: the log
        except BaseException:
            if partial.exists():
                os.replace(partial, failed)
            raise
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        stamp["inputs"], stamp["outputs"] = recorded_files(log_path, out)
    nb = json.loads(partial.read_text())
    nb["metadata"]["papermill"]["input_path"] = f"{src.parent.name}/{src.name}"
    nb["metadata"]["planting_book"] = stamp
    write_notebook(partial, nb)
    os.replace(partial, dest)
    failed.unlink(missing_ok=True)  # an earlier failure of this notebook is superseded
    return time.perf_counter() - t0


def failed_copy(dest: Path) -> Path:
    """Where a failed execution of `dest` is kept: NN_name.failed.ipynb beside it."""
    return dest.with_name(dest.stem + ".failed.ipynb")


def plan_batch(dataset: str, profile: str, sets: dict, out: Path, only: list[str] | None,
               folder: Path = NOTEBOOK_DIR) -> list[tuple[Path, Path, dict]]:
    """(source, executed copy, parameters) for every notebook to run, every parameter checked before any work."""
    name = check_dataset_name(dataset)
    overrides = profile_params(profile, name)  # an unknown profile, or paper on another dataset, ends here
    chosen = [nb for nb in notebooks(folder, only) if only or nb.stem not in ON_REQUEST]
    if not chosen:
        names = ", ".join(nb.stem for nb in notebooks(folder))
        raise PlantingError(f"no notebook matches --only {' '.join(only or [])}; notebooks: {names}")
    todo = {nb: notebook_parameters(nb) for nb in chosen}
    known = set().union(*todo.values())
    if "out_dir" in sets:
        raise PlantingError("out_dir cannot be set: the batch runner sets it to the run folder; use --out")
    if "dataset" in sets and check_dataset_name(sets["dataset"]) != name:
        raise PlantingError(f"--set dataset={sets['dataset']} contradicts --dataset {dataset}: the run folder is "
                            f"named after --dataset; give the dataset once, with --dataset")
    sources = Path(folder).resolve()
    if sources in (Path(out).resolve(), (Path(out) / "notebooks").resolve()):
        raise PlantingError(f"--out {out} would write the executed notebooks over (or into) the source notebooks "
                            f"in {sources}; give a run folder elsewhere (default runs/<dataset>-<profile>)")
    unknown = sorted(set(sets) - known)
    if unknown:
        raise PlantingError(f"unknown parameter(s) {unknown}; the notebooks take: {', '.join(sorted(known))}")
    if "device" in sets:
        pick_device(sets["device"])  # e.g. mps on a machine without it, before notebook 01 trains anything
    plan = []
    for nb, accepted in todo.items():
        params = {k: v for k, v in {**overrides, "dataset": name, **sets}.items() if k in accepted}
        dest = out / "notebooks" / nb.name
        if "out_dir" in accepted:  # the kernel runs beside the executed copy: ".." is the run folder
            params["out_dir"] = os.path.relpath(out, dest.parent)
        check_params(params)
        plan.append((nb, dest, params))
    return plan


def default_out(dataset: str, profile: str) -> Path:
    """A batch's run folder when --out is not given: runs/<dataset>-<profile>."""
    return Path("runs") / f"{check_dataset_name(dataset)}-{profile}"


def run_batch(dataset: str, profile: str = "quick", sets: dict | None = None, out: Path | None = None,
              only: list[str] | None = None, folder: Path = NOTEBOOK_DIR, force: bool = False,
              strict: bool = False) -> Path:
    """Run every notebook (or those whose names contain one of `only`) for `dataset` into a run folder (with
    `strict`, check that every executed copy is up to date instead, and run nothing)."""
    out = (out or default_out(dataset, profile)).resolve()
    plan = plan_batch(dataset, profile, sets or {}, out, only, folder)
    print(f"run folder: {out}", flush=True)
    with folder_lock(out):  # one writer per run folder: a second batch on it ends at once, naming this one's pid
        os.environ[HELD_ENV] = str(out)  # the notebooks' kernels (started from here) find their folder held
        try:
            run_plan(plan, force, strict)
        finally:
            os.environ.pop(HELD_ENV, None)
    return out


def run_plan(plan: list[tuple[Path, Path, dict]], force: bool, strict: bool = False) -> None:
    """Execute the planned notebooks in order, keeping those whose executed copies are up to date; with `strict`,
    a copy that is not up to date is an error naming why (and `force` is not allowed)."""
    if strict and force:
        raise PlantingError("--strict publishes only what is already up to date; it cannot be combined with --force")
    for i, (nb, dest, params) in enumerate(plan, 1):
        why = stale_reason(nb, dest, params)
        if strict and why:
            raise PlantingError(f"{dest} is stale: {why}; run `python -m tools.book` to re-execute it "
                                f"(--strict publishes only what is up to date)")
        if not force and not why:
            print(f"[{i}/{len(plan)}] {nb.stem}: up to date, kept", flush=True)
            continue
        if dest.exists():
            print(f"[{i}/{len(plan)}] {nb.stem}: stale ({why})", flush=True)
        print(f"[{i}/{len(plan)}] {nb.stem} ...", end=" ", flush=True)
        try:
            seconds = run_notebook(nb, dest, params, dest.parent)
        except Exception as err:  # papermill's error names the failing cell; the partial notebook is kept
            print("FAILED", flush=True)
            kept = f"; {dest} is left as it was" if dest.exists() else ""
            raise PlantingError(f"{nb.name} failed: {getattr(err, 'ename', type(err).__name__)}: "
                                f"{getattr(err, 'evalue', str(err)).strip()[:500]} (the executed notebook, up to "
                                f"the failing cell, is {failed_copy(dest)}{kept})") from None
        print(f"ok ({seconds:.0f} s)", flush=True)
        record_time(dest, seconds, params.get("device", "auto"))


def machine(device: str) -> str:
    """The hardware a notebook ran on, in words: the GPU's name, or the CPU's core count."""
    import torch
    dev = pick_device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"{dev.type.upper()} ({os.cpu_count()} cores)" if dev.type == "cpu" else dev.type.upper()


def record_time(dest: Path, seconds: float, device: str) -> Path:
    """Add (or replace) a notebook's wall time in timings.csv beside the executed notebooks."""
    import pandas as pd

    from planting_core.checkpoint import write_csv
    path = dest.parent / "timings.csv"
    rows = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=["notebook", "seconds", "machine"])
    rows = rows[rows["notebook"] != dest.stem]
    row = pd.DataFrame([{"notebook": dest.stem, "seconds": round(seconds, 1), "machine": machine(device)}])
    return write_csv(pd.concat([rows, row]).sort_values("notebook"), path)


def list_everything(folder: Path = NOTEBOOK_DIR) -> None:
    """Print the datasets, the profiles and each notebook's parameters with their defaults."""
    print("datasets:", ", ".join(DATASETS))
    print("profiles:", "; ".join(f"{k}: {v}" for k, v in PROFILES.items()))
    for nb in notebooks(folder):
        print(f"\n{nb.name}")
        for key, value in notebook_parameters(nb).items():
            print(f"  {key} = {value!r}")


def gpu_env(slot: int) -> dict[str, str]:
    """The environment of the `slot`-th concurrent job: its own GPU where there are several."""
    import torch
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if torch.cuda.device_count() > 1 and "CUDA_VISIBLE_DEVICES" not in env:
        env["CUDA_VISIBLE_DEVICES"] = str(slot % torch.cuda.device_count())
    return env


def run_many(datasets: list[str], argv: list[str], jobs: int) -> None:
    """One batch per dataset, `jobs` at a time, each in its own process (and run folder); every line of their
    output is prefixed with the dataset. Raises if any failed, after all have ended."""
    import subprocess
    import threading
    from concurrent.futures import ThreadPoolExecutor
    lock = threading.Lock()

    def one(name: str, slot: int) -> int:
        proc = subprocess.Popen([sys.executable, "-m", "tools.batch", "--dataset", name, *argv], env=gpu_env(slot),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            with lock:
                print(f"[{name}] {line}", end="", flush=True)
        return proc.wait()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        codes = dict(zip(datasets, pool.map(one, datasets, range(len(datasets)))))
    failed = [name for name, code in codes.items() if code]
    if failed:
        raise PlantingError(f"the batch of {', '.join(failed)} failed (see the lines marked with its name above)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.batch", description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", action="append", help=f"one of: {', '.join(DATASETS)}; give it several times to "
                    "run several datasets (each in its own run folder)")
    ap.add_argument("--profile", default="quick", help=f"one of: {', '.join(PROFILES)} (default quick)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a notebook parameter")
    ap.add_argument("--out", type=Path, help="run folder (default runs/<dataset>-<profile>)")
    ap.add_argument("--only", action="append", help="run only notebooks whose name contains this (the "
                    "performance notebook 05 runs only when named)")
    ap.add_argument("--force", action="store_true", help="rerun notebooks that are up to date")
    ap.add_argument("--jobs", type=int, default=1, help="with several datasets: how many run at once, each in its "
                    "own process (and on its own GPU where there are several); default 1")
    ap.add_argument("--list", action="store_true", help="list datasets, profiles and notebook parameters")
    a = ap.parse_args(argv)

    def job() -> None:
        if a.list:
            return list_everything()
        if not a.dataset:
            raise PlantingError(f"give --dataset NAME (one of: {', '.join(DATASETS)}) or --list")
        if a.jobs < 1:
            raise PlantingError(f"--jobs must be a positive integer, got {a.jobs}")
        if len(set(a.dataset)) < len(a.dataset):
            raise PlantingError(f"a dataset is named twice in --dataset {a.dataset}: each runs once, in its own folder")
        if len(a.dataset) > 1 and a.out is not None:
            raise PlantingError("--out names one run folder; with several datasets each gets runs/<dataset>-<profile>")
        sets = parse_set(a.set)
        if len(a.dataset) == 1:  # run_batch checks its plan before any notebook runs
            out = run_batch(a.dataset[0], a.profile, sets, a.out, a.only, force=a.force)
            print(f"done: executed notebooks, CSV tables, figures and checkpoints are in {out}")
            return None
        for name in a.dataset:  # every dataset's plan checked before any notebook runs
            plan_batch(name, a.profile, sets, default_out(name, a.profile), a.only)
        rest = [x for arg in a.set for x in ("--set", arg)] + [x for o in a.only or [] for x in ("--only", o)]
        run_many(a.dataset, ["--profile", a.profile, *rest, *(["--force"] if a.force else [])], a.jobs)
        print("done: " + ", ".join(f"{n} in {default_out(n, a.profile)}" for n in a.dataset))
    return cli(job)

if __name__ == "__main__":
    sys.exit(main())
