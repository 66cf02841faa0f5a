"""Per-sample gradient statistics without materialising per-sample gradients.

Convention (``CURV.grad-stats-scaling``): the per-sample gradient is that of the
per-sample cost, ``gₓ = ∇θ Cₓ`` (NOT divided by ``n``), so the mini-batch gradient is
``ḡ = ∇C = (1/n) Σₓ gₓ``. For a dense layer ``gₓ(W) = δₓ xₓᵀ`` and ``gₓ(b) = δₓ`` with
``δₓ = ∂Cₓ/∂z`` (Nielsen's per-sample error), hence

    ‖gₓ(W)‖² = ‖δₓ‖² ‖xₓ‖²                          (CURV.grad-norms)
    Σₓ gₓ(W)⊙gₓ(W) = (δ⊙δ)ᵀ (x⊙x)                  (CURV.sum-grad-squared)
    Var[g] = (1/n) Σₓ gₓ⊙gₓ − ḡ⊙ḡ                   (CURV.grad-variance, ddof = 0)

(Goodfellow 2015 for the norms; Dangel et al. 2020 for the batched forms.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp.curvature.chain import ActOp, as_chain
from manual_bp.curvature.loss import output_gradient

__all__ = ["batch_gradient", "grad_norms", "grad_variance", "sum_grad_squared"]


def _errors(model: Any, x: Any, y: Any):
    """``(chain, [(op, x_in, δ)] for every dense op)`` with per-sample ``δ = ∂Cₓ/∂z``."""
    chain = as_chain(model)
    x, y = chain.data(x, y)
    inputs, f = chain.forward(x)
    g = output_gradient(chain, f, y)  # per sample: no 1/n
    found = []
    for op, inp in zip(reversed(chain.ops), reversed(inputs), strict=True):
        if isinstance(op, ActOp):
            g = op.activation.backward(g, inp, op.activation.forward(inp))
        else:
            found.append((op, inp, g))
            g = g @ op.W
    return chain, found


def grad_norms(model: Any, x: Any, y: Any) -> list[np.ndarray]:
    """``‖∇θ Cₓ‖²`` per sample and parameter array: ``(n,)`` each (``CURV.grad-norms``)."""
    chain, found = _errors(model, x, y)
    n = found[0][1].shape[0]
    out = [np.zeros(n) for _ in chain.shapes]
    for op, inp, delta in found:
        d2 = np.einsum("ni,ni->n", delta, delta)
        out[op.iw] = d2 * np.einsum("nj,nj->n", inp, inp)
        if op.ib is not None:
            out[op.ib] = d2
    return out


def sum_grad_squared(model: Any, x: Any, y: Any) -> list[np.ndarray]:
    """``Σₓ (∇θ Cₓ)²`` elementwise, shaped like the parameters (``CURV.sum-grad-squared``)."""
    chain, found = _errors(model, x, y)
    out = chain.zeros()
    for op, inp, delta in found:
        out[op.iw] = (delta * delta).T @ (inp * inp)
        if op.ib is not None:
            out[op.ib] = (delta * delta).sum(axis=0)
    return out


def batch_gradient(model: Any, x: Any, y: Any) -> list[np.ndarray]:
    """``ḡ = (1/n) Σₓ ∇θ Cₓ = ∇C``."""
    chain, found = _errors(model, x, y)
    out = chain.zeros()
    for op, inp, delta in found:
        n = inp.shape[0]
        out[op.iw] = delta.T @ inp / n
        if op.ib is not None:
            out[op.ib] = delta.sum(axis=0) / n
    return out


def grad_variance(model: Any, x: Any, y: Any) -> list[np.ndarray]:
    """``(1/n) Σₓ gₓ⊙gₓ − ḡ⊙ḡ`` elementwise (``CURV.grad-variance``, population variance)."""
    n = np.shape(x)[0]
    sgs = sum_grad_squared(model, x, y)
    mean = batch_gradient(model, x, y)
    return [s / n - m * m for s, m in zip(sgs, mean, strict=True)]
