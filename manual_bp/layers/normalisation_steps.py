"""Fast training steps of instance norm and RMS norm (:mod:`manual_bp.layers.steps`).

* ``InstanceNorm1d/2d/3d`` (``LAYER.instancenorm``): group norm with one group per channel
  (``docs/layers.md#LAYER.groupnorm``), so its step IS
  :class:`~manual_bp.layers.normalisation_fast.GroupNormStep` on a view of the layer with
  ``num_groups = C``: per row ``(n, c)`` of the ``(N, C, L)`` view the layer-norm step, rows
  split over the threads. With ``track_running_stats`` in training the running statistics
  are updated by the readable form's own update (``LAYER.instancenorm.running``, from the
  same ``mean``/``var`` expressions, so the same bits); evaluation with running statistics
  (an affine map) and an empty batch train through the readable form.
* ``RMSNorm`` (``LAYER.rmsnorm``): ``x`` as ``(R, M)`` rows of the normalised shape::

      forward    s = 1/√(x·x/M + ε)  (one vecdot a row),  x̂ = s x,  y = γ ⊙ x̂
      backward   ∂C/∂γ = Σ_rows dy ⊙ x̂ (one GEMV with ones),
                 ∂C/∂x = s (g − x̂ (g·x̂)/M),  g = γ ⊙ dy  (into dy's memory)

  in buffers per batch shape, rows split over the threads.
* ``LocalResponseNorm`` (``LAYER.lrn``): the readable expressions in buffers, in their
  order (the same bits); the window sums over channels add shifted slices in place.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from manual_bp._threads import parallel_rows
from manual_bp.layers.normalisation_fast import GroupNormStep
from manual_bp.layers.steps import BufferedStep, GenericStep

__all__ = ["InstanceNormStep", "LRNStep", "RMSNormStep"]


class _PerChannelGroups:
    """An instance-norm layer as GroupNormStep reads a group norm: one group per channel
    (``num_groups`` set per batch: without affine parameters ``num_features`` is unused)."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.num_groups = layer.num_features

    @property
    def params(self) -> dict[str, np.ndarray]:
        return self.layer.params  # the trainer may rebind the arrays

    @property
    def eps(self) -> float:
        return self.layer.eps

    def _check(self, x: np.ndarray) -> None:
        """The step takes unchecked arrays (the trainer checks its data once)."""


class InstanceNormStep:
    """The fast form of ``InstanceNorm1d/2d/3d``: GroupNormStep with ``G = C``."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.view = _PerChannelGroups(layer)
        self.groups = GroupNormStep(self.view)
        self.generic = GenericStep(layer)
        self.current: Any = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        layer = self.layer
        use_batch = layer.training or not layer.track_running_stats
        if not use_batch or x.size == 0 or math.prod(x.shape[2:]) == 1:
            self.current = self.generic  # the readable form (and its errors)
            return self.generic.forward(x)
        self.current = self.groups
        self.view.num_groups = x.shape[1]
        if layer.training and layer.track_running_stats:
            axes = tuple(range(2, x.ndim))  # the readable form's expressions: the same bits
            mean = x.mean(axis=axes, keepdims=True)
            centred = x - mean
            var = np.mean(centred * centred, axis=axes, keepdims=True)
            layer._update_running(mean, var, math.prod(x.shape[2:]))
        return self.groups.forward(x)

    def backward(
        self, dout: np.ndarray, grads: dict[str, np.ndarray], need_dx: bool
    ) -> np.ndarray | None:
        return self.current.backward(dout, grads, need_dx)


class RMSNormStep(BufferedStep):
    """The fast form of ``RMSNorm`` (``LAYER.rmsnorm``) on ``(R, M)`` rows."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        layer = self.layer
        m = math.prod(layer.normalized_shape)
        rows = x.size // m
        dt = x.dtype
        x_hat, out, _, inv_rms, _ = self._buffers_for(
            x,
            lambda: (
                np.empty((rows, m), dt),
                np.empty((rows, m), dt),
                np.empty((rows, m), dt),  # the backward's scratch (out may still be read)
                np.empty(rows, dt),
                np.empty(rows, dt),
            ),
        )
        x2 = x.reshape(rows, m)
        eps = float(np.finfo(dt).eps) if layer.eps is None else layer.eps
        weight = layer.params.get("weight")
        w = None if weight is None else weight.reshape(m)

        def work(r: slice) -> None:
            s = inv_rms[r]
            np.vecdot(x2[r], x2[r], out=s)
            s /= m
            s += eps
            np.sqrt(s, out=s)
            np.divide(1.0, s, out=s)
            np.multiply(x2[r], s[:, None], out=x_hat[r])
            if w is not None:
                np.multiply(x_hat[r], w, out=out[r])

        if rows:
            parallel_rows(work, rows, m)
        return (x_hat if w is None else out).reshape(x.shape)

    def backward(
        self, dout: np.ndarray, grads: dict[str, np.ndarray], need_dx: bool
    ) -> np.ndarray | None:
        x_hat, _, scratch, inv_rms, mean_gx = self._saved()
        rows, m = x_hat.shape
        dy = dout.reshape(rows, m)
        weight = self.layer.params.get("weight")
        if "weight" in grads:
            np.multiply(dy, x_hat, out=scratch)
            grads["weight"][...] = scratch.sum(axis=0).reshape(grads["weight"].shape)
        if not need_dx:
            return None
        w = None if weight is None else weight.reshape(m)

        def input_grad(r: slice) -> None:
            g, xh, d = scratch[r], x_hat[r], dy[r]
            if w is None:
                g[...] = d
            else:
                np.multiply(d, w, out=g)
            mg = mean_gx[r]
            np.vecdot(g, xh, out=mg)
            mg /= m
            # ∂C/∂x = s·(g − x̂·mean(g x̂)), into dout's memory
            np.multiply(xh, mg[:, None], out=d)
            np.subtract(g, d, out=d)
            d *= inv_rms[r][:, None]

        if rows:
            parallel_rows(input_grad, rows, m)
        return dy.reshape(self.x.shape)


