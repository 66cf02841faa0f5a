"""Shrinkage and thresholding units: hard and soft shrink, tanh-shrink, threshold (``ACT.*``).

Hard and soft shrinkage set a dead zone ``[−λ, λ]`` to zero (soft shrinkage is the proximal
operator of ``λ|z|``, the step of ISTA); threshold replaces everything at or below a
threshold by a constant. At every edge the derivative is torch's: 0 (its kernels pass the
gradient only strictly outside the dead zone, strictly above the threshold).
"""

from __future__ import annotations

import numpy as np

from manual_bp.activations.base import (
    Activation,
    _finite_float,
    _inplace,
    _keep_where,
    register_activation,
)

__all__ = ["Hardshrink", "Softshrink", "Tanhshrink", "Threshold"]


class _Shrink(Activation):
    """The shared dead zone ``[−λ, λ]`` of :class:`Hardshrink` and :class:`Softshrink`:
    ``σ'(z) = 1[z < −λ or z > λ]`` (torch's ``shrink_backward``, 0 at ``z = ±λ``)."""

    hyperparameters = ("lambd",)

    def __init__(self, lambd: float = 0.5) -> None:
        """``lambd``: torch's name for ``λ`` (``lambda`` is a Python keyword)."""
        self.lambd = _finite_float(lambd, "lambd")

    def _outside(self, z: np.ndarray) -> np.ndarray:
        return (z < -self.lambd) | (z > self.lambd)

    def _dead(self, z: np.ndarray) -> np.ndarray:
        """``−λ ≤ z ≤ λ``: False at NaN, which the forward propagates (torch's kernels)."""
        return (z >= -self.lambd) & (z <= self.lambd)

    def derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return self._outside(z).astype(z.dtype)

    def backward(self, grad_a: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return np.where(self._outside(z), grad_a, 0.0)

    def backward_inplace(self, grad_a, z, a, scratch) -> np.ndarray:
        return _keep_where(grad_a, self._outside(z))


@register_activation
class Hardshrink(_Shrink):
    """``σ(z) = z`` for ``|z| > λ``, 0 for ``−λ ≤ z ≤ λ``. Equation ``ACT.hardshrink``.

    ``σ'(z) = 1[|z| > λ]``, 0 at ``z = ±λ`` (torch). A negative ``λ`` is accepted, as torch
    does: the dead zone is empty and σ is the identity.
    """

    name = "hardshrink"
    aliases = ("hard-shrink",)
    equation = "ACT.hardshrink"
    hessian_is_zero = True

    def forward(self, z: np.ndarray) -> np.ndarray:
        return np.where(self._dead(z), 0.0, z)

    def second_derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``σ'' = 0`` everywhere, also at ``±λ`` (``ACT2.hardshrink``)."""
        return np.zeros_like(z)


@register_activation
class Softshrink(_Shrink):
    """``σ(z) = z − λ`` for ``z > λ``, ``z + λ`` for ``z < −λ``, 0 between. ``ACT.softshrink``.

    ``σ'(z) = 1[|z| > λ]``, 0 at ``z = ±λ`` (torch). ``λ ≥ 0`` (torch refuses a negative
    ``λ``: the pieces would overlap).
    """

    name = "softshrink"
    aliases = ("soft-shrink",)
    equation = "ACT.softshrink"
    hessian_is_zero = True

    def __init__(self, lambd: float = 0.5) -> None:
        """``lambd ≥ 0``: the half-width of the dead zone (torch's name)."""
        super().__init__(lambd)
        if self.lambd < 0:
            raise ValueError(f"lambd must be >= 0 for softshrink, got {lambd!r}")

    def forward(self, z: np.ndarray) -> np.ndarray:
        lambd = self.lambd
        shifted = np.where(z > lambd, z - lambd, z + lambd)  # NaN stays NaN, as torch's
        return np.where(self._dead(z), 0.0, shifted)

    def second_derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``σ'' = 0`` everywhere, also at ``±λ`` (``ACT2.softshrink``)."""
        return np.zeros_like(z)


@register_activation
class Tanhshrink(Activation):
    """``σ(z) = z − tanh z``; ``σ'(z) = tanh² z``. Equation ``ACT.tanhshrink``.

    The forward is torch's ``z − tanh z`` (it cancels near 0, where σ ≈ z³/3: both libraries
    are accurate to ``ε|z|`` there, not relatively). The derivative is ``t·t``, ``t = tanh z``;
    torch's autograd forms ``1 − (1 − t²)``, which is only accurate to ``ε`` absolutely (it
    gives 1.1e-16 at ``z = 1e-8``, where ``σ' = 1e-16``).
    """

    name = "tanhshrink"
    aliases = ("tanh-shrink",)
    equation = "ACT.tanhshrink"

    def forward(self, z: np.ndarray) -> np.ndarray:
        return z - np.tanh(z)

    def derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        t = np.tanh(z)
        return t * t

    def second_derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``σ'' = 2 tanh z (1 − tanh² z)`` (``ACT2.tanhshrink``), with ``(1 − t)(1 + t)``."""
        t = np.tanh(z)
        return 2.0 * t * ((1.0 - t) * (1.0 + t))


@register_activation
class Threshold(Activation):
    """``σ(z) = z`` for ``z > threshold``, ``value`` otherwise. Equation ``ACT.threshold``.

    ``σ'(z) = 1[z > threshold]``: 0 at the threshold itself (torch's ``threshold_backward``).
    torch's ``Threshold(threshold, value, inplace=False)`` has no defaults; here both default
    to 0 (``Threshold()`` is ReLU) so that the name ``"threshold"`` builds an instance like
    every registered activation (``--layers "threshold(threshold=0.1, value=20.0)"``).
    """

    name = "threshold"
    equation = "ACT.threshold"
    hessian_is_zero = True
    hyperparameters = ("threshold", "value")

    def __init__(self, threshold: float = 0.0, value: float = 0.0, inplace: bool = False) -> None:
        """torch's ``Threshold(threshold, value, inplace)``; ``inplace`` changes nothing."""
        self.inplace = _inplace(inplace)
        self.threshold = _finite_float(threshold, "threshold")
        self.value = _finite_float(value, "value")

    def forward(self, z: np.ndarray) -> np.ndarray:
        return np.where(z <= self.threshold, self.value, z).astype(z.dtype, copy=False)

    def derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return (z > self.threshold).astype(z.dtype)

    def backward(self, grad_a: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return np.where(z > self.threshold, grad_a, 0.0)

    def forward_into(self, z: np.ndarray, out: np.ndarray) -> np.ndarray:
        np.copyto(out, z)
        np.copyto(out, self.value, where=z <= self.threshold)
        return out

    def backward_inplace(self, grad_a, z, a, scratch) -> np.ndarray:
        return _keep_where(grad_a, z > self.threshold)

    def second_derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``σ'' = 0`` everywhere, also at the threshold (``ACT2.threshold``)."""
        return np.zeros_like(z)
