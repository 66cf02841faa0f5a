"""Weight initialisers (Nielsen, ch. 3).

``default``: ``Wˡ_jk ~ N(0, 1/n_{l−1})`` — Gaussian with standard deviation
``1/√n_in`` — and ``bˡ_j ~ N(0, 1)``; it keeps ``zˡ`` of order one so sigmoid
units do not start saturated. ``large``: ``Wˡ_jk, bˡ_j ~ N(0, 1)``, the
initialiser of Nielsen's ch. 1 ``network.py``. Equation ``INIT.default``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["INITIALIZERS", "default_initializer", "get_initializer", "large_initializer"]

Initializer = Callable[[np.random.Generator, Sequence[np.ndarray], Sequence[np.ndarray]], None]


def default_initializer(
    rng: np.random.Generator, weights: Sequence[np.ndarray], biases: Sequence[np.ndarray]
) -> None:
    """Fill in place: ``W ~ N(0, 1)/√n_in``, ``b ~ N(0, 1)``. Equation ``INIT.default``."""
    for W, b in zip(weights, biases, strict=True):
        W[...] = rng.standard_normal(W.shape) / np.sqrt(W.shape[1])
        b[...] = rng.standard_normal(b.shape)


def large_initializer(
    rng: np.random.Generator, weights: Sequence[np.ndarray], biases: Sequence[np.ndarray]
) -> None:
    """Fill in place: ``W, b ~ N(0, 1)`` (Nielsen's ch. 1 initialiser)."""
    for W, b in zip(weights, biases, strict=True):
        W[...] = rng.standard_normal(W.shape)
        b[...] = rng.standard_normal(b.shape)


INITIALIZERS: dict[str, Initializer] = {
    "default": default_initializer,
    "large": large_initializer,
}


def get_initializer(name: str) -> Initializer:
    """The initialiser registered under ``name``; ``ValueError`` listing valid names."""
    try:
        return INITIALIZERS[name.strip().lower()]
    except KeyError:
        raise ValueError(
            f"unknown initializer {name!r}; valid names: {', '.join(sorted(INITIALIZERS))}"
        ) from None
