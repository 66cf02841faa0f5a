"""Fast training steps of PReLU and GLU (:mod:`manual_bp.layers.steps`): the readable
forms' expressions, in the same order (so the same bits), written into buffers per batch
shape instead of fresh arrays.

* ``PReLU`` (``LAYER.prelu``)::

      forward    out = w x, then x copied where x > 0 (the mask kept)
      backward   ∂C/∂w = Σ dy ⊙ x ⊙ 1[x ≤ 0] over every axis but the channel axis,
                 ∂C/∂x = dy ⊙ w, then dy copied where x > 0 (into dy's memory)

* ``GLU`` (``LAYER.glu``), ``(a, b)`` the halves of x along ``dim``::

      forward    e = exp(−|b|), s = where(b ≥ 0, 1, e)/(1 + e) (the overflow-free sigmoid),
                 out = a ⊙ s
      backward   ∂C/∂x = [dy ⊙ s, dy ⊙ ((a ⊙ s) ⊙ (1 − s))] along ``dim``
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp.layers.steps import shape_buffers

__all__ = ["GLUStep", "PReLUStep"]


class PReLUStep:
    """The fast form of ``PReLU``."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self._buffers: dict[tuple, tuple[np.ndarray, ...]] = {}
        self.x: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        layer = self.layer
        out, mask, _ = shape_buffers(
            self._buffers,
            x.shape,
            lambda: (
                np.empty(x.shape, x.dtype),
                np.empty(x.shape, bool),
                np.empty(x.shape, x.dtype),
            ),
        )
        self.x, self.out, self.mask = x, out, mask
        w = layer.params["weight"].reshape(layer._shape(x.ndim))
        np.greater(x, 0, out=mask)
        np.multiply(w, x, out=out)
        np.copyto(out, x, where=mask)
        return out

    def backward(
        self, dout: np.ndarray, grads: dict[str, np.ndarray], need_dx: bool
    ) -> np.ndarray | None:
        layer, x, mask = self.layer, self.x, self.mask
        scratch = self._buffers[x.shape][2]
        np.multiply(dout, x, out=scratch)  # dy ⊙ x ⊙ 1[x ≤ 0] (NaN stays NaN, as torch's)
        np.copyto(scratch, 0.0, where=mask)
        # one shared slope: every axis; one per channel: every axis but axis 1
        axes = tuple(a for a in range(x.ndim) if layer.num_parameters == 1 or a != 1)
        grads["weight"][...] = scratch.sum(axis=axes)
        if not need_dx:
            return None
        w = layer.params["weight"].reshape(layer._shape(x.ndim))
        dx = np.multiply(dout, w, out=scratch)
        np.copyto(dx, dout, where=mask)
        return dx


class GLUStep:
    """The fast form of ``GLU``."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self._buffers: dict[tuple, tuple[np.ndarray, ...]] = {}
        self.x: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        layer = self.layer
        axis = layer._axis(x.ndim)
        half = list(x.shape)
        half[axis] //= 2
        dt = x.dtype
        e, s, out, _ = shape_buffers(
            self._buffers,
            x.shape,
            lambda: (*(np.empty(half, dt) for _ in range(3)), np.empty(x.shape, dt)),
        )
        a, b = np.split(x, 2, axis=axis)
        self.x, self.axis, self.a = x, axis, a
        np.abs(b, out=e)
        np.negative(e, out=e)
        np.exp(e, out=e)
        np.copyto(s, e)
        np.copyto(s, 1.0, where=b >= 0)
        e += 1.0
        s /= e
        np.multiply(a, s, out=out)
        return out

    def backward(
        self, dout: np.ndarray, grads: dict[str, np.ndarray], need_dx: bool
    ) -> np.ndarray | None:
        if not need_dx:
            return None
        e, s, _, dx = self._buffers[self.x.shape]
        da, db = np.split(dx, 2, axis=self.axis)
        np.multiply(dout, s, out=da)
        np.multiply(self.a, s, out=e)  # (a ⊙ s) ⊙ (1 − s), the readable order
        np.subtract(1.0, s, out=db)
        e *= db
        np.multiply(dout, e, out=db)
        return dx
