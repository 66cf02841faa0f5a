"""Fast training steps of PReLU, GLU and RReLU (:mod:`manual_bp.layers.steps`): the readable
forms' expressions, in the same order (so the same bits), written into buffers per batch
shape instead of fresh arrays.

* ``PReLU`` (``LAYER.prelu``)::

      forward    out = max(x, 0) + w min(x, 0),  slope = m + w(1 − m),  m = 1[x > 0]
      backward   ∂C/∂w = Σ dy ⊙ min(x, 0) over every axis but the channel axis,
                 ∂C/∂x = dy ⊙ slope

* ``GLU`` (``LAYER.glu``), ``(a, b)`` the halves of x along ``dim``::

      forward    e = exp(−|b|), s = where(b ≥ 0, 1, e)/(1 + e) (the overflow-free sigmoid),
                 out = a ⊙ s
      backward   ∂C/∂x = [dy ⊙ s, dy ⊙ ((a ⊙ s) ⊙ (1 − s))] along ``dim``
"""

from __future__ import annotations

import numpy as np

from manual_bp.layers.steps import BufferedStep
from manual_bp.layers.torch_random import torch_uniform

__all__ = ["GLUStep", "PReLUStep", "RReLUStep"]


class PReLUStep(BufferedStep):
    """The fast form of ``PReLU``: no ``where`` (a random mask makes a masked copy ~100×
    slower than an arithmetic pass): ``out = max(x, 0) + w·min(x, 0)`` and the slope
    ``m + w·(1 − m)``, ``m = 1[x > 0]`` — each the readable value exactly (one of the two
    terms is an exact zero, the other ``x``/``w·x``, ``1``/``w``)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        layer = self.layer
        out, negative, slope, scratch = self._buffers_for(
            x, lambda: tuple(np.empty_like(x) for _ in range(4))
        )
        w = layer.params["weight"].reshape(layer._shape(x.ndim))
        np.maximum(x, 0, out=out)
        np.minimum(x, 0, out=negative)  # x ⊙ 1[x ≤ 0] (NaN stays NaN)
        np.multiply(w, negative, out=scratch)
        out += scratch
        np.greater(x, 0, out=slope)  # m
        np.subtract(1, slope, out=scratch)
        scratch *= w
        slope += scratch  # m + w(1 − m)
        return out

    def backward(
        self, dout: np.ndarray, grads: dict[str, np.ndarray], need_dx: bool
    ) -> np.ndarray | None:
        layer, x = self.layer, self.x
        _, negative, slope, scratch = self._saved()
        np.multiply(dout, negative, out=scratch)  # dy ⊙ x ⊙ 1[x ≤ 0]
        # one shared slope: every axis; one per channel: every axis but axis 1
        axes = tuple(a for a in range(x.ndim) if layer.num_parameters == 1 or a != 1)
        grads["weight"][...] = scratch.sum(axis=axes)
        if not need_dx:
            return None
        return np.multiply(dout, slope, out=scratch)


class GLUStep(BufferedStep):
    """The fast form of ``GLU``."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        layer = self.layer
        axis = layer._axis(x.ndim)
        half = list(x.shape)
        half[axis] //= 2
        dt = x.dtype
        e, s, out, _ = self._buffers_for(
            x,
            lambda: (*(np.empty(half, dt) for _ in range(3)), np.empty(x.shape, dt)),
        )
        a, b = np.split(x, 2, axis=axis)
        self.axis, self.a = axis, a
        np.abs(b, out=e)
        np.negative(e, out=e)
        np.exp(e, out=e)
        np.greater_equal(b, 0, out=s)  # m = 1[b ≥ 0]; where(m, 1, e) = m + e(1 − m) exactly
        np.subtract(1, s, out=out)
        out *= e
        s += out
        e += 1.0
        s /= e
        np.multiply(a, s, out=out)
        return out

    def backward(
        self, dout: np.ndarray, grads: dict[str, np.ndarray], need_dx: bool
    ) -> np.ndarray | None:
        if not need_dx:
            return None
        e, s, _, dx = self._saved()
        da, db = np.split(dx, 2, axis=self.axis)
        np.multiply(dout, s, out=da)
        np.multiply(self.a, s, out=e)  # (a ⊙ s) ⊙ (1 − s), the readable order
        np.subtract(1.0, s, out=db)
        e *= db
        np.multiply(dout, e, out=db)
        return dx


class RReLUStep(BufferedStep):
    """The fast form of ``RReLU`` (``LAYER.rrelu``): the slopes drawn exactly as the readable
    form draws them — ``torch_uniform`` on the layer's own MT19937 stream, one draw per
    ``x ≤ 0`` in C order, so both forms leave the generator (and the parameters of a model
    trained either way) in the same state — into a buffer; ``out = x ⊙ r``,
    ``∂C/∂x = dy ⊙ r``. In evaluation ``r = 1 + m(e − 1)`` becomes ``(1 − m) + m·e``
    (``m = 1[x ≤ 0]``, ``e = (lower + upper)/2``: exactly ``where(m, e, 1)``)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        layer = self.layer
        out, slope, negative = self._buffers_for(
            x,
            lambda: (np.empty_like(x), np.empty_like(x), np.empty(x.shape, bool)),
        )
        self.slope = slope
        np.less_equal(x, 0, out=negative)
        if layer.training:
            slope.fill(1)
            count = int(np.count_nonzero(negative))
            slope[negative] = torch_uniform(layer._generator, count, layer.lower, layer.upper,
                                            x.dtype)  # fmt: skip
        else:
            np.copyto(slope, negative)  # m
            np.subtract(1, slope, out=out)
            slope *= x.dtype.type(layer.eval_slope)
            slope += out
        return np.multiply(x, slope, out=out)

    def backward(
        self, dout: np.ndarray, grads: dict[str, np.ndarray], need_dx: bool
    ) -> np.ndarray | None:
        if not need_dx:
            return None
        return np.multiply(dout, self.slope, out=dout)
