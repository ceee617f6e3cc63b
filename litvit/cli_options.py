"""Helpers the sub-commands' parsers share: one spelling of each option across commands, with the
old spellings kept for one release (each warns once, on stderr)."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Optional, Sequence

from .errors import LitvitError

__all__ = ["UsageError", "warn_deprecated", "deprecated_option", "checkpoint_and_inputs", "checkpoint_option"]


class UsageError(LitvitError):
    """Options that argparse cannot check alone are missing or contradict each other."""


def warn_deprecated(old: str, new: str) -> None:
    """One stderr line saying that spelling ``old`` is deprecated in favour of ``new``."""
    print(f"litvit: warning: {old} is deprecated and will be removed in the next release; use {new}", file=sys.stderr)


class _DeprecatedOption(argparse.Action):
    """An old option spelling kept for one release: stores into the new option's ``dest`` and warns."""

    def __init__(self, option_strings: Sequence[str], dest: str, replacement: str, **kwargs: Any) -> None:
        self.replacement = replacement
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: Optional[str] = None) -> None:
        warn_deprecated(option_string or self.option_strings[0], self.replacement)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def deprecated_option(parser: argparse.ArgumentParser, old: str, new: str, dest: str, **kwargs: Any) -> None:
    """Accept ``old`` as a hidden, warning alias of option ``new`` (whose value lands in ``dest``)."""
    parser.add_argument(old, dest=dest, action=_DeprecatedOption, replacement=new, default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS, **kwargs)


def checkpoint_and_inputs(args: argparse.Namespace, inputs: str = "images") -> None:
    """Resolve ``--checkpoint`` for commands that used to take the checkpoint as their first
    positional argument: without ``--checkpoint``, the first of ``args.<inputs>`` is the
    checkpoint (deprecated spelling). Sets ``args.checkpoint`` and trims ``args.<inputs>``."""
    items = list(getattr(args, inputs) or [])
    if args.checkpoint is None:
        if len(items) < 2:
            raise UsageError("give the model with --checkpoint PATH")
        warn_deprecated("the checkpoint as first positional argument", "--checkpoint PATH")
        args.checkpoint = items.pop(0)
    if not items:
        raise UsageError(f"give the {inputs} to process as positional arguments")
    setattr(args, inputs, items)


def checkpoint_option(args: argparse.Namespace) -> None:
    """Resolve ``--checkpoint`` for commands whose only positional argument used to be the checkpoint."""
    old = getattr(args, "checkpoint_positional", None)
    if old is not None:
        if args.checkpoint is not None:
            raise UsageError("give the checkpoint once: --checkpoint PATH")
        warn_deprecated("the checkpoint as positional argument", "--checkpoint PATH")
        args.checkpoint = old
    if args.checkpoint is None:
        raise UsageError("give the model with --checkpoint PATH")
