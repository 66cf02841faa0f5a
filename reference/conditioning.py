"""Magnitude bounds for rounding errors of back-propagated quantities.

A float64 sum ``Σᵢ tᵢ`` carries a rounding error up to about ``k·ε·Σᵢ|tᵢ|``,
which can be far larger than ``ε·|Σᵢ tᵢ|`` when the terms cancel. Comparing a
gradient that is the result of such a cancellation against ``c·ε·max|g|``
would flag correct code. This module propagates *magnitudes* instead of
values through the same backward pass — the standard a-priori error bound::

    S(zˡ) = S(aˡ⁻¹)|Wˡ|ᵀ + |bˡ|,  S(aˡ) = |aˡ| + |σ'(zˡ)| S(zˡ)   (forward rounding)
    S(δᴸ) = max(|δᴸ|, J̃ᵀ|∇ₐC|, |aᴸ| + |y| if a shortcut a − y is used)
    S(δˡ) = J̃(zˡ)ᵀ (max(S(δˡ⁺¹), max|δˡ⁺¹|) |Wˡ⁺¹|)   (BP2 with absolute values)
    S(∂C/∂Wˡ) = S(δˡ)ᵀ S(aˡ⁻¹) / n,   S(∂C/∂bˡ) = Σ_x S(δˡ_x) / n,   S(∂C/∂x) = S(δ¹)|W¹| / n

``J̃ = |J_σ| + diag(r)`` is the absolute per-sample Jacobian of the activation,
obtained from torch (``vmap(jacrev(σ))``, so coupled activations such as
softmax need no special case), plus ``r``, the magnitude of the terms that
the *derivative formula* subtracts: both we and torch evaluate
``tanh' = 1 − a²`` and ``σ' = a(1 − a)`` from the output, which near
saturation keeps an absolute, not relative, accuracy of ε — and NumPy's and
torch's ``tanh`` differ in the last ulp. :data:`DERIVATIVE_ROUNDING` lists
``r`` per activation (default 0: the derivative is accurate relative to itself).
``J̃`` also carries ``|σ''(z)|·S(z)``: ``z`` itself is only known to ``ε·S(z)``,
which moves ``σ'(z)`` by ``|σ''|·ε·S(z)`` (the exponential tail of the sigmoid
turns this into a relative error of ``ε·|z|``).
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

__all__ = [
    "COST_GRAD_ROUNDING",
    "DERIVATIVE_ROUNDING",
    "FORWARD_ROUNDING",
    "ErrorScales",
    "ambiguous_samples",
    "cost_grad_scale",
    "error_scales",
]

#: activation name -> r(z, a): magnitude of the terms cancelling in σ'(z) as computed.
DERIVATIVE_ROUNDING = {
    "tanh": lambda z, a: 1.0 + a * a,  # 1 − a²
    "sigmoid": lambda z, a: np.abs(a),  # a(1 − a): 1 − a is exact to ε absolute
    # a ⊙ (g − ⟨g, a⟩): the diagonal term aᵢgᵢ and aᵢ·aᵢgᵢ of the sum cancel as aᵢ → 1.
    "softmax": lambda z, a: 2.0 * np.abs(a),
    "softmin": lambda z, a: 2.0 * np.abs(a),  # softmax's VJP, negated
    # g − eᵃ Σg: gᵢ and eᵃⁱgᵢ cancel as the probability eᵃⁱ → 1.
    "log-softmax": lambda z, a: 2.0 * np.exp(a),
    # s(1 + z(1 − s)) cancels where silu' = 0 (z ≈ −1.28): terms s(1 + |z|(1 − s)).
    "silu": lambda z, a: _sigmoid(z) * (1.0 + np.abs(z)),
    # Φ(z) + zφ(z) cancels where gelu' = 0 (z ≈ −0.75); torch's Φ = ½(1 + erf) is only
    # absolutely accurate (½ε) in the left tail.
    "gelu": lambda z, a: 0.5 + np.abs(z) * np.exp(-0.5 * np.minimum(z * z, 1400.0)),
    # issue 26: torch's autograd of composites. Mish: tanh(sp) + z·s·(1 − tanh² sp) cancels
    # where mish' = 0 (z ≈ −1.19), and torch's 1 − tanh² loses ε absolutely, times |z|s.
    "mish": lambda z, a: 1.0 + np.abs(z) * _sigmoid(z),
    # quotient rule 1/(1 + |z|) − |z|/(1 + |z|)²: terms 2/(1 + |z|), result 1/(1 + |z|)².
    "softsign": lambda z, a: 2.0 / (1.0 + np.abs(z)),
    # 1 − (1 − tanh² z): terms of size 1 whatever tanh² z.
    "tanhshrink": lambda z, a: 2.0 + 0.0 * z,
}


def _sigmoid(z: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0, e) / (1.0 + e)


#: activation name -> r(z, a): absolute rounding of σ(z) itself (/ε) where the formula
#: cancels. torch's GELU ½z(1 + erf(z/√2)) (and ½z(1 + tanh u)) is only absolutely accurate
#: for z < 0 (exactly −0 below z ≈ −8.3); ours uses erfc and is accurate (issue 3).
FORWARD_ROUNDING = {
    "gelu": lambda z, a: np.where(z < 0, 0.5 * np.abs(z), 0.0),
    # issue 26: torch's tanh-shrink z − tanh z cancels terms of size |z| near 0 (σ ≈ z³/3).
    "tanhshrink": lambda z, a: np.abs(z),
}


@dataclass
class ErrorScales:
    """Elementwise magnitudes, shaped like the quantities of :class:`TorchRun`."""

    zs: list[np.ndarray]
    activations: list[np.ndarray]
    cost: float
    deltas: list[np.ndarray]
    weights: list[np.ndarray]
    biases: list[np.ndarray]
    input_grad: np.ndarray


def _forward_scales(net: Network, run: TorchRun) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``S(zˡ)``: the absolute rounding error of ``zˡ`` is about ``ε·S(zˡ)``.

    ``S(z¹) = |x||W¹|ᵀ + |b¹|``; ``S(aˡ) = |aˡ| + |σ'(zˡ)|·S(zˡ)`` (rounding of
    ``zˡ`` moved through σ); ``S(zˡ⁺¹) = S(aˡ)|Wˡ⁺¹|ᵀ + |bˡ⁺¹|``.
    """
    z_scales, a_scales = [], [np.abs(run.activations[0])]
    for l, (W, b) in enumerate(zip(net.weights, net.biases, strict=True)):
        z_scale = a_scales[-1] @ np.abs(W).T + np.abs(b)
        z_scales.append(z_scale)
        slope = np.abs(_elementwise_derivatives(net.activations[l], run.zs[l], order=1))
        rounding = FORWARD_ROUNDING.get(net.activations[l].name)
        own = 0.0 if rounding is None else rounding(run.zs[l], run.activations[l + 1])
        a_scales.append(np.abs(run.activations[l + 1]) + slope * z_scale + own)
    return z_scales, a_scales


