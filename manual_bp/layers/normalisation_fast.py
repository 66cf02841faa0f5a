"""Fast forms of batch and layer normalisation for the fused training step
(:mod:`manual_bp.layers.steps`): the equations of :mod:`manual_bp.layers.normalisation`
(``LAYER.batchnorm``, ``LAYER.batchnorm.running``, ``LAYER.batchnorm.eval``,
``LAYER.layernorm``) written into preallocated buffers of the model's dtype.

Batch norm on ``x`` viewed as ``(N, C, L)`` (``L`` the spatial size, 1 for ``(N, C)``),
``m = N·L`` values per channel, ``c = x − μ`` and ``s = 1/√(σ² + ε)``::

    forward    μ = Σ x / m,  σ² = Σ c² / m (two passes: no cancellation),
               y = c·(γ s) + β                       (x̂ = c·s is never stored)
    backward   ∂C/∂β = Σ dy,  ∂C/∂γ = s·Σ dy·c,
               dx = (γ s)·(dy − Σdy/m − c·s²·Σ(dy·c)/m)   (the classic fused form)

with every Σ over ``(N, L)`` per channel taken as per-row sums over ``L`` (one matrix-vector
product with ones, or ``vecdot``) followed by one sum over ``N`` in a fixed order: no
reduction over the batch depends on the thread count (:mod:`manual_bp._threads`). The
elementwise passes are split over the batch with :func:`~manual_bp._threads.parallel_rows`.
Layer norm is per row: forward and backward are split over rows; ``∂C/∂γ``, ``∂C/∂β`` are
sums over rows, one matrix-vector product each (unsplit).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from manual_bp._threads import parallel_rows
from manual_bp.layers.layernorm_fast import LayerNormStep  # its own module: per-row passes
from manual_bp.layers.steps import shape_buffers

__all__ = ["BatchNormStep", "GroupNormStep", "LayerNormStep"]


class BatchNormStep:
    """Fast form of ``BatchNorm1d``/``BatchNorm2d`` (batch statistics in training mode, or
    without running statistics; the running ones otherwise, ``LAYER.batchnorm.eval``)."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self._buffers: dict[tuple, tuple[np.ndarray, ...]] = {}
        self.shape: tuple[int, ...] = ()
        self.centred = self.inv_std = None
        self.batch_stats, self.empty = True, False

    def _make(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        n, c, length = x.shape[0], x.shape[1], math.prod(x.shape[2:])
        dt = x.dtype
        return (
            np.empty((n, c, length), dt),  # c = x − μ
            np.empty((n, c, length), dt),  # y, then the scratch of the backward pass
            np.empty((n, c), dt),  # per-row sums
            np.ones(length, dt),
            # per-channel values repeated along L: a binary op on two contiguous rows is
            # ~1.7× faster than one against a (C, 1) column broadcast along L
            np.empty((3, c, length), dt),
        )

    def forward(self, x: np.ndarray) -> np.ndarray:
        layer = self.layer
        layer._check(x)
        n, ch = x.shape[0], x.shape[1]
        m = n * math.prod(x.shape[2:])
        centred, out, rows, ones, rep = shape_buffers(self._buffers, x.shape, lambda: self._make(x))
        x3 = x.reshape(centred.shape)
        self.shape, self.centred = x.shape, centred
        use_batch = layer.training or not layer.track_running_stats
        self.batch_stats, self.empty = use_batch, m == 0
        if m == 0:  # torch's empty batch: the readable form's rule (counted, not averaged)
            return layer.forward(x)[0]
        if use_batch:
            if m == 1:
                raise ValueError(
                    f"{layer!r}: expected more than 1 value per channel when training, got "
                    f"input of shape {x.shape}"
                )
            np.matmul(x3, ones, out=rows)  # Σ over L per (n, c): BLAS, whole
            mean = rows.sum(axis=0)
            mean /= m
            np.copyto(rep[0], mean[:, None])

            def centre(r: slice) -> None:
                np.subtract(x3[r], rep[0], out=centred[r])
                np.vecdot(centred[r], centred[r], out=rows[r])

            parallel_rows(centre, n, ch * ones.shape[0])
            var = rows.sum(axis=0)
            var /= m
            if layer.training and layer.track_running_stats:
                layer._update_running(mean, var, m)
            inv_std = 1.0 / np.sqrt(var + layer.eps)
        else:
            np.copyto(rep[0], layer.buffers["running_mean"][:, None])
            inv_std = 1.0 / np.sqrt(layer.buffers["running_var"] + layer.eps)
        self.inv_std = inv_std
        weight = layer.params.get("weight")
        scale = inv_std if weight is None else weight * inv_std
        bias = layer.params.get("bias")
        np.copyto(rep[1], scale[:, None])
        if bias is not None:
            np.copyto(rep[2], bias[:, None])

        def normalise(r: slice) -> None:
            if not use_batch:
                np.subtract(x3[r], rep[0], out=centred[r])
            np.multiply(centred[r], rep[1], out=out[r])
            if bias is not None:
                out[r] += rep[2]

        parallel_rows(normalise, n, ch * ones.shape[0])
        return out.reshape(x.shape)

    def backward(
        self, dout: np.ndarray, grads: dict[str, np.ndarray], need_dx: bool
    ) -> np.ndarray | None:
        layer = self.layer
        if self.empty:  # nothing reached the parameters
            for grad in grads.values():
                grad[...] = 0.0
            return np.zeros(self.shape, dout.dtype) if need_dx else None
        centred, scratch, rows, ones, rep = self._buffers[self.shape]
        n, ch, length = centred.shape
        m = n * length
        dy = dout.reshape(centred.shape)
        inv_std = self.inv_std
        np.matmul(dy, ones, out=rows)
        sum_dy = rows.sum(axis=0)

        def dot(r: slice) -> None:
            np.vecdot(dy[r], centred[r], out=rows[r])

        parallel_rows(dot, n, ch * length)
        sum_dyc = rows.sum(axis=0)
        if "weight" in grads:
            np.multiply(sum_dyc, inv_std, out=grads["weight"])  # Σ dy·x̂
        if "bias" in grads:
            grads["bias"][...] = sum_dy
        if not need_dx:
            return None
        weight = layer.params.get("weight")
        a = inv_std if weight is None else weight * inv_std
        np.copyto(rep[0], a[:, None])
        if self.batch_stats:  # dx = a·dy + b·c + d
            b = a * inv_std * inv_std * sum_dyc
            b *= -1.0 / m
            d = a * sum_dy
            d *= -1.0 / m
            np.copyto(rep[1], b[:, None])
            np.copyto(rep[2], d[:, None])

            def input_grad(r: slice) -> None:
                dyr = dy[r]
                dyr *= rep[0]
                np.multiply(centred[r], rep[1], out=scratch[r])
                dyr += scratch[r]
                dyr += rep[2]

        else:  # running statistics: the affine map dx = a·dy

            def input_grad(r: slice) -> None:
                dy[r] *= rep[0]

        parallel_rows(input_grad, n, ch * length)
        return dy.reshape(self.shape)


class GroupNormStep:
    """Fast form of ``GroupNorm`` (``LAYER.groupnorm``): ``x`` viewed as ``(N, G, M)``,
    ``M = (C/G)·L``; per row of the view the layer-norm step, with γ, β per channel (repeated
    ``L`` times along ``M``). Rows are split over the threads; ``∂C/∂γ``, ``∂C/∂β`` sum over
    the batch in a fixed order."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self._buffers: dict[tuple, tuple[np.ndarray, ...]] = {}
        self.shape: tuple[int, ...] = ()

    def forward(self, x: np.ndarray) -> np.ndarray:
        layer = self.layer
        layer._check(x)
        if x.size == 0:  # the readable form's empty batch
            self.shape = x.shape
            return layer.forward(x)[0]
        n, g = x.shape[0], layer.num_groups
        length = math.prod(x.shape[2:])
        m = x.shape[1] // g * length
        dt = x.dtype
        x_hat, out, stat, inv_std, ones = shape_buffers(
            self._buffers,
            x.shape,
            lambda: (
                np.empty((n, g, m), dt),
                np.empty((n, g, m), dt),
                np.empty((n, g), dt),
                np.empty((n, g), dt),
                np.ones(m, dt),
            ),
        )
        self.shape = x.shape
        x3 = x.reshape(n, g, m)
        weight, bias, eps = layer.params.get("weight"), layer.params.get("bias"), layer.eps
        w_rep = None if weight is None else np.repeat(weight, length).reshape(g, m)
        b_rep = None if bias is None else np.repeat(bias, length).reshape(g, m)
        self.w_rep = w_rep

        def work(r: slice) -> None:
            mean, s = stat[r], inv_std[r]
            np.matmul(x3[r], ones, out=mean)
            mean /= m
            np.subtract(x3[r], mean[..., None], out=x_hat[r])
            np.vecdot(x_hat[r], x_hat[r], out=s)
            s /= m
            s += eps
            np.sqrt(s, out=s)
            np.divide(1.0, s, out=s)
            x_hat[r] *= s[..., None]
            if w_rep is not None:
                np.multiply(x_hat[r], w_rep, out=out[r])
                if b_rep is not None:
                    out[r] += b_rep

        parallel_rows(work, n, g * m)
        return (x_hat if w_rep is None else out).reshape(x.shape)

    def backward(
        self, dout: np.ndarray, grads: dict[str, np.ndarray], need_dx: bool
    ) -> np.ndarray | None:
        if 0 in self.shape:
            for grad in grads.values():
                grad[...] = 0.0
            return np.zeros(self.shape, dout.dtype) if need_dx else None
        x_hat, scratch, mean_g, inv_std, ones = self._buffers[self.shape]
        n, g, m = x_hat.shape
        c = self.shape[1]
        dy = dout.reshape(n, g, m)
        if "weight" in grads:
            np.multiply(dy, x_hat, out=scratch)
            # Σ over L per (n, c), then over the batch in a fixed order
            grads["weight"][...] = scratch.reshape(n, c, -1).sum(axis=2).sum(axis=0)
        if "bias" in grads:
            grads["bias"][...] = dy.reshape(n, c, -1).sum(axis=2).sum(axis=0)
        if not need_dx:
            return None
        w_rep = self.w_rep
        mean_gx = np.empty((n, g), dout.dtype)

        def input_grad(r: slice) -> None:
            gr, xh, dyr = scratch[r], x_hat[r], dy[r]
            if w_rep is None:
                gr[...] = dyr
            else:
                np.multiply(dyr, w_rep, out=gr)
            mg, mgx = mean_g[r], mean_gx[r]
            np.matmul(gr, ones, out=mg)
            mg /= m
            np.vecdot(gr, xh, out=mgx)
            mgx /= m
            # dx = s·(g − mean g − x̂·mean(g x̂)), into dout's memory
            np.multiply(xh, mgx[..., None], out=dyr)
            np.subtract(gr, dyr, out=dyr)
            dyr -= mg[..., None]
            dyr *= inv_std[r][..., None]

        parallel_rows(input_grad, n, g * m)
        return dy.reshape(self.shape)
