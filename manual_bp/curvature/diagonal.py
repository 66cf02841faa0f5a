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
from manual_bp.curvature.loss import output_factor, output_gradient, output_hessian, sampled_factor

__all__ = ["backpropagate_factor", "diag_ggn", "diag_ggn_mc", "diag_hessian"]


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
        V2 = (V * V).sum(axis=1)  # (n, m_out): Σ_c V²
        if per_sample:
            out[op.iw] += V2[:, :, None] * (inp * inp)[:, None, :]
            if op.ib is not None:
                out[op.ib] += V2
        else:
            out[op.iw] += V2.T @ (inp * inp) / n
            if op.ib is not None:
                out[op.ib] += V2.sum(axis=0) / n
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

    ``y`` is validated but never used: the targets are sampled from the model.
    """
    chain = as_chain(model)
    x, y = chain.data(x, y)
    inputs, f = chain.forward(x)
    S = sampled_factor(chain, f, np.random.default_rng(rng), n_samples)
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
            d = np.diagonal(H, axis1=1, axis2=2)  # (n, m_out)
            if per_sample:
                out[op.iw] += d[:, :, None] * (inp * inp)[:, None, :]
                if op.ib is not None:
                    out[op.ib] += d
            else:
                out[op.iw] += d.T @ (inp * inp) / n
                if op.ib is not None:
                    out[op.ib] += d.sum(axis=0) / n
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


def diag_hessian(model: Any, x: Any, y: Any, *, per_sample: bool = False) -> list[np.ndarray]:
    """Exact diagonal of the Hessian of ``C`` (``CURV.diag-hessian``): GGN + σ'' residuals."""
    chain = as_chain(model)
    x, y = chain.data(x, y)
    inputs, f = chain.forward(x)
    H, g = output_hessian(chain, f, y), output_gradient(chain, f, y)
    return _propagate(chain, inputs, H, g, residual=True, per_sample=per_sample)