def _window_sum_into(out: np.ndarray, u: np.ndarray, before: int, after: int) -> None:
    """:func:`~manual_bp.layers.normalisation_lrn.window_sum` along axis 1 of ``(N, C, L)``
    into ``out``, adding the shifted slices in its order (so the same bits), without the
    padded copy (a term beyond the ends adds nothing)."""
    c = u.shape[1]
    out.fill(0)
    for shift in range(before + after + 1):
        off = shift - before  # out[:, j] += u[:, j + off]
        lo, hi = max(0, -off), min(c, c - off)
        if lo < hi:
            out[:, lo:hi] += u[:, lo + off : hi + off]


class LRNStep(BufferedStep):
    """The fast form of ``LocalResponseNorm`` (``LAYER.lrn``) on the ``(N, C, L)`` view:
    the readable expressions in buffers, in their order (the same bits)::

        b = k + a·S(x²),  s = b^(−β),  y = x s,  q = x s / b
        ∂C/∂x = g s − (2aβ x) ⊙ Sᵀ(g q)
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        layer = self.layer
        n, c = x.shape[:2]
        view = (n, c, x[0, 0].size)
        square, base, scale, out, q = self._buffers_for(
            x, lambda: tuple(np.empty(view, x.dtype) for _ in range(5))
        )
        x3 = x.reshape(view)
        np.multiply(x3, x3, out=square)
        _window_sum_into(base, square, *layer._reach())
        base *= layer.alpha / layer.size
        base += layer.k
        np.power(base, -layer.beta, out=scale)
        np.multiply(x3, scale, out=out)
        np.divide(out, base, out=q)  # x·s/b, the backward's weight
        return out.reshape(x.shape)

    def backward(
        self, dout: np.ndarray, grads: dict[str, np.ndarray], need_dx: bool
    ) -> np.ndarray | None:
        if not need_dx:
            return None
        layer, x = self.layer, self.x
        square, base, scale, _, q = self._saved()
        g = dout.reshape(q.shape)
        before, after = layer._reach()
        np.multiply(g, q, out=square)
        _window_sum_into(base, square, after, before)  # Sᵀ: reaches swapped
        np.multiply(2.0 * layer.alpha * layer.beta / layer.size, x.reshape(q.shape), out=square)
        square *= base
        np.multiply(g, scale, out=base)
        base -= square
        return base.reshape(x.shape)
