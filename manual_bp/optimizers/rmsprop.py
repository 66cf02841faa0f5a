"""RMSprop (Hinton, lecture 6e) with torch's conventions (``torch.optim.RMSprop``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from manual_bp.optimizers.base import OPTIMIZERS, Optimizer, check_hyperparameter, lerp

__all__ = ["RMSprop"]


@OPTIMIZERS.register
class RMSprop(Optimizer):
    """Divide the step by a running RMS of the gradient. ``OPT.rmsprop``, ``OPT.rmsprop-centered``::

        g  = ∂C/∂θ + wd·θ                          (OPT.weight-decay)
        vₜ = α vₜ₋₁ + (1 − α) g²,   v₀ = 0
        ḡₜ = α ḡₜ₋₁ + (1 − α) g,    ḡ₀ = 0           (centered only)
        D  = √vₜ + ε   or, centered,   D = √(vₜ − ḡₜ²) + ε
        bₜ = μ bₜ₋₁ + g / D,  b₀ = 0;  θ ← θ − η bₜ   (μ > 0)
        θ ← θ − η g / D                              (μ = 0)

    No bias correction (unlike Adam); ε is outside the square root. The
    centred variance ``vₜ − ḡₜ²`` is ≥ 0 in exact arithmetic (Cauchy–Schwarz);
    it is clipped at 0 against rounding.

    Parameters
    ----------
    lr : float
        η > 0.
    alpha : float
        Smoothing α ∈ [0, 1).
    eps : float
        ε ≥ 0.
    weight_decay : float
        Coupled L2 on every array passed.
    momentum : float
        μ ∈ [0, 1).
    centered : bool
        Normalise by the estimated variance instead of the second moment.
    """

    name = "rmsprop"
    equation = "OPT.rmsprop"
    hyperparameters = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered")
    _buffers = ("square_avg", "grad_avg", "momentum_buffer")

    def __init__(
        self,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
    ) -> None:
        self.lr = check_hyperparameter("lr", lr, closed="neither")
        self.alpha = check_hyperparameter("alpha", alpha, high=1.0)
        self.eps = check_hyperparameter("eps", eps)
        self.weight_decay = check_hyperparameter("weight_decay", weight_decay)
        self.momentum = check_hyperparameter("momentum", momentum, high=1.0)
        self.centered = bool(centered)
        self.reset()

    def step(self, params: Sequence[np.ndarray], grads: Sequence[np.ndarray]) -> None:
        """OPT.rmsprop / OPT.rmsprop-centered (see the class docstring)."""
        params, grads = self._as_lists(params, grads)
        states = self._state(params)
        self.t += 1
        a = self.alpha
        for p, g, s in zip(params, grads, states, strict=True):
            g = self._decayed(p, g, self.weight_decay, s["grad"])
            v, d = s["square_avg"], s["scratch"]
            v *= a  # vₜ = α vₜ₋₁ + (1 − α) g²
            np.multiply(g, g, out=d)
            d *= 1.0 - a
            v += d
            if self.centered:  # OPT.rmsprop-centered: ḡₜ = ḡₜ₋₁ + (1 − α)(g − ḡₜ₋₁)
                mean = s["grad_avg"]
                lerp(mean, g, 1.0 - a, d)
                np.multiply(mean, mean, out=d)
                np.subtract(v, d, out=d)
                np.maximum(d, 0.0, out=d)
                np.sqrt(d, out=d)
            else:
                np.sqrt(v, out=d)
            d += self.eps  # ε outside the square root
            np.divide(g, d, out=d)
            if self.momentum:
                buf = s["momentum_buffer"]
                buf *= self.momentum
                buf += d
                np.multiply(buf, self.lr, out=d)
            else:
                d *= self.lr
            p -= d
