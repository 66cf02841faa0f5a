"""Adam, AMSGrad and AdamW with torch's conventions (``torch.optim.Adam`` / ``AdamW``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from manual_bp.optimizers.base import OPTIMIZERS, Optimizer, check_hyperparameter, lerp

__all__ = ["Adam", "AdamW"]


@OPTIMIZERS.register
class Adam(Optimizer):
    """Adam (Kingma & Ba 2015), optionally AMSGrad. ``OPT.adam``, ``OPT.amsgrad``::

        g  = ∂C/∂θ + wd·θ                                  (coupled, OPT.weight-decay)
        mₜ = β₁ mₜ₋₁ + (1 − β₁) g,    vₜ = β₂ vₜ₋₁ + (1 − β₂) g²,   m₀ = v₀ = 0
        v̂ₜ = max(v̂ₜ₋₁, vₜ) (AMSGrad)  or  v̂ₜ = vₜ
        θ ← θ − (η / (1 − β₁ᵗ)) · mₜ / (√v̂ₜ / √(1 − β₂ᵗ) + ε)

    ε is added *after* the bias-corrected square root, as torch does (not
    Kingma & Ba's ``ε̂`` folded into the rate, as scikit-learn does).

    Parameters
    ----------
    lr : float
        η > 0.
    beta1, beta2 : float
        Decay rates in [0, 1).
    eps : float
        ε ≥ 0.
    weight_decay : float
        Coupled L2 on every array passed (torch ``Adam(weight_decay=...)``).
    amsgrad : bool
        Use the running maximum of vₜ.
    betas : (float, float), optional
        torch's name: ``Adam(betas=(0.9, 0.99))`` sets ``beta1`` and ``beta2``.
    """

    name = "adam"
    equation = "OPT.adam"
    hyperparameters = ("lr", "beta1", "beta2", "eps", "weight_decay", "amsgrad")
    _buffers = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    #: AdamW: ``θ ← (1 − η·wd) θ`` before the Adam step instead of ``g + wd·θ``.
    decoupled = False

    def __init__(
        self,
        lr: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        betas: tuple[float, float] | None = None,
    ) -> None:
        beta1, beta2 = _betas(beta1, beta2, betas)
        self.lr = check_hyperparameter("lr", lr, closed="neither")
        self.beta1 = check_hyperparameter("beta1", beta1, high=1.0)
        self.beta2 = check_hyperparameter("beta2", beta2, high=1.0)
        self.eps = check_hyperparameter("eps", eps)
        self.weight_decay = check_hyperparameter("weight_decay", weight_decay)
        self.amsgrad = bool(amsgrad)
        self.reset()

    @property
    def betas(self) -> tuple[float, float]:
        """torch's name: ``(beta1, beta2)``."""
        return (self.beta1, self.beta2)

    def step(self, params: Sequence[np.ndarray], grads: Sequence[np.ndarray]) -> None:
        """OPT.adam / OPT.amsgrad / OPT.adamw (see the class docstrings)."""
        params, grads = self._as_lists(params, grads)
        states = self._state(params)
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        step_size = self.lr / (1.0 - b1**self.t)  # bias correction of mₜ
        bc2_sqrt = math.sqrt(1.0 - b2**self.t)  # bias correction of vₜ, under the root
        for p, g, s in zip(params, grads, states, strict=True):
            if self.decoupled:  # OPT.adamw: θ ← (1 − η·wd) θ, the gradient is untouched
                if self.weight_decay:
                    p *= 1.0 - self.lr * self.weight_decay
            else:
                g = self._decayed(p, g, self.weight_decay, s["grad"])
            m, v, d = s["exp_avg"], s["exp_avg_sq"], s["scratch"]
            lerp(m, g, 1.0 - b1, d)  # mₜ = mₜ₋₁ + (1 − β₁)(g − mₜ₋₁)
            v *= b2  # vₜ = β₂ vₜ₋₁ + (1 − β₂) g²
            np.multiply(g, g, out=d)
            d *= 1.0 - b2
            v += d
            if self.amsgrad:  # OPT.amsgrad: v̂ₜ = max(v̂ₜ₋₁, vₜ)
                np.maximum(s["max_exp_avg_sq"], v, out=s["max_exp_avg_sq"])
                v = s["max_exp_avg_sq"]
            np.sqrt(v, out=d)  # denominator √v̂ₜ / √(1 − β₂ᵗ) + ε: ε after the correction
            d /= bc2_sqrt
            d += self.eps
            np.divide(m, d, out=d)
            d *= step_size
            p -= d


@OPTIMIZERS.register
class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019). ``OPT.adamw``::

        θ ← (1 − η·wd) θ,   then the Adam step from the undecayed gradient.

    As ``torch.optim.AdamW``: the decay applies to every array passed and
    defaults to ``wd = 0.01``; it is multiplied by η (not by η/(1 − β₁ᵗ)).
    """

    name = "adamw"
    equation = "OPT.adamw"
    decoupled = True

    def __init__(
        self,
        lr: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        betas: tuple[float, float] | None = None,
    ) -> None:
        super().__init__(lr, beta1, beta2, eps, weight_decay, amsgrad, betas=betas)


def _betas(beta1: float, beta2: float, betas: tuple[float, float] | None) -> tuple[float, float]:
    """``(β₁, β₂)`` from ``beta1``/``beta2`` or torch's ``betas=(β₁, β₂)`` (not both)."""
    if betas is None:
        return beta1, beta2
    if (beta1, beta2) != (0.9, 0.999):
        raise ValueError("give beta1/beta2 or betas (torch's name), not both")
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    return betas[0], betas[1]
