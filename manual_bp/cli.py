"""Command line: ``python -m manual_bp <command>`` or ``manual-bp <command>``.

Each subcommand lives in its own module of :mod:`manual_bp.commands` and
exposes ``add_parser(subparsers)`` (which sets ``func`` on its parser) and a
``run(args) -> int``. Add a command by listing its module in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from manual_bp._files import MissingDependencyError

#: Optional packages a command may need; an ImportError naming one is exit status 3.
OPTIONAL_DEPENDENCIES = ("matplotlib", "torch")

__all__ = ["COMMANDS", "build_parser", "main"]

#: Subcommand modules, in the order ``--help`` lists them.
COMMANDS = ("train", "evaluate", "sample", "verify")


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors as one line (the cause, and where to look), not the
    whole usage block; subparsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        _print(f"{self.prog}: error: {_one_line_text(message)} (see: {self.prog} --help)")
        self.exit(2)


def build_parser() -> argparse.ArgumentParser:
    from manual_bp import __version__

    parser = _Parser(
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
    """Entry point; returns the process exit code (see ``docs/cli.md``).

    0 success; 1 a failure (divergent training, out of memory, failed verification,
    an internal error); 2 a usage or input error (bad flag, bad or unwritable file);
    3 a missing optional dependency (matplotlib for ``--plot``, torch for ``verify``).
    Every error is one line on stderr naming its cause, never a traceback (set
    ``MANUAL_BP_TRACEBACK=1`` to see one for an internal error).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse printed its one-line usage error (or --help)
        return exit_.code if isinstance(exit_.code, int) else 2
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except BaseException as error:
        return _report(args.command, error)


def _report(command: str, error: BaseException) -> int:
    """Print ``error`` as one line and return its exit code; re-raise what is not ours."""
    if isinstance(error, (SystemExit, GeneratorExit)):
        raise error
    if isinstance(error, KeyboardInterrupt):
        _print(f"manual-bp {command}: interrupted")
        return 130
    if isinstance(error, BrokenPipeError):  # `manual-bp verify | head`: the reader left
        _silence_stdout()
        return 1
    code, kind, message = _classify(error)
    if code == 1 and kind == "internal error" and os.environ.get("MANUAL_BP_TRACEBACK"):
        raise error
    _print(f"manual-bp {command}: {kind}: {message}")
    return code


def _classify(error: BaseException) -> tuple[int, str, str]:
    """``(exit code, "error" | "failed" | "internal error", one-line message)``."""
    if isinstance(error, MissingDependencyError) or (
        isinstance(error, ImportError) and error.name in OPTIONAL_DEPENDENCIES
    ):
        return 3, "error", _one_line(error)
    if isinstance(error, ArithmeticError):  # divergent training: non-finite cost or parameters
        return 1, "failed", _one_line(error)
    if isinstance(error, MemoryError):
        return 1, "failed", f"not enough memory ({_one_line(error) or 'allocation failed'})"
    if isinstance(error, RecursionError):
        return 2, "error", "input nested too deeply"
    if isinstance(error, OSError):
        if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
            return 1, "failed", _os_message(error)
        return 2, "error", _os_message(error)
    if isinstance(error, (ValueError, TypeError)):  # bad input: file, shape, option
        return 2, "error", _one_line(error)
    detail = f"{type(error).__name__}: {_one_line(error)}"
    return 1, "internal error", f"{detail} (a bug; MANUAL_BP_TRACEBACK=1 shows where)"


def _os_message(error: OSError) -> str:
    """``path: cause`` for errors raised by the OS (``[Errno 21] ...: 'x'`` otherwise)."""
    if error.filename is not None and error.strerror:
        where = os.fsdecode(error.filename)
        return f"{where}: {error.strerror[:1].lower()}{error.strerror[1:]}"
    return _one_line(error)


def _one_line(error: BaseException) -> str:
    text = str(error)
    if isinstance(error, KeyError) and error.args:  # str(KeyError('x')) is "'x'"
        plain = type(error) is KeyError  # a bare lookup; subclasses carry a message
        text = f"missing key {error.args[0]!r}" if plain else str(error.args[0])
    return _one_line_text(text)


def _one_line_text(text: str) -> str:
    return " ".join(part.strip() for part in text.strip().splitlines() if part.strip())


def _print(line: str) -> None:
    with contextlib.suppress(OSError, ValueError):  # stderr closed: nothing left to tell
        print(line, file=sys.stderr, flush=True)


def _silence_stdout() -> None:
    # Python would report the broken pipe again when it flushes stdout at exit.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
