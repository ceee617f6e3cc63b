"""The ``litvit`` command line.

Each sub-command lives in its own module exposing ``add_parser(subparsers)``, which
registers the sub-command and sets ``func`` on its parser. Modules are imported only
when listed here, so a missing optional dependency affects only its own command.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from .cli_options import (  # the command-line helpers, importable from here too
    UsageError,
    checkpoint_and_inputs,
    checkpoint_option,
    deprecated_option,
    warn_deprecated,
)
from .errors import LitvitError, user_message

__all__ = ["main", "build_parser", "COMMAND_MODULES", "UsageError", "warn_deprecated", "deprecated_option",
           "checkpoint_and_inputs", "checkpoint_option"]

# Order is the order shown by ``litvit --help``.
COMMAND_MODULES = [
    "litvit.classification.cli",
    "litvit.demo",
    "litvit.benchmark_cli",
    "litvit.synthetic.cli",
    "litvit.info",
    "litvit.detection.cli",
    "litvit.segmentation.cli",
    "litvit.viz.cli",
    "litvit.export",
]


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
