"""The fast form of layer normalisation for the fused training step (``LAYER.layernorm``).

Per row ``x`` of the ``(R, D)`` view (``D`` the normalised size), ``s = 1/√(σ² + ε)``::

    forward    μ = 1ᵀx / D,  x̂ = (x − μ)·s  with σ² = ‖x − μ‖² / D (two passes: no
               cancellation),  y = γ ⊙ x̂ + β
    backward   g = γ ⊙ dy,  dx = s·(g − 1ᵀg/D − x̂·(gᵀx̂)/D)
               ∂C/∂γ = Σ_rows dy ⊙ x̂,  ∂C/∂β = Σ_rows dy

Every pass is per row, so each direction is ONE :func:`~manual_bp._threads.parallel_rows`
call whose work does all of its passes on its rows (a hand-off costs ~50 µs; the transformer
block's rows are 128 wide, so a pass over one slice is a few tens of µs). The backward writes
``dx`` into a buffer of its own, so ``dy`` is still whole after the split and the two sums
over rows (``∂C/∂γ``, ``∂C/∂β``) run after it, unsplit, as matrix–vector products with ones:
no reduction over rows depends on the thread count. Row sums inside a row are ``vecdot``
with ones (~3× faster than ``sum(axis=1)`` at 128 wide).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from manual_bp._threads import parallel_rows
from manual_bp.layers.base import check_input
from manual_bp.layers.steps import shape_buffers

__all__ = ["LayerNormStep"]


class LayerNormStep:
    """Fast form of ``LayerNorm`` (``LAYER.layernorm``), rows split over the threads."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self._buffers: dict[tuple, tuple[np.ndarray, ...]] = {}
        self.shape: tuple[int, ...] = ()
        self.dtype: np.dtype | None = None

    def _make(self, r_count: int, d: int, dt: np.dtype) -> tuple[np.ndarray, ...]:
        e = np.empty
        return (
            e((r_count, d), dt),  # x̂
            e((r_count, d), dt),  # y
            e((r_count, d), dt),  # γ ⊙ dy, then dy ⊙ x̂ (backward)
            e((r_count, d), dt),  # dx
            e(r_count, dt),  # μ, then 1ᵀg / D
            e(r_count, dt),  # s
            e(r_count, dt),  # gᵀx̂ / D
            np.ones(d, dt),  # sums within a row
            np.ones(r_count, dt),  # sums over rows
        )

    def forward(self, x: np.ndarray) -> np.ndarray:
        layer = self.layer
        if type(x) is not np.ndarray or x.shape != self.shape or x.dtype != self.dtype:
            check_input(
                x,
                layer,
                ndim=range(len(layer.normalized_shape), 33),  # unbatched too, as torch
                trailing=layer.normalized_shape,
            )
        d = math.prod(layer.normalized_shape)
        r_count = x.size // d
        x_hat, out, _, _, stat, inv_std, _, ones, _ = shape_buffers(
            self._buffers, (x.shape, x.dtype.str), lambda: self._make(r_count, d, x.dtype)
        )
        self.shape, self.dtype = x.shape, x.dtype
        x2 = x.reshape(r_count, d)
        weight, bias, eps = layer.params.get("weight"), layer.params.get("bias"), layer.eps
        if weight is not None:
            weight = weight.reshape(-1)
        if bias is not None:
            bias = bias.reshape(-1)

        def work(r: slice) -> None:
            mean, s = stat[r], inv_std[r]
            np.vecdot(x2[r], ones, out=mean)
            mean /= d
            np.subtract(x2[r], mean[:, None], out=x_hat[r])
            np.vecdot(x_hat[r], x_hat[r], out=s)
            s /= d
            s += eps
            np.sqrt(s, out=s)
            np.divide(1.0, s, out=s)
            x_hat[r] *= s[:, None]
            if weight is not None:
                np.multiply(x_hat[r], weight, out=out[r])
                if bias is not None:
                    out[r] += bias

        parallel_rows(work, r_count, d)
        return (x_hat if weight is None else out).reshape(x.shape)

    def backward(
        self, dout: np.ndarray, grads: dict[str, np.ndarray], need_dx: bool
    ) -> np.ndarray | None:
        layer = self.layer
        x_hat, _, scratch, dx, mean_g, inv_std, mean_gx, ones_d, ones_r = self._buffers[
            self.shape, self.dtype.str
        ]
        r_count, d = x_hat.shape
        dy = dout.reshape(r_count, d)
        weight = layer.params.get("weight")
        if weight is not None:
            weight = weight.reshape(-1)

        def work(r: slice) -> None:
            xh, dyr = x_hat[r], dy[r]
            if need_dx:
                g = dyr
                if weight is not None:
                    g = scratch[r]
                    np.multiply(dyr, weight, out=g)
                mg, mgx, dxr = mean_g[r], mean_gx[r], dx[r]
                np.vecdot(g, ones_d, out=mg)
                mg /= d
                np.vecdot(g, xh, out=mgx)
                mgx /= d
                # dx = s·(g − mean g − x̂·mean(g x̂))
                np.multiply(xh, mgx[:, None], out=dxr)
                np.subtract(g, dxr, out=dxr)
                dxr -= mg[:, None]
                dxr *= inv_std[r][:, None]
            if weight is not None:
                np.multiply(dyr, xh, out=scratch[r])  # for ∂C/∂γ (g no longer needed)

        if need_dx or weight is not None:
            parallel_rows(work, r_count, d)
        if weight is not None:
            np.matmul(ones_r, scratch, out=grads["weight"].reshape(-1))  # Σ_rows dy·x̂
            if "bias" in grads:
                np.matmul(ones_r, dy, out=grads["bias"].reshape(-1))  # Σ_rows dy
        return dx.reshape(self.shape) if need_dx else None
