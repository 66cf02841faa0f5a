"""Smooth units of torch's catalogue beyond :mod:`~manual_bp.activations.smooth`: CELU,
log-sigmoid, Mish, softsign (``ACT.*``, ``docs/activations.md``)."""

from __future__ import annotations

import numpy as np

from manual_bp.activations.base import (
    Activation,
    _finite_float,
    _inplace,
    _sigmoid,
    register_activation,
)

__all__ = ["CELU", "LogSigmoid", "Mish", "Softsign"]


@register_activation
class CELU(Activation):
    """Continuously differentiable ELU (Barron 2017): ``σ(z) = z`` for ``z > 0``,
    ``α(e^{z/α} − 1)`` otherwise. Equation ``ACT.celu``.

    ``σ'(z) = 1`` for ``z > 0`` and ``e^{z/α}`` for ``z ≤ 0`` (1 from both sides at 0, unlike
    ELU's ``α``). The forward evaluates ``z·(1/α)`` as torch's ``elu`` with
    ``input_scale = 1/α``. torch's derivative formula for ``celu`` passes
    ``1/float32(α)`` instead (``alpha.toFloat()``): its gradient is ``(α/α₃₂) e^{z/α₃₂}``,
    ``α₃₂ = float32(α)``, off the exact one by up to ``(1 + |z|/|α|)·6e-8`` relative when
    ``α`` is not a float32 (exact for torch's tested ``α = 2``). We follow torch, as for
    :data:`~manual_bp.activations.hard.HARDSIGMOID_SLOPE`, so gradients agree to rounding;
    ``docs/activations.md`` derives both. ``α ≠ 0`` and ``float32(α)`` neither 0 nor infinite
    (torch's gradient would be NaN); a negative ``α`` is accepted, as torch.
    """

    name = "celu"
    equation = "ACT.celu"
    hyperparameters = ("alpha",)

    def __init__(self, alpha: float = 1.0, inplace: bool = False) -> None:
        """torch's ``CELU(alpha, inplace)``; ``inplace`` changes nothing (``_inplace``)."""
        self.inplace = _inplace(inplace)
        self.alpha = _finite_float(alpha, "alpha")
        if self.alpha == 0:
            raise ValueError(f"alpha must be nonzero for celu (it divides z), got {alpha!r}")
        with np.errstate(over="ignore", under="ignore"):
            alpha32 = abs(float(np.float32(self.alpha)))
        if not 0 < alpha32 < np.inf:
            raise ValueError(
                f"alpha must be within float32's range for celu (torch's gradient takes "
                f"1/float32(alpha)), got {alpha!r}"
            )

    @property
    def _gradient_scale(self) -> float:
        """torch's ``1/float32(α)`` of the backward (``celu``'s entry in derivatives.yaml)."""
        return 1.0 / float(np.float32(self.alpha))

    def forward(self, z: np.ndarray) -> np.ndarray:
        # min(z, 0): the unused branch of a positive z stays at e⁰ (no overflow).
        return np.where(z > 0, z, self.alpha * np.expm1(np.minimum(z, 0.0) * (1.0 / self.alpha)))

    def _exp(self, z: np.ndarray) -> np.ndarray:
        return np.exp(np.minimum(z, 0.0) * self._gradient_scale)

    def derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        scale = self._gradient_scale * self.alpha  # 1 when α is a float32
        return np.where(z > 0, 1.0, scale * self._exp(z)).astype(z.dtype, copy=False)

    def second_derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``σ'' = e^{z/α}/α`` for ``z < 0``, 0 for ``z ≥ 0`` (``ACT2.celu``; with torch's
        ``α₃₂`` as in σ'): at ``z = 0`` torch's double backward gives 0, the right branch."""
        scale = self._gradient_scale * self._gradient_scale * self.alpha
        return np.where(z >= 0, 0.0, scale * self._exp(z)).astype(z.dtype, copy=False)


@register_activation
class LogSigmoid(Activation):
    """``σ(z) = ln sigmoid(z) = min(z, 0) − ln(1 + e^{−|z|})``. Equation ``ACT.log-sigmoid``.

    ``σ'(z) = 1 − sigmoid(z) = sigmoid(−z)``, evaluated as torch's ``log_sigmoid_backward``
    does from ``b = e^{−|z|}``: ``1 − b/(1 + b)`` for ``z < 0`` and ``b/(1 + b)`` for
    ``z ≥ 0`` (no exp overflows; the subtraction never cancels, its result is ≥ ½).
    """

    name = "log-sigmoid"
    aliases = ("logsigmoid",)
    equation = "ACT.log-sigmoid"

    def forward(self, z: np.ndarray) -> np.ndarray:
        return np.minimum(z, 0.0) - np.log1p(np.exp(-np.abs(z)))

    @staticmethod
    def _q(z: np.ndarray) -> np.ndarray:
        """``b/(1 + b)``, ``b = e^{−|z|}``: ``sigmoid(−|z|)``, in ``(0, ½]``."""
        b = np.exp(-np.abs(z))
        return b / (1.0 + b)

    def derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        q = self._q(z)
        return np.where(z < 0, 1.0 - q, q)

    def second_derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``σ'' = −sigmoid(z)·sigmoid(−z) = −q(1 − q)`` (``ACT2.log-sigmoid``), even in z."""
        q = self._q(z)
        return -q * (1.0 - q)


@register_activation
class Mish(Activation):
    """Mish (Misra 2019): ``σ(z) = z tanh(softplus z)``. Equation ``ACT.mish``.

    With ``s = sigmoid(z)``, ``u = sigmoid(−z) = 1/(1 + eᶻ)`` and ``w = 1 + eᶻ = 1/u``:
    ``tanh(ln w) = (w² − 1)/(w² + 1) = s(1 + u)/(1 + u²)`` and
    ``sech²(ln w) = 4u²/(1 + u²)²``, so that

    ``σ'(z) = tanh(sp) + z s sech²(sp)`` (torch's ``mish_backward``) is evaluated from ``s``
    and ``u`` alone: no exp overflows and ``1 − tanh²`` never cancels (torch forms it from
    ``tanh(log1p(eᶻ))`` and loses it for large z, where the term is multiplied by z).
    """

    name = "mish"
    equation = "ACT.mish"

    def __init__(self, inplace: bool = False) -> None:
        """torch's ``Mish(inplace)``; ``inplace`` changes nothing (``_inplace``)."""
        self.inplace = _inplace(inplace)

    @staticmethod
    def _parts(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(s, u, tanh(sp), sech²(sp))`` as in the class docstring."""
        s, u = _sigmoid(z), _sigmoid(-z)
        one_plus_u2 = 1.0 + u * u
        t = s * (1.0 + u) / one_plus_u2
        sech2 = 4.0 * (u / one_plus_u2) * (u / one_plus_u2)
        return s, u, t, sech2

    def forward(self, z: np.ndarray) -> np.ndarray:
        return z * self._parts(z)[2]

    def derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        s, _, t, sech2 = self._parts(z)
        return t + z * s * sech2

    def second_derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``σ'' = s·sech²(sp)·(2 + z(u − 2 s tanh(sp)))`` (``ACT2.mish``).

        From ``σ' = t + z s q`` (``t = tanh(sp)``, ``q = sech²(sp)``) with ``t' = s q``,
        ``s' = s u`` and ``q' = −2 q t s``: ``σ'' = 2 s q + z(s u q − 2 s² q t)``.
        """
        s, u, t, sech2 = self._parts(z)
        return s * sech2 * (2.0 + z * (u - 2.0 * s * t))


@register_activation
class Softsign(Activation):
    """``σ(z) = z/(1 + |z|)``; ``σ'(z) = 1/(1 + |z|)²``. Equation ``ACT.softsign``.

    torch differentiates its composite ``z/(|z| + 1)`` by the quotient rule,
    ``1/(1 + |z|) − |z|/(1 + |z|)²``, which cancels for large ``|z|``; the closed form does
    not, and is evaluated as ``r·r`` with ``r = 1/(1 + |z|)`` (no overflow of ``(1 + |z|)²``).
    """

    name = "softsign"
    aliases = ("soft-sign",)
    equation = "ACT.softsign"

    def forward(self, z: np.ndarray) -> np.ndarray:
        return z / (np.abs(z) + 1.0)

    def derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        r = 1.0 / (np.abs(z) + 1.0)
        return r * r

    def second_derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``σ'' = −2 sgn(z)/(1 + |z|)³`` (``ACT2.softsign``), 0 at ``z = 0`` (torch's
        ``sgn(0) = 0``; the one-sided limits are ∓2)."""
        r = 1.0 / (np.abs(z) + 1.0)
        return -2.0 * np.sign(z) * (r * r * r)
