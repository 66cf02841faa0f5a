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
from manual_bp._validation import as_array, as_cost_arrays, check_finite, check_target_domain
from manual_bp.activations import Activation, _finite_float, _sigmoid

__all__ = [
    "COSTS",
    "BCELoss",
    "BCEWithLogitsCost",
    "BCEWithLogitsLoss",
    "CategoricalCrossEntropyCost",
    "Cost",
    "CrossEntropyCost",
    "CrossEntropyLoss",
    "HuberCost",
    "HuberLoss",
    "KLDivLoss",
    "KLDivergenceCost",
    "L1Loss",
    "LogLikelihoodCost",
    "MAECost",
    "MultiMarginCost",
    "MultiMarginLoss",
    "PoissonNLLCost",
    "PoissonNLLLoss",
    "QuadraticCost",
    "SmoothL1Cost",
    "SmoothL1Loss",
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
    #: Domain of the targets (checked by :meth:`validate`, and used to draw valid test
    #: targets): "real", "probability" ([0, 1]), "labels", "distribution", "count".
    target_kind: ClassVar[str] = "real"
    #: Domain of the outputs the formula needs: "real", "probability", "log-probability",
    #: "non-negative" (``manual_bp._validation.OUTPUT_DOMAINS``).
    output_domain: ClassVar[str] = "real"

    def target_domain(self) -> str:
        """The domain :meth:`validate` checks targets against (``TARGET_DOMAINS``)."""
        return self.target_kind

    def validate(self, a, y) -> tuple[np.ndarray, np.ndarray]:
        """``(a, y)`` checked: real ``(batch, n_out)`` outputs in :attr:`output_domain`,
        finite targets of the same shape in the target domain (labels one-hot encoded).

        Raises
        ------
        TypeError
            Complex, bool, object or string arrays.
        ValueError
            Empty batch, mismatched shapes (never broadcast), a non-finite target, a
            label out of range, or a value outside the cost's domain (e.g. a target
            outside [0, 1] for cross-entropy), which would give a NaN or negative cost.
        """
        return as_cost_arrays(
            a,
            y,
            cost=self.name,
            target_kind=self.target_domain(),
            output_kind=self.output_domain,
            labels=self.accepts_labels,
        )

    def check_targets(self, y) -> None:
        """Check a whole target array ``(N, n_out)`` once (finite, in the target domain)."""
        y = as_array(y, f"{self.name}: targets")
        check_finite(y, f"{self.name}: targets")
        if y.ndim == 2:
            check_target_domain(y, self.target_domain(), self.name)

    def per_sample(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per-sample costs ``C_x``, shape ``(batch,)``."""
        raise NotImplementedError

    def value(self, a: np.ndarray, y: np.ndarray) -> float:
        """Mini-batch cost ``C = (1/n) Σ_x C_x``."""
        return float(np.mean(self.per_sample(a, y)))

    #: Output-activation name -> name of the cost that is this cost of ``σ(zᴸ)`` written
    #: as a function of the pre-activation ``zᴸ`` (e.g. cross-entropy of a sigmoid is
    #: ``bce-logits`` of ``zᴸ``): finite and accurate where ``σ`` saturates.
    logit_forms: ClassVar[dict[str, str]] = {}

    def per_sample_from_logits(
        self, z: np.ndarray, a: np.ndarray, y: np.ndarray, activation: Activation
    ) -> np.ndarray:
        """Per-sample ``C_x`` of the output ``a = σ(z)``, computed from ``z`` when possible.

        Where ``activation`` has a logit form (:attr:`logit_forms`), ``C_x`` is evaluated
        from ``zᴸ`` by that cost's stable formula, as torch's
        ``binary_cross_entropy_with_logits`` does: a sigmoid output that rounds to exactly
        1 at a finite logit gives a large finite cost, not ``inf``. Otherwise
        :meth:`per_sample` of ``a``.
        """
        form = self.logit_forms.get(activation.name)
        if form is None or not self.shortcut_applies(activation):
            return self.per_sample(a, y)
        a, y = self.validate(a, y)  # the checks (shapes, target domain) of this cost
        return COSTS.lookup(form)().per_sample(z, y)

    def value_from_logits(
        self, z: np.ndarray, a: np.ndarray, y: np.ndarray, activation: Activation
    ) -> float:
        """Mini-batch cost of ``a = σ(z)``, from ``z`` where stable (see per_sample_from_logits)."""
        return float(np.mean(self.per_sample_from_logits(z, a, y, activation)))

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
        a, y = self.validate(a, y)
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

    # ---------------------------------------------------------------- curvature (docs/curvature.md)
    def hessian_diagonal(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Diagonal of the per-sample Hessian ``∇²ₐC_x``, shape ``(batch, n_out)``.

        Only for costs whose Hessian is diagonal (a sum over units); equation
        ``CURV.loss-hessian.<name>``.
        """
        raise NotImplementedError(f"{type(self).__name__} has a non-diagonal Hessian")

    def hessian(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per-sample Hessian ``∇²ₐC_x``, shape ``(batch, n_out, n_out)`` (``CURV.loss-hessian.*``).

        Not divided by the batch size: the Hessian of the mean cost ``C`` is ``(1/n)`` of it.
        """
        return _diag_embed(self.hessian_diagonal(a, y))

    def hessian_factor(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Symmetric factor ``S`` with ``S Sᵀ = ∇²ₐC_x``, shape ``(batch, n_out, n_out)``.

        Diagonal Hessians ``diag(h)`` with ``h ≥ 0`` have ``S = diag(√h)`` (``CURV.loss-factor``).
        """
        return _diag_embed(np.sqrt(self.hessian_diagonal(a, y)))


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
        a, y = self.validate(a, y)
        diff = a - y
        return 0.5 * np.einsum("ij,ij->i", diff, diff)

    def grad(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        a, y = self.validate(a, y)
        return a - y

    def hessian_diagonal(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``∇²ₐC_x = I`` (``CURV.loss-hessian.quadratic``)."""
        a, y = self.validate(a, y)
        return np.ones_like(a)


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
    logit_forms = {"sigmoid": "bce-logits"}
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
    shortcuts = {"softmax": ("SHORTCUT.softmax-log-likelihood", _softmax_log_likelihood_shortcut)}
    logit_forms = {"softmax": "categorical-cross-entropy"}
    valid_output_activations = ("softmax",)
    output_domain = "probability"

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

    def hessian_factor(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``S = diag(√p) − p √pᵀ``: ``S Sᵀ = diag(p) − 2ppᵀ + p(Σₖpₖ)pᵀ = diag(p) − ppᵀ``."""
        a, y = self.validate(a, y)
        p = _softmax_rows(a)
        r = np.sqrt(p)
        return _diag_embed(r) - p[:, :, None] * r[:, None, :]


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
    aliases = ("kl", "kl-div", "kullback-leibler")
    equation_value = "COST.kl-divergence"
    equation_grad = "COST.kl-divergence.grad"
    valid_output_activations = ("log-softmax",)
    target_kind = "distribution"
    output_domain = "log-distribution"

    def per_sample(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        a, y = self.validate(a, y)
        # Mask a before multiplying: 0·(−inf) would be NaN (an invalid-value warning).
        return (_xlogy(y, y) - y * np.where(y == 0, 0.0, a)).sum(axis=1)

    def grad(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        a, y = self.validate(a, y)
        return (-y).astype(a.dtype, copy=False)

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


def _diag_embed(d: np.ndarray) -> np.ndarray:
    """``(batch, n) -> (batch, n, n)`` diagonal matrices."""
    out = np.zeros((*d.shape, d.shape[-1]), dtype=d.dtype)
    idx = np.arange(d.shape[-1])
    out[..., idx, idx] = d
    return out


def _softmax_rows(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _xlogy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``x ln y`` with ``0 ln y = 0`` (also for ``y = 0``)."""
    return np.where(x == 0, 0.0, x * np.log(np.where(x == 0, 1.0, y)))


def get_cost(spec: str | Cost | type[Cost] | dict[str, Any]) -> Cost:
    """Return a :class:`Cost` from a name, class, instance or config dict.

    An unknown name raises ``ValueError`` listing the valid names.
    """
    return COSTS.get(spec)


# torch-named aliases: the same class, the same function of the same inputs; the reduction
# is the mean over samples of per-sample sums (docs/conventions.md, "Where manual_bp's names
# and defaults differ from torch's").
BCELoss = CrossEntropyCost
BCEWithLogitsLoss = BCEWithLogitsCost
CrossEntropyLoss = CategoricalCrossEntropyCost
HuberLoss = HuberCost
KLDivLoss = KLDivergenceCost
L1Loss = MAECost
MultiMarginLoss = MultiMarginCost
PoissonNLLLoss = PoissonNLLCost
SmoothL1Loss = SmoothL1Cost
