"""torch's regression losses on a difference ``d = x − y``: ``MSELoss``, ``L1Loss``,
``HuberLoss``, ``SmoothL1Loss`` (``docs/losses.md``).

Each is torch's module of that name: the mean over **every element** by default (not the
library's mean of per-sample sums), no ½ on the square. A target of another shape is
broadcast against the input with torch's warning; both gradients are summed back onto
their own shapes. ``∂f/∂y = −∂f/∂x`` for every loss here.
"""

from __future__ import annotations

import numpy as np

from manual_bp.activations import _finite_float
from manual_bp.losses._elementwise import ElementwiseLoss, reduction_argument
from manual_bp.losses.base import register_loss

__all__ = ["HuberLoss", "L1Loss", "MSELoss", "SmoothL1Loss"]


class _DifferenceLoss(ElementwiseLoss):
    """``f(x, y) = φ(x − y)``: subclasses give ``φ``, ``φ'`` and ``φ''``."""

    def phi(self, d: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def dphi(self, d: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def d2phi(self, d: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def elements(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.phi(x - y)

    def partials(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        slope = self.dphi(x - y)
        return slope, -slope

    def second(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.d2phi(x - y)


@register_loss
class MSELoss(_DifferenceLoss):
    """torch's ``nn.MSELoss``: ``ℓᵢ = (xᵢ − yᵢ)²`` (``LOSS.mse``), no ½.

    ``∂ℓᵢ/∂xᵢ = 2(xᵢ − yᵢ) = −∂ℓᵢ/∂yᵢ`` (``LOSS.mse.grad``); ``∂²ℓᵢ/∂xᵢ² = 2``
    (``LOSS.mse.hess``). Reduced by torch's ``reduction`` (``LOSS.reduction``).
    """

    name = "mse-loss"
    aliases = ("mseloss",)
    equation_value = "LOSS.mse"
    equation_grad = "LOSS.mse.grad"
    equation_hess = "LOSS.mse.hess"
    hyperparameters = ("reduction",)

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean") -> None:
        self.reduction = reduction_argument(reduction, size_average, reduce)

    def phi(self, d: np.ndarray) -> np.ndarray:
        return d * d

    def dphi(self, d: np.ndarray) -> np.ndarray:
        return 2 * d

    def d2phi(self, d: np.ndarray) -> np.ndarray:
        return np.full_like(d, 2)


@register_loss
class L1Loss(_DifferenceLoss):
    """torch's ``nn.L1Loss``: ``ℓᵢ = |xᵢ − yᵢ|`` (``LOSS.l1``).

    ``∂ℓᵢ/∂xᵢ = sign(xᵢ − yᵢ)``, ``0`` at the kink ``x = y`` as torch's ``sgn``
    (``LOSS.l1.grad``); ``∂²ℓᵢ/∂xᵢ² = 0`` away from the kink, and torch's 0 at it
    (``LOSS.l1.hess``). Complex input and target are taken as torch's: ``ℓ = |x − y|``
    (real) and ``∂ℓ/∂x = (x − y)/|x − y|``, torch's gradient of a real function of a
    complex argument (the conjugate Wirtinger derivative, doubled).
    """

    name = "l1-loss"
    aliases = ("l1loss",)
    equation_value = "LOSS.l1"
    equation_grad = "LOSS.l1.grad"
    equation_hess = "LOSS.l1.hess"
    hyperparameters = ("reduction",)
    complex_ok = True

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean") -> None:
        self.reduction = reduction_argument(reduction, size_average, reduce)

    def phi(self, d: np.ndarray) -> np.ndarray:
        return np.abs(d)

    def dphi(self, d: np.ndarray) -> np.ndarray:
        return np.sign(d)

    def d2phi(self, d: np.ndarray) -> np.ndarray:
        return np.zeros_like(d, dtype=np.abs(d).dtype)


@register_loss
class HuberLoss(_DifferenceLoss):
    """torch's ``nn.HuberLoss(reduction='mean', delta=1.0)`` (``LOSS.huber``)::

        ℓ = ½ d²            |d| < δ
            δ(|d| − ½δ)     otherwise

    ``∂ℓ/∂x = clip(d, −δ, δ)`` (``LOSS.huber.grad``), continuous at ``|d| = δ``;
    ``∂²ℓ/∂x² = [|d| < δ]`` (``LOSS.huber.hess``), torch's 0 at the kink itself.
    """

    name = "huber-loss"
    aliases = ("huberloss",)
    equation_value = "LOSS.huber"
    equation_grad = "LOSS.huber.grad"
    equation_hess = "LOSS.huber.hess"
    hyperparameters = ("reduction", "delta")

    def __init__(self, reduction: str = "mean", delta: float = 1.0) -> None:
        self.reduction = reduction_argument(reduction, None, None)
        self.delta = _finite_float(delta, "delta")
        if not self.delta > 0:
            raise ValueError(f"delta must be > 0 (torch's huber_loss), got {delta!r}")

    def phi(self, d: np.ndarray) -> np.ndarray:
        a, delta = np.abs(d), self.delta
        return np.where(a < delta, 0.5 * d * d, delta * (a - 0.5 * delta))

    def dphi(self, d: np.ndarray) -> np.ndarray:
        return np.clip(d, -self.delta, self.delta)

    def d2phi(self, d: np.ndarray) -> np.ndarray:
        return (np.abs(d) < self.delta).astype(d.dtype)


@register_loss
class SmoothL1Loss(_DifferenceLoss):
    """torch's ``nn.SmoothL1Loss(size_average=None, reduce=None, reduction='mean',
    beta=1.0)`` (``LOSS.smooth-l1``)::

        ℓ = ½ d² / β        |d| < β
            |d| − ½β        otherwise

    ``β = 0`` is the L1 loss, as torch (which calls ``l1_loss`` then).
    ``∂ℓ/∂x = clip(d/β, −1, 1)`` (``sign(d)`` for ``β = 0``; ``LOSS.smooth-l1.grad``);
    ``∂²ℓ/∂x² = [|d| < β] / β`` (``LOSS.smooth-l1.hess``), torch's 0 at the kink.
    """

    name = "smooth-l1-loss"
    aliases = ("smoothl1loss",)
    equation_value = "LOSS.smooth-l1"
    equation_grad = "LOSS.smooth-l1.grad"
    equation_hess = "LOSS.smooth-l1.hess"
    hyperparameters = ("reduction", "beta")

    def __init__(
        self, size_average=None, reduce=None, reduction: str = "mean", beta: float = 1.0
    ) -> None:
        self.reduction = reduction_argument(reduction, size_average, reduce)
        self.beta = _finite_float(beta, "beta")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0 (torch's smooth_l1_loss), got {beta!r}")

    def phi(self, d: np.ndarray) -> np.ndarray:
        a, beta = np.abs(d), self.beta
        if beta == 0:
            return a
        return np.where(a < beta, 0.5 * d * d / beta, a - 0.5 * beta)

    def dphi(self, d: np.ndarray) -> np.ndarray:
        if self.beta == 0:
            return np.sign(d)
        return np.clip(d / self.beta, -1, 1)

    def d2phi(self, d: np.ndarray) -> np.ndarray:
        if self.beta == 0:
            return np.zeros_like(d)
        return (np.abs(d) < self.beta).astype(d.dtype) / self.beta
