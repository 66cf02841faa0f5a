"""Diagonal GGN (exact and Monte-Carlo) and diagonal Hessian, whole-batch and per-sample.

Exact diagonal GGN (``CURV.diag-ggn``, Dangel et al. 2020): with ``S Sᵀ = ∇²_f ℓ`` per
sample, ``G = (1/n) Σₓ (Jₓᵀ Sₓ)(Jₓᵀ Sₓ)ᵀ``, so backpropagating the ``c`` columns of ``S``
like gradients gives ``Vₓ = ∂z/∂f ᵀ Sₓ`` at every dense output ``z`` and, for
``z = x Wᵀ + b``, ``diag G_W[i, j] = (1/n) Σₓ Σ_c Vₓ[c, i]² xⱼ²`` and
``diag G_b[i] = (1/n) Σₓ Σ_c Vₓ[c, i]²``.

Monte-Carlo (``CURV.diag-ggn-mc``): the same with ``S`` replaced by gradients at targets
drawn from the model (:func:`~manual_bp.curvature.loss.sampled_factor`).

Diagonal Hessian (``CURV.diag-hessian``): the per-sample Hessian of ``ℓ`` with respect to
each link's output is propagated as a matrix, ``H_z = J_σᵀ H_a J_σ + Σₖ gₖ ∇²σₖ`` through an
activation (``diag(g ⊙ σ'')`` elementwise: the residual) and ``H_x = Wᵀ H_z W`` through a
dense map; then ``∂²C/∂W_ij² = (1/n) Σₓ (H_z)ᵢᵢ xⱼ²``. Without the residual the same
propagation is the readable form of the diagonal GGN, checked against the factor form.

Per-sample results (``per_sample=True``) are those of ``Cₓ``: arrays ``(n, *shape)``
whose mean over the batch is the batch result.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp._arguments import as_generator, check_count, check_flag
from manual_bp.curvature._checks import entry
from manual_bp.curvature.chain import Chain, as_chain
from manual_bp.curvature.link import put
from manual_bp.curvature.loss import (
    factor_columns,
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


def backpropagate_factor(
    chain: Chain, caches: list, S: np.ndarray, shape=None, *, sampled: bool = False
) -> list:
    """``V`` at every link's output: ``(c, n, *out)`` arrays, ``V = Jᵀ S`` column by column.

    The columns of ``S`` (:func:`.loss.factor_columns`: compact on a separable chain, one
    row at a time on a coupled one; ``sampled``: a Monte-Carlo factor, a sample's rows in
    one column; ``shape`` the network output's, default ``(n, m)``) ride the V axis of
    every layer's ``input_vjp``. Returns a list aligned with ``chain.links``: entry ``k`` is
    the factor at link ``k``'s OUTPUT.
    """
    shape = S.shape[:2] if shape is None else shape
    V = factor_columns(chain, S, shape, sampled=sampled)
    at_output = [None] * len(chain.links)
    for k in range(len(chain.links) - 1, -1, -1):
        at_output[k] = V
        if k > 0:
            V = chain.links[k].ops.input_vjp(caches[k], V)
    return at_output


def _mode(chain: Chain, per_sample: bool) -> bool | None:
    """``per_sample`` for :meth:`Link.param_squares`; None (whole-batch columns) on a
    coupled chain, where per-sample results are refused."""
    if per_sample:
        chain.per_sample()
    return None if chain.coupling is not None else per_sample


def _squares(link, cache, V: np.ndarray, signs, out: list, per_sample: bool | None, n) -> None:
    """Add ``Σ_c s_c (J_θᵀ V_c)²`` per sample (``per_sample``) or its batch mean to ``out``
    (:meth:`~manual_bp.curvature.link.Link.param_squares`)."""
    if not link.index:
        return
    for name, d in link.param_squares(cache, V, signs, per_sample).items():
        put(out, link.index[name], d if per_sample else d / n)


def _diag_from_factor(chain, caches, S, f, per_sample: bool, sampled=False) -> list[np.ndarray]:
    n = f.shape[0]
    mode = _mode(chain, per_sample)
    out = chain.slots()
    at_output = backpropagate_factor(chain, caches, S, f.shape, sampled=sampled)
    for link, cache, V in zip(chain.links, caches, at_output, strict=True):
        _squares(link, cache, V, None, out, mode, n)
    return chain.results(out, n if per_sample else None)


@entry("x and y")
def diag_ggn(model: Any, x: Any, y: Any, *, per_sample: bool = False) -> list[np.ndarray]:
    """Exact diagonal of the GGN of ``C`` (``CURV.diag-ggn``), shaped like the parameters."""
    per_sample = check_flag(per_sample, "per_sample")
    chain = as_chain(model)
    if per_sample:
        chain.per_sample()
    x, y = chain.data(x, y)
    caches, f = chain.forward(x)
    return _diag_from_factor(chain, caches, output_factor(chain, f, y), f, per_sample)


@entry("x and y")
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
    per_sample = check_flag(per_sample, "per_sample")
    generator, n_samples = as_generator(rng, "rng"), check_count(n_samples, "n_samples")
    chain = as_chain(model)
    if per_sample:
        chain.per_sample()
    x, y = chain.data(x, y)
    caches, f = chain.forward(x)
    S = sampled_factor(chain, f, y, generator, n_samples)
    return _diag_from_factor(chain, caches, S, f, per_sample, sampled=True)


def _unit(n: int, m: int, dtype) -> np.ndarray:
    """The ``m`` unit vectors of every sample as V tangents, ``(m, n, m)``."""
    return np.broadcast_to(np.eye(m, dtype=dtype)[:, None, :], (m, n, m))


def _unit_like(x: np.ndarray, dtype) -> np.ndarray:
    """Per-sample unit tangents at an input ``x`` ``(n, *in)``: ``(m, n, *in)``, ``m`` its
    per-sample size."""
    n, m = x.shape[0], int(np.prod(x.shape[1:]))
    return _unit(n, m, dtype).reshape(m, *x.shape)


def _residual_matrix(layer, cache, g: np.ndarray) -> np.ndarray:
    """``Σₖ gₖ ∇²outₖ`` w.r.t. the layer's input per sample ``(n, m, m)``: its ``residual``
    on the unit tangents (column ``i`` from ``eᵢ``)."""
    x = cache.input
    n, m = x.shape[0], int(np.prod(x.shape[1:]))
    res, _ = layer.residual(cache, g, _unit_like(x, g.dtype))  # (m, n, *in): R eᵢ
    return np.transpose(res.reshape(m, n, m), (1, 2, 0))


def _propagate(chain, caches, H, g, residual: bool, per_sample: bool) -> list[np.ndarray]:
    """Readable form: carry the per-sample Hessian matrices ``(n, m, m)`` down the chain."""
    n = H.shape[0]
    out = chain.slots()
    for k in range(len(chain.links) - 1, -1, -1):
        link, cache = chain.links[k], caches[k]
        layer = link.layer
        if link.shortcut(cache):  # diag(J_θᵀ H J_θ) = (J_θ⊙J_θ)ᵀ diag H
            for name, d in link.param_diagonal(cache, np.diagonal(H, 0, 1, 2), per_sample).items():
                put(out, link.index[name], d if per_sample else d / n)
        elif link.index:  # the same from H's eigen-factor on the V axis
            lam, Q = np.linalg.eigh(H)
            V = np.transpose(Q * np.sqrt(np.abs(lam))[:, None, :], (2, 0, 1))
            out_shape = (n, *layer.output_shape(cache.input.shape[1:]))
            _squares(link, cache, V.reshape(-1, *out_shape), np.sign(lam).T, out, per_sample, n)
        x = cache.input
        m_in = int(np.prod(x.shape[1:]))
        J = layer.input_jvp(cache, _unit_like(x, H.dtype)) if k > 0 else None
        if J is None:
            break
        J = np.transpose(J.reshape(m_in, n, -1), (1, 2, 0))
        H = np.swapaxes(J, 1, 2) @ H @ J  # Jᵀ H J per sample
        if residual and not layer.hessian_is_zero:  # Σₖ gₖ ∇²outₖ (x–x; 0 for Dense)
            H = H + _residual_matrix(layer, cache, g.reshape(n, *g.shape[1:]))
        g = layer.input_vjp(cache, g[None])[0]
    return chain.results(out, n if per_sample else None)


def _readable(model, x, y, residual: bool, per_sample: bool) -> list:
    chain = as_chain(model)
    chain.per_sample("the readable per-sample propagation's matrices")
    x, y = chain.data(x, y)
    caches, f = chain.forward(x)
    if f.ndim != 2:
        raise ValueError(
            f"the readable forms take (batch, outputs) network outputs, got {f.shape}; use "
            "diag_ggn / diag_hessian"
        )
    H, g = output_hessian(chain, f, y), output_gradient(chain, f, y)
    return _propagate(chain, caches, H, g, residual=residual, per_sample=per_sample)


@entry("x and y")
def diag_ggn_readable(model: Any, x: Any, y: Any, *, per_sample: bool = False) -> list:
    """``CURV.diag-ggn`` by propagating full per-sample matrices (readable; small models)."""
    per_sample = check_flag(per_sample, "per_sample")
    return _readable(model, x, y, False, per_sample)


@entry("x and y")
def diag_hessian_readable(model: Any, x: Any, y: Any, *, per_sample: bool = False) -> list:
    """``CURV.diag-hessian`` by propagating full per-sample matrices (readable; small models)."""
    per_sample = check_flag(per_sample, "per_sample")
    return _readable(model, x, y, True, per_sample)


@entry("x and y")
def diag_hessian(model: Any, x: Any, y: Any, *, per_sample: bool = False) -> list[np.ndarray]:
    """Exact diagonal of the Hessian of ``C`` (``CURV.diag-hessian``): GGN + residuals.

    Factored form (Dangel et al. 2020): the Hessian at every link's output is kept as
    ``H = Vᵀ diag(s) V``, factor columns ``V`` ``(c, n, *out)`` on the V axis with signs
    ``s``. It starts as ``S`` (``s = +1``); every layer maps the columns by its
    ``input_vjp`` and appends the factor of its ``residual`` in the input,
    ``Σₖ gₖ∇²_{xx}outₖ`` (zero for a layer bilinear in ``(x, θ)``: dense, convolution) —
    for an elementwise layer ``diag(r)``, ``r`` gives the columns ``√|rᵢ| eᵢ`` with signs
    ``sign(rᵢ)``, otherwise the eigendecomposition ``R = Q Λ Qᵀ`` gives ``√|λ| qᵀ`` with
    ``sign(λ)`` (per sample; over the whole batch on a coupled chain). A layer's parameter
    diagonal is ``(1/n) Σₓ Σ_c s_c (J_θᵀ Vₓ[c])²`` from its per-sample ``param_vjp`` plus
    its own ``θθ`` residual's diagonal ``Σₖ gₖ ∂²outₖ/∂θᵢ²`` (``CURV.diag-hessian-own``;
    zero for a layer linear in its parameters, nonzero for recurrent and attention
    layers, whose weights multiply each other). Equal to :func:`diag_hessian_readable`
    (tested) on dense chains.
    """
    per_sample = check_flag(per_sample, "per_sample")
    chain = as_chain(model)
    mode = _mode(chain, per_sample)
    x, y = chain.data(x, y)
    caches, f = chain.forward(x)
    S, g = output_factor(chain, f, y), output_gradient(chain, f, y)
    n = f.shape[0]
    out = chain.slots()
    V = factor_columns(chain, S, f.shape)
    whole = mode is None
    signs = np.ones(V.shape[:1] if whole else V.shape[:2], V.dtype)
    for link, cache, below in chain.backwards(caches):
        _squares(link, cache, V, signs, out, mode, n)
        if link.index and not link.layer.hessian_is_zero:
            _own_diagonal(link, cache, g, out, per_sample, n)
        if not below:
            break
        V = link.ops.input_vjp(cache, V)
        if not link.layer.hessian_is_zero:
            R, r_signs = _residual_factor(link.layer, cache, g, whole)
            if R is not None:
                V, signs = np.concatenate([V, R]), np.concatenate([signs, r_signs])
        g = link.ops.input_vjp(cache, g[None])[0]
    return chain.results(out, n if per_sample else None)


#: Directions per residual call when a layer's own θθ diagonal is taken entry by entry.
_CHUNK = 64


def _own_diagonal(link, cache, g: np.ndarray, out: list, per_sample: bool, n: int) -> None:
    """Add the diagonal of the layer's own ``θθ`` residual, ``Σₖ gₖ ∂²outₖ/∂θᵢ²``: one
    probe first (zero for a layer linear in its parameters), then unit tangents in chunks.
    Per sample: the residual of each sample's own gradient row."""
    layer = link.layer
    probe = {name: np.ones((1, *p.shape), p.dtype) for name, p in layer.params.items()}
    _, res = layer.residual(cache, g, None, probe)
    if not any(np.any(r) for r in res.values()):
        return
    rows_g = [g] if not per_sample else [_one_row(g, i) for i in range(g.shape[0])]
    for name, p in layer.params.items():
        size = p.size
        whole = np.zeros((len(rows_g), *p.shape), p.dtype)
        for i, gi in enumerate(rows_g):
            diag = np.zeros(size, p.dtype)
            for start in range(0, size, _CHUNK):
                idx = np.arange(start, min(size, start + _CHUNK))
                T = np.zeros((idx.size, size), p.dtype)
                T[np.arange(idx.size), idx] = 1
                _, r = layer.residual(cache, gi, None, {name: T.reshape(-1, *p.shape)})
                diag[idx] = r[name].reshape(idx.size, size)[np.arange(idx.size), idx]
            whole[i] = diag.reshape(p.shape)
        put(out, link.index[name], whole if per_sample else whole[0] / n)


