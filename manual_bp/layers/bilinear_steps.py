"""The fast training step of ``Bilinear`` in a stack (:mod:`manual_bp.layers.steps`): the
quadratic form ``y_k = xᵀ A_k x + b_k`` (``LAYER.bilinear`` with ``x₂ = x₁ = x``) as GEMMs
on the ``(R, I)`` rows of x instead of three-operand einsums::

    forward    P = x A_(KI,J)ᵀ  (R, K·I): P[r,k,i] = Σ_j A_kij x_j       one GEMM
               y[r,k] = Σ_i P[r,k,i] x[r,i] + b_k                     a batched matvec
    backward   D = δ ⊗ x  (R, K·I): D[r,k,i] = δ_rk x_ri               an outer product
               ∂C/∂A = Dᵀ x  as (K·I, J)                              one GEMM
               ∂C/∂b = Σ_r δ                                           one GEMV with ones
               ∂C/∂x = Σ_k δ_k P[:,k,:] + D A_(KI,J)                   the two sides: a
                                                                      batched matvec + GEMM

(``Σ_k δ_k A_k x₂`` is the first side, read off the forward's ``P``; ``Σ_k δ_k A_kᵀ x₁``
the second.) Buffers per batch shape; the GEMMs go whole to BLAS.
"""

from __future__ import annotations

import numpy as np

from manual_bp.layers.steps import BufferedStep

__all__ = ["BilinearStep"]


class BilinearStep(BufferedStep):
    """The fast form of ``Bilinear`` with one input (the quadratic form of a stack)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        layer = self.layer
        k, i, j = layer.params["weight"].shape
        rows = x.size // i
        dt = x.dtype
        p, _, out, *_ = self._buffers_for(
            x,
            lambda: (
                np.empty((rows, k, i), dt),
                np.empty((rows, k, i), dt),
                np.empty((rows, k), dt),
                np.empty((rows, i), dt),
                np.empty((rows, i), dt),
                np.ones(rows, dt),
            ),
        )
        x2 = x.reshape(rows, i)
        a = layer.params["weight"].reshape(k * i, j)
        np.matmul(x2, a.T, out=p.reshape(rows, k * i))
        np.matmul(p, x2[:, :, None], out=out[:, :, None])
        if layer.has_bias:
            out += layer.params["bias"]
        return out.reshape(*x.shape[:-1], k)

    def backward(
        self, dout: np.ndarray, grads: dict[str, np.ndarray], need_dx: bool
    ) -> np.ndarray | None:
        layer, x = self.layer, self.x
        p, d, _, dx, side, ones = self._saved()
        rows, k, i = p.shape
        x2 = x.reshape(rows, i)
        delta = dout.reshape(rows, k)
        np.multiply(delta[:, :, None], x2[:, None, :], out=d)
        d2 = d.reshape(rows, k * i)
        np.matmul(d2.T, x2, out=grads["weight"].reshape(k * i, i))
        if "bias" in grads:
            np.dot(ones, delta, out=grads["bias"])
        if not need_dx:
            return None
        np.matmul(delta[:, None, :], p, out=dx[:, None, :])  # Σ_k δ_k A_k x
        np.matmul(d2, layer.params["weight"].reshape(k * i, -1), out=side)  # Σ_k δ_k A_kᵀ x
        dx += side
        return dx.reshape(x.shape)
