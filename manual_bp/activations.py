"""Activation functions σ and their backward passes.

Every activation maps the weighted input ``z`` of shape ``(batch, n)`` to the
activation ``a = σ(z)`` of the same shape, and back-propagates with a
vector–Jacobian product (VJP)::

    backward(grad_a, z, a) -> grad_z      grad_z[x] = J_σ(z[x])ᵀ grad_a[x]

For an elementwise σ the Jacobian is diagonal and the VJP is the Hadamard
product of BP1/BP2, ``grad_a ⊙ σ'(z)``; such classes only implement
:meth:`Activation.derivative`. Activations that couple units (softmax) override
:meth:`Activation.backward` with their full VJP.

Each class names the equation ID of its derivative (``ACT.<name>``), derived in
``docs/activations.md``. New activations are registered with
:func:`register_activation` and looked up by name with :func:`get_activation`.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from manual_bp._registry import Configurable, Registry
from manual_bp._validation import as_array

__all__ = [
    "ACTIVATIONS",
    "ELU",
    "GELU",
    "SELU",
    "Activation",
    "HardTanh",
    "Hardtanh",
    "Identity",
    "LeakyReLU",
    "LogSoftmax",
    "ReLU",
    "SiLU",
    "Sigmoid",
    "Softmax",
    "Softplus",
    "Tanh",
    "get_activation",
    "register_activation",
]


class Activation(Configurable):
    """Base class of activation functions.

    Subclasses set ``name`` and ``equation`` and implement :meth:`forward` and
    either :meth:`derivative` (elementwise σ) or :meth:`backward` (coupled σ).
    Hyper-parameters are keyword arguments of ``__init__`` stored as attributes
    of the same name, so :meth:`get_config` can save them.
    """

    #: Equation ID of the backward pass, e.g. ``"ACT.sigmoid"``.
    equation: ClassVar[str] = ""
    #: True when σ acts on each unit separately (diagonal Jacobian).
    elementwise: ClassVar[bool] = True

    def forward(self, z: np.ndarray) -> np.ndarray:
        """Return ``a = σ(z)``, same shape as ``z``."""
        raise NotImplementedError

    def derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """Return ``σ'(z)`` elementwise (only for elementwise activations).

        ``a = σ(z)`` is passed too because several derivatives are cheapest
        in terms of the output (sigmoid: ``a(1−a)``, tanh: ``(1−a)(1+a)``).
        """
        raise NotImplementedError(f"{type(self).__name__} is not elementwise; use backward()")

    def backward(self, grad_a: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """Vector–Jacobian product: ``∂C/∂z`` from ``∂C/∂a``. Shapes ``(batch, n)``.

        Elementwise case (the ⊙ of BP1/BP2): ``∂C/∂z = ∂C/∂a ⊙ σ'(z)``.
        """
        return grad_a * self.derivative(z, a)

    def second_derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """Return ``σ''(z)`` elementwise (equation ``ACT2.<name>``, ``docs/curvature.md``).

        At a kink ``σ''`` is the derivative of the ``σ'`` this library (and torch) uses,
        which is 0 on flat or linear pieces; the Dirac mass of a true second
        derivative at a kink is not represented (it is zero almost everywhere).
        """
        raise NotImplementedError(f"{type(self).__name__} is not elementwise; use second_vjp()")

    def jvp(self, dz: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """Jacobian–vector product ``J_σ(z) dz`` (forward mode). Shapes ``(batch, n)``.

        Elementwise: ``σ'(z) ⊙ dz``; coupled activations override it.
        """
        return dz * self.derivative(z, a)

    def second_vjp(self, grad_a: np.ndarray, dz: np.ndarray, z: np.ndarray, a: np.ndarray):
        """Second-order VJP ``Σₖ gₖ ∇²σₖ(z) dz`` with ``g = ∂C/∂a`` (``ACT2.*``).

        The term the R-operator adds to the backward pass through σ (Pearlmutter 1994):
        ``R{∂C/∂z} = J_σᵀ R{∂C/∂a} + Σₖ gₖ ∇²σₖ R{z}``. Elementwise: ``g ⊙ σ''(z) ⊙ dz``.
        """
        return grad_a * self.second_derivative(z, a) * dz

    def __call__(self, z: np.ndarray) -> np.ndarray:
        """``σ(z)`` for any real array (as ``torch.nn.ReLU()(z)``); integers become float64.

        The checked entry point: complex, bool, object and string arrays raise
        ``TypeError`` (:func:`manual_bp._validation.as_array`). :meth:`forward` is the
        unchecked one that layers call on arrays they produced.
        """
        z = as_array(z, "z")
        if z.dtype.kind != "f":
            z = z.astype(np.float64)
        return self.forward(z)


ACTIVATIONS = Registry("activation", Activation)
register_activation = ACTIVATIONS.register


@register_activation
class Identity(Activation):
    """``σ(z) = z``; ``σ'(z) = 1``. Equation ``ACT.identity``."""

    name = "identity"
    aliases = ("linear", "none")
    equation = "ACT.identity"

    def forward(self, z: np.ndarray) -> np.ndarray:
        return z

    def derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return np.ones_like(z)

    def backward(self, grad_a: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return grad_a  # J = I: skip the multiplication by ones

    def second_derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``σ'' = 0`` (``ACT2.identity``)."""
        return np.zeros_like(z)


@register_activation
class Sigmoid(Activation):
    """Logistic sigmoid ``σ(z) = 1/(1+e^{−z})``; ``σ'(z) = σ(z)(1−σ(z))``. ``ACT.sigmoid``.

    Evaluated as ``1/(1+e^{−|z|})`` for ``z ≥ 0`` and ``e^{−|z|}/(1+e^{−|z|})``
    for ``z < 0``, so ``exp`` never overflows: no warning and no NaN for any
    finite ``z``, and tiny outputs keep full relative precision (which the
    cross-entropy's ``ln a`` needs).
    """

    name = "sigmoid"
    aliases = ("logistic",)
    equation = "ACT.sigmoid"

    def forward(self, z: np.ndarray) -> np.ndarray:
        return _sigmoid(z)

    def derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return a * (1.0 - a)

    def second_derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``σ'' = σ(1 − σ)(1 − 2σ)`` (``ACT2.sigmoid``)."""
        return a * (1.0 - a) * (1.0 - 2.0 * a)


@register_activation
class Tanh(Activation):
    """``σ(z) = tanh z``; ``σ'(z) = 1 − tanh² z``. Equation ``ACT.tanh``.

    ``1 − a²`` is evaluated as ``(1 − a)(1 + a)``: in partial saturation (``|a|`` near 1)
    ``a·a`` rounds before the subtraction cancels, losing up to ~4e-9 relative, while
    ``1 − a`` is exact there (Sterbenz) and the product is within an ulp or two of the
    correctly rounded value torch computes (``tests/test_numerics.py``).
    """

    name = "tanh"
    equation = "ACT.tanh"

    def forward(self, z: np.ndarray) -> np.ndarray:
        return np.tanh(z)

    def derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return (1.0 - a) * (1.0 + a)

    def second_derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``σ'' = −2 tanh z (1 − tanh² z)`` (``ACT2.tanh``), with ``(1 − a)(1 + a)``."""
        return -2.0 * a * ((1.0 - a) * (1.0 + a))


@register_activation
class ReLU(Activation):
    """``σ(z) = max(0, z)``; ``σ'(z) = 1[z > 0]``. Equation ``ACT.relu``.

    At the kink ``z = 0`` we take ``σ'(0) = 0``, torch's convention.
    """

    name = "relu"
    equation = "ACT.relu"

    def forward(self, z: np.ndarray) -> np.ndarray:
        return np.maximum(z, 0.0)

    def derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return (z > 0).astype(z.dtype)

    def backward(self, grad_a: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return np.where(z > 0, grad_a, 0.0).astype(grad_a.dtype, copy=False)

    def second_derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``σ'' = 0`` everywhere, also at the kink (``ACT2.relu``: σ' is piecewise constant)."""
        return np.zeros_like(z)


@register_activation
class LeakyReLU(Activation):
    """``σ(z) = z`` for ``z > 0``, ``αz`` otherwise; ``σ'(z) = 1[z > 0] + α·1[z ≤ 0]``.

    Equation ``ACT.leaky-relu``. At the kink ``z = 0`` the slope is ``α``:
    torch's ``leaky_relu_backward`` passes ``grad`` only where ``z > 0`` and
    ``α·grad`` everywhere else, and we follow it. ``α`` is torch's
    ``negative_slope``.
    """

    name = "leaky-relu"
    aliases = ("leakyrelu",)
    equation = "ACT.leaky-relu"
    hyperparameters = ("alpha",)

    def __init__(self, alpha: float = 0.01, *, negative_slope: float | None = None) -> None:
        if negative_slope is not None:  # torch's name for α
            if alpha != 0.01:
                raise ValueError("give alpha or negative_slope (torch's name), not both")
            alpha = negative_slope
        self.alpha = _finite_float(alpha, "alpha")

    @property
    def negative_slope(self) -> float:
        """torch's name for the slope ``α``."""
        return self.alpha

    def forward(self, z: np.ndarray) -> np.ndarray:
        return np.where(z > 0, z, self.alpha * z)

    def derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return np.where(z > 0, 1.0, self.alpha).astype(z.dtype, copy=False)

    def backward(self, grad_a: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return np.where(z > 0, grad_a, self.alpha * grad_a)

    def second_derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``σ'' = 0`` everywhere, also at the kink (``ACT2.leaky-relu``)."""
        return np.zeros_like(z)


@register_activation
class ELU(Activation):
    """``σ(z) = z`` for ``z > 0``, ``α(eᶻ − 1)`` otherwise. Equation ``ACT.elu``.

    ``σ'(z) = 1`` for ``z > 0`` and ``α eᶻ`` for ``z ≤ 0``: at ``z = 0`` the
    derivative is ``α`` (torch's ``elu_backward`` takes the ``z ≤ 0`` branch),
    which is the true derivative only for ``α = 1``. The negative branch uses
    ``expm1`` (no cancellation for small ``|z|``), and ``eᶻ`` rather than
    ``a + α`` (which cancels as ``z → −∞``).
    """

    name = "elu"
    equation = "ACT.elu"
    hyperparameters = ("alpha",)

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = _finite_float(alpha, "alpha")

    def forward(self, z: np.ndarray) -> np.ndarray:
        # min(z, 0): the unused branch must not overflow for large positive z.
        return np.where(z > 0, z, self.alpha * np.expm1(np.minimum(z, 0.0)))

    def derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return np.where(z > 0, 1.0, self.alpha * np.exp(np.minimum(z, 0.0))).astype(
            z.dtype, copy=False
        )

    def second_derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``σ'' = α eᶻ`` for ``z < 0``, 0 for ``z ≥ 0`` (``ACT2.elu``).

        At the kink ``z = 0`` torch's double backward gives 0 (the right branch) although
        its ``σ'(0) = α`` is the left one; we follow torch.
        """
        return np.where(z >= 0, 0.0, self.alpha * np.exp(np.minimum(z, 0.0))).astype(
            z.dtype, copy=False
        )


#: SELU constants (Klambauer et al. 2017), as in torch.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


@register_activation
class SELU(Activation):
    """``σ(z) = λ z`` for ``z > 0``, ``λα(eᶻ − 1)`` otherwise. Equation ``ACT.selu``.

    ``λ ≈ 1.0507``, ``α ≈ 1.6733`` (:data:`SELU_SCALE`, :data:`SELU_ALPHA`).
    ``σ'(z) = λ`` for ``z > 0`` and ``λα eᶻ`` for ``z ≤ 0`` (so ``λα`` at the
    kink, torch's convention, as for :class:`ELU`).
    """

    name = "selu"
    equation = "ACT.selu"

    def forward(self, z: np.ndarray) -> np.ndarray:
        negative = (SELU_SCALE * SELU_ALPHA) * np.expm1(np.minimum(z, 0.0))
        return np.where(z > 0, SELU_SCALE * z, negative)

    def derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        negative = (SELU_SCALE * SELU_ALPHA) * np.exp(np.minimum(z, 0.0))
        return np.where(z > 0, SELU_SCALE, negative).astype(z.dtype, copy=False)

    def second_derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``σ'' = λα eᶻ`` for ``z < 0``, 0 for ``z ≥ 0`` (``ACT2.selu``; kink: see ELU)."""
        negative = (SELU_SCALE * SELU_ALPHA) * np.exp(np.minimum(z, 0.0))
        return np.where(z >= 0, 0.0, negative).astype(z.dtype, copy=False)


@register_activation
class Softplus(Activation):
    """``σ(z) = (1/β) ln(1 + e^{βz})``, and ``σ(z) = z`` where ``βz > threshold``.

    Equation ``ACT.softplus``: ``σ'(z) = sigmoid(βz)`` (``= 1`` above the
    threshold), exactly torch's ``F.softplus(z, beta, threshold)`` including the
    switch to the identity (strictly above the threshold, as in torch). The log
    is evaluated as ``max(βz, 0) + ln(1 + e^{−|βz|})`` so that no ``exp``
    overflows, whatever the threshold.
    """

    name = "softplus"
    equation = "ACT.softplus"
    hyperparameters = ("beta", "threshold")

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        self.beta = _finite_float(beta, "beta")
        if self.beta <= 0:
            raise ValueError(f"softplus beta must be > 0, got {beta!r}")
        self.threshold = _finite_float(threshold, "threshold")

    def forward(self, z: np.ndarray) -> np.ndarray:
        bz = self.beta * z
        soft = (np.maximum(bz, 0.0) + np.log1p(np.exp(-np.abs(bz)))) / self.beta
        return np.where(bz > self.threshold, z, soft)

    def derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        bz = self.beta * z
        return np.where(bz > self.threshold, 1.0, _sigmoid(bz)).astype(z.dtype, copy=False)

    def second_derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``σ'' = β s(1 − s)``, ``s = sigmoid(βz)``, for ``βz < threshold`` (``ACT2.softplus``).

        0 for ``βz ≥ threshold``: torch's double backward switches at the threshold itself,
        where its forward and ``σ'`` still take the soft branch; we follow torch.
        """
        bz = self.beta * z
        s = _sigmoid(bz)
        return np.where(bz >= self.threshold, 0.0, self.beta * s * (1.0 - s)).astype(
            z.dtype, copy=False
        )


_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_TANH_BETA = math.sqrt(2.0 / math.pi)
_GELU_TANH_KAPPA = 0.044715
_erf = np.frompyfunc(math.erf, 1, 1)
#: |z| beyond which GELU's φ(z) underflows to 0 and tanh u rounds to ±1 (both by far).
_GELU_CLIP = 1e3


@register_activation
class GELU(Activation):
    """Gaussian error linear unit ``σ(z) = z Φ(z)``. Equation ``ACT.gelu``.

    ``approximate="none"``: ``Φ(z) = ½(1 + erf(z/√2))`` and
    ``σ'(z) = Φ(z) + z φ(z)`` with ``φ(z) = e^{−z²/2}/√(2π)``.

    ``approximate="tanh"``: ``σ(z) = ½ z (1 + tanh u)``, ``u = √(2/π)(z + κz³)``,
    ``κ = 0.044715``, and ``σ'(z) = ½(1 + tanh u) + ½ z (1 − tanh² u) u'``
    with ``u' = √(2/π)(1 + 3κz²)`` — torch's ``F.gelu(approximate="tanh")``.

    NumPy has no ``erf``; ``math.erf`` is applied elementwise. Both forms are
    evaluated exactly as torch does, *including* the cancellation of ``1 + erf``
    (``1 + tanh``) in the left tail: a more accurate ``½ erfc(−z/√2)`` would give
    ``−1e−149`` where torch gives ``−0``, and a following ReLU-like kink would
    then see a different sign (``docs/activations.md``).
    """

    name = "gelu"
    equation = "ACT.gelu"
    hyperparameters = ("approximate",)

    def __init__(self, approximate: str = "none") -> None:
        if approximate not in ("none", "tanh"):
            raise ValueError(f"gelu approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def _cdf(self, z: np.ndarray) -> np.ndarray:
        return 0.5 * (1.0 + _erf(z * _SQRT_HALF).astype(z.dtype))

    @staticmethod
    def _clipped(z: np.ndarray) -> np.ndarray:
        """``z`` clipped to ±1e3, where φ(z) = 0 and tanh u = ±1 exactly already: powers of
        ``z`` then never overflow, and no ``0 · inf`` arises from a saturated factor."""
        return np.clip(z, -_GELU_CLIP, _GELU_CLIP)

    def _pdf(self, z: np.ndarray) -> np.ndarray:
        zc = self._clipped(z)
        return _INV_SQRT_2PI * np.exp(-0.5 * zc * zc)  # underflows to 0, never overflows

    def _tanh_inner(self, z: np.ndarray) -> np.ndarray:
        zc = self._clipped(z)
        return np.tanh(_GELU_TANH_BETA * (zc + _GELU_TANH_KAPPA * (zc * zc * zc)))

    def forward(self, z: np.ndarray) -> np.ndarray:
        if self.approximate == "tanh":
            return 0.5 * z * (1.0 + self._tanh_inner(z))
        return z * 0.5 * (1.0 + _erf(z * _SQRT_HALF).astype(z.dtype))  # torch's order

    def derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        if self.approximate == "tanh":
            t, zc = self._tanh_inner(z), self._clipped(z)
            du = _GELU_TANH_BETA * (1.0 + 3.0 * _GELU_TANH_KAPPA * zc * zc)
            return 0.5 * (1.0 + t) + 0.5 * zc * ((1.0 - t) * (1.0 + t)) * du
        return self._cdf(z) + self._clipped(z) * self._pdf(z)

    def second_derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``ACT2.gelu``: ``σ'' = φ(z)(2 − z²)``; tanh form ``(1 − t²)(u' − z t u'² + ½ z u'')``."""
        if self.approximate == "tanh":
            t, zc = self._tanh_inner(z), self._clipped(z)
            du = _GELU_TANH_BETA * (1.0 + 3.0 * _GELU_TANH_KAPPA * zc * zc)
            ddu = _GELU_TANH_BETA * 6.0 * _GELU_TANH_KAPPA * zc
            return ((1.0 - t) * (1.0 + t)) * (du - zc * t * du * du + 0.5 * zc * ddu)
        zc = self._clipped(z)
        return self._pdf(z) * (2.0 - zc * zc)


@register_activation
class SiLU(Activation):
    """Sigmoid-weighted linear unit (swish) ``σ(z) = z·sigmoid(z)``. Equation ``ACT.silu``.

    ``σ'(z) = s(1 + z(1 − s))`` with ``s = sigmoid(z)``, as torch's ``silu_backward``.
    """

    name = "silu"
    aliases = ("swish",)
    equation = "ACT.silu"

    def forward(self, z: np.ndarray) -> np.ndarray:
        return z * _sigmoid(z)

    def derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        s = _sigmoid(z)
        return s * (1.0 + z * (1.0 - s))

    def second_derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``σ'' = s(1 − s)(2 + z(1 − 2s))``, ``s = sigmoid(z)`` (``ACT2.silu``)."""
        s = _sigmoid(z)
        return s * (1.0 - s) * (2.0 + z * (1.0 - 2.0 * s))


@register_activation
class HardTanh(Activation):
    """``σ(z) = clip(z, min_val, max_val)``; ``σ'(z) = 1[min_val < z < max_val]``.

    Equation ``ACT.hardtanh``. At the two kinks the derivative is 0: torch's
    ``hardtanh_backward`` passes the gradient only strictly inside the interval.
    """

    name = "hardtanh"
    aliases = ("hard-tanh",)
    equation = "ACT.hardtanh"
    hyperparameters = ("min_val", "max_val")

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0) -> None:
        self.min_val = _finite_float(min_val, "min_val")
        self.max_val = _finite_float(max_val, "max_val")
        if not self.min_val < self.max_val:
            raise ValueError(f"hardtanh needs min_val < max_val, got {min_val!r}, {max_val!r}")

    def forward(self, z: np.ndarray) -> np.ndarray:
        return np.clip(z, self.min_val, self.max_val)

    def derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return ((z > self.min_val) & (z < self.max_val)).astype(z.dtype)

    def backward(self, grad_a: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        inside = (z > self.min_val) & (z < self.max_val)
        return np.where(inside, grad_a, 0.0).astype(grad_a.dtype, copy=False)

    def second_derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``σ'' = 0`` everywhere, also at both kinks (``ACT2.hardtanh``)."""
        return np.zeros_like(z)


@register_activation
class Softmax(Activation):
    """``σ(z)ⱼ = e^{zⱼ} / Σₖ e^{zₖ}`` over the units of each sample. Equation ``ACT.softmax``.

    Not elementwise: ``∂aᵢ/∂zⱼ = aᵢ(δᵢⱼ − aⱼ)``, so the VJP is
    ``∂C/∂z = a ⊙ (g − ⟨g, a⟩)`` per sample (``g = ∂C/∂a``), never
    ``g ⊙ a(1 − a)``. The forward subtracts the row maximum first, so no
    ``exp`` overflows (only underflows to 0).
    """

    name = "softmax"
    equation = "ACT.softmax"
    elementwise = False

    def forward(self, z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    def backward(self, grad_a: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return a * (grad_a - np.sum(grad_a * a, axis=-1, keepdims=True))

    def jvp(self, dz: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``J dz = a ⊙ (dz − ⟨a, dz⟩)`` (J is symmetric, so this equals the VJP)."""
        return self.backward(dz, z, a)

    def second_vjp(self, grad_a: np.ndarray, dz: np.ndarray, z: np.ndarray, a: np.ndarray):
        """``Σₖ gₖ ∇²aₖ dz = g ⊙ w − a⟨g, w⟩ − ⟨g, a⟩ w`` with ``w = J dz`` (``ACT2.softmax``)."""
        w = self.jvp(dz, z, a)
        g_w = np.sum(grad_a * w, axis=-1, keepdims=True)
        g_a = np.sum(grad_a * a, axis=-1, keepdims=True)
        return grad_a * w - a * g_w - g_a * w


@register_activation
class LogSoftmax(Activation):
    """``σ(z)ⱼ = zⱼ − ln Σₖ e^{zₖ}`` per sample (log-probabilities). Equation ``ACT.log-softmax``.

    Not elementwise: ``∂aᵢ/∂zⱼ = δᵢⱼ − softmax(z)ⱼ``, so the VJP is
    ``∂C/∂z = g − softmax(z) Σᵢ gᵢ`` with ``softmax(z) = eᵃ``. Log-sum-exp is
    evaluated after subtracting the row maximum.
    """

    name = "log-softmax"
    aliases = ("logsoftmax",)
    equation = "ACT.log-softmax"
    elementwise = False

    def forward(self, z: np.ndarray) -> np.ndarray:
        shifted = z - z.max(axis=-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))

    def backward(self, grad_a: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return grad_a - np.exp(a) * grad_a.sum(axis=-1, keepdims=True)

    def jvp(self, dz: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``J dz = dz − ⟨softmax(z), dz⟩`` (``J = I − 1 softmaxᵀ``)."""
        return dz - np.sum(np.exp(a) * dz, axis=-1, keepdims=True)

    def second_vjp(self, grad_a: np.ndarray, dz: np.ndarray, z: np.ndarray, a: np.ndarray):
        """``Σₖ gₖ ∇²aₖ dz = −(Σₖ gₖ) p ⊙ (dz − ⟨p, dz⟩)``, ``p = eᵃ`` (``ACT2.log-softmax``)."""
        p = np.exp(a)
        w = p * (dz - np.sum(p * dz, axis=-1, keepdims=True))
        return -grad_a.sum(axis=-1, keepdims=True) * w


#: torch's spelling (``torch.nn.Hardtanh``), the same class.
Hardtanh = HardTanh


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic sigmoid without overflow: ``e^{−|z|}`` never exceeds 1."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0, e) / (1.0 + e)


def _finite_float(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def get_activation(spec: str | Activation | type[Activation] | dict[str, Any]) -> Activation:
    """Return an :class:`Activation` from a name, class, instance or config dict.

    Names are case-insensitive and ``_``/``-`` are interchangeable
    (``"leaky_relu"`` == ``"leaky-relu"``); an unknown name raises ``ValueError``
    listing the valid names.
    """
    return ACTIVATIONS.get(spec)
