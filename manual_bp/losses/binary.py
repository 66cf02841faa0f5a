"""torch's binary losses: ``BCELoss`` (probabilities) and ``BCEWithLogitsLoss`` (logits),
with torch's ``weight``, ``pos_weight``, clamps and reduction (``docs/losses.md``).

The target must have the input's shape (torch refuses any other); ``weight`` and
``pos_weight`` broadcast onto it as torch broadcasts them, and are constants (torch's
buffers: no gradient). ``'mean'`` divides by the element count, whatever the weights: a
weight scales its elements, never the denominator.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import expit

from manual_bp.losses._elementwise import (
    ElementwiseLoss,
    optional_float_array,
    reduction_argument,
)
from manual_bp.losses.base import register_loss

__all__ = ["BCELoss", "BCEWithLogitsLoss"]

#: torch's floor of each logarithm of the binary cross-entropy (``log(0) → −100``).
LOG_FLOOR = -100.0
#: torch's floor of the gradient's denominator ``x(1 − x)``: ``1e-12`` held as a float32
#: constant in torch's kernel (9.99999996e-13, measured), even in float64.
GRAD_FLOOR = float(np.float32(1e-12))
#: The ``ε`` of torch's second derivative's denominators (a float64 ``1e-12``).
EPSILON = 1e-12


def _check_broadcast(weight: np.ndarray | None, shape: tuple[int, ...], name: str) -> None:
    if weight is None:
        return
    try:
        fits = np.broadcast_shapes(weight.shape, shape) == shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{name} of shape {weight.shape} does not broadcast to the input's "
                         f"shape {shape}")  # fmt: skip


class _WeightedLoss(ElementwiseLoss):
    shape_rule = "same"

    def get_config(self) -> dict[str, Any]:
        """The config, weights as (nested) lists so it is JSON and compares by value."""
        config = super().get_config()
        for key in ("weight", "pos_weight"):
            if config.get(key) is not None:
                config[key] = np.asarray(config[key]).tolist()
        return config

    def _w(self, x: np.ndarray) -> np.ndarray | float:
        return 1.0 if self.weight is None else self.weight.astype(x.dtype, copy=False)


@register_loss
class BCELoss(_WeightedLoss):
    """torch's ``nn.BCELoss(weight=None, size_average=None, reduce=None,
    reduction='mean')`` on probabilities ``x ∈ [0, 1]`` (``LOSS.bce``)::

        ℓ = −w [y max(ln x, −100) + (1 − y) max(ln(1 − x), −100)]

    ``∂ℓ/∂x = w (x − y) / max(x(1 − x), 10⁻¹²)`` (torch's float32 ``10⁻¹²``) and
    ``∂ℓ/∂y = −w logit(x)`` (torch's, unclamped; ``LOSS.bce.grad``);
    ``∂²ℓ/∂x² = w (x² − 2xy + y) / ((x + ε)²(1 − x + ε)²)``, ``ε = 10⁻¹²`` (torch's double
    backward; ``LOSS.bce.hess``).
    """

    name = "bce-loss"
    aliases = ("bceloss",)
    equation_value = "LOSS.bce"
    equation_grad = "LOSS.bce.grad"
    equation_hess = "LOSS.bce.hess"
    hyperparameters = ("weight", "reduction")

    def __init__(
        self, weight: Any = None, size_average=None, reduce=None, reduction: str = "mean"
    ) -> None:
        self.weight = optional_float_array(weight, "weight")
        self.reduction = reduction_argument(reduction, size_average, reduce)

    def check_arguments(self, x: np.ndarray, y: np.ndarray) -> None:
        if not np.all((x >= 0) & (x <= 1)):  # NaN fails too, as torch's check
            raise ValueError("input of BCELoss must be probabilities: all elements between 0 "
                             "and 1")  # fmt: skip
        _check_broadcast(self.weight, x.shape, "weight")

    def elements(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        log_x = np.maximum(np.log(x), LOG_FLOOR)
        log_1mx = np.maximum(np.log1p(-x), LOG_FLOOR)
        return -self._w(x) * (y * log_x + (1 - y) * log_1mx)

    def partials(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w = self._w(x)
        dx = w * (x - y) / np.maximum(x * (1 - x), GRAD_FLOOR)
        dy = w * (np.log1p(-x) - np.log(x))
        return dx, np.broadcast_to(dy, x.shape)

    def second(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        numerator = x * x - 2 * x * y + y
        return self._w(x) * numerator / ((x + EPSILON) ** 2 * (1 - x + EPSILON) ** 2)


@register_loss
class BCEWithLogitsLoss(_WeightedLoss):
    """torch's ``nn.BCEWithLogitsLoss(weight=None, size_average=None, reduce=None,
    reduction='mean', pos_weight=None)`` on logits ``x`` (``LOSS.bce-logits``)::

        ℓ = w [(1 − y) x + (1 + (p − 1) y) softplus(−x)]

    the binary cross-entropy of ``σ(x)`` with the positive term scaled by ``p``
    (``pos_weight``, broadcast against the target as torch: one entry per class on the
    last axis), computed stably. ``∂ℓ/∂x = w [(1 + (p − 1)y) σ(x) − p y]``,
    ``∂ℓ/∂y = w [−x + (p − 1) softplus(−x)]`` (``LOSS.bce-logits.grad``);
    ``∂²ℓ/∂x² = w (1 + (p − 1)y) σ(x)(1 − σ(x))`` (``LOSS.bce-logits.hess``).
    """

    name = "bce-with-logits-loss"
    aliases = ("bcewithlogitsloss",)
    equation_value = "LOSS.bce-logits"
    equation_grad = "LOSS.bce-logits.grad"
    equation_hess = "LOSS.bce-logits.hess"
    hyperparameters = ("weight", "reduction", "pos_weight")

    def __init__(
        self,
        weight: Any = None,
        size_average=None,
        reduce=None,
        reduction: str = "mean",
        pos_weight: Any = None,
    ) -> None:
        self.weight = optional_float_array(weight, "weight")
        self.reduction = reduction_argument(reduction, size_average, reduce)
        self.pos_weight = optional_float_array(pos_weight, "pos_weight")

    def check_arguments(self, x: np.ndarray, y: np.ndarray) -> None:
        _check_broadcast(self.weight, x.shape, "weight")
        _check_broadcast(self.pos_weight, x.shape, "pos_weight")

    def _p(self, x: np.ndarray) -> np.ndarray | float:
        return 1.0 if self.pos_weight is None else self.pos_weight.astype(x.dtype, copy=False)

    def elements(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        scale = 1 + (self._p(x) - 1) * y
        return self._w(x) * ((1 - y) * x + scale * np.logaddexp(0, -x))

    def partials(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w, p = self._w(x), self._p(x)
        dx = w * ((1 + (p - 1) * y) * expit(x) - p * y)
        dy = w * (-x + (p - 1) * np.logaddexp(0, -x))
        return dx, np.broadcast_to(dy, x.shape)

    def second(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        s = expit(x)
        return self._w(x) * (1 + (self._p(x) - 1) * y) * s * (1 - s)
