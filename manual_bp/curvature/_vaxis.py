"""``H``, ``G`` and ``F̂`` times ``K`` directions at once: one walk with a leading V axis.

:func:`~manual_bp.curvature.rop.hvp` and :func:`~manual_bp.curvature.rop.ggnvp` run
Pearlmutter's R-sweep (``CURV.hvp``, ``CURV.ggnvp``) on ``V = 1``, and
:func:`~manual_bp.curvature.fisher.efvp` its two walks (``CURV.empirical-fisher``). Every
product they call takes a leading axis of ``V`` directions (``docs/products.md``), so ``K``
directions ride one walk: one forward pass (the caches shared), then the tangent and
cotangent stacks ``(K, n, *·)`` through each layer's ``input_jvp``/``param_jvp`` and
``param_vjp``/``input_vjp``/``residual`` — a few GEMMs with ``K`` times the columns instead
of ``K`` walks of small ones. The directions are cut into chunks of at most
:data:`CHUNK_ENTRIES` stacked entries (bounding the memory of the V axis); each chunk is the
same arithmetic as ``K`` single products, so the results agree with them to rounding.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp.curvature.chain import Chain
from manual_bp.curvature.loss import output_gradient, output_hessian_product
from manual_bp.curvature.stats import errors

__all__ = ["CHUNK_ENTRIES", "products"]

#: The most entries a chunk's stacks may hold per walked array (64 MiB in float64).
CHUNK_ENTRIES = 1 << 23


def _tangents(link: Any, V: list[np.ndarray]) -> dict[str, np.ndarray] | None:
    """The link's share of the directions ``V`` (each ``(K, *p)``): ``{name: (K, *p)}``."""
    return {name: V[i] for name, i in link.index.items()} if link.index else None


def _r_sweeps(chain: Chain, caches: list, f: np.ndarray, y, V: list, exact: bool) -> list:
    """``H V`` (``exact``) or ``G V`` for directions ``V`` (``(K, *p)`` per parameter): the
    R-sweep of :func:`~manual_bp.curvature.rop.hvp` with every stack ``(K, n, *·)``."""
    n, K = f.shape[0], V[0].shape[0]
    r_inputs, r = [], None
    for link, cache in zip(chain.links, caches, strict=True):
        r_inputs.append(r)
        tangents = _tangents(link, V)
        rz = None if r is None else link.ops.input_jvp(cache, r)
        if tangents is not None:
            pz = link.ops.param_jvp(cache, tangents)
            rz = pz if rz is None else rz + pz
        r = rz
    g = output_gradient(chain, f, y) / n
    shape, r = r.shape, r.reshape(K, -1, f.shape[-1])  # rows (CURV.rows)
    rg = (output_hessian_product(chain, f, y, r) / n).reshape(shape)
    out = chain.slots()
    for link, cache, r_in, below in chain.backwards(caches, r_inputs):
        layer, tangents = link.ops, _tangents(link, V)
        link.add(out, layer.param_vjp(cache, rg), v=None)
        res_x = None  # none where the layer's Hessian is zero (ReLU, pooling): not computed
        if exact and not link.layer.hessian_is_zero and (r_in is not None or tangents is not None):
            res_x, res_p = layer.residual(cache, g, r_in, tangents)
            link.add(out, res_p, v=None)
        if below:
            rg = layer.input_vjp(cache, rg) + (0.0 if res_x is None else res_x)
            if exact:
                g = layer.input_vjp(cache, g[None])[0]
    return chain.results(out, K)


def _ef(found: list, chain: Chain, V: list) -> list:
    """``F̂ V = (1/n) Σₓ gₓ ⟨gₓ, V⟩`` for directions ``V`` from the per-sample errors
    ``found`` (:func:`~manual_bp.curvature.stats.errors`), as
    :func:`~manual_bp.curvature.fisher.efvp` on a V axis."""
    K, n = V[0].shape[0], found[0][2].shape[0]
    u = 0.0
    for link, cache, delta in found:
        reach = link.ops.param_jvp(cache, _tangents(link, V))  # (K, n, *out)
        u = u + (reach * delta).reshape(K, n, -1).sum(axis=2)
    out = chain.slots()
    for link, cache, delta in found:
        weights = u.reshape(K, n, *([1] * (delta.ndim - 1))) / n
        link.add(out, link.ops.param_vjp(cache, weights * delta), v=None)
    return chain.results(out, K)


def products(model: Any, chain: Chain, x, y, V: np.ndarray, matrix: str) -> np.ndarray:
    """``M vₖ`` for the rows ``vₖ`` of ``V`` ``(K, P)`` (flat parameter order), ``M`` the
    ``matrix`` (``"hessian"``, ``"ggn"`` or ``"ef"``), as ``(K, P)``: one walk per chunk."""
    x, y = chain.data(x, y)
    if matrix == "ef":
        _, found = errors(model, x, y)
        width = sum(delta.size for _, _, delta in found)
    else:
        caches, f = chain.forward(x)
        width = x.size + f.size * max(len(chain.links), 1)
    sizes = [int(np.prod(s)) for s in chain.shapes]
    chunk = max(1, CHUNK_ENTRIES // max(width, sum(sizes), 1))
    out = []
    for start in range(0, V.shape[0], chunk):
        block = V[start : start + chunk]
        pieces = np.split(block, np.cumsum(sizes)[:-1], axis=1)
        D = [p.reshape(p.shape[0], *s) for p, s in zip(pieces, chain.shapes, strict=True)]
        if matrix == "ef":
            result = _ef(found, chain, D)
        else:
            result = _r_sweeps(chain, caches, f, y, D, exact=matrix == "hessian")
        out.append(np.concatenate([r.reshape(r.shape[0], -1) for r in result], axis=1))
    return np.concatenate(out, axis=0)
