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

from typing import Any, ClassVar

import numpy as np

from manual_bp._registry import Configurable, Registry

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "Identity",
    "ReLU",
    "Sigmoid",
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
        in terms of the output (sigmoid: ``a(1−a)``, tanh: ``1−a²``).
        """
        raise NotImplementedError(f"{type(self).__name__} is not elementwise; use backward()")

    def backward(self, grad_a: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """Vector–Jacobian product: ``∂C/∂z`` from ``∂C/∂a``. Shapes ``(batch, n)``.

        Elementwise case (the ⊙ of BP1/BP2): ``∂C/∂z = ∂C/∂a ⊙ σ'(z)``.
        """
        return grad_a * self.derivative(z, a)

    def __call__(self, z: np.ndarray) -> np.ndarray:
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
        e = np.exp(-np.abs(z))
        return np.where(z >= 0, 1.0, e) / (1.0 + e)

    def derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return a * (1.0 - a)


@register_activation
class Tanh(Activation):
    """``σ(z) = tanh z``; ``σ'(z) = 1 − tanh² z``. Equation ``ACT.tanh``."""

    name = "tanh"
    equation = "ACT.tanh"

    def forward(self, z: np.ndarray) -> np.ndarray:
        return np.tanh(z)

    def derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return 1.0 - a * a


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


def get_activation(spec: str | Activation | type[Activation] | dict[str, Any]) -> Activation:
    """Return an :class:`Activation` from a name, class, instance or config dict.

    Names are case-insensitive and ``_``/``-`` are interchangeable
    (``"leaky_relu"`` == ``"leaky-relu"``); an unknown name raises ``ValueError``
    listing the valid names.
    """
    return ACTIVATIONS.get(spec)
