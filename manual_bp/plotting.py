"""Learning curves with matplotlib (an optional extra: ``pip install manual-bp[plot]``).

matplotlib is imported only when a plot is checked or drawn, so the library itself
needs NumPy only. The curves are drawn on a standalone ``matplotlib.figure.Figure`` (no
pyplot): no display is needed, and an interactive session's backend is left alone. The
image format follows the file's suffix and must be one matplotlib writes
(:func:`image_formats`); :func:`check_plot_path` checks the path, the format and
matplotlib before the training that the plot is for.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

from manual_bp._files import (
    MissingDependencyError,
    PathError,
    atomic_write,
    check_output_file,
)

if TYPE_CHECKING:
    from manual_bp.training import History

__all__ = ["check_plot_path", "image_formats", "plot_learning_curves"]

INSTALL_HINT = "pip install manual-bp[plot] (or pip install matplotlib)"


def _figure(**kwargs):
    """A matplotlib ``Figure`` that is not managed by pyplot: no display, no global backend
    switch (a user's interactive session keeps its own), nothing to close."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingDependencyError(
            f"plotting needs matplotlib: {INSTALL_HINT}", name="matplotlib"
        ) from None
    return Figure(**kwargs)


def image_formats() -> dict[str, str]:
    """``{suffix: description}`` of the formats matplotlib can write here (``png``, ...)."""
    return dict(_figure().canvas.get_supported_filetypes())


def check_plot_path(path: str | os.PathLike[str]) -> Path:
    """Fail before training if the curves could not be written to ``path``.

    Checks that matplotlib imports, that the suffix names a format it writes, that
    ``path`` is not a directory and its directory exists and is writable, and draws
    a small figure in that format in memory (a format can need more than matplotlib:
    Pillow codecs, LaTeX for ``.pgf``).
    """
    path = Path(path)
    formats = image_formats()
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in formats:
        got = (
            f"{path.suffix!r} is not an image format matplotlib writes"
            if fmt
            else ("no suffix to name the image format")
        )
        raise PathError(f"{path}: {got}; use one of {', '.join('.' + f for f in sorted(formats))}")
    check_output_file(path, "the learning curves")
    figure = _figure(figsize=(1, 1))
    ax = figure.add_subplot()
    try:
        ax.plot([1, 2], [1, 2], label="check")
        ax.set_title("check")
        figure.savefig(io.BytesIO(), format=fmt, dpi=10)
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise PathError(
            f"{path}: matplotlib cannot write {fmt} here ({type(error).__name__}: {first})"
        ) from None
    return path


def plot_learning_curves(
    history: History, path: str | os.PathLike[str], *, title: str = ""
) -> Path:
    """Draw cost and accuracy per epoch (training and evaluation) into ``path`` (e.g. ``.png``).

    Parameters
    ----------
    history : History
        As returned by :func:`manual_bp.train`.
    path : file name
        The image format follows the suffix (``.png``, ``.svg``, ``.pdf``, ...; see
        :func:`image_formats`). The file is written atomically, with the umask's mode.
    title : str
        Figure title.

    Returns
    -------
    Path
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if not fmt:
        raise PathError(f"{path}: no suffix to name the image format (e.g. .png)")
    fig = _figure(figsize=(10, 4))
    ax_cost, ax_acc = fig.subplots(1, 2)
    image = io.BytesIO()
    for split in ("training", "evaluation"):
        cost = getattr(history, f"{split}_cost")
        accuracy = getattr(history, f"{split}_accuracy")
        if cost:
            ax_cost.plot(range(1, len(cost) + 1), cost, label=split)
        if accuracy:
            ax_acc.plot(range(1, len(accuracy) + 1), [100 * a for a in accuracy], label=split)
    for ax, label in ((ax_cost, "cost"), (ax_acc, "accuracy (%)")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(image, format=fmt, dpi=100)
    atomic_write(path, image.getvalue())
    return path