def _elementwise_derivatives(activation, z: np.ndarray, order: int) -> np.ndarray:
    """``σ'(z)`` (order 1) or ``σ''(z)`` (order 2) from torch, elementwise.

    For a coupled activation (softmax) this returns, per unit, the row sums of
    ``|J|`` (order 1) or ``2·|J|`` row sums (order 2, a bound for ``|∂J/∂z|``).
    """
    f = torch_activation(activation)
    zt = torch.tensor(z, dtype=torch.float64)
    if not activation.elementwise:
        jac = torch.func.vmap(torch.func.jacrev(lambda v: f(v[None, :])[0]))(zt).abs()
        return (jac.sum(dim=1) * (1.0 if order == 1 else 2.0)).numpy()

    def scalar(v):
        return f(v.reshape(1, 1)).reshape(())

    derivative = torch.func.grad(scalar)
    if order == 2:
        derivative = torch.func.grad(derivative)
    return torch.func.vmap(derivative)(zt.reshape(-1)).reshape(zt.shape).numpy()


def _abs_jacobians(net: Network, run: TorchRun, z_scales: list[np.ndarray]) -> list[np.ndarray]:
    """``J̃ = |∂aˡ/∂zˡ| + diag(r + |σ''|·S(z))`` per sample, ``(batch, n_l, n_l)``."""
    jacobians = []
    for l, (activation, z) in enumerate(zip(net.activations, run.zs, strict=True)):
        f = torch_activation(activation)
        zt = torch.tensor(z, dtype=torch.float64)
        jac = np.abs(
            torch.func.vmap(torch.func.jacrev(lambda v, f=f: f(v[None, :])[0]))(zt).numpy()
        )
        # σ'(z) evaluated at a z that is off by ε·S(z) is off by |σ''(z)|·ε·S(z).
        curvature = np.abs(_elementwise_derivatives(activation, z, order=2))
        if activation.elementwise and not np.isfinite(curvature).all():
            # torch's double backward of mish is NaN for z > 709 (its e^z overflows to inf
            # inside softplus); there the library's σ'' (0 to the last bit) sizes the term.
            ours = np.abs(activation.second_derivative(z, run.activations[l + 1]))
            curvature = np.where(np.isfinite(curvature), curvature, ours)
        extra = curvature * z_scales[l]
        rounding = DERIVATIVE_ROUNDING.get(activation.name)
        if rounding is not None:
            extra = extra + rounding(z, run.activations[l + 1])
        diagonal = np.einsum("bii->bi", jac)  # a writable view of the diagonals
        diagonal += extra
        jacobians.append(jac)
    return jacobians


