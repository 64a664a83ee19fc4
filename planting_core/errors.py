"""Error types: every user-facing failure is a PlantingError with a readable message."""


class PlantingError(ValueError):
    """Bad input or state, explained in words (the message names what was wrong and what is allowed)."""


class DataNotFoundError(PlantingError, FileNotFoundError):
    """A dataset is not on disk and cannot be downloaded."""


class CheckpointError(PlantingError):
    """A checkpoint file is damaged, foreign, or inconsistent."""


class NonFiniteLossError(PlantingError, FloatingPointError):
    """Training produced a NaN or infinite loss."""
