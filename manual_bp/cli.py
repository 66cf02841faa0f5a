"""Command line: ``python -m manual_bp <command>`` or ``manual-bp <command>``.

Each subcommand lives in its own module of :mod:`manual_bp.commands` and
exposes ``add_parser(subparsers)`` (which sets ``func`` on its parser) and a
``run(args) -> int``. Add a command by listing its module in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["COMMANDS", "build_parser", "main"]

#: Subcommand modules, in the order ``--help`` lists them.
COMMANDS = ("train", "evaluate", "verify")


def build_parser() -> argparse.ArgumentParser:
    from manual_bp import __version__

    parser = argparse.ArgumentParser(
        prog="manual-bp",
        description="Backpropagation by hand in NumPy, verified against torch autograd.",
    )
    parser.add_argument("--version", action="version", version=f"manual_bp {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"manual_bp.commands.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"manual_bp.commands.{name}":
                raise
            continue  # a command not written yet
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, TypeError) as error:
        # Bad input (file, shape, option): one clear line, no traceback.
        print(f"manual-bp {args.command}: error: {error}", file=sys.stderr)
        return 2
    except ArithmeticError as error:
        # Divergent training (non-finite cost or parameters): a failure, not a usage error.
        print(f"manual-bp {args.command}: failed: {error}", file=sys.stderr)
        return 1
    except RecursionError:
        print(f"manual-bp {args.command}: error: input nested too deeply", file=sys.stderr)
        return 2
