"""Diagonal GGN (exact and Monte-Carlo) and diagonal Hessian, whole-batch and per-sample.

Exact diagonal GGN (``CURV.diag-ggn``, Dangel et al. 2020): with ``S Sᵀ = ∇²_f ℓ`` per
sample, ``G = (1/n) Σₓ (Jₓᵀ Sₓ)(Jₓᵀ Sₓ)ᵀ``, so backpropagating the ``c`` columns of ``S``
like gradients gives ``Vₓ = ∂z/∂f ᵀ Sₓ`` at every dense output ``z`` and, for
``z = x Wᵀ + b``, ``diag G_W[i, j] = (1/n) Σₓ Σ_c Vₓ[c, i]² xⱼ²`` and
``diag G_b[i] = (1/n) Σₓ Σ_c Vₓ[c, i]²``.

Monte-Carlo (``CURV.diag-ggn-mc``): the same with ``S`` replaced by gradients at targets
drawn from the model (:func:`~manual_bp.curvature.loss.sampled_factor`).

Diagonal Hessian (``CURV.diag-hessian``): the per-sample Hessian of ``ℓ`` with respect to
each op's output is propagated as a matrix, ``H_z = J_σᵀ H_a J_σ + Σₖ gₖ ∇²σₖ`` through an
activation (``diag(g ⊙ σ'')`` elementwise: the residual) and ``H_x = Wᵀ H_z W`` through a
dense map; then ``∂²C/∂W_ij² = (1/n) Σₓ (H_z)ᵢᵢ xⱼ²``. Without the residual the same
propagation is the readable form of the diagonal GGN, checked against the factor form.

Per-sample results (``per_sample=True``) are those of ``Cₓ``: arrays ``(n, *shape)``
whose mean over the batch is the batch result.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp.curvature.chain import ActOp, Chain, as_chain
from manual_bp.curvature.loss import (
    output_factor,
    output_gradient,
    output_hessian,
    sampled_factor,
)

__all__ = [
    "backpropagate_factor",
    "diag_ggn",
    "diag_ggn_mc",
    "diag_ggn_readable",
    "diag_hessian",
    "diag_hessian_readable",
]


def backpropagate_factor(chain: Chain, inputs: list[np.ndarray], S: np.ndarray) -> list:
    """``V`` at every op's output: ``(n, c, m)`` arrays, ``V = Jᵀ S`` column by column.

    Returns a list aligned with ``chain.ops``: entry ``k`` is the factor at op ``k``'s
    OUTPUT (for a dense op, at ``z``).
    """
    V = np.ascontiguousarray(np.swapaxes(S, 1, 2))  # (n, c, m): columns as rows
    at_output = [None] * len(chain.ops)
    for k in range(len(chain.ops) - 1, -1, -1):
        op, inp = chain.ops[k], inputs[k]
        at_output[k] = V
        if isinstance(op, ActOp):
            act = op.activation
            if act.elementwise:
                V = V * act.derivative(inp, act.forward(inp))[:, None, :]
            else:  # batched VJP: repeat each sample's z for its c columns
                z = np.repeat(inp, V.shape[1], axis=0)
                flat = V.reshape(-1, V.shape[2])
                V = act.backward(flat, z, act.forward(z)).reshape(V.shape)
        else:
            V = V @ op.W
    return at_output


def _diag_from_factor(chain, inputs, S, per_sample: bool) -> list[np.ndarray]:
    n = inputs[0].shape[0]
    out = [np.zeros((n, *s)) for s in chain.shapes] if per_sample else chain.zeros()
    at_output = backpropagate_factor(chain, inputs, S)
    for op, inp, V in zip(chain.ops, inputs, at_output, strict=True):
        if isinstance(op, ActOp):
            continue
        _accumulate(out, op, inp, (V * V).sum(axis=1), per_sample)  # Σ_c V², (n, m_out)
    return out


def diag_ggn(model: Any, x: Any, y: Any, *, per_sample: bool = False) -> list[np.ndarray]:
    """Exact diagonal of the GGN of ``C`` (``CURV.diag-ggn``), shaped like the parameters."""
    chain = as_chain(model)
    x, y = chain.data(x, y)
    inputs, f = chain.forward(x)
    return _diag_from_factor(chain, inputs, output_factor(chain, f, y), per_sample)


def diag_ggn_mc(
    model: Any,
    x: Any,
    y: Any,
    *,
    rng: np.random.Generator | int | None = None,
    n_samples: int = 1,
    per_sample: bool = False,
) -> list[np.ndarray]:
    """Monte-Carlo diagonal GGN (``CURV.diag-ggn-mc``): unbiased, ``E[·] = diag G``.

    The targets are sampled from the model; ``y`` enters only through its mass ``Σⱼ yⱼ``
    (1 except for KL targets, see :func:`~manual_bp.curvature.loss.sampled_factor`).
    """
    chain = as_chain(model)
    x, y = chain.data(x, y)
    inputs, f = chain.forward(x)
    S = sampled_factor(chain, f, y, np.random.default_rng(rng), n_samples)
    return _diag_from_factor(chain, inputs, S, per_sample)


def _propagate(chain, inputs, H, g, residual: bool, per_sample: bool) -> list[np.ndarray]:
    """Readable form: carry the per-sample Hessian matrices ``(n, m, m)`` down the chain."""
    n = inputs[0].shape[0]
    out = [np.zeros((n, *s)) for s in chain.shapes] if per_sample else chain.zeros()
    for k in range(len(chain.ops) - 1, -1, -1):
        op, inp = chain.ops[k], inputs[k]
        if isinstance(op, ActOp):
            act, a = op.activation, op.activation.forward(inp)
            eye = np.eye(inp.shape[1])
            J = np.stack([act.jvp(np.broadcast_to(e, inp.shape), inp, a) for e in eye], axis=2)
            H = np.swapaxes(J, 1, 2) @ H @ J  # Jᵀ H J per sample
            if residual:  # Σₖ gₖ ∇²σₖ: diag(g ⊙ σ'') for an elementwise σ
                cols = [act.second_vjp(g, np.broadcast_to(e, inp.shape), inp, a) for e in eye]
                H = H + np.stack(cols, axis=2)
            g = act.backward(g, inp, a)
        else:
            _accumulate(out, op, inp, np.diagonal(H, axis1=1, axis2=2), per_sample)
            H = op.W.T @ H @ op.W  # Wᵀ H W per sample
            g = g @ op.W
    return out


def diag_ggn_readable(model: Any, x: Any, y: Any, *, per_sample: bool = False) -> list:
    """``CURV.diag-ggn`` by propagating full per-sample matrices (readable; small models)."""
    chain = as_chain(model)
    x, y = chain.data(x, y)
    inputs, f = chain.forward(x)
    H, g = output_hessian(chain, f, y), output_gradient(chain, f, y)
    return _propagate(chain, inputs, H, g, residual=False, per_sample=per_sample)


def diag_hessian_readable(model: Any, x: Any, y: Any, *, per_sample: bool = False) -> list:
    """``CURV.diag-hessian`` by propagating full per-sample matrices (readable; small models)."""
    chain = as_chain(model)
    x, y = chain.data(x, y)
    inputs, f = chain.forward(x)
    H, g = output_hessian(chain, f, y), output_gradient(chain, f, y)
    return _propagate(chain, inputs, H, g, residual=True, per_sample=per_sample)


def diag_hessian(model: Any, x: Any, y: Any, *, per_sample: bool = False) -> list[np.ndarray]:
    """Exact diagonal of the Hessian of ``C`` (``CURV.diag-hessian``): GGN + σ'' residuals.

    Factored form (Dangel et al. 2020): the per-sample Hessian at every op's output is kept
    as ``H = V diag(s) Vᵀ``, a batch of factors ``V`` ``(n, c, m)`` with column signs ``s``
    ``(n, c)``. It starts as ``S`` (``s = +1``); an activation multiplies every column by
    ``J_σ`` and appends the factor of its residual ``Σₖ gₖ∇²σₖ`` — for an elementwise σ,
    ``r = g ⊙ σ''`` gives the columns ``√|rᵢ| eᵢ`` with signs ``sign(rᵢ)``; for a coupled σ
    (softmax) the batched eigendecomposition ``R = Q Λ Qᵀ`` gives ``√|λ| qᵀ`` with
    ``sign(λ)``. A dense map multiplies by ``W``. Then
    ``∂²C/∂W_ij² = (1/n) Σₓ Σ_c s_c Vₓ[c, i]² x_j²``. GEMMs over the whole batch; equal to
    :func:`diag_hessian_readable` (tested), at a cost that grows with the number of columns
    instead of with the cube of the width.
    """
    chain = as_chain(model)
    x, y = chain.data(x, y)
    inputs, f = chain.forward(x)
    S, g = output_factor(chain, f, y), output_gradient(chain, f, y)
    n = x.shape[0]
    out = [np.zeros((n, *s)) for s in chain.shapes] if per_sample else chain.zeros()
    V = np.ascontiguousarray(np.swapaxes(S, 1, 2))  # (n, c, m)
    signs = np.ones(V.shape[:2], V.dtype)
    for k in range(len(chain.ops) - 1, -1, -1):
        op, inp = chain.ops[k], inputs[k]
        if isinstance(op, ActOp):
            act, a = op.activation, op.activation.forward(inp)
            V = _vjp_columns(act, V, inp, a)
            R, r_signs = _residual_factor(act, g, inp, a)
            if R is not None:
                V, signs = np.concatenate([V, R], axis=1), np.concatenate([signs, r_signs], axis=1)
            g = act.backward(g, inp, a)
            continue
        d = np.einsum("nc,nci->ni", signs, V * V)  # diag of V diag(s) Vᵀ, (n, m_out)
        _accumulate(out, op, inp, d, per_sample)
        V, g = V @ op.W, g @ op.W
    return out


def _vjp_columns(act, V: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``J_σᵀ`` applied to every column of every sample's factor ``V`` ``(n, c, m)``."""
    if act.elementwise:
        return V * act.derivative(z, a)[:, None, :]
    c = V.shape[1]
    zc, ac = np.repeat(z, c, axis=0), np.repeat(a, c, axis=0)
    return act.backward(V.reshape(-1, V.shape[2]), zc, ac).reshape(V.shape)


