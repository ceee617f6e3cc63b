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


class ExportError(LitvitError):
    """An export cannot be made, or the exported graph does not reproduce the model."""


def user_message(err: BaseException) -> str:
    """``err``'s message for the one-line report, without a data-loader worker's traceback.

    A :class:`torch.utils.data.DataLoader` re-raises an error from a worker process as the same
    type, with the message ``Caught <type> in DataLoader worker process N.`` followed by the
    worker's whole traceback, whose last line is ``<module>.<type>: <original message>``.
    """
    text = str(err)
    if not (text.startswith("Caught ") and "Original Traceback" in text):
        return text
    last = text.rstrip().splitlines()[-1]
    prefix = f"{type(err).__module__}.{type(err).__qualname__}: "
    return last[len(prefix):] if last.startswith(prefix) else last
