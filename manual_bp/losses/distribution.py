"""torch's distribution losses: ``KLDivLoss`` (log-probabilities against a target
distribution) and ``PoissonNLLLoss`` (``docs/losses.md``).

Both broadcast the target against the input silently, as torch's kernels do. KL adds
torch's ``'batchmean'`` reduction (the sum over the first axis's length).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import xlogy

from manual_bp.activations.base import _finite_float
from manual_bp.losses._elementwise import ElementwiseLoss, legacy_reduction
from manual_bp.losses.base import REDUCTIONS, register_loss

__all__ = ["KLDivLoss", "PoissonNLLLoss"]


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


@register_loss
class KLDivLoss(ElementwiseLoss):
    """torch's ``nn.KLDivLoss(size_average=None, reduce=None, reduction='mean',
    log_target=False)``: ``x`` holds log-probabilities (``LOSS.kl-div``)::

        ℓ = y (ln y − x)        (0 where y = 0: torch's xlogy)
        ℓ = eʸ (y − x)          with log_target=True (y holds log-probabilities)

    ``∂ℓ/∂x = −y`` (``−eʸ``); ``∂ℓ/∂y = ln y + 1 − x`` (``eʸ(y − x + 1)``)
    (``LOSS.kl-div.grad``); ``∂²ℓ/∂x² = 0``: the loss is linear in its input
    (``LOSS.kl-div.hess``). ``reduction='batchmean'`` divides the sum by ``x.shape[0]``
    (a 0-d input: the sum), the KL divergence per sample; ``'mean'`` divides by every
    element, as torch (which warns that it will change).

    At ``y = 0`` torch's target gradient is NaN (its ``xlogy`` backward divides 0 by 0);
    the library gives the same NaN — the derivative of ``y ln y`` does not exist there.
    """

    name = "kl-div-loss"
    aliases = ("kldivloss",)
    equation_value = "LOSS.kl-div"
    equation_grad = "LOSS.kl-div.grad"
    equation_hess = "LOSS.kl-div.hess"
    hyperparameters = ("reduction", "log_target")
    shape_rule = "broadcast"

    def __init__(
        self, size_average=None, reduce=None, reduction: str = "mean", log_target: bool = False
    ) -> None:
        if not isinstance(reduction, str) or reduction not in (*REDUCTIONS, "batchmean"):
            raise ValueError(f"reduction must be one of 'none', 'mean', 'sum', 'batchmean', "
                             f"got {reduction!r}")  # fmt: skip
        self.reduction = legacy_reduction(size_average, reduce, reduction)
        self.log_target = _flag(log_target, "log_target")

    def _reduction(self) -> str:
        return "sum" if self.reduction == "batchmean" else self.reduction

    def mean_total(self, x: np.ndarray, shape: tuple[int, ...]) -> float | None:
        return None

    def forward(self, input, target):
        value, cache = super().forward(input, target)
        if self.reduction == "batchmean" and cache.input_shape:
            # torch: the sum, then ÷ input.size(0) (LOSS.reduction)
            with np.errstate(all="ignore"):  # an empty first axis: NaN, as torch (0/0)
                value = np.asarray(value / value.dtype.type(cache.input_shape[0]))
        return value, cache

    def _upstream(self, grad_output, cache):
        upstream = super()._upstream(grad_output, cache)
        if self.reduction == "batchmean" and cache.input_shape:
            with np.errstate(all="ignore"):
                upstream = upstream / upstream.dtype.type(cache.input_shape[0])
        return upstream

    def elements(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        if self.log_target:
            return np.exp(y) * (y - x)
        return xlogy(y, y) - y * x

    def partials(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.log_target:
            e = np.exp(y)
            return -e, e * (y - x + 1)
        # torch's xlogy backward: ∂/∂self = ln y (0 where y = 0), ∂/∂other = y / y
        return -y, np.where(y == 0, 0.0, np.log(y)) + y / y - x

    def second(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.zeros_like(x)


@register_loss
class PoissonNLLLoss(ElementwiseLoss):
    """torch's ``nn.PoissonNLLLoss(log_input=True, full=False, size_average=None,
    eps=1e-8, reduce=None, reduction='mean')``: the negative log-likelihood of a target
    count ``y`` under a Poisson rate ``λ`` (``LOSS.poisson-nll``)::

        ℓ = eˣ − y x                 log_input=True (x = ln λ)
        ℓ = x − y ln(x + eps)        log_input=False (x = λ)
          + [y > 1] (y ln y − y + ½ ln(2πy))   with full=True (Stirling's ln y!)

    ``∂ℓ/∂x = eˣ − y`` or ``1 − y/(x + eps)``; ``∂ℓ/∂y = −x`` or ``−ln(x + eps)``, plus
    ``[y > 1](ln y + 1/(2y))`` with ``full`` (``LOSS.poisson-nll.grad``);
    ``∂²ℓ/∂x² = eˣ`` or ``y/(x + eps)²`` (``LOSS.poisson-nll.hess``).

    torch computes the Stirling term everywhere and masks it where ``y ≤ 1``, so its
    *target* gradient is NaN at ``y = 0`` (``0·ln 0``); the library gives the masked
    term's derivative, 0, there.
    """

    name = "poisson-nll-loss"
    aliases = ("poissonnllloss",)
    equation_value = "LOSS.poisson-nll"
    equation_grad = "LOSS.poisson-nll.grad"
    equation_hess = "LOSS.poisson-nll.hess"
    hyperparameters = ("log_input", "full", "eps", "reduction")
    shape_rule = "broadcast"

    def __init__(
        self,
        log_input: bool = True,
        full: bool = False,
        size_average=None,
        eps: float = 1e-8,
        reduce=None,
        reduction: str = "mean",
    ) -> None:
        self.log_input = _flag(log_input, "log_input")
        self.full = _flag(full, "full")
        self.eps = _finite_float(eps, "eps")
        if not isinstance(reduction, str) or reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of 'none', 'mean', 'sum', got "
                             f"{reduction!r}")  # fmt: skip
        self.reduction = legacy_reduction(size_average, reduce, reduction)

    def _stirling(self, y: np.ndarray) -> np.ndarray:
        big = y > 1
        safe = np.where(big, y, 2.0)
        term = safe * np.log(safe) - safe + 0.5 * np.log(2 * math.pi * safe)
        return np.where(big, term, 0.0)

    def elements(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        ell = np.exp(x) - y * x if self.log_input else x - y * np.log(x + self.eps)
        return ell + self._stirling(y) if self.full else ell

    def partials(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.log_input:
            dx, dy = np.exp(x) - y, -x
        else:
            dx, dy = 1 - y / (x + self.eps), -np.log(x + self.eps)
        if self.full:
            big = y > 1
            safe = np.where(big, y, 2.0)
            dy = dy + np.where(big, np.log(safe) + 0.5 / safe, 0.0)
        return dx, dy

    def second(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        if self.log_input:
            return np.exp(x)
        return y / (x + self.eps) ** 2
