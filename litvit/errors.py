"""Exceptions that describe a user's mistake rather than a bug.

The command line prints these as one line (no traceback) and exits with status 2.
"""


class LitvitError(Exception):
    """Base class for errors caused by user input (paths, data, checkpoints, options)."""


class CheckpointError(LitvitError):
    """A checkpoint is missing, unreadable, or does not fit the model."""


class DataError(LitvitError):
    """A dataset is missing, empty, or malformed."""


class TrainingError(LitvitError):
    """Training cannot go on (for example a NaN or infinite loss)."""


class MissingExtraError(LitvitError):
    """An optional dependency group is not installed."""
