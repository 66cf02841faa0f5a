"""Hutchinson's estimates of the trace and the diagonal of ``H``, ``G`` or ``F̂``.

``CURV.hutchinson``: for Rademacher ``v`` (entries ±1 with probability ½, so
``E[v vᵀ] = I``), ``E[vᵀ M v] = tr M`` and ``E[v ⊙ M v] = diag M`` (Hutchinson 1989;
Bekas, Kokiopoulou & Saad 2007). ``K`` seeded draws give the mean and its standard error
``s/√K`` (``s``: the sample standard deviation, ``ddof = 1``), from one matrix-vector product
per draw (those of :func:`~manual_bp.curvature.rop.hvp`, :func:`~manual_bp.curvature.rop.ggnvp`,
:func:`~manual_bp.curvature.fisher.efvp`), the ``K`` draws riding one walk on a leading V axis
(:mod:`~manual_bp.curvature._vaxis`); never the matrix. The variance of one trace draw
is ``2 Σ_{i≠j} M_ij²`` (exact for Rademacher), of one diagonal draw ``Σ_{j≠i} M_ij²``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from manual_bp._arguments import as_generator, check_count
from manual_bp.curvature._checks import check_choice, entry
from manual_bp.curvature._vaxis import products
from manual_bp.curvature.chain import as_chain
from manual_bp.curvature.fisher import efvp
from manual_bp.curvature.rop import ggnvp, hvp

# product_of and rademacher are helpers (of lanczos.py too), not entries: not in __all__
__all__ = ["PRODUCTS", "hutchinson_diagonal", "hutchinson_trace"]

#: The matrices a ``matrix=`` argument names, and their products.
PRODUCTS: dict[str, Callable[..., list[np.ndarray]]] = {"hessian": hvp, "ggn": ggnvp, "ef": efvp}


def product_of(matrix: Any) -> Callable[..., list[np.ndarray]]:
    """The product function of ``matrix`` (``"hessian"``, ``"ggn"`` or ``"ef"``)."""
    return PRODUCTS[check_choice(matrix, "matrix", PRODUCTS)]


def rademacher(generator: np.random.Generator, size: int, dtype: Any = np.float64) -> np.ndarray:
    """``size`` entries ±1, each with probability ½."""
    return (2.0 * generator.integers(0, 2, size) - 1.0).astype(dtype)


def _draws(model, x, y, matrix, n_samples, rng):
    """``(vs, Mvs)`` ``(K, P)`` each: ``K`` Rademacher directions (drawn one after another,
    as always) and their products, all ``K`` in one walk with a leading V axis
    (:func:`~manual_bp.curvature._vaxis.products`)."""
    matrix = check_choice(matrix, "matrix", PRODUCTS)
    n_samples = check_count(n_samples, "n_samples", minimum=2)
    generator = as_generator(rng, "rng")
    chain = as_chain(model)
    chain.data(x, y)  # x and y refused before the first product
    size = sum(int(np.prod(s)) for s in chain.shapes)
    vs = np.stack([rademacher(generator, size, chain.dtype) for _ in range(n_samples)])
    return chain, vs, products(model, chain, x, y, vs, matrix)


def _mean_and_error(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return samples.mean(axis=0), samples.std(axis=0, ddof=1) / np.sqrt(samples.shape[0])


@entry("x and y")
def hutchinson_trace(
    model: Any,
    x: Any,
    y: Any,
    *,
    matrix: str = "hessian",
    n_samples: int = 100,
    rng: np.random.Generator | int | None = 0,
) -> tuple[float, float]:
    """``(estimate, standard error)`` of ``tr M`` (``CURV.hutchinson``), ``n_samples ≥ 2``."""
    _, vs, products = _draws(model, x, y, matrix, n_samples, rng)
    mean, error = _mean_and_error(np.einsum("kp,kp->k", vs, products))
    return float(mean), float(error)


@entry("x and y")
def hutchinson_diagonal(
    model: Any,
    x: Any,
    y: Any,
    *,
    matrix: str = "hessian",
    n_samples: int = 100,
    rng: np.random.Generator | int | None = 0,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``(estimate, standard error)`` of ``diag M`` (``CURV.hutchinson``), each a list shaped
    like the parameters."""
    chain, vs, products = _draws(model, x, y, matrix, n_samples, rng)
    mean, error = _mean_and_error(vs * products)
    return _unflatten(chain, mean), _unflatten(chain, error)


def _unflatten(chain: Any, flat: np.ndarray) -> list[np.ndarray]:
    """A result in flat parameter order, shaped like the parameters (not a direction check:
    a non-finite result is named by :func:`~manual_bp.curvature._checks.entry`)."""
    sizes = [int(np.prod(s)) for s in chain.shapes]
    pieces = np.split(flat, np.cumsum(sizes)[:-1])
    return [p.reshape(s) for p, s in zip(pieces, chain.shapes, strict=True)]
