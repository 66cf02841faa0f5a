"""Classification costs: binary cross-entropy (probabilities, logits), log-likelihood,
categorical cross-entropy, multi-class hinge (``COST.*``)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from manual_bp._validation import as_cost_arrays
from manual_bp.activations import _finite_float, _sigmoid
from manual_bp.costs.base import (
    Cost,
    Fold,
    _diag_embed,
    _output_minus_target,
    _softmax_rows,
    _xlogy,
    check_tangents,
    register_cost,
    softmax_hessian,
    softmax_hessian_factor,
    softmax_hessian_product,
)

__all__ = [
    "BCEWithLogitsCost",
    "CategoricalCrossEntropyCost",
    "CrossEntropyCost",
    "LogLikelihoodCost",
    "MultiMarginCost",
    "class_targets",
]


def _sigmoid_curvature(z: np.ndarray) -> np.ndarray:
    """``a(1 − a)``, ``a = sigmoid(z)``: the diagonal of ``∇²_z`` of the cross-entropy of a
    sigmoid (``CURV.output-hessian``; finite where ``a`` rounds to 0 or 1)."""
    s = _sigmoid(z)
    return s * (1.0 - s)


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
    folds = {
        "sigmoid": Fold(
            "SHORTCUT.sigmoid-cross-entropy",
            _output_minus_target,
            minus_target=True,
            logit_form="bce-logits",
            head=True,
            predictive="bernoulli",
            hessian=lambda z, y: _diag_embed(_sigmoid_curvature(z)),
            hessian_factor=lambda z, y: _diag_embed(np.sqrt(_sigmoid_curvature(z))),
            hessian_product=lambda z, y, r: _sigmoid_curvature(z) * r,
        )
    }
    valid_output_activations = ("sigmoid",)
    target_kind = "probability"
    output_domain = "probability"

    def per_sample(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        a, y = self.validate(a, y)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = _xlogy(y, a) + _xlogy(1.0 - y, 1.0 - a)
        return -terms.sum(axis=1)

    def grad(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        a, y = self.validate(a, y)
        # Inside (0, 1) the one-fraction form (a − y)/(a(1 − a)) does not cancel. At a = 0
        # or 1 exactly the derivative −y/a + (1 − y)/(1 − a) is evaluated term by term with
        # 0·(1/0) = 0: finite (±1) where the target equals a, ±inf where it does not.
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            inside = (a - y) / (a * (1.0 - a))
            edge = np.where(y == 0, 0.0, -y / a) + np.where(y == 1, 0.0, (1.0 - y) / (1.0 - a))
        return np.where((a > 0) & (a < 1), inside, edge).astype(a.dtype, copy=False)

    def hessian_diagonal(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``∂²C_x/∂aⱼ² = yⱼ/aⱼ² + (1 − yⱼ)/(1 − aⱼ)²`` (``CURV.loss-hessian.cross-entropy``)."""
        a, y = self.validate(a, y)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(y == 0, 0.0, y / (a * a)) + np.where(
                y == 1, 0.0, (1.0 - y) / ((1.0 - a) * (1.0 - a))
            )


