"""Fully connected (dense) layer ``z = x Wᵀ + b``.

Shapes follow Nielsen and ``torch.nn.Linear``: ``W`` is ``(n_out, n_in)``,
``b`` is ``(n_out,)``, ``x`` is ``(batch, n_in)`` and ``z`` is ``(batch, n_out)``.
"""

from __future__ import annotations

import numpy as np

from manual_bp._validation import check_batch

__all__ = ["Dense", "dense_backward", "dense_forward"]

DenseCache = tuple[np.ndarray, np.ndarray]


def dense_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, DenseCache]:
    """``z = x Wᵀ + b`` (equation ``FWD.dense``).

    Parameters
    ----------
    x : (batch, n_in)
    W : (n_out, n_in)
    b : (n_out,)

    Returns
    -------
    z : (batch, n_out)
    cache : (x, W), what :func:`dense_backward` needs.
    """
    return x @ W.T + b, (x, W)


def dense_backward(dz: np.ndarray, cache: DenseCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of a scalar ``C`` through ``z = x Wᵀ + b`` (equation ``LAYER.dense``).

    With ``dz = ∂C/∂z`` of shape ``(batch, n_out)``::

        ∂C/∂x = dz W          (batch, n_in)     -- the (Wˡ⁺¹)ᵀδˡ⁺¹ of BP2, row-wise
        ∂C/∂W = dzᵀ x         (n_out, n_in)     -- BP4 summed over the batch
        ∂C/∂b = Σ_rows dz     (n_out,)          -- BP3 summed over the batch
    """
    x, W = cache
    return dz @ W, dz.T @ x, dz.sum(axis=0)


class Dense:
    """A dense layer holding ``W (n_out, n_in)`` and ``b (n_out,)``.

    Implements :class:`~manual_bp.layers.base.Layer`; ``backward`` returns the
    parameter gradients ``{"W": ∂C/∂W, "b": ∂C/∂b}`` instead of storing them.
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        *,
        rng: np.random.Generator | int | None = None,
        dtype: np.dtype | type = np.float64,
    ) -> None:
        rng = np.random.default_rng(rng)
        self.W = (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(dtype)
        self.b = rng.standard_normal(n_out).astype(dtype)

    @property
    def params(self) -> dict[str, np.ndarray]:
        return {"W": self.W, "b": self.b}

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, DenseCache]:
        """``x (batch, n_in) -> z (batch, n_out)``."""
        check_batch(x, self.W.shape[1], "x")
        return dense_forward(x, self.W, self.b)

    def backward(
        self, dz: np.ndarray, cache: DenseCache
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``dz (batch, n_out) -> (dx (batch, n_in), {"W": dW, "b": db})``."""
        check_batch(dz, self.W.shape[0], "dz", batch=cache[0].shape[0])
        dx, dW, db = dense_backward(dz, cache)
        return dx, {"W": dW, "b": db}

    def __repr__(self) -> str:
        n_out, n_in = self.W.shape
        return f"Dense({n_in}, {n_out})"
