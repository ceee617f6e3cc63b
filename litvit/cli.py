"""The ``litvit`` command line.

Each sub-command lives in its own module exposing ``add_parser(subparsers)``, which
registers the sub-command and sets ``func`` on its parser. Modules are imported only
when listed here, so a missing optional dependency affects only its own command.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, List, Optional, Sequence

from .errors import LitvitError, user_message

# Order is the order shown by ``litvit --help``.
COMMAND_MODULES = [
    "litvit.classification.cli",
    "litvit.demo",
    "litvit.benchmark_cli",
    "litvit.data.cli",
    "litvit.info",
    "litvit.detection.cli",
    "litvit.segmentation.cli",
    "litvit.viz.cli",
    "litvit.export",
]


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
        setattr(namespace, self.dest, values)


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


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="litvit",
        description="LIT (Less attention vIsion Transformer): models, training, dense prediction, "
        "visualisation, benchmarking and export.",
    )
    parser.add_argument("--version", action="version", version=f"litvit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except LitvitError as err:
        print(f"litvit {args.command}: error: {user_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"litvit {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
