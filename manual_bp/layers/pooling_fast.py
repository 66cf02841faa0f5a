"""Fast forms of the pooling layers for the fused training step (:mod:`manual_bp.layers.steps`).

Mixed into :class:`~manual_bp.layers.pooling.MaxPoolNd` (``MaxPool1d/2d/3d``), ``AvgPoolNd``
and ``GlobalAvgPool2d`` (their ``fast_step``). The common case of LeNet-style pooling —
``kernel == stride``, no padding, dilation 1, every spatial size a multiple of the kernel —
tiles the input: ``x`` reshaped to ``(N, C, o_0, k_0, o_1, k_1, …)`` (no copy) gives every
tap ``(i_0, i_1, …)`` as the strided view ``[:, :, :, i_0, :, i_1, …]``, and the backward
pass writes each
element of ``∂C/∂x`` exactly once through the same views (no zero fill, no scatter-add).
Other geometries take the readable forward/backward (:class:`GenericStep`).

Equations: ``LAYER.maxpool2d`` / ``LAYER.maxpool-nd`` (each window's δ to its FIRST maximal
tap in row-major order, torch's rule; a window holding a NaN takes the readable path's
rule), ``LAYER.avgpool2d`` / ``LAYER.avgpool-nd`` (δ / divisor to every tap),
``LAYER.global-avgpool2d`` (δ / (H·W)).
Every pass is per sample, split over the batch with :func:`parallel_rows`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp._threads import parallel_rows
from manual_bp.layers.pooling_geometry import tap_views, tiles, to_winners
from manual_bp.layers.steps import GenericStep, shape_buffers

__all__ = ["AvgPoolFast", "GlobalAvgPoolFast", "MaxPoolFast"]


class _TiledStep:
    """Shared frame: the tiled fast case, or the readable form (:class:`GenericStep`)."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.generic = GenericStep(layer)
        self._buffers: dict[tuple, tuple[np.ndarray, ...]] = {}
        self.shape: tuple[int, ...] | None = None  # None: the readable form ran

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not (isinstance(x, np.ndarray) and tiles(self.layer, x.shape) and x.flags.c_contiguous):
            self.shape = None
            return self.generic.forward(x)
        self.shape = x.shape
        return self.tiled_forward(x)

    def backward(
        self, dout: np.ndarray, grads: dict[str, np.ndarray], need_dx: bool
    ) -> np.ndarray | None:
        if self.shape is None:
            return self.generic.backward(dout, grads, need_dx)
        if not need_dx:
            return None
        expected = self._buffers[self.shape][0].shape
        if not isinstance(dout, np.ndarray) or dout.shape != expected:
            raise ValueError(
                f"{self.layer!r}: upstream gradient has shape {np.shape(dout)}, expected {expected}"
            )
        return self.tiled_backward(dout)

    def _pooled(self, x: np.ndarray) -> tuple[int, ...]:
        kernel = self.layer.kernel
        return (*x.shape[:2], *(s // k for s, k in zip(x.shape[2:], kernel, strict=True)))

    def _make(self, x: np.ndarray, *extra: Any) -> tuple[np.ndarray, ...]:
        return (np.empty(self._pooled(x), x.dtype), np.empty_like(x), *extra)


class MaxPoolStep(_TiledStep):
    """``LAYER.maxpool2d`` on tiling windows: maxima by pairwise ``maximum`` over the taps,
    the first maximal tap ``ne₀(1 + ne₁(1 + …))`` as in the readable form."""

    def tiled_forward(self, x: np.ndarray) -> np.ndarray:
        kernel = self.layer.kernel
        count = int(np.prod(kernel))
        pooled = self._pooled(x)
        out, _, index, differs = shape_buffers(
            self._buffers,
            x.shape,
            lambda: self._make(
                x,
                np.empty(pooled, np.int8 if count < 128 else np.int16),  # the winning tap
                np.empty(pooled, bool),
            ),
        )
        nan_rows: list[slice] = []

        def work(rows: slice) -> None:
            taps = tap_views(x[rows], kernel)
            result, idx, ne = out[rows], index[rows], differs[rows]
            np.copyto(result, taps[0])
            for values in taps[1:]:
                np.maximum(result, values, out=result)
            if np.isnan(result).any():  # NaN propagates: a window holds one (rare)
                nan_rows.append(rows)
                return
            idx[...] = 0
            for tap in range(count - 2, -1, -1):
                idx += 1
                np.not_equal(taps[tap], result, out=ne)
                idx *= ne

        parallel_rows(work, x.shape[0], x[0].size)
        for rows in nan_rows:  # torch's rule with NaN: the readable forward's scan
            result, cache = self.layer.forward(x[rows])
            out[rows], index[rows] = result, cache.index
        return out

    def tiled_backward(self, dout: np.ndarray) -> np.ndarray:
        """Each tap's slice of ``∂C/∂x`` is ``δ·[tap won]``: written once, no scatter."""
        _, dx, index, won = self._buffers[self.shape]
        kernel = self.layer.kernel

        def work(rows: slice) -> None:
            to_winners(dx[rows], dout[rows], index[rows], kernel, won[rows])

        parallel_rows(work, dx.shape[0], dx[0].size)
        return dx


class AvgPoolStep(_TiledStep):
    """``LAYER.avgpool2d`` on tiling windows: the tap sum over the divisor (``kH·kW``, or
    ``divisor_override``); backward: ``δ/divisor`` to every tap."""

    def _divisor(self) -> float:
        layer = self.layer
        if layer.divisor_override is not None:
            return float(layer.divisor_override)
        return float(np.prod(layer.kernel))

    def tiled_forward(self, x: np.ndarray) -> np.ndarray:
        out, _ = shape_buffers(self._buffers, x.shape, lambda: self._make(x))
        kernel, divisor = self.layer.kernel, x.dtype.type(self._divisor())

        def work(rows: slice) -> None:
            taps, result = tap_views(x[rows], kernel), out[rows]
            if len(taps) == 1:
                np.copyto(result, taps[0])
            else:
                np.add(taps[0], taps[1], out=result)
            for values in taps[2:]:
                result += values
            result /= divisor

        parallel_rows(work, x.shape[0], x[0].size)
        return out

    def tiled_backward(self, dout: np.ndarray) -> np.ndarray:
        share, dx = self._buffers[self.shape]  # the output buffer is free: holds δ/divisor
        kernel, divisor = self.layer.kernel, dx.dtype.type(self._divisor())

        def work(rows: slice) -> None:
            np.divide(dout[rows], divisor, out=share[rows])
            for target in tap_views(dx[rows], kernel):
                np.copyto(target, share[rows])

        parallel_rows(work, dx.shape[0], dx[0].size)
        return dx


class GlobalAvgPoolStep:
    """``LAYER.global-avgpool2d``: channel means by a matrix-vector product with ones
    (per-sample sums), ``δ/(H·W)`` broadcast into one buffer."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.generic = GenericStep(layer)
        self._buffers: dict[tuple, tuple[np.ndarray, ...]] = {}
        self.shape: tuple[int, ...] | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not (isinstance(x, np.ndarray) and x.ndim == 4 and x.flags.c_contiguous):
            self.shape = None
            return self.generic.forward(x)
        n, c, h, w = x.shape
        out, _, ones, _ = shape_buffers(
            self._buffers,
            x.shape,
            lambda: (
                np.empty((n, c, 1, 1), x.dtype),
                np.empty_like(x),
                np.ones(h * w, x.dtype),
                np.empty((n, c, 1, 1), x.dtype),  # δ/(H·W)
            ),
        )
        self.shape = x.shape
        np.matmul(x.reshape(n, c, h * w), ones, out=out.reshape(n, c))  # BLAS, whole
        out /= x.dtype.type(h * w)
        return out

    def backward(
        self, dout: np.ndarray, grads: dict[str, np.ndarray], need_dx: bool
    ) -> np.ndarray | None:
        if self.shape is None:
            return self.generic.backward(dout, grads, need_dx)
        if not need_dx:
            return None
        n, c, h, w = self.shape
        if not isinstance(dout, np.ndarray) or dout.shape != (n, c, 1, 1):
            raise ValueError(
                f"{self.layer!r}: upstream gradient has shape {np.shape(dout)}, "
                f"expected {(n, c, 1, 1)}"
            )
        _, dx, _, share = self._buffers[self.shape]
        np.divide(dout, dx.dtype.type(h * w), out=share)

        def work(rows: slice) -> None:
            np.copyto(dx[rows], share[rows])  # broadcast over (H, W)

        parallel_rows(work, n, c * h * w)
        return dx


class MaxPoolFast:
    """Mixin: ``MaxPool2d.fast_step``."""

    def fast_step(self) -> MaxPoolStep:
        return MaxPoolStep(self)


class AvgPoolFast:
    """Mixin: ``AvgPool2d.fast_step``."""

    def fast_step(self) -> AvgPoolStep:
        return AvgPoolStep(self)


class GlobalAvgPoolFast:
    """Mixin: ``GlobalAvgPool2d.fast_step``."""

    def fast_step(self) -> GlobalAvgPoolStep:
        return GlobalAvgPoolStep(self)