@register_cost
class BCEWithLogitsCost(Cost):
    """Binary cross-entropy from logits, ``C_x = Σⱼ [ln(1 + e^{aⱼ}) − yⱼ aⱼ]``.

    Equations ``COST.bce-logits`` and ``COST.bce-logits.grad``: the
    cross-entropy of ``sigmoid(a)`` written as a function of the logit ``a``
    (pair with an identity output). Evaluated as
    ``max(a, 0) − y a + ln(1 + e^{−|a|})``, so logits of ±1e4 give finite,
    accurate values; ``∂C_x/∂a = sigmoid(a) − y``.
    torch: ``F.binary_cross_entropy_with_logits``.
    """

    name = "bce-logits"
    folds = {"identity": Fold(head=True, predictive="bernoulli")}
    aliases = ("binary-cross-entropy-with-logits", "bce-with-logits")
    equation_value = "COST.bce-logits"
    equation_grad = "COST.bce-logits.grad"
    valid_output_activations = ("identity",)
    target_kind = "probability"

    def per_sample(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        a, y = self.validate(a, y)
        return (np.maximum(a, 0.0) - y * a + np.log1p(np.exp(-np.abs(a)))).sum(axis=1)

    def grad(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        a, y = self.validate(a, y)
        return _sigmoid(a) - y

    def hessian_diagonal(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``∂²C_x/∂aⱼ² = s(1 − s)``, ``s = sigmoid(aⱼ)`` (``CURV.loss-hessian.bce-logits``)."""
        a, y = self.validate(a, y)
        s = _sigmoid(a)
        return s * (1.0 - s)


class _ClassTargetCost(Cost):
    """A cost whose targets are classes: integer labels ``(batch,)`` or rows.

    Rows must be probability distributions (non-negative, summing to 1: one-hot
    rows or soft labels); labels are one-hot encoded after a range check.
    """

    target_kind = "labels"
    #: Whether rows must be exactly one-hot (a single 1 per row).
    one_hot_only: ClassVar[bool] = False

    def target_domain(self) -> str:
        return "one-hot" if self.one_hot_only else "labels"

    def _targets(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.validate(a, y)[1]


def class_targets(
    a: np.ndarray, y: np.ndarray, *, one_hot_only: bool = False, cost: str = "cost"
) -> np.ndarray:
    """Targets for a class cost as ``(batch, n_classes)`` rows shaped like ``a``.

    Raises
    ------
    ValueError
        A label outside ``[0, n_classes)`` (naming it and its index), a shape
        that does not match ``a``, or a row that is not a distribution (not
        one-hot, when ``one_hot_only``).
    """
    kind = "one-hot" if one_hot_only else "labels"
    return as_cost_arrays(a, y, cost=cost, target_kind=kind, output_kind="real")[1]


def _softmax_log_likelihood_shortcut(z: np.ndarray, a: np.ndarray, y: np.ndarray) -> np.ndarray:
    # SHORTCUT.softmax-log-likelihood: a − y·Σy = a − y because the rows of y sum to 1
    # (Cost.delta has validated y before calling a shortcut).
    return a - y


@register_cost
class LogLikelihoodCost(_ClassTargetCost):
    """Nielsen's log-likelihood ``C_x = −ln a_y`` for a softmax output (ch. 3).

    Equations ``COST.log-likelihood`` and ``COST.log-likelihood.grad``. With
    target rows ``y`` (one-hot, or soft labels summing to 1)
    ``C_x = −Σⱼ yⱼ ln aⱼ`` and ``∂C_x/∂aⱼ = −yⱼ/aⱼ`` (``0`` where ``yⱼ = 0``,
    even at ``aⱼ = 0``). With a softmax output the Jacobian collapses the
    sum and ``δᴸ = a − y`` (``SHORTCUT.softmax-log-likelihood``), which stays
    finite when an output underflows to 0. torch: ``F.nll_loss(log a, labels)``.
    """

    name = "log-likelihood"
    aliases = ("nll", "negative-log-likelihood")
    equation_value = "COST.log-likelihood"
    equation_grad = "COST.log-likelihood.grad"
    folds = {
        "softmax": Fold(
            "SHORTCUT.softmax-log-likelihood",
            _softmax_log_likelihood_shortcut,
            minus_target=True,
            logit_form="categorical-cross-entropy",
            head=True,
            predictive="categorical",
            hessian=lambda z, y: softmax_hessian(z),
            hessian_factor=lambda z, y: softmax_hessian_factor(z),
            hessian_product=lambda z, y, r: softmax_hessian_product(z, r),
        )
    }
    valid_output_activations = ("softmax",)
    output_domain = "non-negative"  # ln a; a > 1 (dropout after a softmax) is finite

    def per_sample(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        a, y = self.validate(a, y)
        with np.errstate(divide="ignore"):  # −ln 0 = +inf where a target class has a = 0
            return -_xlogy(y, a).sum(axis=1)

    def grad(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        a, y = self.validate(a, y)
        with np.errstate(divide="ignore", over="ignore"):  # −inf at a = 0 or a subnormal a
            return np.where(y == 0, 0.0, -y / np.where(y == 0, 1.0, a)).astype(a.dtype, copy=False)

    def hessian_diagonal(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``∂²C_x/∂aⱼ² = yⱼ/aⱼ²`` (0 where ``yⱼ = 0``) (``CURV.loss-hessian.log-likelihood``)."""
        a, y = self.validate(a, y)
        with np.errstate(divide="ignore", over="ignore"):
            return np.where(y == 0, 0.0, y / np.where(y == 0, 1.0, a * a))


@register_cost
class CategoricalCrossEntropyCost(_ClassTargetCost):
    """Softmax cross-entropy from logits ``C_x = ln Σₖ e^{aₖ} − Σⱼ yⱼ aⱼ`` (fused, stable).

    Equations ``COST.categorical-cross-entropy`` and its ``.grad``: ``a`` are
    logits (pair with an identity output), ``y`` one-hot rows, soft labels or
    integer labels; ``C_x = −Σⱼ yⱼ log_softmax(a)ⱼ`` and
    ``∂C_x/∂a = softmax(a) − y`` (the rows of ``y`` sum to 1). Log-sum-exp
    subtracts the row maximum, so logits of ±1e4 give finite values.
    torch: ``F.cross_entropy(a, y)``.
    """

    name = "categorical-cross-entropy"
    folds = {"identity": Fold(head=True, predictive="categorical")}
    aliases = ("softmax-cross-entropy", "cross-entropy-logits")
    equation_value = "COST.categorical-cross-entropy"
    equation_grad = "COST.categorical-cross-entropy.grad"
    valid_output_activations = ("identity",)

    def per_sample(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        a, y = self.validate(a, y)
        shifted = a - a.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return -(np.where(y == 0, 0.0, y * log_probs)).sum(axis=1)

    def grad(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        a, y = self.validate(a, y)
        e = np.exp(a - a.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True) - y

    def hessian(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``∇²ₐC_x = diag(p) − p pᵀ``, ``p = softmax(a)``.

        Equation ``CURV.loss-hessian.categorical-cross-entropy``.
        Independent of ``y`` (the rows of ``y`` sum to 1).
        """
        a, y = self.validate(a, y)
        p = _softmax_rows(a)
        return _diag_embed(p) - p[:, :, None] * p[:, None, :]

    def hessian_product(self, a: np.ndarray, y: np.ndarray, r: np.ndarray) -> np.ndarray:
        """``(diag(p) − p pᵀ) r = p ⊙ r − p (pᵀ r)`` for V tangents ``r`` ``(V, batch, m)``,
        no ``(batch, m, m)`` matrices (``CURV.loss-hessian.categorical-cross-entropy``)."""
        a, y = self.validate(a, y)
        return softmax_hessian_product(a, check_tangents(r, a.shape))

    def hessian_factor(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``S = diag(√p) − p √pᵀ``: ``S Sᵀ = diag(p) − 2ppᵀ + p(Σₖpₖ)pᵀ = diag(p) − ppᵀ``."""
        a, y = self.validate(a, y)
        p = _softmax_rows(a)
        r = np.sqrt(p)
        return _diag_embed(r) - p[:, :, None] * r[:, None, :]


@register_cost
class MultiMarginCost(_ClassTargetCost):
    """Multi-class hinge ``C_x = Σ_{j≠y} max(0, m − a_y + aⱼ)`` (margin ``m``).

    Equations ``COST.multi-margin`` and ``COST.multi-margin.grad``:
    ``∂C_x/∂aⱼ = 1[m − a_y + aⱼ > 0]`` for ``j ≠ y`` and
    ``∂C_x/∂a_y = −Σ_{j≠y} 1[m − a_y + aⱼ > 0]``; a hinge exactly at 0
    contributes 0 (torch's strict ``>``). Targets: labels or one-hot rows.
    torch's ``F.multi_margin_loss(p=1)`` divides each sample's sum by the
    number of classes; we do not (the Weston–Watkins / CS231n form), so the
    oracle multiplies by ``n_classes``.
    """

    name = "multi-margin"
    aliases = ("hinge", "multi-class-hinge", "multiclass-hinge")
    equation_value = "COST.multi-margin"
    equation_grad = "COST.multi-margin.grad"
    hyperparameters = ("margin",)
    one_hot_only = True

    def __init__(self, margin: float = 1.0) -> None:
        self.margin = _finite_float(margin, "margin")

    def _hinges(self, a: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a, y = self.validate(a, y)
        target_score = (a * y).sum(axis=1, keepdims=True)  # a_y (y is one-hot)
        return self.margin - target_score + a, y

    def per_sample(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        hinge, y = self._hinges(a, y)
        return np.where(y == 1, 0.0, np.maximum(hinge, 0.0)).sum(axis=1)

    def grad(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        hinge, y = self._hinges(a, y)
        active = ((hinge > 0) & (y == 0)).astype(a.dtype)
        return active - y * active.sum(axis=1, keepdims=True)

    def hessian_diagonal(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        """0: each hinge is piecewise linear (``CURV.loss-hessian.multi-margin``).

        Generalisation: 0 also exactly at a hinge (the derivative of the indicator
        ``1[m − a_y + aⱼ > 0]`` used by :meth:`grad`, ignoring its Dirac mass).
        """
        a, y = self.validate(a, y)
        return np.zeros_like(a)
