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
:func:`register_activation` and looked up by name with :func:`get_activation`
(or ``ACTIVATIONS["relu"]``, the class).

Modules, by concept (every name is importable from :mod:`manual_bp.activations`):

* :mod:`~manual_bp.activations.base` — the :class:`Activation` protocol and the registry;
* :mod:`~manual_bp.activations.smooth` — identity, sigmoid, tanh, softplus, GELU, SiLU;
* :mod:`~manual_bp.activations.piecewise` — ReLU, leaky ReLU, ELU, SELU, hardtanh;
* :mod:`~manual_bp.activations.normalising` — softmax, log-softmax, softmin;
* :mod:`~manual_bp.activations.hard` — ReLU6, hard sigmoid, hard swish;
* :mod:`~manual_bp.activations.shrink` — hard and soft shrink, tanh-shrink, threshold;
* :mod:`~manual_bp.activations.soft` — CELU, log-sigmoid, Mish, softsign.
"""

from manual_bp.activations.base import (
    ACTIVATIONS,
    Activation,
    _finite_float,
    _sigmoid,
    get_activation,
    register_activation,
)
from manual_bp.activations.hard import HARDSIGMOID_SLOPE, Hardsigmoid, Hardswish, ReLU6
from manual_bp.activations.normalising import LogSoftmax, Softmax, Softmin
from manual_bp.activations.piecewise import (
    ELU,
    SELU,
    SELU_ALPHA,
    SELU_SCALE,
    HardTanh,
    Hardtanh,
    LeakyReLU,
    ReLU,
)
from manual_bp.activations.shrink import Hardshrink, Softshrink, Tanhshrink, Threshold
from manual_bp.activations.smooth import GELU, Identity, Sigmoid, SiLU, Softplus, Tanh
from manual_bp.activations.soft import CELU, LogSigmoid, Mish, Softsign

__all__ = [
    "ACTIVATIONS",
    "CELU",
    "ELU",
    "GELU",
    "HARDSIGMOID_SLOPE",
    "SELU",
    "SELU_ALPHA",
    "SELU_SCALE",
    "Activation",
    "HardTanh",
    "Hardshrink",
    "Hardsigmoid",
    "Hardswish",
    "Hardtanh",
    "Identity",
    "LeakyReLU",
    "LogSigmoid",
    "LogSoftmax",
    "Mish",
    "ReLU",
    "ReLU6",
    "SiLU",
    "Sigmoid",
    "Softmax",
    "Softmin",
    "Softplus",
    "Softshrink",
    "Softsign",
    "Tanh",
    "Tanhshrink",
    "Threshold",
    "_finite_float",
    "_sigmoid",
    "get_activation",
    "register_activation",
]
