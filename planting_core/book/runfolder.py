"""The layout of a run folder: every file name is written and parsed here, and nowhere else.

    teacher.pt                       the teacher
    initial-seed<S>.pt               the initial network of seed S
    students/w<W>-<loss>-seed<S>.pt  fixed-width students [W]*5, loss "ce" or "kd"
    planting/seed<S>/                a planting run: history.csv, planted.pt (grow_state.pt while it runs)
    ablations/<name>/                an ablation's planting run
    variants/<name>/seed<S>/         a grown variant's planting run (e.g. old channels fine-tuned)
    study/<condition>/seed<S>/       a study condition's planting run (initial-seed<S>.pt if it changes it)
    methods/<method>/*.pt            the compared methods' networks (e.g. pruning)
    <any folder>/left-out.csv        networks trained but left out of the published folder (file, seconds)
    students.csv, summary.csv, ablations.csv, sweep.csv, conditions.csv, methods.csv, figures/
    .lock, .lock.pid                 held by the job writing the folder (one writer at a time), and its pid
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ContextManager, Iterator

from ..errors import PlantingError
from .lock import claim, folder_lock

LEFT_OUT = "left-out.csv"
STUDENT_NAME = re.compile(r"w(?P<width>\d+)-(?P<loss>[a-z]+)-seed(?P<seed>\d+)\.pt")


@dataclass(frozen=True)
class StudentFile:
    """A fixed-width student's checkpoint, with what its name says."""
    path: Path
    width: int
    loss: str
    seed: int

    @property
    def label(self) -> str:
        """E.g. "student KD [16]"."""
        return f"student {self.loss.upper()} [{self.width}]"


def read_left_out(table: Path) -> dict[str, float]:
    """A left-out.csv as file name -> training seconds ({} if there is none)."""
    return {name: float(row["seconds"]) for name, row in left_out_rows(table).items()}


def left_out_rows(table: Path) -> dict[str, dict[str, str]]:
    """A left-out.csv's rows by file name: seconds, and the commit whose tree holds the original file ('' if none
    does: it was never committed). A table that is not this (a missing column, seconds that are not a count of
    seconds, a name that is not a file in its own folder) is refused in one line naming the row."""
    if not table.exists():
        return {}
    with open(table, newline="") as f:
        reader = csv.DictReader(f)
        lacks = sorted({"file", "seconds"} - set(reader.fieldnames or []))
        if lacks:
            raise PlantingError(f"{table}: lacks the column(s) {lacks}; it needs file, seconds and optionally commit")
        rows = {}
        for line, row in enumerate(reader, start=2):
            name, seconds = row["file"] or "", row["seconds"] or ""
            try:
                ok = math.isfinite(float(seconds)) and float(seconds) >= 0
            except ValueError:
                ok = False
            if not ok or not name or Path(name).name != name or name in (".", ".."):
                raise PlantingError(f"{table}, line {line}: needs a file name in this folder and its training "
                                    f"seconds (a number >= 0), got file={name!r}, seconds={seconds!r}")
            rows[name] = {"seconds": seconds, "commit": row.get("commit") or ""}
    return rows


class RunFolder:
    """Paths of everything a run writes under one folder (nothing is created until asked for)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.root)!r})"

    def lock(self) -> ContextManager[Path]:
        """Hold the folder's one-writer lock for a block (creates the folder; refuses a file, a read-only place)."""
        return folder_lock(self.root)

    def claim(self) -> "RunFolder":
        """Hold the folder's one-writer lock until this process ends (a notebook's kernel; see lock.claim)."""
        claim(self.root)
        return self

    @property
    def teacher(self) -> Path:
        return self.root / "teacher.pt"

    def initial(self, seed: int) -> Path:
        return self.root / f"initial-seed{seed}.pt"

    def initials(self) -> list[Path]:
        """Every initial network's checkpoint present, in seed order."""
        found = [p for p in self.root.glob("initial-seed*.pt") if re.fullmatch(r"initial-seed\d+\.pt", p.name)]
        return sorted(found, key=lambda p: int(p.stem.removeprefix("initial-seed")))

    def student(self, width: int, loss: str, seed: int) -> Path:
        return self.root / "students" / f"w{width}-{loss}-seed{seed}.pt"

    def students(self) -> list[StudentFile]:
        """Every student checkpoint present, by width, loss and seed (files of other names are ignored)."""
        found = []
        for path in (self.root / "students").glob("*.pt"):
            m = STUDENT_NAME.fullmatch(path.name)
            if m:
                found.append(StudentFile(path, int(m["width"]), m["loss"], int(m["seed"])))
        return sorted(found, key=lambda s: (s.width, s.loss, s.seed))

    def planting(self, seed: int) -> Path:
        return self.root / "planting" / f"seed{seed}"

    def ablation(self, name: str) -> Path:
        return self.root / "ablations" / name

    def variant(self, name: str, seed: int) -> Path:
        return self.root / "variants" / name / f"seed{seed}"

    def study(self, condition: str, seed: int) -> Path:
        return self.root / "study" / condition / f"seed{seed}"

    def study_initial(self, condition: str, seed: int) -> Path:
        """The initial network of a study condition that changes it."""
        return self.root / "study" / condition / f"initial-seed{seed}.pt"

    def study_teacher(self, condition: str) -> Path:
        """The teacher of a study condition that changes it."""
        return self.root / "study" / condition / "teacher.pt"

    def method(self, name: str, file: str) -> Path:
        """A compared method's checkpoint, e.g. method("pruning", "w64-sparse-seed0.pt")."""
        return self.root / "methods" / name / file

    def left_out(self) -> dict[Path, float]:
        """Networks trained but left out of the published folder (each listed in a left-out.csv beside it), with
        their training seconds; a file listed there may be present (kept locally) or not."""
        found = {}
        for table in sorted(self.root.rglob(LEFT_OUT)):
            found.update({table.parent / name: seconds for name, seconds in read_left_out(table).items()})
        return found

    @staticmethod
    def is_resume_state(path: Path) -> bool:
        """Whether a file is a running job's resume state (a fit's <name>.state.pt, a search's grow_state.pt): never
        published, committed or counted as a result."""
        return Path(path).name.endswith(".state.pt") or Path(path).name == "grow_state.pt"

    @staticmethod
    def is_left_out(path: Path) -> bool:
        """Whether a checkpoint is listed in the left-out.csv beside it (trained once, not published)."""
        return Path(path).name in read_left_out(Path(path).parent / LEFT_OUT)

    @staticmethod
    def history(run: Path) -> Path:
        """A planting run's history (one row per candidate)."""
        return run / "history.csv"

    @staticmethod
    def planted(run: Path) -> Path:
        """A planting run's grown network."""
        return run / "planted.pt"

    def planting_runs(self, stage: str) -> Iterator[Path]:
        """Folders of the finished or running planting runs of a stage: "planting", "ablations" or "variants"."""
        return (h.parent for h in sorted((self.root / stage).rglob("history.csv")))

    @property
    def students_csv(self) -> Path:
        return self.root / "students.csv"

    @property
    def summary_csv(self) -> Path:
        return self.root / "summary.csv"

    @property
    def sweep_csv(self) -> Path:
        return self.root / "sweep.csv"

    @property
    def conditions_csv(self) -> Path:
        return self.root / "conditions.csv"

    @property
    def methods_csv(self) -> Path:
        return self.root / "methods.csv"

    @property
    def ablations_csv(self) -> Path:
        return self.root / "ablations.csv"

    def figure(self, name: str) -> Path:
        """Path of a figure (figures/ is created)."""
        folder = self.root / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name
