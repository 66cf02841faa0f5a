"""Smooth activations: identity, sigmoid, tanh, softplus, GELU, SiLU (``ACT.*``)."""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from manual_bp.activations.base import (
    Activation,
    _finite_float,
    _inplace,
    _sigmoid,
    register_activation,
)
from manual_bp.activations.erf32 import erf_float32

__all__ = ["GELU", "Identity", "SiLU", "Sigmoid", "Softplus", "Tanh"]


@register_activation
class Identity(Activation):
    """``σ(z) = z``; ``σ'(z) = 1``. Equation ``ACT.identity``."""

    name = "identity"
    aliases = ("linear", "none")
    equation = "ACT.identity"
    hessian_is_zero = True

    def forward(self, z: np.ndarray) -> np.ndarray:
        return z

    def derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return np.ones_like(z)

    def backward(self, grad_a: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return grad_a  # J = I: skip the multiplication by ones

    def forward_into(self, z: np.ndarray, out: np.ndarray) -> np.ndarray:
        return z  # a = z: no copy

    def backward_inplace(self, grad_a, z, a, scratch) -> np.ndarray:
        return grad_a

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

    def forward_into(self, z: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``1/(1 + e^{−z})`` as one ufunc, SciPy's ``expit`` (the same expression in C, one
        pass instead of four: at Nielsen's 10×30 the call count is the cost); ``e^{−z} = inf``
        for ``z < −709`` gives exactly 0, without a warning."""
        return special.expit(z, out=out)

    def backward_inplace(self, grad_a, z, a, scratch) -> np.ndarray:
        """``g ⊙ a(1 − a)`` in place."""
        grad_a *= a
        np.subtract(1, a, out=scratch)
        grad_a *= scratch
        return grad_a

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

    def forward_into(self, z: np.ndarray, out: np.ndarray) -> np.ndarray:
        return np.tanh(z, out=out)

    def backward_inplace(self, grad_a, z, a, scratch) -> np.ndarray:
        """``g ⊙ (1 − a)(1 + a)`` in place (no cancellation of ``1 − a²`` near ``|a| = 1``)."""
        np.subtract(1, a, out=scratch)
        grad_a *= scratch
        np.add(1, a, out=scratch)
        grad_a *= scratch
        return grad_a

    def second_derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``σ'' = −2 tanh z (1 − tanh² z)`` (``ACT2.tanh``), with ``(1 − a)(1 + a)``."""
        return -2.0 * a * ((1.0 - a) * (1.0 + a))


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


def _erf_half(z: np.ndarray, out: np.ndarray, t1: np.ndarray, t2: np.ndarray) -> np.ndarray:
    """float32 ``erf(z/√2)`` into ``out`` (``t1``, ``t2`` scratch): the readable and the fast
    form call this one function, so they give the same bits."""
    return erf_float32(z, _SQRT_HALF, out, t1, t2)


def _gelu_from_erf(z: np.ndarray, out: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``σ = (z · ½) · (1 + erf)`` into ``out`` (torch's order), ``w = 1 + erf`` kept."""
    w += 1.0
    np.multiply(z, 0.5, out=out)
    out *= w
    return out


def _gelu_float32(z: np.ndarray, out: np.ndarray, w: np.ndarray, t2: np.ndarray) -> np.ndarray:
    """float32 GELU's fast forward on one block: ``out`` and ``t2`` are the erf's scratch
    until ``out`` is written."""
    _erf_half(z, w, out, t2)
    return _gelu_from_erf(z, out, w)


#: Elements per block of float32 GELU's fast forward: its ~55 passes over four arrays of
#: 4 × 256 KB stay in a core's L2 (1 MB here); measured 2.05 → 1.85 ms for 1024×512 with
#: the caches evicted before each call, against whole 2 MB arrays. Elementwise: any
#: blocking gives the same bits.
_GELU_BLOCK = 1 << 16


_GELU_TANH_BETA = math.sqrt(2.0 / math.pi)


_GELU_TANH_KAPPA = 0.044715


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

    ``erf`` is, in float64, ``scipy.special.erf`` (a C ufunc; within 3 ulp of torch's erf);
    in float32, :func:`~manual_bp.activations.erf32.erf_float32`, a piecewise polynomial
    evaluated by whole-array float32 ufuncs, within 1 ulp of the correctly rounded erf on
    every float32 (SciPy's float32 loop is correctly rounded but a scalar Cephes loop: 6.1 ms
    against ~2 ms for the 1024×512 activations of the benchmark's transformer). Both forms
    are evaluated exactly as torch does, *including* the cancellation of ``1 + erf``
    (``1 + tanh``) in the left tail: a more accurate ``½ erfc(−z/√2)`` (or ``ndtr``) would
    give ``−1e−149`` where torch gives ``−0``, and a following ReLU-like kink would then see a
    different sign (``docs/activations.md``). ``erf_float32`` keeps that: erf is exactly −1
    below −3.92 (z < −5.55), as torch's.

    The fast form (:meth:`forward_into`, :meth:`backward_inplace`) evaluates erf once per
    training step, not twice, with the same operations as the readable form (the same bits).
    The Abramowitz–Stegun 7.1.26 polynomial (the one torch's ``Vectorized<float>::erf`` held)
    was not taken: its 1.5e-7 absolute error is ~2.5 ulp near erf = 1, and it misses
    erf(0) = 0 by rounding.
    """

    name = "gelu"
    equation = "ACT.gelu"
    hyperparameters = ("approximate",)

    def __init__(self, approximate: str = "none") -> None:
        if approximate not in ("none", "tanh"):
            raise ValueError(f"gelu approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    @staticmethod
    def _one_plus_erf(z: np.ndarray) -> np.ndarray:
        """``1 + erf(z/√2)`` in one buffer, with torch's cancellation in the left tail."""
        if z.dtype == np.float32:
            w = _erf_half(z, np.empty_like(z), np.empty_like(z), np.empty_like(z))
        else:
            w = np.multiply(z, _SQRT_HALF, out=np.empty_like(z))  # an array even when 0-d
            special.erf(w, out=w)
        w += 1.0
        return w

    # ------------------------------------------------------------------ fast form
    # erf (~50% of GELU's time in float32, ~70% in float64) is evaluated once per step:
    # forward_into writes w = 1 + erf(z/√2) into state[0], a buffer the fused step owns and
    # hands back to backward_inplace (with state[1] as room for the clipped z). Without a
    # state (a plain call) each recomputes. The tanh form keeps the generic fast form.
    fast_state = 2

    def forward_into(
        self, z: np.ndarray, out: np.ndarray, state: np.ndarray | None = None
    ) -> np.ndarray:
        """``σ(z)`` into ``out`` in :meth:`forward`'s operation order (the same bits);
        ``w = 1 + erf(z/√2)`` kept in ``state[0]`` for :meth:`backward_inplace`."""
        if self.approximate == "tanh":
            return super().forward_into(z, out)
        w = np.empty_like(out) if state is None else state[0]
        if z.dtype != np.float32:
            np.multiply(z, _SQRT_HALF, out=w)
            special.erf(w, out=w)
            return _gelu_from_erf(z, out, w)
        t2 = np.empty_like(out) if state is None else state[1]
        arrays = (z, out, w, t2)
        if not all(array.flags.c_contiguous for array in arrays):
            return _gelu_float32(*arrays)
        flat = [array.reshape(-1) for array in arrays]  # views, blocks of them below
        for start in range(0, z.size, _GELU_BLOCK):
            _gelu_float32(*(array[start : start + _GELU_BLOCK] for array in flat))
        return out

    def backward_inplace(
        self, grad_a, z, a, scratch, state: np.ndarray | None = None
    ) -> np.ndarray:
        """``g ⊙ (½w + z_c φ(z_c))`` in place, in :meth:`derivative`'s operation order; ``w``
        from ``state[0]`` as :meth:`forward_into` left it (recomputed without a state)."""
        if self.approximate == "tanh":
            return super().backward_inplace(grad_a, z, a, scratch)
        if state is None:
            w, zc = self._one_plus_erf(z), np.empty_like(z)
        else:
            w, zc = state[0], state[1]
        np.clip(z, -_GELU_CLIP, _GELU_CLIP, out=zc)
        np.multiply(zc, -0.5, out=scratch)  # φ = e^{−z²/2}/√(2π), as _pdf
        scratch *= zc
        np.exp(scratch, out=scratch)
        scratch *= _INV_SQRT_2PI
        scratch *= zc
        w *= 0.5  # Φ = ½(1 + erf): w is spent (the next forward_into rewrites it)
        scratch += w
        grad_a *= scratch
        return grad_a

    def _cdf(self, z: np.ndarray) -> np.ndarray:
        w = self._one_plus_erf(z)
        w *= 0.5
        return w

    @staticmethod
    def _clipped(z: np.ndarray) -> np.ndarray:
        """``z`` clipped to ±1e3, where φ(z) = 0 and tanh u = ±1 exactly already: powers of
        ``z`` then never overflow, and no ``0 · inf`` arises from a saturated factor."""
        return np.clip(z, -_GELU_CLIP, _GELU_CLIP)

    def _pdf(self, z: np.ndarray) -> np.ndarray:
        zc = self._clipped(z)
        return _INV_SQRT_2PI * np.exp(-0.5 * zc * zc)  # underflows to 0, never overflows

    def _tanh_argument(self, z: np.ndarray) -> np.ndarray:
        zc = self._clipped(z)
        return _GELU_TANH_BETA * (zc + _GELU_TANH_KAPPA * (zc * zc * zc))

    def _tanh_inner(self, z: np.ndarray) -> np.ndarray:
        return np.tanh(self._tanh_argument(z))

    def forward(self, z: np.ndarray) -> np.ndarray:
        if self.approximate == "tanh":
            return 0.5 * z * (1.0 + self._tanh_inner(z))
        a = z * 0.5  # torch's order: (z · ½) · (1 + erf(z/√2))
        a *= self._one_plus_erf(z)
        return a

    def derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        if self.approximate == "tanh":
            t, zc = self._tanh_inner(z), self._clipped(z)
            du = _GELU_TANH_BETA * (1.0 + 3.0 * _GELU_TANH_KAPPA * zc * zc)
            return 0.5 * (1.0 + t) + 0.5 * zc * ((1.0 - t) * (1.0 + t)) * du
        return self._cdf(z) + self._clipped(z) * self._pdf(z)

    def second_derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``ACT2.gelu``: ``σ'' = φ(z)(2 − z²)``; tanh form ``(1 − t²)(u' − z t u'² + ½ z u'')``.

        In the tanh form ``1 − t² = sech² u`` is taken as ``4e/(1 + e)²`` with ``e = e^{−2|u|}``:
        ``(1 − t)(1 + t)`` from a rounded ``t`` near ±1 loses ``ε/(1 − |t|)`` relative (3.6e-12
        at z = 4.1, against torch's 2.3e-13), and this form neither cancels nor overflows.
        """
        if self.approximate == "tanh":
            u, zc = self._tanh_argument(z), self._clipped(z)
            t = np.tanh(u)
            e = np.exp(-2.0 * np.abs(u))  # underflows to 0 for large |u|: sech² = 0
            sech2 = 4.0 * e / ((1.0 + e) * (1.0 + e))
            du = _GELU_TANH_BETA * (1.0 + 3.0 * _GELU_TANH_KAPPA * zc * zc)
            ddu = _GELU_TANH_BETA * 6.0 * _GELU_TANH_KAPPA * zc
            return sech2 * (du - zc * t * du * du + 0.5 * zc * ddu)
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

    def __init__(self, inplace: bool = False) -> None:
        """``inplace``: torch's flag, accepted; the result is the same (``_inplace``)."""
        self.inplace = _inplace(inplace)

    def forward(self, z: np.ndarray) -> np.ndarray:
        return z * _sigmoid(z)

    def derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        s = _sigmoid(z)
        return s * (1.0 + z * (1.0 - s))

    def second_derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``σ'' = s(1 − s)(2 + z(1 − 2s))``, ``s = sigmoid(z)`` (``ACT2.silu``)."""
        s = _sigmoid(z)
        return s * (1.0 - s) * (2.0 + z * (1.0 - 2.0 * s))
