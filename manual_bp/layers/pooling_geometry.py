"""N-d window arithmetic shared by every sliding-window pooling layer (1-d, 2-d, 3-d).

An input ``(N, C, *S)`` with ``D = len(S)`` spatial axes. On axis ``a`` window ``y`` covers
padded positions ``y·s_a + i·d_a`` for ``i = 0 … k_a − 1``, and
``S_out = ⌊(S + 2p − d(k−1) − 1)/s⌋ + 1`` (``ceil_mode``: rounded up, but no window may start
in the trailing padding — torch's ``pooling_output_shape``). A tap is the flat index
``t = Σ_a i_a·Π_{b>a} k_b`` of the offset ``(i_0, …, i_{D−1})`` (row-major, as torch scans
a window). Derivations: ``docs/pooling.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from manual_bp.layers.base import Cache, Layer
from manual_bp.layers.convolution import _tuple

__all__ = [
    "PoolCache",
    "PoolNd",
    "fractional_starts",
    "pad_nd",
    "pool_output_size",
    "scatter_taps",
    "tap_slices",
    "tap_views",
    "tiles",
    "to_winners",
    "window_misses_input",
    "windows_nd",
]

_AXES = {1: "(C, L)", 2: "(C, H, W)", 3: "(C, D, H, W)"}


def pool_output_size(
    size: int, kernel: int, stride: int, padding: int, dilation: int, ceil: bool
) -> int:
    """torch's ``pooling_output_shape`` for one axis."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1 + (stride - 1 if ceil else 0)
    out = span // stride + 1
    if ceil and (out - 1) * stride >= size + padding:
        out -= 1  # the last window would start inside the trailing padding
    return out


def window_misses_input(
    size: int, kernel: int, stride: int, padding: int, dilation: int, out: int
) -> bool:
    """True if some window's taps (positions ``y·s + i·d − p``) all fall in the padding.

    Possible with dilation (taps skip over the input); torch then returns −∞ and its
    backward writes outside the input, so the layer rejects such geometries.
    """
    taps = np.arange(out)[:, None] * stride + np.arange(kernel)[None, :] * dilation - padding
    return bool((((taps >= 0) & (taps < size)).sum(axis=1) == 0).any())


def pad_nd(x: np.ndarray, pads: tuple[tuple[int, int], ...], value: float = 0.0) -> np.ndarray:
    """A copy of ``x (…, *S)`` padded by ``(before, after)`` on each of the last ``len(pads)``
    axes with ``value`` (the interior written with explicit bounds: ``[p : p + S]``)."""
    d = len(pads)
    shape = (*x.shape[:-d], *(s + b + a for s, (b, a) in zip(x.shape[-d:], pads, strict=True)))
    out = np.full(shape, value, dtype=x.dtype)
    inner = tuple(slice(b, b + s) for s, (b, _) in zip(x.shape[-d:], pads, strict=True))
    out[(..., *inner)] = x
    return out


def windows_nd(
    xp: np.ndarray,
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
    out: tuple[int, ...],
) -> np.ndarray:
    """View ``(…, *k, *out)`` of ``xp (…, *S)``: ``[…, i, y] = xp[…, y·s + i·d]`` per axis.

    A strided view, no copy: a kernel axis strides by the dilation, an output axis by the
    stride.
    """
    d = len(kernel)
    lead, spatial = xp.strides[:-d], xp.strides[-d:]
    strides = (
        *lead,
        *(st * dl for st, dl in zip(spatial, dilation, strict=True)),
        *(st * s for st, s in zip(spatial, stride, strict=True)),
    )
    shape = (*xp.shape[:-d], *kernel, *out)
    return as_strided(xp, shape, strides, writeable=False)


def tap_slices(layer: Any, tap: int, out: tuple[int, ...]) -> tuple[slice, ...]:
    """The padded positions ``y·s + i·d`` (``y < S_out``) tap ``t`` reads, one slice per axis."""
    offsets = np.unravel_index(tap, layer.kernel)
    return tuple(
        slice(int(i) * d, int(i) * d + s * (o - 1) + 1, s)
        for i, d, s, o in zip(offsets, layer.dilation_pair, layer.strides, out, strict=True)
    )


