"""Adagrad (Duchi et al. 2011) with torch's conventions (``torch.optim.Adagrad``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from manual_bp.optimizers.base import OPTIMIZERS, Optimizer, check_hyperparameter

__all__ = ["Adagrad"]


@OPTIMIZERS.register
class Adagrad(Optimizer):
    """Per-coordinate rate from the running sum of squared gradients. ``OPT.adagrad``::

        g  = ∂C/∂θ + wd·θ                      (OPT.weight-decay)
        ηₜ = η / (1 + (t − 1)·lr_decay)
        Sₜ = Sₜ₋₁ + g²,  S₀ = initial_accumulator_value
        θ ← θ − ηₜ · g / (√Sₜ + ε)             (ε outside the square root)

    Parameters
    ----------
    lr : float
        η > 0.
    lr_decay : float
        ≥ 0.
    weight_decay : float
        Coupled L2 on every array passed.
    initial_accumulator_value : float
        S₀ ≥ 0.
    eps : float
        ε ≥ 0, added to √Sₜ.
    """

    name = "adagrad"
    equation = "OPT.adagrad"
    hyperparameters = ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps")
    _buffers = ("sum",)

    def __init__(
        self,
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
    ) -> None:
        self.lr = check_hyperparameter("lr", lr, closed="neither")
        self.lr_decay = check_hyperparameter("lr_decay", lr_decay)
        self.weight_decay = check_hyperparameter("weight_decay", weight_decay)
        self.initial_accumulator_value = check_hyperparameter(
            "initial_accumulator_value", initial_accumulator_value
        )
        self.eps = check_hyperparameter("eps", eps)
        self.reset()

    def step(self, params: Sequence[np.ndarray], grads: Sequence[np.ndarray]) -> None:
        """OPT.adagrad: Sₜ = Sₜ₋₁ + g², θ ← θ − ηₜ g / (√Sₜ + ε)."""
        params, grads = self._as_lists(params, grads)
        states = self._state(params)
        if self.t == 0 and self.initial_accumulator_value:
            for s in states:
                s["sum"].fill(self.initial_accumulator_value)
        self.t += 1
        clr = self.lr / (1.0 + (self.t - 1) * self.lr_decay)
        for p, g, s in zip(params, grads, states, strict=True):
            g = self._decayed(p, g, self.weight_decay, s["grad"])
            total, d = s["sum"], s["scratch"]
            np.multiply(g, g, out=d)
            total += d
            np.sqrt(total, out=d)
            d += self.eps
            np.divide(g, d, out=d)
            d *= clr
            p -= d
