"""The fast form of a residual block for training (:class:`ResidualStep`, ``LAYER.residual``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp._threads import parallel_rows
from manual_bp.layers.steps import shape_buffers

__all__ = ["ResidualStep"]


class ResidualStep:
    """The fast form of :class:`~manual_bp.layers.containers.Residual` (``LAYER.residual``):
    ``y = x + f(x)`` with ``f`` the branch's fast steps in order and the sum into a buffer
    of its own; backward runs the branch's steps down from ``∂C/∂y`` (copied first: a step
    may overwrite its ``dout``) and adds the skip path in place,
    ``∂C/∂x = ∂C/∂y + J_fᵀ ∂C/∂y``. Branch layers below the lowest one with parameters are
    not walked when ``∂C/∂x`` is not needed."""

    def __init__(self, layer: Any) -> None:
        self.steps = [inner.fast_step() for inner in layer.layers]
        self.names = [list(inner.params) for inner in layer.layers]
        trainable = [i for i, inner in enumerate(layer.layers) if inner.params]
        self.lowest = trainable[0] if trainable else len(layer.layers)
        self._buffers: dict[tuple, tuple[np.ndarray, ...]] = {}
        self._split: tuple[dict, list[dict]] | None = None

    def _own(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        make = lambda: (np.empty_like(x), np.empty_like(x))  # noqa: E731  (y, ∂C/∂y copy)
        return shape_buffers(self._buffers, (x.shape, x.dtype.str), make)

    def forward(self, x: np.ndarray) -> np.ndarray:
        h = x
        for step in self.steps:
            h = step.forward(h)
        y, _ = self._own(x)
        row = x[0].size if x.ndim else 1

        def add(rows: slice) -> None:
            np.add(x[rows], h[rows], out=y[rows])

        parallel_rows(add, x.shape[0], row)
        return y

    def _layer_grads(self, grads: dict) -> list[dict]:
        """``grads["<i>.<name>"]`` as one dict per branch layer (made once per buffer)."""
        if self._split is None or self._split[0] is not grads:
            split = [{k: grads[f"{i}.{k}"] for k in names} for i, names in enumerate(self.names)]
            self._split = (grads, split)
        return self._split[1]

    def backward(self, dout: np.ndarray, grads: dict, need_dx: bool) -> np.ndarray | None:
        layer_grads = self._layer_grads(grads)
        bottom = 0 if need_dx else self.lowest
        g = dout
        if need_dx:
            _, skip = self._own(dout)
            np.copyto(skip, dout)
        for i in range(len(self.steps) - 1, bottom - 1, -1):
            g = self.steps[i].backward(g, layer_grads[i], need_dx or i > bottom)
        if not need_dx:
            return None
        g += skip  # both uses of x: the branch and the skip path
        return g