def tiles(layer: Any, x_shape: tuple[int, ...]) -> bool:
    """Whether the windows tile an input of ``x_shape`` ``(N, C, *S)`` exactly: ``kernel ==
    stride``, no padding, dilation 1, every size a multiple of the kernel (LeNet's pooling).
    Then each input position is read by exactly one window (no overlap, none left out)."""
    d = layer.dims
    return (
        len(x_shape) == d + 2
        and tuple(layer.strides) == tuple(layer.kernel)
        and tuple(layer.pads) == (0,) * d
        and tuple(layer.dilation_pair) == (1,) * d
        and all(s % k == 0 and s >= k for s, k in zip(x_shape[2:], layer.kernel, strict=True))
    )


def tap_views(array: np.ndarray, kernel: tuple[int, ...]) -> list[np.ndarray]:
    """The ``Π k_a`` tap views ``(*lead, *S_out)`` of a tiled contiguous ``(*lead, *S)`` array
    (``d = len(kernel)`` spatial axes last; any leading axes, a V axis of products too):
    reshaped to ``(*lead, o_0, k_0, o_1, k_1, …)`` (no copy), tap ``(i_0, i_1, …)`` is
    ``[…, :, i_0, :, i_1, …]``."""
    d = len(kernel)
    lead, size = array.shape[:-d], array.shape[-d:]
    split = [n for s, k in zip(size, kernel, strict=True) for n in (s // k, k)]
    tiled = array.reshape(*lead, *split)
    taps = []
    for tap in range(int(np.prod(kernel))):
        at: list = [Ellipsis]
        for i in np.unravel_index(tap, kernel):
            at += [slice(None), int(i)]
        taps.append(tiled[tuple(at)])
    return taps


def to_winners(
    out: np.ndarray, M: np.ndarray, index: np.ndarray, kernel: tuple[int, ...], won: np.ndarray
) -> np.ndarray:
    """``out``'s tap slices (:func:`tap_views`) set to ``M·[index = tap]``: the max-pool
    VJP on tiling windows, each input position written once (``LAYER.maxpool2d``). ``M``
    ``(*lead, N, C, *S_out)`` (a V axis in front broadcasts against ``index``), ``won`` a
    boolean buffer like ``index``. ``M`` finite: a NaN·0 would leak into lost windows."""
    for tap, target in enumerate(tap_views(out, kernel)):
        np.equal(index, tap, out=won)
        np.multiply(M, won, out=target)
    return out


def scatter_taps(
    layer: Any,
    x_shape: tuple[int, ...],
    lead: tuple[int, ...],
    contribution: Callable[[int], np.ndarray],
    dtype: np.dtype,
) -> np.ndarray:
    """``Σ_taps`` of ``contribution(tap)`` ``(*lead, N, C, *S_out)`` written back at the
    padded input positions the tap reads, ``(*lead, N, C, *S)`` once unpadded.

    Overlapping windows add (the transpose of a gather is a scatter-add); the only loop is
    over the ``Π k_a`` taps.
    """
    pads, out = layer._padding(x_shape[2:])
    size = x_shape[2:]
    grad_p = np.zeros(
        (*lead, *x_shape[:2], *(s + b + a for s, (b, a) in zip(size, pads, strict=True))),
        dtype=dtype,
    )
    for tap in range(int(np.prod(layer.kernel))):
        grad_p[(..., *tap_slices(layer, tap, out))] += contribution(tap)
    if not any(b or a for b, a in pads):
        return grad_p
    inner = tuple(slice(b, b + s) for s, (b, _) in zip(size, pads, strict=True))
    return np.ascontiguousarray(grad_p[(..., *inner)])


@dataclass
class PoolCache(Cache):
    """``input`` x and, for max pooling, the winning tap of each window (and, with
    ``return_indices``, torch's flat index of that tap in x's spatial block)."""

    index: np.ndarray | None = None
    indices: np.ndarray | None = None


class PoolNd(Layer):
    """Shared frame of the sliding-window pooling layers on ``dims`` spatial axes."""

    dims = 2
    batched_ndim = 4
    dilation_pair: tuple[int, ...] = (1, 1)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.batched_ndim = cls.dims + 2  # (N, C, *S): the unbatched form has one axis less

    def _setup(
        self, kernel_size: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: Any
    ) -> None:
        d = self.dims
        self.kernel = _tuple(kernel_size, "kernel_size", d, 1)
        self.strides = self.kernel if stride is None else _tuple(stride, "stride", d, 1)
        self.pads = _tuple(padding, "padding", d, 0)
        self.dilation_pair = _tuple(dilation, "dilation", d, 1)
        if any(p > k // 2 for p, k in zip(self.pads, self.kernel, strict=True)):
            raise ValueError(
                f"padding={padding!r} must be at most half the kernel size {self.kernel} (as torch)"
            )
        if not isinstance(ceil_mode, (bool, np.bool_)):
            raise TypeError(f"ceil_mode must be True or False, got {ceil_mode!r}")
        self.kernel_size, self.stride, self.padding, self.dilation = (
            kernel_size,
            stride,
            padding,
            dilation,
        )
        self.ceil_mode = bool(ceil_mode)

    def _out(self, size: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(
            pool_output_size(
                size[a],
                self.kernel[a],
                self.strides[a],
                self.pads[a],
                self.dilation_pair[a],
                self.ceil_mode,
            )
            for a in range(self.dims)
        )

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = tuple(input_shape)
        if len(shape) != self.dims + 1:
            raise ValueError(f"{self!r} needs per-sample inputs {_AXES[self.dims]}, got {shape}")
        out = self._out(shape[1:])
        if min(out) < 1:
            raise ValueError(f"{self!r}: input {shape} is smaller than the window (output {out})")
        for a in range(self.dims):
            args = (self.kernel[a], self.strides[a], self.pads[a], self.dilation_pair[a], out[a])
            if window_misses_input(shape[1 + a], *args):
                raise ValueError(
                    f"{self!r}: on input {shape} some dilated window covers only padding "
                    f"(its output would be −∞)"
                )
        return (shape[0], *out)

    def _padding(self, size: tuple[int, ...]) -> tuple[tuple[tuple[int, int], ...], tuple]:
        """Per-axis ``(before, after)`` padding whose trailing part also covers ceil-mode
        windows, and the output size."""
        out = self._out(size)
        pads = []
        for a in range(self.dims):
            reach = (
                (out[a] - 1) * self.strides[a] + self.dilation_pair[a] * (self.kernel[a] - 1) + 1
            )
            pads.append((self.pads[a], max(self.pads[a], reach - size[a] - self.pads[a])))
        return tuple(pads), out

    def _windows(self, x: np.ndarray, value: float = 0.0) -> tuple[np.ndarray, bool]:
        """The windows ``(…, *k, *S_out)`` of ``x (…, N, C, *S)`` padded with ``value``, and
        whether any padding was needed."""
        pads, out = self._padding(x.shape[-self.dims :])
        padded = any(b or a for b, a in pads)
        xp = pad_nd(x, pads, value) if padded else x
        return windows_nd(xp, self.kernel, self.strides, self.dilation_pair, out), padded

    def _check_dout(self, dout: np.ndarray, cache: PoolCache) -> None:
        expected = (cache.input.shape[0], *self.output_shape(cache.input.shape[1:]))
        if not isinstance(dout, np.ndarray) or dout.shape != expected:
            raise ValueError(
                f"{self!r}: upstream gradient has shape {np.shape(dout)}, expected {expected}"
            )

    @classmethod
    def from_shape(cls, input_shape, *args, n_outputs=None, **kwargs) -> Layer:
        if len(input_shape) != cls.dims + 1:
            raise ValueError(
                f"{cls.name} needs per-sample inputs {_AXES[cls.dims]}, got {tuple(input_shape)}"
            )
        return cls(*args, **kwargs)

    def __repr__(self) -> str:
        options = f"stride={self.stride}, padding={self.padding}"
        return f"{type(self).__name__}({self.kernel_size}, {options})"


def fractional_starts(sample: Any, size: int, out: int, kernel: int) -> np.ndarray:
    """torch's ``generate_intervals``: the ``out`` window starts on an axis of ``size`` for
    a sample ``α`` — a NumPy scalar, or an array of samples (then ``(*sample.shape, out)``,
    one row of starts each). The arithmetic stays in the samples' precision, as torch's
    ``scalar_t``: ``(y + α)·step`` rounds in float32 for float32 samples (in float64 a
    float32 α near ``m/step − y`` truncates to the other side of ``m``)."""
    sample = np.asarray(sample)
    t = sample.dtype.type
    starts = np.zeros((*sample.shape, out), dtype=np.int64)
    if out > 1:
        alpha = t(size - kernel) / t(out - 1)
        y = np.arange(out - 1, dtype=sample.dtype)
        a = sample[..., None]
        starts[..., :-1] = ((y + a) * alpha).astype(np.int64) - (a * alpha).astype(np.int64)
    if out > 0:
        starts[..., -1] = size - kernel
    return starts