def _output_scale(
    net: Network, run: TorchRun, y: np.ndarray, jacobian: np.ndarray, a_scale: np.ndarray
) -> np.ndarray:
    """``S(δᴸ)``; ``a_scale`` is ``S(aᴸ)``: ``aᴸ`` itself is only known to ``ε·S(aᴸ)``.

    Every difference that ``∇ₐC`` or the shortcut ``a − y`` forms cancels against that
    forward rounding, not against ``|aᴸ|``: with ``|Wᴸ|·|aᴸ⁻¹| ≫ |aᴸ|`` (weight scale 30)
    two correct forward passes that sum ``zᴸ`` in a different order (the loop form's
    ``W @ a`` against the matrix form's ``a @ Wᵀ``) give ``a − y`` that differ by
    ``ε·S(zᴸ)``, far above ``ε·|a − y|``.
    """
    a = run.activations[-1]
    candidates = [np.abs(run.deltas[-1])]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        grad_a = np.abs(net.cost.grad(a, y))
    grad_a = np.where(np.isfinite(grad_a), grad_a, 0.0)
    candidates.append(np.einsum("bij,bi->bj", jacobian, grad_a))
    if net.output_activation.name in net.cost.shortcuts:
        # δ = a − y. For a bounded output (sigmoid, softmax) torch's fused losses compute it
        # to ε *absolute* (vmap of BCE-with-logits goes through 1 − σ(−z), exactly 0 where
        # σ(z) = 6e-68), so the magnitude of a is taken as at least 1.
        bounded = net.output_activation.name != "identity"
        magnitude = np.maximum(a_scale, 1.0) if bounded else a_scale
        candidates.append(magnitude + np.abs(y))
    elif net.cost.name in COST_GRAD_ROUNDING:
        # ∇ₐC is itself a difference (softmax(a) − y, sigmoid(a) − y, a − y): its rounding,
        # not only its value, goes through J̃ (issue 3).
        rounding = cost_grad_scale(net.cost.name, a, y, grad_a, a_scale)
        candidates.append(np.einsum("bij,bi->bj", jacobian, rounding))
    return np.maximum.reduce(candidates)


def error_scales(net: Network, run: TorchRun, y: np.ndarray) -> ErrorScales:
    """Magnitude bounds ``S`` for every back-propagated quantity of ``run``.

    ``y`` are the targets as ``(batch, n_out)`` rows.
    """
    n = run.input_grad.shape[0]
    weights_abs = [np.abs(np.asarray(W, dtype=np.float64)) for W in net.weights]
    z_scales, a_scales = _forward_scales(net, run)
    jacobians = _abs_jacobians(net, run, z_scales)
    deltas = run.deltas
    scales: list[np.ndarray] = [np.empty(0)] * len(deltas)
    scales[-1] = _output_scale(net, run, y, jacobians[-1], a_scales[-1])
    for l in range(len(deltas) - 2, -1, -1):
        propagated = np.maximum(scales[l + 1], np.abs(deltas[l + 1]).max(initial=0.0))
        scales[l] = np.einsum("bij,bi->bj", jacobians[l], propagated @ weights_abs[l + 1])
    top = [np.maximum(s, np.abs(d).max(initial=0.0)) for s, d in zip(scales, deltas, strict=True)]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        grad_a = np.abs(net.cost.grad(run.activations[-1], y))
    grad_a = np.where(np.isfinite(grad_a), grad_a, 0.0)
    return ErrorScales(
        zs=z_scales,
        activations=a_scales,
        cost=abs(run.cost) + float((grad_a * a_scales[-1]).sum(axis=1).mean()),
        deltas=scales,
        weights=[s.T @ a / n for s, a in zip(top, a_scales[:-1], strict=True)],
        biases=[s.sum(axis=0) / n for s in top],
        input_grad=top[0] @ weights_abs[0] / n,
    )


