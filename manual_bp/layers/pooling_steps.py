"""Fast training steps of adaptive, power-average and fractional max pooling
(:mod:`manual_bp.layers.steps`); the power average (``LPPoolStep``) and the fractional pool
(``FractionalMaxPoolStep``) are described at their classes.

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

import math
from typing import Any

import numpy as np

from manual_bp._threads import parallel_rows
from manual_bp.layers.pooling_geometry import fractional_starts
from manual_bp.layers.steps import BufferedStep, GenericStep, shape_buffers

__all__ = ["AdaptivePoolStep", "FractionalMaxPoolStep", "LPPoolStep"]


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


class LPPoolStep(BufferedStep):
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
        super().__init__(layer)
        self.average = layer.average.fast_step()

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

        powered, _, f, out, _, _, _ = self._buffers_for(x, make)
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
        _, d1, f, _, share, count, ratio = self._saved()
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


class FractionalMaxPoolStep:
    """The fast form of ``FractionalMaxPool2d/3d`` (``LAYER.fractional-maxpool``): every
    ``(n, c)`` plane at once instead of one :func:`window_maximum` per plane::

        samples    the layer's own ``_samples(x)`` (its generator advanced as the readable
                   form advances it; explicit ``_random_samples`` as they are)
        starts     ``seq_a`` of every plane and axis in one vectorised
                   ``generate_intervals`` (the same arithmetic, in x's precision)
        forward    per kernel offset t, the tap ``x[m_t(y)]`` gathered by flat index into a
                   buffer (``flat[t:]`` read at the windows' first positions); a running
                   max, the offset t recorded where ``tap > max`` (the first maximum wins
                   ties) or, if x holds a NaN, where ``tap > max or tap is NaN`` (the last
                   NaN: torch's scan); the winners' flat indices from the offsets at the end
        backward   ``∂C/∂x`` as one ``bincount`` over the winners (overlapping windows
                   sharing a winner add), the readable form's own scatter: the same bits

    Windows are all ``k`` long, so no tap reads outside its window. The forward's gathers
    are split over planes (each element written by its own plane's pass: the same bits on
    any thread count); the scatter runs whole."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self._buffers: dict[tuple, tuple[np.ndarray, ...]] = {}
        self.shape: tuple[int, ...] = ()
        self.winners: np.ndarray | None = None

    def _starts(self, samples: np.ndarray, size: tuple[int, ...], out: tuple[int, ...]):
        """``(N·C, O_a)`` window starts per axis (``fractional_starts`` on every plane's
        sample at once: the readable form's own arithmetic)."""

        layer = self.layer
        order = (1, 0) if layer.dims == 2 else (0, 1, 2)  # torch's sample order
        planes = samples.shape[0] * samples.shape[1]
        return [
            fractional_starts(samples[:, :, order[a]].reshape(planes), s, o, k)
            for a, (s, o, k) in enumerate(zip(size, out, layer.kernel, strict=True))
        ]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``LAYER.fractional-maxpool``: each window's maximum and its winner's index."""
        layer = self.layer
        samples = layer._samples(x)
        n, c, *size = x.shape
        size = tuple(size)
        out = layer.output_shape(x.shape[1:])[1:]
        planes, windows, plane = n * c, int(np.prod(out)), int(np.prod(size))

        def make() -> tuple[np.ndarray, ...]:
            small = np.int16 if math.prod(layer.kernel) < 2**15 else np.int32
            kinds = (x.dtype, x.dtype, np.int64, np.int64, small, small, bool)
            return tuple(np.empty((planes, windows), kind) for kind in kinds)

        best, tap, winner, base, which, spare, replace = shape_buffers(self._buffers, x.shape, make)
        self.shape, self.winners = x.shape, winner
        # the windows' first positions, as global flat indices into x
        base_view = base.reshape(planes, *out)
        base_view[...] = (np.arange(planes) * plane).reshape(planes, *(1,) * len(out))
        strides = np.cumprod((1, *size[:0:-1]))[::-1]  # Π_{b>a} S_b
        for a, starts in enumerate(self._starts(samples, size, out)):
            shape = [planes] + [1] * len(out)
            shape[1 + a] = out[a]
            base_view += starts.reshape(shape) * int(strides[a])
        offsets = [
            int(np.dot(offset, strides)) for offset in np.ndindex(*layer.kernel)
        ]  # kernel offsets in row-major order (the readable scan's)
        table = np.array(offsets, dtype=np.int64)
        flat = x.reshape(-1)
        has_nan = bool(np.isnan(np.sum(x)))  # also ∞ − ∞: the NaN-aware scan is exact then too

        def scan(rows: slice) -> None:
            b, v, m, r = base[rows], tap[rows], best[rows], replace[rows]
            t, u = which[rows], spare[rows]
            np.take(flat, b, out=m, mode="clip")
            t.fill(0)
            for k, off in enumerate(offsets[1:], 1):
                np.take(flat[off:], b, out=v, mode="clip")  # x[base + off], no index pass
                np.greater(v, m, out=r)
                if has_nan:  # torch's `val > max or isnan(val)`: the last NaN wins
                    r |= np.isnan(v)
                    np.copyto(m, v, where=r)
                else:
                    np.maximum(m, v, out=m)
                # t = k where replaced: max(t, r·k), k above every earlier offset (a
                # masked copy costs ~15× this on random masks)
                np.multiply(r, t.dtype.type(k), out=u)
                np.maximum(t, u, out=t)
            np.take(table, t, out=winner[rows])
            winner[rows] += b

        parallel_rows(scan, planes, windows * len(offsets))
        return best.reshape(n, c, *out)

    def backward(
        self, dout: np.ndarray, grads: dict[str, np.ndarray], need_dx: bool
    ) -> np.ndarray | None:
        """``LAYER.fractional-maxpool``: each window's δ added at its winner."""
        if not need_dx:
            return None
        total = np.bincount(
            self.winners.ravel(), weights=dout.ravel(), minlength=int(np.prod(self.shape))
        )
        return total.reshape(self.shape).astype(dout.dtype, copy=False)
