"""One writer per run folder: an advisory lock (fcntl.flock) held for a whole job.

The kernel drops the lock when its process ends, however it ends, so a lock file left by a killed job never
blocks the next one; the file only records the last holder's pid for the error message.
"""
from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import PlantingError

LOCK_NAME = ".lock"


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
def folder_lock(root: str | Path) -> Iterator[Path]:
    """Hold `root`'s lock while the block runs; a second holder ends at once with the first holder's pid."""
    import fcntl  # POSIX only; imported here so that the package still imports elsewhere

    root = writable_folder(root)
    path = root / LOCK_NAME
    try:
        handle = open(path, "a+")
    except OSError as err:
        raise PlantingError(f"cannot write in the run folder {root}: {err.strerror}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise PlantingError(f"run folder {root} is in use by another job (pid {holder}); wait for it to end, "
                                f"or give this job another folder") from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
        except OSError as err:
            raise PlantingError(f"cannot write in the run folder {root}: {err.strerror}") from None
        try:
            yield root
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
