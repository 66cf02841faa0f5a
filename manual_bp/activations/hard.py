"""Piecewise-linear "hard" units of mobile networks: ReLU6, hard sigmoid, hard swish (``ACT.*``).

Each is built from ``relu6(z + 3) = clip(z + 3, 0, 6)`` (Howard et al. 2019, MobileNetV3), and
each follows torch's CPU kernels to the operation, so that values and gradients agree to the
bit where the arithmetic allows it (``docs/activations.md``, "Conventions where torch could
differ").
"""

from __future__ import annotations

import numpy as np

from manual_bp.activations.base import Activation, _inplace, _keep_where, register_activation
from manual_bp.activations.piecewise import HardTanh

__all__ = ["HARDSIGMOID_SLOPE", "Hardsigmoid", "Hardswish", "ReLU6"]


#: The slope of torch's hard sigmoid: ``hardsigmoid_backward`` multiplies by the *float32*
#: constant ``1.0f / 6.0f`` = 0.1666666716337204 in every dtype, 3e-8 relative above 1/6.
#: Kept, so that float64 gradients agree with torch's to the bit (the forward divides by 6).
HARDSIGMOID_SLOPE = float(np.float32(1.0) / np.float32(6.0))


@register_activation
class ReLU6(HardTanh):
    """``σ(z) = min(max(z, 0), 6)``: :class:`HardTanh` on ``[0, 6]``, as torch's ``ReLU6``
    (a ``Hardtanh`` subclass there too). Equation ``ACT.relu6``.

    ``σ'(z) = 1[0 < z < 6]``: 0 at both kinks, torch's ``hardtanh_backward``.
    """

    name = "relu6"
    aliases = ()
    equation = "ACT.relu6"
    hyperparameters = ()

    def __init__(self, inplace: bool = False) -> None:
        """torch's ``ReLU6(inplace)``; ``inplace`` changes nothing (``_inplace``)."""
        super().__init__(0.0, 6.0, inplace)

    def second_derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``σ'' = 0`` everywhere, also at 0 and 6 (``ACT2.relu6``: σ' is piecewise constant)."""
        return np.zeros_like(z)


@register_activation
class Hardsigmoid(Activation):
    """``σ(z) = min(max(z + 3, 0), 6) / 6``. Equation ``ACT.hardsigmoid``.

    ``σ'(z) = 1/6`` for ``−3 < z < 3`` and 0 elsewhere, **including** ``z = ±3`` (torch's
    ``hardsigmoid_backward``: strictly inside). The slope is torch's float32 ``1/6``
    (:data:`HARDSIGMOID_SLOPE`) in every dtype.
    """

    name = "hardsigmoid"
    aliases = ("hard-sigmoid",)
    equation = "ACT.hardsigmoid"
    hessian_is_zero = True

    def __init__(self, inplace: bool = False) -> None:
        """torch's ``Hardsigmoid(inplace)``; ``inplace`` changes nothing (``_inplace``)."""
        self.inplace = _inplace(inplace)

    def forward(self, z: np.ndarray) -> np.ndarray:
        return np.minimum(np.maximum(z + 3.0, 0.0), 6.0) / 6.0

    @staticmethod
    def _inside(z: np.ndarray) -> np.ndarray:
        return (z > -3.0) & (z < 3.0)

    def derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return np.where(self._inside(z), HARDSIGMOID_SLOPE, 0.0).astype(z.dtype, copy=False)

    def backward(self, grad_a: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return np.where(self._inside(z), grad_a * HARDSIGMOID_SLOPE, 0.0)

    def forward_into(self, z: np.ndarray, out: np.ndarray) -> np.ndarray:
        np.add(z, 3.0, out=out)
        np.clip(out, 0.0, 6.0, out=out)
        out /= 6.0
        return out

    def backward_inplace(self, grad_a, z, a, scratch) -> np.ndarray:
        """``g · 1/6`` strictly inside ``(−3, 3)``, 0 elsewhere, in place."""
        grad_a *= HARDSIGMOID_SLOPE
        return _keep_where(grad_a, self._inside(z))

    def second_derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``σ'' = 0`` everywhere (``ACT2.hardsigmoid``: σ' is piecewise constant).

        torch has no double backward for ``hardsigmoid_backward`` (it raises); the zero is
        exact on each linear piece, and at ±3 it is the derivative of the σ' used.
        """
        return np.zeros_like(z)


@register_activation
class Hardswish(Activation):
    """``σ(z) = z · min(max(z + 3, 0), 6) / 6``. Equation ``ACT.hardswish``.

    ``σ'(z) = 0`` for ``z ≤ −3``, ``z/3 + ½`` for ``−3 < z < 3`` and 1 for ``z ≥ 3``: torch's
    ``hardswish_backward`` takes the outer branch at both kinks, ``σ'(−3) = 0`` and
    ``σ'(3) = 1`` (the limits from inside are −½ and 3/2).
    """

    name = "hardswish"
    aliases = ("hard-swish",)
    equation = "ACT.hardswish"

    def __init__(self, inplace: bool = False) -> None:
        """torch's ``Hardswish(inplace)``; ``inplace`` changes nothing (``_inplace``)."""
        self.inplace = _inplace(inplace)

    def forward(self, z: np.ndarray) -> np.ndarray:
        return z * np.minimum(np.maximum(z + 3.0, 0.0), 6.0) / 6.0  # torch's order: (z·r)/6

    def derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        middle = z / 3.0 + 0.5
        return np.where(z <= -3.0, 0.0, np.where(z < 3.0, middle, 1.0)).astype(z.dtype, copy=False)

    def backward(self, grad_a: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        middle = grad_a * (z / 3.0 + 0.5)  # torch's g·((z/3) + ½), the same bits
        return np.where(z <= -3.0, 0.0, np.where(z < 3.0, middle, grad_a))

    def forward_into(self, z: np.ndarray, out: np.ndarray) -> np.ndarray:
        np.add(z, 3.0, out=out)
        np.clip(out, 0.0, 6.0, out=out)
        out *= z
        out /= 6.0
        return out

    def backward_inplace(self, grad_a, z, a, scratch) -> np.ndarray:
        """``g ⊙ σ'(z)`` in place, ``σ'`` as :meth:`derivative` (torch's branches)."""
        np.divide(z, 3.0, out=scratch)
        scratch += 0.5
        np.copyto(scratch, 1.0, where=z >= 3.0)
        grad_a *= scratch
        return _keep_where(grad_a, z > -3.0)

    def second_derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``σ'' = 1/3`` for ``−3 < z < 3``, 0 elsewhere, also at ±3 (``ACT2.hardswish``):
        torch's double backward of ``hardswish_backward`` is nonzero only strictly inside."""
        inside = (z > -3.0) & (z < 3.0)
        return np.where(inside, 1.0 / 3.0, 0.0).astype(z.dtype, copy=False)
