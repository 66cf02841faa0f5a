"""Fast training steps of adaptive pooling (:mod:`manual_bp.layers.steps`).

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

from manual_bp.layers.steps import GenericStep

__all__ = ["AdaptivePoolStep"]


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