#: cost name -> r(a, y, g, s): magnitude of the terms cancelling in ∂C/∂a as computed,
#: with g = |∂C/∂a| and s = S(a) (a itself is known to ε·s). Default: g·s/|a|.
COST_GRAD_ROUNDING = {
    "quadratic": lambda a, y, g, s: s + np.abs(y),  # a − y
    # (a − y)/(a(1 − a)): a and 1 − a are known to ε·s absolute, i.e. relative ε·s/min(a, 1 − a).
    "cross-entropy": lambda a, y, g, s: g * s / np.minimum(np.abs(a), np.abs(1 - a)),
    # sigmoid(a) − y; a known to ε·s moves sigmoid(a) by sigmoid'(a)·ε·s. torch's per-sample
    # (vmap) gradient is evaluated as 1 − sigmoid(−a) − y: only absolutely accurate, hence 1.
    "bce-logits": lambda a, y, g, s: 1.0 + _sigmoid(a) * (1.0 - _sigmoid(a)) * s + np.abs(y),
    # softmax(a) − y; a known to ε·s moves pᵢ by at most 2pᵢ·ε·max(s) (row).
    "categorical-cross-entropy": lambda a, y, g, s: (
        _softmax(a) * (1.0 + 2.0 * s.max(axis=-1, keepdims=True)) + np.abs(y)
    ),
    "log-likelihood": lambda a, y, g, s: g * s / np.abs(a),  # −y/a: a quotient, no cancellation
    "mae": lambda a, y, g, s: g,  # sign(a − y): exact
    "huber": lambda a, y, g, s: s + np.abs(y),  # clip(a − y, ±δ)
    "smooth-l1": lambda a, y, g, s: np.maximum(g, s + np.abs(y)),  # clip((a − y)/β, ±1)
    "multi-margin": lambda a, y, g, s: g,  # counts of active hinges: exact
    "kl-divergence": lambda a, y, g, s: g,  # −y: exact
    # 1 − y/(λ + ε) (default log_input=False): the quotient is known to relative ε·s/(λ + ε).
    "poisson-nll": lambda a, y, g, s: (
        1.0 + np.abs(y) / (np.abs(a) + 1e-8) * (1.0 + s / (np.abs(a) + 1e-8))
    ),
}


def _softmax(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def cost_grad_scale(
    cost_name: str, a: np.ndarray, y: np.ndarray, g: np.ndarray, a_scale: np.ndarray
) -> np.ndarray:
    """Magnitude bound for the rounding error of ``∂C/∂a`` (see :data:`COST_GRAD_ROUNDING`)."""
    g = np.abs(g)
    rounding = COST_GRAD_ROUNDING.get(cost_name, lambda a, y, g, s: g * s / np.abs(a))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        scale = rounding(a, y, g, a_scale)
    return np.maximum(g, np.where(np.isfinite(scale), scale, 0.0))


def ambiguous_samples(net: Network, run: TorchRun, c: float = 64.0) -> np.ndarray:
    """Samples with a unit whose ``z`` lies within rounding distance of a kink.

    ``z`` is only known to ``ε·S(z)``. Where the derivative of an elementwise
    activation changes by O(1) inside ``[z − τ, z + τ]``, ``τ = c·ε·S(z)`` (a
    ReLU unit whose ``z`` is a cancellation that is 0 in exact arithmetic but
    ``5.6e-17`` with one summation order and ``0`` with another), two correct
    implementations may legitimately take different one-sided derivatives. Such
    samples have no well-defined reference gradient; comparisons drop them.

    Returns a boolean mask of shape ``(batch,)``.
    """
    z_scales, _ = _forward_scales(net, run)
    ambiguous = np.zeros(run.input_grad.shape[0], dtype=bool)
    eps = float(np.finfo(np.float64).eps)
    for activation, z, z_scale in zip(net.activations, run.zs, z_scales, strict=True):
        if not activation.elementwise:
            continue  # coupled activations (softmax) are smooth
        tau = c * eps * z_scale
        with np.errstate(all="ignore"):
            slopes = [
                activation.derivative(v, activation.forward(v)) for v in (z - tau, z, z + tau)
            ]
        spread = np.maximum.reduce(slopes) - np.minimum.reduce(slopes)
        jump = spread > 1e-6 * (1.0 + np.abs(slopes[1]))
        ambiguous |= jump.any(axis=1)
    return ambiguous