def _one_row(g: np.ndarray, i: int) -> np.ndarray:
    """``g`` with every sample's row but ``i`` zeroed (a separable layer's share of one)."""
    one = np.zeros_like(g)
    one[i] = g[i]
    return one


def _elementwise(layer) -> bool:
    """The layer acts on each entry alone (its Jacobian and residual are diagonal)."""
    from manual_bp.layers.base import ElementwiseLayer

    activation = getattr(layer, "activation", None)
    return isinstance(layer, ElementwiseLayer) or bool(getattr(activation, "elementwise", False))


def _residual_factor(layer, cache, g: np.ndarray, whole: bool = False):
    """``(R, signs)`` with ``Rᵀ diag(signs) R = Σₖ gₖ∇²_{xx}outₖ`` (``R`` ``(c, n, *in)``,
    signs ``(c, n)``; ``(c,)`` over the whole batch), or ``(None, None)`` when it is zero.

    Diagonal ``diag(r)`` (an elementwise layer: ``r`` is the residual of the ones vector):
    columns that are 0 for every sample (a linear piece, ReLU everywhere) are dropped.
    Otherwise ``numpy.linalg.eigh`` of the symmetric matrix from the layer's ``residual``
    on the unit vectors: per sample, or of the whole batch's input (``whole``, a coupled
    chain: the residual mixes samples).
    """
    x = cache.input
    n, m = x.shape[0], int(np.prod(x.shape[1:]))
    if _elementwise(layer) and not whole:  # R = diag(r): its product with the ones vector is r
        r = layer.residual(cache, g, np.ones((1, *x.shape), g.dtype))[0][0].reshape(n, m)
        keep = np.flatnonzero((r != 0).any(axis=0))
        if keep.size == 0:
            return None, None
        R = np.zeros((keep.size, n, m), r.dtype)
        R[np.arange(keep.size), :, keep] = np.sqrt(np.abs(r[:, keep])).T
        return R.reshape(keep.size, *x.shape), np.sign(r[:, keep]).T
    # One seeded Gaussian probe first: R·t = 0 for a random t means R = 0 (almost surely;
    # exactly 0 here for layers bilinear in (x, θ) — dense, convolution — and piecewise
    # linear ones), sparing the m unit tangents and the (n, m, m) matrix below.
    probe = np.random.default_rng(0).standard_normal((1, *x.shape)).astype(g.dtype)
    if not layer.residual(cache, g, probe)[0].any():
        return None, None
    if whole:
        size = n * m
        units = np.eye(size, dtype=g.dtype).reshape(size, *x.shape)
        M = layer.residual(cache, g, units)[0].reshape(size, size)
        if not M.any():
            return None, None
        lam, Q = np.linalg.eigh(0.5 * (M + M.T))
        keep = np.flatnonzero(lam != 0)
        cols = (Q[:, keep] * np.sqrt(np.abs(lam[keep]))).T
        return cols.reshape(keep.size, *x.shape), np.sign(lam[keep])
    M = _residual_matrix(layer, cache, g)
    if not M.any():
        return None, None
    lam, Q = np.linalg.eigh(0.5 * (M + np.swapaxes(M, 1, 2)))
    R = np.transpose(Q * np.sqrt(np.abs(lam))[:, None, :], (2, 0, 1))
    return R.reshape(m, *x.shape), np.sign(lam).T
