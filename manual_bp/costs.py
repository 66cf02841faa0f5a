"""Cost functions: per-sample cost ``C_x``, its gradient ``∇ₐC_x`` and BP1.

Conventions (``docs/conventions.md``): ``a`` and ``y`` are ``(batch, n_out)``;
:meth:`Cost.per_sample` returns the vector of per-sample costs ``C_x``;
the cost of a mini-batch is their mean, :meth:`Cost.value`.
:meth:`Cost.grad` returns the per-sample gradient ``∂C_x/∂a`` (not divided by
the batch size), so that ``δᴸ_x`` in :meth:`Cost.delta` is Nielsen's
per-sample output error.

BP1 in general form is ``δᴸ = σ'ᵀ ∇ₐC`` (a VJP through the output activation);
some cost/activation pairs have a cheaper exact *shortcut*, e.g. sigmoid +
cross-entropy gives ``δᴸ = a − y``. A cost lists its shortcuts in
``shortcuts`` keyed by activation name; :meth:`Cost.delta` uses one when it
applies and the general path otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from manual_bp._registry import Configurable, Registry
from manual_bp.activations import Activation

__all__ = [
    "COSTS",
    "Cost",
    "CrossEntropyCost",
    "QuadraticCost",
    "get_cost",
    "register_cost",
]

#: ``shortcut(z, a, y) -> δᴸ`` for one output activation.
Shortcut = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


class Cost(Configurable):
    """Base class of costs. Subclasses implement :meth:`per_sample` and :meth:`grad`."""

    #: Equation IDs of the value and of the gradient.
    equation_value: ClassVar[str] = ""
    equation_grad: ClassVar[str] = ""
    #: Output-activation name -> (equation ID, exact shortcut for δᴸ).
    shortcuts: ClassVar[dict[str, tuple[str, Shortcut]]] = {}
    #: Output activations whose range the cost's domain needs (None: any).
    valid_output_activations: ClassVar[tuple[str, ...] | None] = None
    #: Whether targets may be class labels (converted to one-hot).
    accepts_labels: ClassVar[bool] = True
    #: Domain of the targets, used to draw valid test targets:
    #: "real", "probability" ([0, 1]), "labels", "one-hot", "distribution", "count".
    target_kind: ClassVar[str] = "real"

    def per_sample(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per-sample costs ``C_x``, shape ``(batch,)``."""
        raise NotImplementedError

    def value(self, a: np.ndarray, y: np.ndarray) -> float:
        """Mini-batch cost ``C = (1/n) Σ_x C_x``."""
        return float(np.mean(self.per_sample(a, y)))

    def grad(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per-sample gradient ``∂C_x/∂a``, shape ``(batch, n_out)``."""
        raise NotImplementedError

    def delta(
        self, z: np.ndarray, a: np.ndarray, y: np.ndarray, activation: Activation
    ) -> np.ndarray:
        """Output error ``δᴸ_x = ∂C_x/∂zᴸ`` per sample (BP1), shape ``(batch, n_out)``.

        Uses the exact shortcut for ``activation`` when this cost has one,
        otherwise the general BP1 ``δᴸ = J_σᵀ ∇ₐC`` (``= ∇ₐC ⊙ σ'(zᴸ)`` for an
        elementwise σ).
        """
        shortcut = self.shortcuts.get(activation.name)
        if shortcut is not None and self.shortcut_applies(activation):
            return shortcut[1](z, a, y)
        return self.delta_general(z, a, y, activation)

    def delta_general(
        self, z: np.ndarray, a: np.ndarray, y: np.ndarray, activation: Activation
    ) -> np.ndarray:
        """BP1 without shortcuts: ``δᴸ = J_σ(zᴸ)ᵀ ∇ₐC_x``. Equation ``BP1``."""
        return activation.backward(self.grad(a, y), z, a)

    def shortcut_applies(self, activation: Activation) -> bool:
        """Whether the registered shortcut is exact for this activation instance."""
        return True

    def check_output_activation(self, activation: Activation) -> None:
        """Raise ``ValueError`` if ``activation``'s range is outside this cost's domain."""
        valid = self.valid_output_activations
        if valid is not None and activation.name not in valid:
            raise ValueError(
                f"cost {self.name!r} needs an output activation in {list(valid)}, "
                f"got {activation.name!r}"
            )

    def __call__(self, a: np.ndarray, y: np.ndarray) -> float:
        return self.value(a, y)


COSTS = Registry("cost", Cost)
register_cost = COSTS.register


def _output_minus_target(z: np.ndarray, a: np.ndarray, y: np.ndarray) -> np.ndarray:
    return a - y


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
    shortcuts = {"identity": ("SHORTCUT.identity-quadratic", _output_minus_target)}

    def per_sample(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        diff = a - y
        return 0.5 * np.einsum("ij,ij->i", diff, diff)

    def grad(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        return a - y


@register_cost
class CrossEntropyCost(Cost):
    """Nielsen's cross-entropy ``C_x = −Σⱼ [yⱼ ln aⱼ + (1−yⱼ) ln(1−aⱼ)]``.

    Equations ``COST.cross-entropy`` and ``COST.cross-entropy.grad``:
    ``∂C_x/∂aⱼ = (aⱼ − yⱼ) / (aⱼ(1 − aⱼ))``. With a sigmoid output the
    ``σ' = a(1−a)`` cancels and ``δᴸ = a − y`` (``SHORTCUT.sigmoid-cross-entropy``),
    which stays exact when the sigmoid saturates.

    Terms with ``yⱼ = 0`` contribute nothing even where ``ln aⱼ = −∞``
    (the convention ``0 · ln 0 = 0``); torch's ``BCELoss`` instead clamps each
    log at −100 (see ``docs/costs.md``).
    """

    name = "cross-entropy"
    aliases = ("binary-cross-entropy", "bce")
    equation_value = "COST.cross-entropy"
    equation_grad = "COST.cross-entropy.grad"
    shortcuts = {"sigmoid": ("SHORTCUT.sigmoid-cross-entropy", _output_minus_target)}
    valid_output_activations = ("sigmoid",)
    target_kind = "probability"

    def per_sample(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = _xlogy(y, a) + _xlogy(1.0 - y, 1.0 - a)
        return -terms.sum(axis=1)

    def grad(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        # ±inf where a is exactly 0 or 1 (or a(1 − a) underflows): the true value.
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return (a - y) / (a * (1.0 - a))


def _xlogy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``x ln y`` with ``0 ln y = 0`` (also for ``y = 0``)."""
    return np.where(x == 0, 0.0, x * np.log(np.where(x == 0, 1.0, y)))


def get_cost(spec: str | Cost | type[Cost] | dict[str, Any]) -> Cost:
    """Return a :class:`Cost` from a name, class, instance or config dict.

    An unknown name raises ``ValueError`` listing the valid names.
    """
    return COSTS.get(spec)
