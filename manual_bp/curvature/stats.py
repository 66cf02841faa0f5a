"""Per-sample gradient statistics from the layers' products.

Convention (``CURV.grad-stats-scaling``): the per-sample gradient is that of the
per-sample cost, ``gₓ = ∇θ Cₓ`` (NOT divided by ``n``), so the mini-batch gradient is
``ḡ = ∇C = (1/n) Σₓ gₓ``. For a dense layer ``gₓ(W) = δₓ xₓᵀ`` and ``gₓ(b) = δₓ`` with
``δₓ = ∂Cₓ/∂z`` (Nielsen's per-sample error), hence

    ‖gₓ(W)‖² = ‖δₓ‖² ‖xₓ‖²                          (CURV.grad-norms)
    Σₓ gₓ(W)⊙gₓ(W) = (δ⊙δ)ᵀ (x⊙x)                  (CURV.sum-grad-squared)
    Var[g] = (1/n) Σₓ gₓ⊙gₓ − ḡ⊙ḡ                   (CURV.grad-variance, ddof = 0)

(Goodfellow 2015 for the norms; Dangel et al. 2020 for the batched forms.) The sweeps
take the squares from each layer's products (``PROD.*.vjp``,
:meth:`~manual_bp.curvature.link.Link.param_squares`): for a dense layer the layer's own
``param_vjp``/``param_jvp`` at the squared input give the closed forms above without
per-sample gradients; another layer would square its per-sample ``param_vjp``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp.curvature._checks import entry
from manual_bp.curvature.chain import as_chain
from manual_bp.curvature.loss import output_gradient

# errors is the walk the per-sample quantities share (per_sample.py, fisher.py): not an entry
__all__ = ["batch_gradient", "grad_norms", "grad_variance", "sum_grad_squared"]


def errors(model: Any, x: Any, y: Any):
    """``(chain, [(link, cache, δ)] for every link with parameters)``, per-sample errors
    ``δₓ = ∂Cₓ/∂out`` at each such layer's output (no ``1/n``), by ``input_vjp``: the
    walk every per-sample quantity shares
    (:func:`~manual_bp.curvature.per_sample.per_sample_gradients` too)."""
    chain = as_chain(model)
    x, y = chain.data(x, y)
    caches, f = chain.forward(x)
    M = output_gradient(chain, f, y)[None]  # per sample: no 1/n
    found = []
    for link, cache, below in chain.backwards(caches):
        if link.index:
            found.append((link, cache, M[0]))
        if below:
            M = link.ops.input_vjp(cache, M)
    return chain, found


@entry("x and y")
def grad_norms(model: Any, x: Any, y: Any) -> list[np.ndarray]:
    """``‖∇θ Cₓ‖²`` per sample and parameter array: ``(n,)`` each (``CURV.grad-norms``)."""
    chain, found = errors(model, x, y)
    n = found[0][2].shape[0]
    out = [np.zeros(n) for _ in chain.shapes]
    for link, cache, delta in found:
        for name, norms in link.grad_norms(cache, delta).items():
            out[link.index[name]] = norms
    return out


def _sum_grad_squared(chain, found) -> list[np.ndarray]:
    out = chain.slots()
    for link, cache, delta in found:
        for name, sq in link.param_squares(cache, delta[None], None, per_sample=False).items():
            out[link.index[name]] = sq
    return chain.results(out)


def _batch_gradient(chain, found) -> list[np.ndarray]:
    out = chain.slots()
    for link, cache, delta in found:
        n = delta.shape[0]
        link.add(out, link.ops.param_vjp(cache, delta[None] / n))
    return chain.results(out)


@entry("x and y")
def sum_grad_squared(model: Any, x: Any, y: Any) -> list[np.ndarray]:
    """``Σₓ (∇θ Cₓ)²`` elementwise, shaped like the parameters (``CURV.sum-grad-squared``):
    the squares of each layer's per-sample ``param_vjp`` of ``δ``, summed over the batch."""
    return _sum_grad_squared(*errors(model, x, y))


@entry("x and y")
def batch_gradient(model: Any, x: Any, y: Any) -> list[np.ndarray]:
    """``ḡ = (1/n) Σₓ ∇θ Cₓ = ∇C``: each layer's ``param_vjp`` of ``δ/n``."""
    return _batch_gradient(*errors(model, x, y))


@entry("x and y")
def grad_variance(model: Any, x: Any, y: Any) -> list[np.ndarray]:
    """``(1/n) Σₓ gₓ⊙gₓ − ḡ⊙ḡ`` elementwise (``CURV.grad-variance``, population variance):
    the squares and the mean from ONE walk's per-sample errors (two walks before: the
    forward and backward pass twice, 1.4× BackPACK's ``Variance`` on the MLP)."""
    chain, found = errors(model, x, y)
    n = found[0][2].shape[0]
    sgs, mean = _sum_grad_squared(chain, found), _batch_gradient(chain, found)
    for s, m in zip(sgs, mean, strict=True):  # in place: both are this walk's own arrays
        s /= n
        m *= m
        s -= m
    return sgs