def _residual_factor(act, g: np.ndarray, z: np.ndarray, a: np.ndarray):
    """``(R, signs)`` with ``R diag(signs) Rᵀ = Σₖ gₖ∇²σₖ`` per sample, or ``(None, None)``.

    Elementwise: ``diag(r)``, ``r = g ⊙ σ''``; columns that are 0 for every sample (a
    linear piece, ReLU everywhere) are dropped. Coupled: ``numpy.linalg.eigh`` of the
    symmetric matrix built from one batched second-order VJP on the unit vectors.
    """
    n, m = z.shape
    if act.elementwise:
        r = g * act.second_derivative(z, a)
        keep = np.flatnonzero((r != 0).any(axis=0))
        if keep.size == 0:
            return None, None
        R = np.zeros((n, keep.size, m), z.dtype)
        R[:, np.arange(keep.size), keep] = np.sqrt(np.abs(r[:, keep]))
        return R, np.sign(r[:, keep])
    eye = np.tile(np.eye(m, dtype=z.dtype), (n, 1))
    rep = lambda t: np.repeat(t, m, axis=0)  # noqa: E731
    M = act.second_vjp(rep(g), eye, rep(z), rep(a)).reshape(n, m, m)
    lam, Q = np.linalg.eigh(0.5 * (M + np.swapaxes(M, 1, 2)))
    return np.swapaxes(Q, 1, 2) * np.sqrt(np.abs(lam))[:, :, None], np.sign(lam)


def _accumulate(out: list, op, inp: np.ndarray, d: np.ndarray, per_sample: bool) -> None:
    """Add a dense op's diagonal from ``d = diag H_z`` ``(n, m_out)``: ``d x_j²``, and ``d``."""
    n = inp.shape[0]
    if per_sample:
        out[op.iw] += d[:, :, None] * (inp * inp)[:, None, :]
        if op.ib is not None:
            out[op.ib] += d
    else:
        out[op.iw] += d.T @ (inp * inp) / n
        if op.ib is not None:
            out[op.ib] += d.sum(axis=0) / n
