"""Stochastic gradient descent."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from manual_bp.optimizers.base import OPTIMIZERS, Optimizer

__all__ = ["SGD"]


@OPTIMIZERS.register
class SGD(Optimizer):
    """Plain SGD, Nielsen's rule ``θ ← θ − η ∂C/∂θ``. Equation ``OPT.sgd``.

    Parameters
    ----------
    lr : float
        The learning rate η > 0.
    """

    name = "sgd"
    equation = "OPT.sgd"
    hyperparameters = ("lr",)

    def __init__(self, lr: float = 0.1) -> None:
        if not np.isfinite(lr) or lr <= 0:
            raise ValueError(f"lr must be a finite number > 0, got {lr}")
        self.lr = float(lr)

    def step(self, params: Sequence[np.ndarray], grads: Sequence[np.ndarray]) -> None:
        self._check(params, grads)
        for p, g in zip(params, grads, strict=True):
            p -= self.lr * g
