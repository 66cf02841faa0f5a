"""Lanczos eigenvalues and the spectral density by stochastic Lanczos quadrature.

``CURV.lanczos`` (Lanczos 1950; with full reorthogonalisation, as PyHessian and
curvlinops): from a unit ``q₁``, ``m`` products ``M q`` build an orthonormal basis
``Q = [q₁ … q_m]`` of the Krylov space and the tridiagonal ``T = Qᵀ M Q`` (diagonal
``αⱼ = qⱼᵀ M qⱼ``, off-diagonal ``βⱼ = ‖M qⱼ − αⱼ qⱼ − βⱼ₋₁ qⱼ₋₁‖``). The eigenvalues of
``T`` (Ritz values) approximate the extreme eigenvalues of ``M``; at ``m = P`` (or at an
invariant subspace, ``β = 0``) they are exact.

``CURV.slq`` (Golub & Meurant; Ghorbani, Krishnan & Xiao 2019; PyHessian's ``density``):
for a random unit ``v``, ``vᵀ f(M) v ≈ Σⱼ τⱼ f(θⱼ)`` with ``T = U diag(θ) Uᵀ`` from
Lanczos started at ``v`` and ``τⱼ = U₁ⱼ²`` (Gauss quadrature, exact for polynomials of
degree < 2m). Averaged over ``K`` Rademacher ``v``: ``E[vᵀ f(M) v] = tr f(M)/P``, the
spectral density ``φ(t) = (1/P) Σᵢ δ(t − λᵢ)`` as nodes ``θ`` with weights ``τ/K``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from manual_bp._arguments import as_generator, check_count
from manual_bp.curvature._checks import as_vector, check_width, entry
from manual_bp.curvature.chain import as_chain, flatten
from manual_bp.curvature.hutchinson import product_of, rademacher

# lanczos (over a matvec callable) is the building block of the entries: not in __all__
__all__ = ["density_on_grid", "lanczos_eigenvalues", "spectral_density"]

#: ``βⱼ ≤ BREAKDOWN·‖M‖`` ends the iteration (an invariant subspace: the Ritz values are exact).
BREAKDOWN = 1e-10


def lanczos(
    matvec: Callable[[np.ndarray], np.ndarray],
    q: np.ndarray,
    m: int,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(α, β, Q)``: ``m`` Lanczos steps from ``q`` (normalised here) with full
    reorthogonalisation (``CURV.lanczos``); ``Q`` ``(m, P)``, ``m ≤ P``.

    At an invariant subspace (``β ≤ BREAKDOWN·‖M‖``) the iteration restarts from a random
    vector (``rng``) orthogonal to ``Q``, with ``β = 0``: ``T`` becomes block diagonal, so
    eigenvalues the start vector has (next to) no weight on are still found, and the first
    rows of ``T``'s eigenvectors — the quadrature weights — are unchanged.
    """
    generator = np.random.default_rng(0) if rng is None else rng
    q = q / np.linalg.norm(q)
    Q, alpha, beta = [q], [], []
    norm = 0.0  # max ‖M qⱼ‖ so far: a lower bound on ‖M‖
    for j in range(m):
        w = matvec(Q[j])
        norm = max(norm, float(np.linalg.norm(w)))
        alpha.append(float(Q[j] @ w))
        if j == m - 1:
            break
        basis = np.stack(Q)
        w = _orthogonal(w, basis)
        b = float(np.linalg.norm(w))
        if b <= BREAKDOWN * norm:
            # an invariant subspace: what is left is the rounding of M qⱼ (~ε‖M‖)
            w = _orthogonal(generator.standard_normal(q.size).astype(q.dtype), basis)
            w, b = w / np.linalg.norm(w), 0.0
        beta.append(b)
        Q.append(w / b if b else w)
    return np.array(alpha), np.array(beta), np.stack(Q)


