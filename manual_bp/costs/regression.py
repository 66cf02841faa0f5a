"""Regression costs on real targets: quadratic, absolute error, Huber, smooth L1 (``COST.*``)."""

from __future__ import annotations

import numpy as np

from manual_bp.activations import _finite_float
from manual_bp.costs.base import (
    Cost,
    Fold,
    _output_minus_target,
    register_cost,
)

__all__ = ["HuberCost", "MAECost", "QuadraticCost", "SmoothL1Cost"]


@register_cost
class QuadraticCost(Cost):
    """Quadratic cost ``C_x = ½‖a − y‖²``. Equations ``COST.quadratic``, ``COST.quadratic.grad``.

    ``∂C_x/∂a = a − y``; with an identity output ``δᴸ = a − y``
    (``SHORTCUT.identity-quadratic``).
    """

    name = "quadratic"
    aliases = ("mse", "squared-error")
    equation_value = "COST.quadratic"
    equation_grad = "COST.quadratic.grad"
    folds = {
        "identity": Fold(
            "SHORTCUT.identity-quadratic",
            _output_minus_target,
            minus_target=True,
            head=True,
            predictive="normal",
        )
    }

    def per_sample(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        a, y = self.validate(a, y)
        diff = a - y
        return 0.5 * np.einsum("ij,ij->i", diff, diff)

    def grad(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        a, y = self.validate(a, y)
        return a - y

    def grad_into(self, a: np.ndarray, y: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``a − y`` into ``out`` (``COST.quadratic.grad``'s fast form: targets checked once
        before training, not at every step)."""
        return np.subtract(a, y, out=out)

    def hessian_diagonal(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``∇²ₐC_x = I`` (``CURV.loss-hessian.quadratic``)."""
        a, y = self.validate(a, y)
        return np.ones_like(a)


@register_cost
class MAECost(Cost):
    """Absolute error ``C_x = Σⱼ |aⱼ − yⱼ|``. Equations ``COST.mae``, ``COST.mae.grad``.

    ``∂C_x/∂aⱼ = sign(aⱼ − yⱼ)``, with ``0`` at ``a = y`` (torch's ``sign``).
    torch: ``F.l1_loss(reduction="sum") / n``.
    """

    name = "mae"
    aliases = ("l1", "mean-absolute-error", "absolute-error")
    equation_value = "COST.mae"
    equation_grad = "COST.mae.grad"

    def per_sample(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        a, y = self.validate(a, y)
        return np.abs(a - y).sum(axis=1)

    def grad(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        a, y = self.validate(a, y)
        return np.sign(a - y)

    def hessian_diagonal(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        """0: ``|d|`` is linear on each side of ``d = 0`` (``CURV.loss-hessian.mae``).

        Generalisation: the Hessian is taken as 0 also at ``a = y`` (the derivative of
        the ``sign`` this library uses, whose jump is a Dirac mass we do not represent).
        """
        a, y = self.validate(a, y)
        return np.zeros_like(a)


@register_cost
class HuberCost(Cost):
    """Huber cost ``C_x = Σⱼ h_δ(aⱼ − yⱼ)``. Equations ``COST.huber``, ``COST.huber.grad``.

    ``h_δ(d) = ½d²`` for ``|d| ≤ δ`` and ``δ(|d| − ½δ)`` otherwise;
    ``h'_δ(d) = clip(d, −δ, δ)``. torch: ``F.huber_loss(delta=δ, reduction="sum") / n``.
    The hyper-parameter ``δ`` is stored as ``threshold`` (``delta`` is the BP1 method of
    every cost); ``HuberCost(delta=2.0)`` is accepted too, as ``torch.nn.HuberLoss``.
    """

    name = "huber"
    equation_value = "COST.huber"
    equation_grad = "COST.huber.grad"
    hyperparameters = ("threshold",)

    def __init__(self, threshold: float = 1.0, *, delta: float | None = None) -> None:
        if delta is not None:  # torch's name for δ
            if threshold != 1.0:
                raise ValueError("give threshold or delta (torch's name), not both")
            threshold = delta
        self.threshold = _finite_float(threshold, "threshold")
        if self.threshold <= 0:
            raise ValueError(f"huber threshold (δ) must be > 0, got {threshold!r}")

    def per_sample(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        a, y = self.validate(a, y)
        d, t = np.abs(a - y), self.threshold
        q = np.minimum(d, t)  # the quadratic piece only where it is used: ½d² cannot overflow
        return np.where(d <= t, 0.5 * q * q, t * (d - 0.5 * t)).sum(axis=1)

    def grad(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        a, y = self.validate(a, y)
        return np.clip(a - y, -self.threshold, self.threshold)

    def hessian_diagonal(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``1[|d| ≤ δ]``, ``d = a − y`` (``CURV.loss-hessian.huber``; edge: quadratic side)."""
        a, y = self.validate(a, y)
        return (np.abs(a - y) <= self.threshold).astype(a.dtype)


@register_cost
class SmoothL1Cost(Cost):
    """Smooth L1 ``C_x = Σⱼ s_β(aⱼ − yⱼ)``. Equations ``COST.smooth-l1``, ``COST.smooth-l1.grad``.

    ``s_β(d) = ½d²/β`` for ``|d| < β`` and ``|d| − ½β`` otherwise, i.e.
    ``h_β(d)/β`` (Huber divided by β); ``s'_β(d) = clip(d/β, −1, 1)``.
    torch: ``F.smooth_l1_loss(beta=β, reduction="sum") / n``.
    """

    name = "smooth-l1"
    equation_value = "COST.smooth-l1"
    equation_grad = "COST.smooth-l1.grad"
    hyperparameters = ("beta",)

    def __init__(self, beta: float = 1.0) -> None:
        self.beta = _finite_float(beta, "beta")
        if self.beta <= 0:
            raise ValueError(
                f"smooth-l1 beta must be > 0 (beta = 0 is the 'mae' cost), got {beta!r}"
            )

    def per_sample(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        a, y = self.validate(a, y)
        d = np.abs(a - y)
        q = np.minimum(d, self.beta)  # ½d²/β only where used: no overflow for huge |d|
        return np.where(d < self.beta, 0.5 * q * q / self.beta, d - 0.5 * self.beta).sum(axis=1)

    def grad(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        a, y = self.validate(a, y)
        return np.clip((a - y) / self.beta, -1.0, 1.0)

    def hessian_diagonal(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``1[|d| < β]/β``, ``d = a − y`` (``CURV.loss-hessian.smooth-l1``; edge: linear side)."""
        a, y = self.validate(a, y)
        return (np.abs(a - y) < self.beta).astype(a.dtype) / self.beta
