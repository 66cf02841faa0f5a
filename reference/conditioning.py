"""Magnitude bounds for rounding errors of back-propagated quantities.

A float64 sum ``Σᵢ tᵢ`` carries a rounding error up to about ``k·ε·Σᵢ|tᵢ|``,
which can be far larger than ``ε·|Σᵢ tᵢ|`` when the terms cancel. Comparing a
gradient that is the result of such a cancellation against ``c·ε·max|g|``
would flag correct code. This module propagates *magnitudes* instead of
values through the same backward pass — the standard a-priori error bound::

    S(δᴸ) = max(|δᴸ|, J̃ᵀ|∇ₐC|, |aᴸ| + |y| if a shortcut a − y is used)
    S(δˡ) = J̃(zˡ)ᵀ (max(S(δˡ⁺¹), max|δˡ⁺¹|) |Wˡ⁺¹|)   (BP2 with absolute values)
    S(∂C/∂Wˡ) = S(δˡ)ᵀ |aˡ⁻¹| / n,   S(∂C/∂bˡ) = Σ_x S(δˡ_x) / n,   S(∂C/∂x) = S(δ¹)|W¹| / n

``J̃ = |J_σ| + diag(r)`` is the absolute per-sample Jacobian of the activation,
obtained from torch (``vmap(jacrev(σ))``, so coupled activations such as
softmax need no special case), plus ``r``, the magnitude of the terms that
the *derivative formula* subtracts: both we and torch evaluate
``tanh' = 1 − a²`` and ``σ' = a(1 − a)`` from the output, which near
saturation keeps an absolute, not relative, accuracy of ε — and NumPy's and
torch's ``tanh`` differ in the last ulp. :data:`DERIVATIVE_ROUNDING` lists
``r`` per activation (default 0: the derivative is accurate relative to itself).
The bound only ever *widens* the tolerance where a computation
really is ill-conditioned; for well-conditioned entries ``max|g|`` dominates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from manual_bp import Network
from reference.components import torch_activation
from reference.network import TorchRun

__all__ = ["DERIVATIVE_ROUNDING", "ErrorScales", "error_scales"]

#: activation name -> r(z, a): magnitude of the terms cancelling in σ'(z) as computed.
DERIVATIVE_ROUNDING = {
    "tanh": lambda z, a: 1.0 + a * a,  # 1 − a²
    "sigmoid": lambda z, a: np.abs(a),  # a(1 − a): 1 − a is exact to ε absolute
}


@dataclass
class ErrorScales:
    """Elementwise magnitudes, shaped like the quantities of :class:`TorchRun`."""

    deltas: list[np.ndarray]
    weights: list[np.ndarray]
    biases: list[np.ndarray]
    input_grad: np.ndarray


def _abs_jacobians(net: Network, run: TorchRun) -> list[np.ndarray]:
    """``J̃ = |∂aˡ/∂zˡ| + diag(r)`` per sample, shape ``(batch, n_l, n_l)``, for every layer."""
    jacobians = []
    for l, (activation, z) in enumerate(zip(net.activations, run.zs, strict=True)):
        f = torch_activation(activation)
        zt = torch.tensor(z, dtype=torch.float64)
        jac = np.abs(
            torch.func.vmap(torch.func.jacrev(lambda v, f=f: f(v[None, :])[0]))(zt).numpy()
        )
        rounding = DERIVATIVE_ROUNDING.get(activation.name)
        if rounding is not None:
            diagonal = np.einsum("bii->bi", jac)  # a writable view of the diagonals
            diagonal += rounding(z, run.activations[l + 1])
        jacobians.append(jac)
    return jacobians


def _output_scale(net: Network, run: TorchRun, y: np.ndarray, jacobian: np.ndarray) -> np.ndarray:
    a = run.activations[-1]
    candidates = [np.abs(run.deltas[-1])]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        grad_a = np.abs(net.cost.grad(a, y))
    grad_a = np.where(np.isfinite(grad_a), grad_a, 0.0)
    candidates.append(np.einsum("bij,bi->bj", jacobian, grad_a))
    if net.output_activation.name in net.cost.shortcuts:
        candidates.append(np.abs(a) + np.abs(y))
    return np.maximum.reduce(candidates)


def error_scales(net: Network, run: TorchRun, y: np.ndarray) -> ErrorScales:
    """Magnitude bounds ``S`` for every back-propagated quantity of ``run``.

    ``y`` are the targets as ``(batch, n_out)`` rows.
    """
    n = run.input_grad.shape[0]
    weights_abs = [np.abs(np.asarray(W, dtype=np.float64)) for W in net.weights]
    jacobians = _abs_jacobians(net, run)
    deltas = run.deltas
    scales: list[np.ndarray] = [np.empty(0)] * len(deltas)
    scales[-1] = _output_scale(net, run, y, jacobians[-1])
    for l in range(len(deltas) - 2, -1, -1):
        propagated = np.maximum(scales[l + 1], np.abs(deltas[l + 1]).max(initial=0.0))
        scales[l] = np.einsum("bij,bi->bj", jacobians[l], propagated @ weights_abs[l + 1])
    top = [np.maximum(s, np.abs(d).max(initial=0.0)) for s, d in zip(scales, deltas, strict=True)]
    activations_abs = [np.abs(a) for a in run.activations]
    return ErrorScales(
        deltas=scales,
        weights=[s.T @ a / n for s, a in zip(top, activations_abs[:-1], strict=True)],
        biases=[s.sum(axis=0) / n for s in top],
        input_grad=top[0] @ weights_abs[0] / n,
    )