def _orthogonal(w: np.ndarray, basis: np.ndarray) -> np.ndarray:
    for _ in range(2):  # "twice is enough" (Kahan, Parlett)
        w = w - basis.T @ (basis @ w)
    return w


def _tridiagonal(alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    return np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1)


def _operator(model, x, y, matrix):
    product = product_of(matrix)
    chain = as_chain(model)
    chain.data(x, y)  # refused before the first product
    size = sum(int(np.prod(s)) for s in chain.shapes)
    return chain, size, lambda v: flatten(product(model, x, y, v))


@entry("x and y")
def lanczos_eigenvalues(
    model: Any,
    x: Any,
    y: Any,
    k: int = 1,
    *,
    matrix: str = "hessian",
    n_iter: int | None = None,
    rng: np.random.Generator | int | None = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``(λ, V)``: the ``k`` Ritz values of largest magnitude (descending magnitude) and
    their Ritz vectors ``(k, P)`` after ``n_iter`` Lanczos steps (default
    ``min(P, max(4k, 40))``; ``CURV.lanczos``). Exact at ``n_iter = P`` (restarting at an
    invariant subspace, so repeated eigenvalues are found with their multiplicity)."""
    k = check_count(k, "k")
    chain, size, matvec = _operator(model, x, y, matrix)
    if k > size:
        raise ValueError(f"k = {k} exceeds the number of parameters, {size}")
    n_iter = min(size, max(4 * k, 40)) if n_iter is None else check_count(n_iter, "n_iter")
    generator = as_generator(rng, "rng")
    q = generator.standard_normal(size).astype(chain.dtype)
    alpha, beta, Q = lanczos(matvec, q, min(n_iter, size), generator)
    theta, U = np.linalg.eigh(_tridiagonal(alpha, beta))
    order = np.argsort(-np.abs(theta), kind="stable")[: min(k, theta.size)]
    return theta[order], (Q.T @ U[:, order]).T


@entry("x and y")
def spectral_density(
    model: Any,
    x: Any,
    y: Any,
    *,
    matrix: str = "hessian",
    n_iter: int = 30,
    n_vectors: int = 10,
    rng: np.random.Generator | int | None = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``(nodes, weights)``, ``(K, m)`` each (``m = min(n_iter, P)``): ``Σ weights = 1``
    and ``Σ weights·f(nodes) ≈ tr f(M)/P`` (``CURV.slq``)."""
    n_iter, n_vectors = check_count(n_iter, "n_iter"), check_count(n_vectors, "n_vectors")
    generator = as_generator(rng, "rng")
    chain, size, matvec = _operator(model, x, y, matrix)
    m = min(n_iter, size)
    nodes, weights = np.zeros((n_vectors, m)), np.zeros((n_vectors, m))
    for i in range(n_vectors):
        alpha, beta, _ = lanczos(matvec, rademacher(generator, size, chain.dtype), m, generator)
        theta, U = np.linalg.eigh(_tridiagonal(alpha, beta))
        nodes[i, : theta.size], weights[i, : theta.size] = theta, U[0] ** 2 / n_vectors
    return nodes, weights


@entry("nodes, grid and sigma")
def density_on_grid(
    nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray, sigma: float
) -> np.ndarray:
    """The density smoothed by a Gaussian of width ``sigma`` on ``grid``:
    ``φ(t) = Σ wⱼ N(t; θⱼ, σ²)`` (PyHessian's plot; integrates to 1 over a wide grid)."""
    nodes, weights = as_vector(nodes, "nodes"), as_vector(weights, "weights")
    if weights.shape != nodes.shape:
        raise ValueError(f"weights has shape {weights.shape}; nodes has {nodes.shape}")
    t = as_vector(grid, "grid")[..., None]
    sigma = check_width(sigma, "sigma")
    z = (t - np.ravel(nodes)) / sigma  # not (t − θ)²/σ²: σ² underflows for small σ
    kernel = np.exp(-0.5 * z * z) / (sigma * np.sqrt(2 * np.pi))
    return kernel @ np.ravel(weights)
