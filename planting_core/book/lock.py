"""One writer per run folder: a lock (filelock, so it works on every platform) held for a whole job.

The operating system drops the lock when its process ends, however it ends, so a lock file left by a killed job
never blocks the next one; .lock.pid beside it records the last holder's pid for the error message.

A job holds it for a block (`folder_lock`); a notebook holds it for its kernel's life (`claim`), unless the
batch runner that started the kernel holds it already (it says so in $PLANTING_HELD_FOLDER).
"""
from __future__ import annotations

import atexit
import os
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from ..errors import PlantingError

LOCK_NAME = ".lock"
PID_NAME = ".lock.pid"
HELD_ENV = "PLANTING_HELD_FOLDER"  # the run folder whose lock this process's parent (the batch runner) holds
_claimed = ExitStack()  # the folders this process holds until it ends (a notebook kernel's)
_claimed_roots: set[str] = set()
atexit.register(_claimed.close)


def writable_folder(root: str | Path) -> Path:
    """Create `root` if needed and check that it is a folder this process can write in, else a PlantingError."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise PlantingError(f"run folder {root} exists and is not a folder; give a folder path (new or existing)")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PlantingError(f"cannot create the run folder {root}: {err.strerror}") from None
    return root


@contextmanager
def folder_lock(root: str | Path, holder: str = "job") -> Iterator[Path]:
    """Hold `root`'s lock while the block runs; a second holder ends at once with the first holder's pid (and
    what it is: a job, or a notebook kernel that holds it until it is shut down)."""
    root = writable_folder(root)
    lock = FileLock(root / LOCK_NAME, timeout=0, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        record = (root / PID_NAME).read_text().strip() if (root / PID_NAME).exists() else "unknown"
        pid, _, kind = record.partition(" ")
        if kind == "kernel":
            raise PlantingError(f"run folder {root} is in use by a notebook's kernel (pid {pid}), which holds it until "
                                f"it is shut down: shut that notebook's kernel down (Kernel > Shut Down Kernel), or "
                                f"give this one another folder") from None
        raise PlantingError(f"run folder {root} is in use by another job (pid {pid}); wait for it to end, "
                            f"or give this job another folder") from None
    except (OSError, NotImplementedError) as err:  # NotImplementedError: a file system without file locks
        raise PlantingError(f"cannot lock the run folder {root}: {getattr(err, 'strerror', None) or err}") from None
    try:
        try:
            (root / PID_NAME).write_text(f"{os.getpid()} {holder}\n")
        except OSError as err:
            raise PlantingError(f"cannot write in the run folder {root}: {err.strerror}") from None
        yield root
    finally:
        lock.release()


def claim(root: str | Path) -> Path:
    """Hold `root`'s lock until this process ends (a notebook's kernel): another job on the folder then ends at
    once, and this one ends here if another holds it. Nothing to do where this process or the batch runner that
    started it holds it already."""
    real = str(Path(root).resolve())
    if real in _claimed_roots or os.environ.get(HELD_ENV) == real:
        return Path(root)
    _claimed.enter_context(folder_lock(root, holder="kernel"))
    _claimed_roots.add(real)
    return Path(root)
