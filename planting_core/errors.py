"""Error types: every user-facing failure is a PlantingError with a readable message."""
import sys
from typing import Callable


class PlantingError(ValueError):
    """Bad input or state, explained in words (the message names what was wrong and what is allowed)."""


class DataNotFoundError(PlantingError, FileNotFoundError):
    """A dataset is not on disk and cannot be downloaded."""


class CheckpointError(PlantingError):
    """A checkpoint file is damaged, foreign, or inconsistent."""


class NonFiniteLossError(PlantingError, FloatingPointError):
    """Training produced a NaN or infinite loss."""


def cli(job: Callable[[], object]) -> int:
    """Run a command-line job: a PlantingError ends it with one line on stderr and exit code 2, no traceback."""
    try:
        job()
    except PlantingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
