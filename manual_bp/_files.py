"""Files the user names: checks that fail before long work, and atomic writes.

Every check raises an error whose message starts with the path and names the true
cause — a directory is not "no such file", a missing parent directory is not a
permission problem — so that the command line can print it as one line:

* :class:`FileNotFoundError` — the file or its directory does not exist;
* :class:`PathError` (a ``ValueError``) — the path exists but is of the wrong kind
  (a directory where a file is expected, a suffix the writer does not support) or
  cannot be written.

:func:`atomic_write` writes through a temporary file in the target's directory and
:func:`os.replace`, so an error or a crash never leaves a half-written file; the new
file gets the permissions the user's umask gives (``0o666 & ~umask``), and a file
that is replaced keeps its mode.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "MissingDependencyError",
    "PathError",
    "atomic_write",
    "check_distinct",
    "check_input_dir",
    "check_input_file",
    "check_output_file",
    "umask",
]


class PathError(ValueError):
    """A path of the wrong kind (a directory for a file, an unsupported suffix, ...)."""


class MissingDependencyError(ImportError):
    """An optional package a feature needs is not installed (the message says how to)."""


def _suffixes(suffixes: Iterable[str]) -> str:
    return " or ".join(suffixes)


def check_input_file(
    path: str | os.PathLike[str], what: str, suffixes: Iterable[str] | None = None
) -> Path:
    """``path`` as a readable regular file of one of ``suffixes``; ``what`` names it."""
    path = Path(path)
    if path.is_dir():
        raise PathError(f"{path}: is a directory, not {what}")
    if suffixes is not None and path.suffix.lower() not in tuple(suffixes):
        raise PathError(
            f"{path}: unsupported file type {path.suffix or '(none)'!r} for {what}; "
            f"use {_suffixes(suffixes)}"
        )
    if not path.exists():
        parent = path.parent if str(path.parent) else Path(".")
        if parent.exists() and not parent.is_dir():
            raise PathError(f"{path}: {parent} is not a directory")
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise PathError(f"{path}: not a regular file ({what} must be a file)")
    if not os.access(path, os.R_OK):
        raise PermissionError(f"{path}: permission denied (cannot read {what})")
    return path


def check_input_dir(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` as an existing, readable directory."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: {what} does not exist")
    if not path.is_dir():
        raise PathError(f"{path}: is a file, not {what}")
    if not os.access(path, os.R_OK | os.X_OK):
        raise PermissionError(f"{path}: permission denied (cannot read {what})")
    return path


def check_output_file(
    path: str | os.PathLike[str], what: str, suffixes: Iterable[str] | None = None
) -> Path:
    """Fail now, not after the work, if ``path`` cannot receive ``what`` (see module doc)."""
    path = Path(path)
    if suffixes is not None and path.suffix.lower() not in tuple(suffixes):
        raise PathError(
            f"{path}: unsupported file type {path.suffix or '(none)'!r} for {what}; "
            f"use {_suffixes(suffixes)}"
        )
    if path.is_dir():
        raise PathError(f"{path}: is a directory; give a file name for {what}")
    if path.exists() and not path.is_file():
        raise PathError(f"{path}: not a regular file; give a file name for {what}")
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.exists():
        raise FileNotFoundError(f"{path}: directory {directory} does not exist")
    if not directory.is_dir():
        raise PathError(f"{path}: {directory} is not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(f"{path}: permission denied (cannot write in {directory})")
    return path


def check_distinct(paths: dict[str, str | os.PathLike[str] | None]) -> None:
    """Refuse two outputs (``{flag: path}``) that name the same file."""
    seen: dict[str, str] = {}
    for flag, path in paths.items():
        if path is None:
            continue
        key = os.path.normcase(os.path.abspath(path))
        if key in seen:
            raise PathError(f"{path}: given to both {seen[key]} and {flag}; one would be lost")
        seen[key] = flag


def umask() -> int:
    """The process's umask, read without changing it where the platform allows."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but brief)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory + ``os.replace``.

    The temporary file is fsync'ed before the rename (so the new content is on disk
    before it becomes visible) and removed if anything fails; the previous ``path``,
    if any, stays intact until the rename. The result has ``path``'s previous mode,
    or ``0o666 & ~umask`` for a new file (what ``open(path, "w")`` would give).
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"cannot save {path}: directory {directory} does not exist")
    if path.is_dir():
        raise PathError(f"cannot save {path}: is a directory")
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~umask()
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not possible on every platform (Windows).
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
