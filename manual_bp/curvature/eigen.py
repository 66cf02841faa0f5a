"""Top Hessian eigenvalue by power iteration on ``H v`` (``CURV.top-eigenvalue``).

``v ← H v / ‖H v‖`` converges to the eigenvector of the eigenvalue of largest magnitude
(at rate ``|λ₂/λ₁|``); the Rayleigh quotient ``vᵀ H v`` estimates it. Each step is one
R-operator sweep (:func:`~manual_bp.curvature.rop.hvp`), never the matrix.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp._arguments import as_generator, check_count, check_number
from manual_bp.curvature._checks import entry
from manual_bp.curvature.chain import as_chain, flatten
from manual_bp.curvature.rop import ggnvp, hvp

__all__ = ["top_eigenvalue"]


@entry("x and y")
def top_eigenvalue(
    model: Any,
    x: Any,
    y: Any,
    *,
    max_iter: int = 100,
    tol: float = 1e-6,
    rng: np.random.Generator | int | None = 0,
    matrix: str = "hessian",
) -> tuple[float, np.ndarray]:
    """``(λ, v)``: the eigenvalue of largest magnitude of ``H`` (or ``G``) and its vector.

    Equation ``CURV.top-eigenvalue``: ``v ← H v/‖H v‖``, ``λ = vᵀ H v``.

    Stops when successive Rayleigh quotients differ by less than ``tol·|λ|``, or after
    ``max_iter`` products (an integer ≥ 1); ``tol`` is a finite number ≥ 0 (0: run all
    ``max_iter`` steps). Every argument is checked before the first product.
    """
    if not isinstance(matrix, str) or matrix not in ("hessian", "ggn"):
        raise ValueError(f"matrix must be 'hessian' or 'ggn', got {matrix!r}")
    max_iter = check_count(max_iter, "max_iter")
    tol = check_number(tol, "tol", zero=True)
    generator = as_generator(rng, "rng")
    product = hvp if matrix == "hessian" else ggnvp
    chain = as_chain(model)
    chain.data(x, y)  # x and y refused before the first product
    size = sum(int(np.prod(s)) for s in chain.shapes)
    v = generator.standard_normal(size)
    v /= np.linalg.norm(v)
    lam = 0.0
    for _ in range(max_iter):
        w = flatten(product(model, x, y, v))
        new = float(v @ w)
        norm = np.linalg.norm(w)
        if norm == 0.0:
            return 0.0, v
        v = w / norm
        if abs(new - lam) <= tol * abs(new):
            return new, v
        lam = new
    return lam, v
