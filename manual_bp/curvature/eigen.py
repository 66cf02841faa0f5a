"""Top Hessian eigenvalue by power iteration on ``H v`` (``CURV.top-eigenvalue``).

``v ← H v / ‖H v‖`` converges to the eigenvector of the eigenvalue of largest magnitude
(at rate ``|λ₂/λ₁|``); the Rayleigh quotient ``vᵀ H v`` estimates it. Each step is one
R-operator sweep (:func:`~manual_bp.curvature.rop.hvp`), never the matrix.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp.curvature.chain import as_chain, flatten
from manual_bp.curvature.rop import ggnvp, hvp

__all__ = ["top_eigenvalue"]


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

    Stops when successive Rayleigh quotients differ by less than ``tol·|λ|``.
    """
    if matrix not in ("hessian", "ggn"):
        raise ValueError(f"matrix must be 'hessian' or 'ggn', got {matrix!r}")
    product = hvp if matrix == "hessian" else ggnvp
    chain = as_chain(model)
    size = sum(int(np.prod(s)) for s in chain.shapes)
    v = np.random.default_rng(rng).standard_normal(size)
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
