"""Fast training steps of adaptive and power-average pooling (:mod:`manual_bp.layers.steps`);
the power average (``LPPoolStep``) is described at its class.

An adaptive pool whose output size divides the input size on every axis has the windows
``[y·S/O, (y+1)·S/O)`` (``LAYER.adaptive-avgpool2d``'s bounds with exact division): they
tile the input with kernel = stride = ``S/O`` and no padding — a plain pool, so its step
is :mod:`~manual_bp.layers.pooling_fast`'s tiled ``MaxPoolStep``/``AvgPoolStep`` (a
reshape, every tap a strided view, ∂C/∂x written once per element) of a ``MaxPoolNd`` /
``AvgPoolNd`` of that kernel. Max pooling keeps the readable form's rule (the first
maximum of the window in row-major order; a NaN window by the readable scan), so its
results are the same bits; the average sums the taps in order instead of a product with
0/1 matrices (rounding apart, the same value). Any other size (overlapping windows of
different sizes) trains through the readable form.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp.layers.steps import GenericStep, shape_buffers

__all__ = ["AdaptivePoolStep", "LPPoolStep"]


class AdaptivePoolStep:
    """The fast form of ``AdaptiveAvgPool1d/2d/3d`` and ``AdaptiveMaxPool1d/2d/3d``."""

    def __init__(self, layer: Any, kind: str) -> None:
        self.layer, self.kind = layer, kind
        self.generic = GenericStep(layer)
        self._tiled: dict[tuple[int, ...], Any] = {}  # kernel -> the plain pool's step
        self.current: Any = self.generic

    def _plain_step(self, kernel: tuple[int, ...]) -> Any:
        found = self._tiled.get(kernel)
        if found is None:
            from manual_bp.layers import pooling

            dims = self.layer.dims
            cls = getattr(pooling, f"{'Max' if self.kind == 'max' else 'Avg'}Pool{dims}d")
            found = self._tiled[kernel] = cls(kernel if dims > 1 else kernel[0]).fast_step()
        return found

    def forward(self, x: np.ndarray) -> np.ndarray:
        layer = self.layer
        size = x.shape[2:]
        out = layer._out(size) if x.ndim == layer.dims + 2 else ()
        if not out or min(out) < 1 or any(s % o for s, o in zip(size, out, strict=True)):
            self.current = self.generic
        else:
            self.current = self._plain_step(tuple(s // o for s, o in zip(size, out, strict=True)))
        return self.current.forward(x)

    def backward(
        self, dout: np.ndarray, grads: dict[str, np.ndarray], need_dx: bool
    ) -> np.ndarray | None:
        return self.current.backward(dout, grads, need_dx)


class LPPoolStep:
    """The fast form of ``LPPool1d/2d/3d`` (``LAYER.lppool``): torch's composition around
    the layer's own average pool, whose step does the window work (the tiled reshape when
    kernel = stride divides the input, its readable form otherwise)::

        forward    a = avg(x^p) (the average's step),  f = K·a,  out = f^{1/p}
        backward   share = (K/c)·f^{1/p−1}/p·δ (0 at a zero window),
                   ∂C/∂x = p·x^{p−1} ⊙ Σ_{y ∋ u} share[y] (the average's backward of
                   share·c: it divides by the count c again)

    in buffers per batch shape. The coefficients are formed in x's dtype (the readable form
    forms ``K/c`` in float64 first), so float32 agrees to rounding, not bit for bit."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.average = layer.average.fast_step()
        self._buffers: dict[tuple, tuple[np.ndarray, ...]] = {}
        self.x: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        layer = self.layer
        dt = x.dtype
        p = dt.type(layer.norm_type)
        pooled = (*x.shape[:2], *layer.output_shape(x.shape[1:])[1:])

        def make() -> tuple[np.ndarray, ...]:
            count = layer.average.divisor(x.shape[2:]).astype(dt)
            ratio = (dt.type(np.prod(layer.kernel)) / count).astype(dt)
            return (np.empty_like(x), np.empty_like(x), *(np.empty(pooled, dt) for _ in range(3)),
                    count, ratio)  # fmt: skip

        powered, _, f, out, _, _, _ = shape_buffers(self._buffers, x.shape, make)
        self.x = x
        with np.errstate(invalid="ignore"):  # a negative x to a fractional p: NaN, as torch
            np.power(x, p, out=powered)
            self.a = self.average.forward(powered)
            np.multiply(self.a, dt.type(np.prod(layer.kernel)), out=f)
            np.power(f, dt.type(1.0 / layer.norm_type), out=out)
        return out

    def backward(
        self, dout: np.ndarray, grads: dict[str, np.ndarray], need_dx: bool
    ) -> np.ndarray | None:
        if not need_dx:
            return None
        layer, x = self.layer, self.x
        _, d1, f, _, share, count, ratio = self._buffers[x.shape]
        dt = x.dtype
        p = layer.norm_type
        with np.errstate(divide="ignore", invalid="ignore"):
            np.power(f, dt.type(1 / p - 1), out=share)
            share *= ratio
            share /= dt.type(p)
            share *= dout
            share[self.a == 0] = 0  # a zero window sends 0 (even for an ∞ δ)
            share *= count  # the average's backward divides by the count again
            spread = self.average.backward(share, {}, True)
            np.power(x, dt.type(p - 1), out=d1)
            d1 *= dt.type(p)
            d1 *= spread
        return d1
