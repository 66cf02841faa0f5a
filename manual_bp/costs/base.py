"""The :class:`Cost` protocol (value, gradient, BP1, domains, logit forms) and the registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy import special

from manual_bp._registry import Configurable, Registry
from manual_bp._validation import (
    as_array,
    as_cost_arrays,
    check_finite,
    check_target_domain,
)
from manual_bp.activations import Activation

__all__ = ["COSTS", "PREDICTIVE", "Cost", "Fold", "Shortcut", "get_cost", "register_cost"]

#: ``shortcut(z, a, y) -> δᴸ`` for one output activation.
Shortcut = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Fold:
    """How a cost combines with one output activation: a row of the one table of folds.

    Every path reads this table (``Cost.folds``): BP1 (the shortcut), the cost's value from
    ``zᴸ``, the fused training step (``a − y`` in one subtract), curvature (the loss taken at
    ``zᴸ``) and Monte-Carlo curvature (the predictive distribution).

    Attributes
    ----------
    equation, delta : str and ``delta(z, a, y) -> δᴸ``, or None
        BP1's exact shortcut at ``zᴸ`` and its equation ID (None: BP1's general form).
    minus_target : bool
        ``δᴸ = a − y`` exactly for valid targets (the fused step's one subtract).
    logit_form : str or None
        Name of the cost of ``zᴸ`` that evaluates ``C(σ(zᴸ), y)`` stably.
    head : bool
        The loss ``ℓ(zᴸ) = C(σ(zᴸ), y)`` is convex in ``zᴸ``: curvature takes σ into the
        loss (``CURV.ggn-split``, Schraudolph 2002).
    predictive : str or None
        ``"normal"``, ``"bernoulli"``, ``"categorical"``, ``"poisson"``: the distribution
        of targets given ``zᴸ`` whose Fisher equals the GGN (``CURV.diag-ggn-mc``; the
        samplers are :data:`PREDICTIVE`).
    hessian, hessian_factor : ``(z, y) -> (batch, m, m)``, or None
        For a folded σ (``head``): the per-sample ``∇²_z ℓ`` of ``ℓ(z) = C(σ(z), y)`` in
        closed form at the pre-activation (``CURV.output-hessian``), finite where ``σ(z)``
        underflows, and a symmetric factor ``S`` with ``S Sᵀ = ∇²_z ℓ``
        (``CURV.loss-factor``). None: the cost's own :meth:`Cost.hessian` and
        :meth:`Cost.hessian_factor` (an identity output).
    hessian_product : ``(z, y, r) -> (V, batch, m)``, or None
        ``∇²_z ℓ · r`` for V tangents ``r`` ``(V, batch, m)`` without the ``(batch, m, m)``
        matrices (the same closed form applied to ``r``). None: ``hessian`` times ``r``.
    """

    equation: str | None = None
    delta: Shortcut | None = None
    minus_target: bool = False
    logit_form: str | None = None
    head: bool = False
    predictive: str | None = None
    hessian: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    hessian_factor: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    hessian_product: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None


class Cost(Configurable):
    """Base class of costs. Subclasses implement :meth:`per_sample` and :meth:`grad`."""

    #: Equation IDs of the value and of the gradient.
    equation_value: ClassVar[str] = ""
    equation_grad: ClassVar[str] = ""
    #: Output-activation name -> :class:`Fold`: the one table of (cost, activation) pairs.
    folds: ClassVar[dict[str, Fold]] = {}
    #: Views of :attr:`folds` (derived per class, never written by hand): output-activation
    #: name -> (equation ID, exact shortcut for δᴸ), and -> logit-form cost name.
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
    #: ``bce-logits`` of ``zᴸ``): finite and accurate where ``σ`` saturates. From :attr:`folds`.
    logit_forms: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.shortcuts = {
            act: (fold.equation, fold.delta)
            for act, fold in cls.folds.items()
            if fold.equation is not None and fold.delta is not None
        }
        cls.logit_forms = {
            act: fold.logit_form for act, fold in cls.folds.items() if fold.logit_form
        }

    def fold(self, activation: Activation) -> Fold | None:
        """This cost's row of the table for ``activation`` (None: the pair does not fold)."""
        fold = self.folds.get(activation.name)
        return fold if fold is not None and self.shortcut_applies(activation) else None

    def grad_into(self, a: np.ndarray, y: np.ndarray, out: np.ndarray) -> np.ndarray:
        """:meth:`grad` written into ``out`` (the fused training step's form; a cost whose
        gradient is elementwise overrides it with in-place ufuncs)."""
        out[...] = self.grad(a, y)
        return out

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

    def hessian_product(self, a: np.ndarray, y: np.ndarray, r: np.ndarray) -> np.ndarray:
        """``∇²ₐC_x · r`` per sample for V tangents ``r`` ``(V, batch, n_out)``
        (``CURV.loss-hessian.*`` applied): :meth:`hessian` times ``r``; a cost whose Hessian
        has structure applies it without the matrices."""
        H = self.hessian(a, y)
        return np.einsum("nij,vnj->vni", H, check_tangents(r, H.shape[:2]))

    def hessian_factor(self, a: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Symmetric factor ``S`` with ``S Sᵀ = ∇²ₐC_x``, shape ``(batch, n_out, n_out)``.

        Diagonal Hessians ``diag(h)`` with ``h ≥ 0`` have ``S = diag(√h)`` (``CURV.loss-factor``).
        """
        return _diag_embed(np.sqrt(self.hessian_diagonal(a, y)))

    def output_hessian(self, z: np.ndarray, y: np.ndarray, activation: Activation) -> np.ndarray:
        """Per-sample ``∇²_z C(σ(z), y)`` ``(batch, m, m)`` for an output σ taken into the
        loss (``CURV.output-hessian``): the :class:`Fold` row's closed form, or for the
        identity the cost's own :meth:`hessian`.

        Raises
        ------
        ValueError
            ``activation`` is neither the identity nor folded with a closed form.
        """
        return self._at_output(z, y, activation, "hessian")

    def output_hessian_factor(
        self, z: np.ndarray, y: np.ndarray, activation: Activation
    ) -> np.ndarray:
        """``S`` with ``S Sᵀ = ∇²_z C(σ(z), y)`` per sample (``CURV.loss-factor``): the
        :class:`Fold` row's closed form, or for the identity :meth:`hessian_factor`."""
        return self._at_output(z, y, activation, "hessian_factor")

    def output_hessian_product(
        self, z: np.ndarray, y: np.ndarray, activation: Activation, r: np.ndarray
    ) -> np.ndarray:
        """``∇²_z C(σ(z), y) · r`` per sample for V tangents ``r`` ``(V, batch, m)``
        (``CURV.output-hessian`` applied): the :class:`Fold` row's ``hessian_product`` if it
        has one, for the identity :meth:`hessian_product`, else :meth:`output_hessian` times
        ``r`` (which resolves the fold's closed form or refuses)."""
        check_tangents(r, np.shape(z))
        fold = self.fold(activation)
        if fold is not None and fold.hessian_product is not None:
            return fold.hessian_product(z, y, r)
        if (fold is None or fold.hessian is None) and activation.name == "identity":
            return self.hessian_product(z, y, r)  # a fold of the identity may add no form
        return np.einsum("nij,vnj->vni", self.output_hessian(z, y, activation), r)

    def _at_output(self, z, y, activation: Activation, kind: str) -> np.ndarray:
        fold = self.fold(activation)
        form = None if fold is None else getattr(fold, kind)
        if form is not None:
            return form(z, y)
        if activation.name != "identity":
            raise ValueError(
                f"cost {self.name!r} has no closed-form {kind.replace('_', ' ')} through "
                f"{activation.name!r}; only through the identity or a folded output"
            )
        return getattr(self, kind)(z, y)

    def predictive(self, activation: Activation) -> str | None:
        """The :attr:`Fold.predictive` distribution of targets given ``σ``'s input, or None."""
        fold = self.fold(activation)
        return None if fold is None else fold.predictive

    def target_mass(self, y: np.ndarray) -> np.ndarray | float:
        """``Σⱼ yⱼ`` per sample ``(batch, 1)``, the scale of ``∇²ℓ`` a Monte-Carlo factor
        drawn from the model misses: 1 unless targets may carry any mass (KL)."""
        return 1.0


COSTS = Registry("cost", Cost)


register_cost = COSTS.register


def _output_minus_target(z: np.ndarray, a: np.ndarray, y: np.ndarray) -> np.ndarray:
    return a - y


def _diag_embed(d: np.ndarray) -> np.ndarray:
    """``(batch, n) -> (batch, n, n)`` diagonal matrices."""
    out = np.zeros((*d.shape, d.shape[-1]), dtype=d.dtype)
    idx = np.arange(d.shape[-1])
    out[..., idx, idx] = d
    return out


def _softmax_rows(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def check_tangents(r: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``r`` as V tangents ``(V, *shape)`` of an output of ``shape``, else ``ValueError``
    naming ``r`` (no broadcasting of a missing V axis or batch)."""
    if not isinstance(r, np.ndarray) or r.ndim != len(shape) + 1 or r.shape[1:] != tuple(shape):
        got = getattr(r, "shape", type(r).__name__)
        raise ValueError(
            f"r must be V tangents of shape (V, {', '.join(map(str, shape))}), got {got}"
        )
    return r


def softmax_hessian(z: np.ndarray, mass: np.ndarray | None = None) -> np.ndarray:
    """``(Σy)(diag p − p pᵀ)``, ``p = softmax(z)``: ``∇²_z`` of the log-likelihood of a
    softmax (``Σy = 1``, ``mass`` None) and of KL through a log-softmax (``mass = Σy``
    ``(batch, 1)``) (``CURV.output-hessian``)."""
    p = _softmax_rows(z)
    H = _diag_embed(p) - p[:, :, None] * p[:, None, :]
    return H if mass is None else mass[:, :, None] * H


def softmax_hessian_product(
    z: np.ndarray, r: np.ndarray, mass: np.ndarray | None = None
) -> np.ndarray:
    """:func:`softmax_hessian` applied to V tangents ``r`` ``(V, batch, m)``:
    ``(Σy)(p ⊙ r − p (pᵀr))`` in ``O(V·batch·m)``, no ``(batch, m, m)`` matrices (the LSTM's
    per-step outputs made those 13–14 ms of a 29 ms GGN product)."""
    p = _softmax_rows(z)
    product = p * (r - (r * p).sum(axis=-1, keepdims=True))
    return product if mass is None else mass * product


def softmax_hessian_factor(z: np.ndarray, mass: np.ndarray | None = None) -> np.ndarray:
    """``√(Σy)(diag √p − p √pᵀ)``, a factor of :func:`softmax_hessian` (Dangel et al. 2020):
    ``S Sᵀ = diag p − 2ppᵀ + p(Σₖpₖ)pᵀ = diag p − ppᵀ``."""
    p = _softmax_rows(z)
    r = np.sqrt(p)
    S = _diag_embed(r) - p[:, :, None] * r[:, None, :]
    return S if mass is None else np.sqrt(mass)[:, :, None] * S


def _sample_normal(z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return z + rng.standard_normal(z.shape)


def _sample_bernoulli(z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from manual_bp.activations import _sigmoid

    return (rng.random(z.shape) < _sigmoid(z)).astype(z.dtype)


def _sample_poisson(z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return rng.poisson(np.exp(z)).astype(z.dtype)


def _sample_categorical(z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    p = _softmax_rows(z)
    u = rng.random((z.shape[0], 1))
    labels = np.minimum((np.cumsum(p, axis=1) < u).sum(axis=1), z.shape[1] - 1)
    return np.eye(z.shape[1], dtype=z.dtype)[labels]


#: :attr:`Fold.predictive` name -> ``sample(z, rng)``: targets ``ŷ ~ p(y | z)`` of the
#: exponential family with natural parameter ``z`` (``CURV.diag-ggn-mc``).
PREDICTIVE: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "normal": _sample_normal,
    "bernoulli": _sample_bernoulli,
    "categorical": _sample_categorical,
    "poisson": _sample_poisson,
}


def _xlogy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``x ln y`` with ``0 ln y = 0`` (also for ``y = 0``; NaN for ``y = NaN``, as torch).

    ``scipy.special.xlogy``: one C ufunc; float32 in, float32 out, with the logarithm taken
    in double (bit-identical to ``torch.special.xlogy``, where NumPy's float32 ``x·ln y``
    is off by up to 4 ulp).
    """
    return special.xlogy(x, y)


def get_cost(spec: str | Cost | type[Cost] | dict[str, Any]) -> Cost:
    """Return a :class:`Cost` from a name, class, instance or config dict.

    An unknown name raises ``ValueError`` listing the valid names.
    """
    return COSTS.get(spec)
