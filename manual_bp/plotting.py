"""Learning curves with matplotlib (an optional extra: ``pip install manual-bp[plot]``).

matplotlib is imported only when a plot is drawn, so the library itself needs
NumPy only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from manual_bp.training import History

__all__ = ["plot_learning_curves"]


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            "plotting needs matplotlib: pip install manual-bp[plot] (or pip install matplotlib)"
        ) from None
    return plt


def plot_learning_curves(
    history: History, path: str | os.PathLike[str], *, title: str = ""
) -> Path:
    """Draw cost and accuracy per epoch (training and evaluation) into ``path`` (e.g. ``.png``).

    Parameters
    ----------
    history : History
        As returned by :func:`manual_bp.train`.
    path : file name
        The image format follows the suffix (``.png``, ``.svg``, ``.pdf``).
    title : str
        Figure title.

    Returns
    -------
    Path
    """
    path = Path(path)
    plt = _pyplot()
    fig, (ax_cost, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    try:
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
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path
