"""Costs of distributions: KL divergence of log-probabilities, Poisson NLL of counts."""

from __future__ import annotations

import numpy as np

from manual_bp.activations import _finite_float
from manual_bp.costs.base import (
    Cost,
    Fold,
    _xlogy,
    register_cost,
    softmax_hessian,
    softmax_hessian_factor,
    softmax_hessian_product,
)

__all__ = ["KLDivergenceCost", "PoissonNLLCost"]


@register_cost
class KLDivergenceCost(Cost):
    """KL divergence ``C_x = KL(y ‖ p) = Σⱼ yⱼ (ln yⱼ − aⱼ)`` with ``a = ln p`` (log-probabilities).

    Equations ``COST.kl-divergence`` and ``COST.kl-divergence.grad``. As in
    ``F.kl_div(input, target)``: the network output ``a`` is the *log*-probability
    (pair with a log-softmax output), the target ``y`` a probability distribution;
    terms with ``yⱼ = 0`` are 0. ``∂C_x/∂a = −y``. torch's
    ``reduction="batchmean"`` is exactly our mean of per-sample sums.
    """

    name = "kl-divergence"
    folds = {
        "log-softmax": Fold(
            head=True,
            predictive="categorical",
            hessian=lambda z, y: softmax_hessian(z, y.sum(axis=1, keepdims=True)),
            hessian_factor=lambda z, y: softmax_hessian_factor(z, y.sum(axis=1, keepdims=True)),
            hessian_product=lambda z, y, r: softmax_hessian_product(
                z, r, y.sum(axis=1, keepdims=True)
            ),
        )
    }
    aliases = ("kl", "kl-div", "kullback-leibler")
    equation_value = "COST.kl-divergence"
    equation_grad = "COST.kl-divergence.grad"
    valid_output_activations = ("log-softmax",)
    target_kind = "distribution"

    def per_sample(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        a, y = self.validate(a, y)
        # Mask a before multiplying: 0·(−inf) would be NaN (an invalid-value warning).
        return (_xlogy(y, y) - y * np.where(y == 0, 0.0, a)).sum(axis=1)

    def grad(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        a, y = self.validate(a, y)
        return (-y).astype(a.dtype, copy=False)

    def target_mass(self, y: np.ndarray) -> np.ndarray:
        """``Σⱼ yⱼ`` per sample ``(batch, 1)``: KL targets may carry any mass."""
        return y.sum(axis=1, keepdims=True)

    def hessian_diagonal(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        """0: ``C_x`` is linear in the log-probabilities (``CURV.loss-hessian.kl-divergence``).

        The curvature comes from the log-softmax output (``ACT2.log-softmax``).
        """
        a, y = self.validate(a, y)
        return np.zeros_like(a)


@register_cost
class PoissonNLLCost(Cost):
    """Poisson negative log-likelihood (without the ``ln y!`` constant), as ``F.poisson_nll_loss``.

    Equations ``COST.poisson-nll`` and ``COST.poisson-nll.grad``, for count
    targets ``y ≥ 0``:

    * ``log_input=False`` (default): ``a = λ ≥ 0`` is the rate (pair with a
      softplus output), ``C_x = Σⱼ [λⱼ − yⱼ ln(λⱼ + ε)]`` and
      ``∂C_x/∂λⱼ = 1 − yⱼ/(λⱼ + ε)``, ``ε = eps`` as in torch (finite at ``λ = 0``).
    * ``log_input=True``: ``a = ln λ`` (identity output), ``C_x = Σⱼ [e^{aⱼ} − yⱼ aⱼ]``
      and ``∂C_x/∂aⱼ = e^{aⱼ} − yⱼ``. ``e^a`` overflows to ``inf`` for ``a > 709``.
    """

    name = "poisson-nll"
    folds = {"identity": Fold(head=True, predictive="poisson")}  # a log-rate: log_input only
    aliases = ("poisson",)
    equation_value = "COST.poisson-nll"
    equation_grad = "COST.poisson-nll.grad"
    hyperparameters = ("log_input", "eps")
    valid_output_activations = ("softplus",)
    target_kind = "count"

    def __init__(self, log_input: bool = False, eps: float = 1e-8) -> None:
        if not isinstance(log_input, (bool, np.bool_)):
            raise TypeError(f"log_input must be a bool, got {log_input!r}")
        self.log_input = bool(log_input)
        self.eps = _finite_float(eps, "eps")
        if self.eps <= 0:
            raise ValueError(f"poisson-nll eps must be > 0, got {eps!r}")
        if self.log_input:
            self.valid_output_activations = ("identity",)

    def per_sample(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        a, y = self._check(a, y)
        if self.log_input:
            with np.errstate(over="ignore"):  # e^a = inf for a > 709: the true (rounded) value
                # Mask a before multiplying: 0·(−inf) (rate 0, count 0) would be NaN.
                return (np.exp(a) - y * np.where(y == 0, 0.0, a)).sum(axis=1)
        return (a - y * np.log(a + self.eps)).sum(axis=1)

    def grad(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        a, y = self._check(a, y)
        if self.log_input:
            with np.errstate(over="ignore"):
                return np.exp(a) - y
        return 1.0 - y / (a + self.eps)

    def predictive(self, activation) -> str | None:
        """``"poisson"`` for log-rates only: the Fisher of ``Poisson(e^z)`` in ``z`` is the
        GGN, that of a rate ``λ = a`` is not (``CURV.diag-ggn-mc``)."""
        return super().predictive(activation) if self.log_input else None

    def _check(self, a: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a, y = self.validate(a, y)  # count targets y >= 0 (target_kind "count")
        if not self.log_input and (a < 0).any():
            raise ValueError(
                f"{self.name}: rates must be >= 0 with log_input=False, got min {a.min()} "
                "(use a softplus output, or log_input=True for log-rates)"
            )
        return a, y

    def hessian_diagonal(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``e^{aⱼ}`` (log-input) or ``yⱼ/(λⱼ + ε)²`` (``CURV.loss-hessian.poisson-nll``)."""
        a, y = self._check(a, y)
        if self.log_input:
            with np.errstate(over="ignore"):
                return np.exp(a)
        return y / (a + self.eps) / (a + self.eps)  # (λ + ε)² would overflow for λ > 1e154
