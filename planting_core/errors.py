"""Error types: every user-facing failure is a PlantingError with a readable message."""
import errno
import sys
from typing import Callable

# failures of the machine around a job (disk full, read-only, no permission), told in one line like bad input
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR}


class PlantingError(ValueError):
    """Bad input or state, explained in words (the message names what was wrong and what is allowed)."""


class DataNotFoundError(PlantingError, FileNotFoundError):
    """A dataset is not on disk and cannot be downloaded."""


class CheckpointError(PlantingError):
    """A checkpoint file is damaged, foreign, or inconsistent."""


class NonFiniteLossError(PlantingError, FloatingPointError):
    """Training produced a NaN or infinite loss."""


def cli(job: Callable[[], object]) -> int:
    """Run a command-line job: a PlantingError (or a full/read-only disk) ends it with one line and exit code 2."""
    try:
        job()
    except PlantingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno not in ENVIRONMENT_ERRNOS:
            raise
        where = f": {err.filename}" if err.filename else ""
        print(f"error: {err.strerror}{where}; free space or choose a writable folder, then rerun (finished work "
              f"is kept)", file=sys.stderr)
        return 2
    return 0
