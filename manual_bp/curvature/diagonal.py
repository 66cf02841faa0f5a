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


def _columns(S: np.ndarray) -> np.ndarray:
    """A factor ``(n, m, c)`` as ``c`` cotangents on the V axis, ``(c, n, m)``."""
    return np.ascontiguousarray(np.transpose(S, (2, 0, 1)))


def backpropagate_factor(chain: Chain, caches: list, S: np.ndarray) -> list:
    """``V`` at every link's output: ``(c, n, m)`` arrays, ``V = Jᵀ S`` column by column.

    The ``c`` columns of ``S`` ride the V axis of every layer's ``input_vjp``. Returns a
    list aligned with ``chain.links``: entry ``k`` is the factor at link ``k``'s OUTPUT.
    """
    V = _columns(S)
    at_output = [None] * len(chain.links)
    for k in range(len(chain.links) - 1, -1, -1):
        at_output[k] = V
        if k > 0:
            V = chain.links[k].layer.input_vjp(caches[k], V)
    return at_output


def _squares(link, cache, V: np.ndarray, signs, out: list, per_sample: bool) -> None:
    """Add ``Σ_c s_c (J_θᵀ V_c)²`` per sample (``per_sample``) or its batch mean to ``out``
    (:meth:`~manual_bp.curvature.chain.Link.param_squares`)."""
    if not link.index:
        return
    n = V.shape[1]
    for name, d in link.param_squares(cache, V, signs, per_sample).items():
        out[link.index[name]] += d if per_sample else d / n


def _diag_from_factor(chain, caches, S, per_sample: bool) -> list[np.ndarray]:
    n = S.shape[0]
    out = chain.zeros(n) if per_sample else chain.zeros()
    at_output = backpropagate_factor(chain, caches, S)
    for link, cache, V in zip(chain.links, caches, at_output, strict=True):
        _squares(link, cache, V, None, out, per_sample)
    return out


@entry("x and y")
def diag_ggn(model: Any, x: Any, y: Any, *, per_sample: bool = False) -> list[np.ndarray]:
    """Exact diagonal of the GGN of ``C`` (``CURV.diag-ggn``), shaped like the parameters."""
    per_sample = check_flag(per_sample, "per_sample")
    chain = as_chain(model)
    x, y = chain.data(x, y)
    caches, f = chain.forward(x)
    return _diag_from_factor(chain, caches, output_factor(chain, f, y), per_sample)


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
    x, y = chain.data(x, y)
    caches, f = chain.forward(x)
    S = sampled_factor(chain, f, y, generator, n_samples)
    return _diag_from_factor(chain, caches, S, per_sample)


def _unit(n: int, m: int, dtype) -> np.ndarray:
    """The ``m`` unit vectors of every sample as V tangents, ``(m, n, m)``."""
    return np.broadcast_to(np.eye(m, dtype=dtype)[:, None, :], (m, n, m))


def _residual_matrix(layer, cache, g: np.ndarray) -> np.ndarray:
    """``Σₖ gₖ ∇²outₖ`` w.r.t. the layer's input per sample ``(n, m, m)``: its ``residual``
    on the unit tangents (column ``i`` from ``eᵢ``)."""
    n, m = cache.input.shape
    res, _ = layer.residual(cache, g, _unit(n, m, g.dtype))  # (m, n, m): [i, x, :] = R eᵢ
    return np.transpose(res, (1, 2, 0))


def _propagate(chain, caches, H, g, residual: bool, per_sample: bool) -> list[np.ndarray]:
    """Readable form: carry the per-sample Hessian matrices ``(n, m, m)`` down the chain."""
    n = H.shape[0]
    out = chain.zeros(n) if per_sample else chain.zeros()
    for k in range(len(chain.links) - 1, -1, -1):
        link, cache = chain.links[k], caches[k]
        layer = link.layer
        if link.one_output:  # diag(J_θᵀ H J_θ) = (J_θ⊙J_θ)ᵀ diag H
            for name, d in link.param_diagonal(cache, np.diagonal(H, 0, 1, 2), per_sample).items():
                out[link.index[name]] += d if per_sample else d / n
        elif link.index:  # the same from H's eigen-factor on the V axis
            lam, Q = np.linalg.eigh(H)
            V = np.transpose(Q * np.sqrt(np.abs(lam))[:, None, :], (2, 0, 1))
            _squares(link, cache, V, np.sign(lam).T, out, per_sample)
        m_in = cache.input.shape[1]
        J = np.transpose(layer.input_jvp(cache, _unit(n, m_in, H.dtype)), (1, 2, 0))
        H = np.swapaxes(J, 1, 2) @ H @ J  # Jᵀ H J per sample
        if residual and not link.index:  # Σₖ gₖ ∇²σₖ (Dense: bilinear, no x–x term)
            H = H + _residual_matrix(layer, cache, g)
        g = layer.input_vjp(cache, g[None])[0]
    return out


