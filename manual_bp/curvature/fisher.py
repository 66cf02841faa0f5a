"""The empirical Fisher ``F̂ = (1/n) Σₓ gₓ gₓᵀ`` (``CURV.empirical-fisher``), as curvlinops'
``EFLinearOperator`` (``c = 1/n`` for the mean): products, diagonal and (small models)
matrix, from the materialised per-sample gradients ``gₓ = ∇θ Cₓ``
(:func:`~manual_bp.curvature.per_sample.per_sample_gradients`).

``F̂ v = (1/n) Σₓ gₓ ⟨gₓ, v⟩``: one walk for the per-sample errors, then each layer's
``param_jvp`` and ``param_vjp`` (no ``gₓ`` materialised); its
diagonal is ``(1/n) Σₓ gₓ⊙gₓ`` — :func:`~manual_bp.curvature.stats.sum_grad_squared` ÷ n.
Unlike the GGN (the Fisher at targets drawn from the model) it uses the data's targets.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp.curvature._checks import entry
from manual_bp.curvature.chain import as_chain
from manual_bp.curvature.per_sample import per_sample_gradients
from manual_bp.curvature.stats import errors, sum_grad_squared

__all__ = ["ef_diagonal", "ef_matrix", "efvp"]


def _rows(gradients: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([g.reshape(g.shape[0], -1) for g in gradients], axis=1)


@entry("x, y and v")
def efvp(model: Any, x: Any, y: Any, v: Any) -> list[np.ndarray]:
    """``F̂ v = (1/n) Σₓ gₓ ⟨gₓ, v⟩`` (``CURV.empirical-fisher``); ``v`` as for
    :func:`~manual_bp.curvature.rop.hvp`.

    Without materialising ``gₓ``: ``⟨gₓ, v⟩ = Σ_layers ⟨δₓ, J_θ,ₓ v_θ⟩`` from each layer's
    ``param_jvp`` and the walk's per-sample errors ``δₓ``, then ``F̂ v`` is each layer's
    ``param_vjp`` of ``uₓ δₓ / n``, summed over the batch.
    """
    chain = as_chain(model)
    v = chain.check_direction(v)
    chain, found = errors(model, x, y)
    n = found[0][2].shape[0]
    u = np.zeros(n, chain.dtype)
    for link, cache, delta in found:
        reach = link.ops.param_jvp(cache, link.tangents(v))[0]  # (n, *out)
        u += np.einsum("ni,ni->n", reach.reshape(n, -1), delta.reshape(n, -1))
    out = chain.slots()
    for link, cache, delta in found:
        scaled = delta * (u / n).reshape(n, *([1] * (delta.ndim - 1)))  # outputs of any rank
        link.add(out, link.ops.param_vjp(cache, scaled[None]))
    return chain.results(out)


@entry("x and y")
def ef_diagonal(model: Any, x: Any, y: Any) -> list[np.ndarray]:
    """``diag F̂ = (1/n) Σₓ gₓ⊙gₓ`` (``CURV.empirical-fisher``), shaped like the parameters."""
    sgs = sum_grad_squared(model, x, y)  # validates x first
    n = np.shape(as_chain(model).data(x, y)[0])[0]
    return [s / n for s in sgs]


@entry("x and y")
def ef_matrix(model: Any, x: Any, y: Any) -> np.ndarray:
    """``F̂`` as a ``(P, P)`` matrix in flat parameter order (``CURV.empirical-fisher``; small
    models)."""
    g = _rows(per_sample_gradients(model, x, y))
    return g.T @ g / g.shape[0]