@entry("x and y")
def diag_ggn_readable(model: Any, x: Any, y: Any, *, per_sample: bool = False) -> list:
    """``CURV.diag-ggn`` by propagating full per-sample matrices (readable; small models)."""
    per_sample = check_flag(per_sample, "per_sample")
    chain = as_chain(model)
    x, y = chain.data(x, y)
    caches, f = chain.forward(x)
    H, g = output_hessian(chain, f, y), output_gradient(chain, f, y)
    return _propagate(chain, caches, H, g, residual=False, per_sample=per_sample)


@entry("x and y")
def diag_hessian_readable(model: Any, x: Any, y: Any, *, per_sample: bool = False) -> list:
    """``CURV.diag-hessian`` by propagating full per-sample matrices (readable; small models)."""
    per_sample = check_flag(per_sample, "per_sample")
    chain = as_chain(model)
    x, y = chain.data(x, y)
    caches, f = chain.forward(x)
    H, g = output_hessian(chain, f, y), output_gradient(chain, f, y)
    return _propagate(chain, caches, H, g, residual=True, per_sample=per_sample)


@entry("x and y")
def diag_hessian(model: Any, x: Any, y: Any, *, per_sample: bool = False) -> list[np.ndarray]:
    """Exact diagonal of the Hessian of ``C`` (``CURV.diag-hessian``): GGN + σ'' residuals.

    Factored form (Dangel et al. 2020): the per-sample Hessian at every link's output is
    kept as ``H = Vᵀ diag(s) V``, factor columns ``V`` ``(c, n, m)`` on the V axis with
    signs ``s`` ``(c, n)``. It starts as ``S`` (``s = +1``); every layer maps the columns
    by its ``input_vjp``; a parameter-free layer appends the factor of its ``residual``
    ``Σₖ gₖ∇²σₖ`` — for an elementwise layer ``diag(r)``, ``r`` gives the columns
    ``√|rᵢ| eᵢ`` with signs ``sign(rᵢ)``, otherwise (softmax) the batched eigendecomposition
    ``R = Q Λ Qᵀ`` gives ``√|λ| qᵀ`` with ``sign(λ)``. Then a layer's parameter diagonal is
    ``(1/n) Σₓ Σ_c s_c (J_θᵀ Vₓ[c])²`` from its per-sample ``param_vjp``. Equal to
    :func:`diag_hessian_readable` (tested), at a cost that grows with the number of columns
    instead of with the cube of the width.
    """
    per_sample = check_flag(per_sample, "per_sample")
    chain = as_chain(model)
    x, y = chain.data(x, y)
    caches, f = chain.forward(x)
    S, g = output_factor(chain, f, y), output_gradient(chain, f, y)
    n = x.shape[0]
    out = chain.zeros(n) if per_sample else chain.zeros()
    V = _columns(S)
    signs = np.ones(V.shape[:2], V.dtype)
    for link, cache, below in chain.backwards(caches):
        _squares(link, cache, V, signs, out, per_sample)
        if not below:
            break
        V = link.layer.input_vjp(cache, V)
        if not link.index:  # Dense is bilinear: no x–x residual
            R, r_signs = _residual_factor(link.layer, cache, g)
            if R is not None:
                V, signs = np.concatenate([V, R]), np.concatenate([signs, r_signs])
        g = link.layer.input_vjp(cache, g[None])[0]
    return out


def _elementwise(layer) -> bool:
    """The layer acts on each entry alone (its Jacobian and residual are diagonal)."""
    from manual_bp.layers.base import ElementwiseLayer

    activation = getattr(layer, "activation", None)
    return isinstance(layer, ElementwiseLayer) or bool(getattr(activation, "elementwise", False))


def _residual_factor(layer, cache, g: np.ndarray):
    """``(R, signs)`` with ``Rᵀ diag(signs) R = Σₖ gₖ∇²σₖ`` per sample (``R`` ``(c, n, m)``,
    signs ``(c, n)``), or ``(None, None)`` when it is zero.

    Diagonal ``diag(r)`` (an elementwise layer: ``r`` is the residual of the ones vector):
    columns that are 0 for every sample (a linear piece, ReLU everywhere) are dropped.
    Otherwise ``numpy.linalg.eigh`` of the symmetric matrix from the layer's ``residual``
    on the unit vectors.
    """
    n, m = cache.input.shape
    if _elementwise(layer):  # R = diag(r): its product with the ones vector is r
        r = layer.residual(cache, g, np.ones((1, n, m), g.dtype))[0][0]
        keep = np.flatnonzero((r != 0).any(axis=0))
        if keep.size == 0:
            return None, None
        R = np.zeros((keep.size, n, m), r.dtype)
        R[np.arange(keep.size), :, keep] = np.sqrt(np.abs(r[:, keep])).T
        return R, np.sign(r[:, keep]).T
    M = _residual_matrix(layer, cache, g)
    lam, Q = np.linalg.eigh(0.5 * (M + np.swapaxes(M, 1, 2)))
    return np.transpose(Q * np.sqrt(np.abs(lam))[:, None, :], (2, 0, 1)), np.sign(lam).T
