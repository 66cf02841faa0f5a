"""Sliding-window pooling on 1, 2 or 3 spatial axes: ``MaxPool1d/2d/3d``, ``AvgPool1d/2d/3d``
and ``GlobalAvgPool2d`` (torch's; unbatched ``(C, *S)`` inputs and empty batches too).

One generic class per kind (:class:`MaxPoolNd`, :class:`AvgPoolNd`) on ``dims`` axes; the
torch classes fix ``dims`` and torch's signature. The window arithmetic (output size,
``ceil_mode``, padding, dilation, taps) lives in :mod:`~manual_bp.layers.pooling_geometry`.
Derivations: ``docs/pooling.md`` (and ``docs/convolution.md`` for the 2-d originals); the
products on the V axis (mixins from :mod:`~manual_bp.layers.pooling_products`):
``docs/products.md``.

Max pooling sends each upstream gradient to the FIRST maximal element of its window in
row-major tap order — torch's CPU kernel keeps the first maximum (``val > max``), and
``numpy.argmax`` returns the first maximum too. Ties are measure-zero for continuous data
but common for ReLU outputs (zeros) and integer images, so the rule is part of the contract.
"""

from __future__ import annotations

from functools import reduce
from typing import Any

import numpy as np

from manual_bp.layers._unbatched import UnbatchedCache, unbatched
from manual_bp.layers.base import Cache, Layer, check_input, register_layer
from manual_bp.layers.convolution import _tuple
from manual_bp.layers.pooling_fast import AvgPoolFast, GlobalAvgPoolFast, MaxPoolFast
from manual_bp.layers.pooling_geometry import (
    PoolCache,
    PoolNd,
    pad_nd,
    pool_output_size,
    scatter_taps,
    tap_slices,
    window_misses_input,
)
from manual_bp.layers.pooling_products import (
    AvgPoolProducts,
    GlobalAvgPoolProducts,
    MaxPoolProducts,
    _first_maximum,
    _first_maximum_with_nan,
    max_pool_scatter,
)

__all__ = [
    "AvgPool1d",
    "AvgPool2d",
    "AvgPool3d",
    "AvgPoolNd",
    "GlobalAvgPool2d",
    "MaxPool1d",
    "MaxPool2d",
    "MaxPool3d",
    "MaxPoolNd",
    "PoolCache",
    "pool_output_size",
    "window_misses_input",
]


def flat_positions(
    tap: np.ndarray, layer: Any, size: tuple[int, ...], kernel: tuple[int, ...] | None = None
) -> np.ndarray:
    """torch's flat index ``Σ_a u_a·Π_{b>a} S_b`` of the input position ``u_a = y_a·s_a +
    i_a·d_a − p_a`` that tap ``t ↔ (i_a)`` of window ``y`` reads (``tap``: ``(…, *S_out)``)."""
    d = len(size)
    offsets = np.unravel_index(tap.astype(np.int64), kernel or layer.kernel)
    flat = np.zeros(tap.shape, dtype=np.int64)
    for a in range(d):
        y = np.arange(tap.shape[-d + a]).reshape((-1,) + (1,) * (d - 1 - a))
        position = y * layer.strides[a] + offsets[a] * layer.dilation_pair[a] - layer.pads[a]
        flat = flat * size[a] + position
    return flat


class MaxPoolNd(MaxPoolFast, MaxPoolProducts, PoolNd):
    """Max pooling on ``dims`` axes: the maximum of each (dilated) window; padding counts as
    −∞. Equations ``LAYER.maxpool2d`` (2-d) and ``LAYER.maxpool-nd`` (1-d, 3-d):
    ∂C/∂x[n, c, u] = Σ_{windows y whose first maximum is u} δ[n, c, y].

    ``return_indices=True``: ``layer(x)`` returns ``(out, indices)`` as torch's module does
    (``forward`` keeps the protocol's ``(out, cache)``; :meth:`indices` reads them off the
    cache): torch's flat index of each window's winner in its ``S`` block.
    """

    hyperparameters = (
        "kernel_size",
        "stride",
        "padding",
        "dilation",
        "return_indices",
        "ceil_mode",
        "implementation",
    )

    def __init__(
        self,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] | None = None,
        padding: int | tuple[int, ...] = 0,
        dilation: int | tuple[int, ...] = 1,
        return_indices: bool = False,
        ceil_mode: bool = False,
        *,
        implementation: str = "fast",
    ) -> None:
        super().__init__()
        self._setup(kernel_size, stride, padding, dilation, ceil_mode)
        if implementation not in ("fast", "readable"):
            raise ValueError(f"implementation must be 'fast' or 'readable', got {implementation!r}")
        if not isinstance(return_indices, (bool, np.bool_)):
            raise TypeError(f"return_indices must be True or False, got {return_indices!r}")
        self.implementation, self.return_indices = implementation, bool(return_indices)

    def __call__(self, x: np.ndarray) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """torch's module call: ``out``, or ``(out, indices)`` with ``return_indices``."""
        out, cache = self.forward(x)
        return (out, self.indices(cache)) if self.return_indices else out

    def indices(self, cache: PoolCache | UnbatchedCache) -> np.ndarray:
        """torch's ``indices`` of the forward ``cache`` records (``int64``, out's shape)."""
        if isinstance(cache, UnbatchedCache):
            return self.indices(cache.inner)[0]
        if cache.indices is None:
            cache.indices = flat_positions(cache.index, self, cache.input.shape[2:])
        return cache.indices

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, PoolCache]:
        """``(N, C, *S) -> (N, C, *S_out)``; caches which tap won each window."""
        check_input(x, self, ndim=self.dims + 2, name="x")
        self.output_shape(x.shape[1:])
        view, padded = self._windows(x, -np.inf)  # (N, C, *k, *S_out), no copy
        offsets = [np.unravel_index(t, self.kernel) for t in range(int(np.prod(self.kernel)))]
        taps = [view[(slice(None), slice(None), *o)] for o in offsets]
        # taps in the padding never win, even against an input of −∞ (torch visits only
        # the taps inside the input); per tap, an S_out mask shared by every (n, c)
        inside = None
        if padded:
            ones = np.ones((1, 1, *x.shape[2:]), dtype=bool)
            inside_view = self._windows(ones, False)[0][0, 0]
            inside = [inside_view[o] for o in offsets]
        if np.isnan(x).any():
            result, index = _first_maximum_with_nan(taps, inside)
        else:
            result, index = _first_maximum(taps, inside)
        cache = PoolCache(x, index)
        if self.return_indices:
            self.indices(cache)
        return result, cache

    def backward(
        self, dout: np.ndarray, cache: PoolCache
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``LAYER.maxpool2d`` / ``LAYER.maxpool-nd``: each window's δ goes to its winning
        (first maximal) tap."""
        self._check_dout(dout, cache)
        x = cache.input
        if self.implementation == "readable":
            return self._backward_readable(dout, x), {}
        return max_pool_scatter(self, dout, cache.index, x.shape, x.dtype), {}

    def _backward_readable(self, dout: np.ndarray, x: np.ndarray) -> np.ndarray:
        """The rule written out: visit the taps in row-major order; the first one equal to
        the window's maximum receives δ, later ties receive nothing. A window holding a NaN
        has the NaN as its maximum (torch: ``val > max || isnan(val)``): its LAST NaN wins."""
        d = self.dims
        pads, out = self._padding(x.shape[2:])
        xp = pad_nd(x, pads, -np.inf)
        view = self._windows(x, -np.inf)[0]  # (N, C, *k, *S_out)
        inside = self._windows(np.ones_like(x, dtype=bool), False)[0]
        maximum = view.max(axis=tuple(range(2, 2 + d)))  # NaN where the window holds one
        nan_window = np.isnan(maximum)
        taken = np.zeros(maximum.shape, dtype=bool)
        grad_p = np.zeros(xp.shape, dtype=x.dtype)
        order = list(range(int(np.prod(self.kernel))))
        for sweep in (order, order[::-1]):  # first maximum; then NaN windows' last NaN
            for tap in sweep:
                at = (slice(None), slice(None), *np.unravel_index(tap, self.kernel))
                values = view[at]
                # a tap in the padding never wins, even against an input of −∞ (torch)
                free = inside[at] & ~taken
                if sweep is order:
                    winner = (values == maximum) & free
                else:
                    winner = nan_window & np.isnan(values) & free
                taken |= winner
                grad_p[(..., *tap_slices(self, tap, out))] += np.where(winner, dout, 0.0)
        inner = tuple(slice(b, b + s) for s, (b, _) in zip(x.shape[2:], pads, strict=True))
        return grad_p[(..., *inner)].copy()


class AvgPoolNd(AvgPoolFast, AvgPoolProducts, PoolNd):
    """Average pooling on ``dims`` axes: window sums divided by torch's count. Equations
    ``LAYER.avgpool2d`` (2-d) and ``LAYER.avgpool-nd`` (1-d, 3-d).

    The divisor of window ``y`` is ``divisor_override`` if given, else the window's size
    clipped to the padded input (``count_include_pad=True``) or to the input itself
    (``False``), a product of one count per axis; ∂C/∂x[u] = Σ_{windows y ∋ u} δ[y] / D[y].
    """

    hyperparameters = (
        "kernel_size",
        "stride",
        "padding",
        "ceil_mode",
        "count_include_pad",
        "divisor_override",
    )

    def __init__(
        self,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] | None = None,
        padding: int | tuple[int, ...] = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ) -> None:
        super().__init__()
        self._setup(kernel_size, stride, padding, 1, ceil_mode)
        if not isinstance(count_include_pad, (bool, np.bool_)):
            raise TypeError(f"count_include_pad must be True or False, got {count_include_pad!r}")
        if divisor_override is not None:
            _tuple(divisor_override, "divisor_override", 1, 1)
        self.count_include_pad, self.divisor_override = bool(count_include_pad), divisor_override

    def divisor(self, size: tuple[int, ...]) -> np.ndarray:
        """``S_out`` divisors, as torch's ``avg_pool{1,2,3}d`` kernels compute them."""
        out = self._out(size)
        if self.divisor_override is not None:
            return np.full(out, float(self.divisor_override))
        counts = []
        for a in range(self.dims):
            start = np.arange(out[a]) * self.strides[a] - self.pads[a]
            end = np.minimum(start + self.kernel[a], size[a] + self.pads[a])
            counts.append(
                end - start
                if self.count_include_pad
                else np.minimum(end, size[a]) - np.maximum(start, 0)
            )
        return reduce(np.multiply.outer, counts).astype(np.float64)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, PoolCache]:
        check_input(x, self, ndim=self.dims + 2, name="x")
        self.output_shape(x.shape[1:])
        view = self._windows(x)[0]  # (N, C, *k, *S_out)
        # the window's taps added one by one in row-major tap order: the fast step's order
        # (pooling_fast.AvgPoolStep), so both forms give the same bits
        whole = (slice(None), slice(None))
        total = reduce(np.add, (view[(*whole, *tap)] for tap in np.ndindex(*self.kernel)))
        # D in x's precision (small counts, exact): a float64 D made a float64 quotient the
        # size of the output, cast back; float32 quotients are the same (double rounding of
        # a quotient is innocuous), float64 ones unchanged
        divisor = self.divisor(x.shape[2:]).astype(x.dtype, copy=False)
        return (total / divisor).astype(x.dtype, copy=False), PoolCache(x)

    def backward(
        self, dout: np.ndarray, cache: PoolCache
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``LAYER.avgpool2d`` / ``LAYER.avgpool-nd``: each window spreads δ/divisor over its
        ``Π k_a`` taps."""
        self._check_dout(dout, cache)
        x = cache.input
        divisor = self.divisor(x.shape[2:]).astype(x.dtype, copy=False)  # as in forward
        share = (dout / divisor).astype(x.dtype, copy=False)
        return scatter_taps(self, x.shape, (), lambda tap: share, x.dtype), {}


@register_layer
@unbatched
class MaxPool1d(MaxPoolNd):
    """``torch.nn.MaxPool1d`` on ``(N, C, L)`` (equation ``LAYER.maxpool-nd``)."""

    name, dims, equation = "maxpool1d", 1, "LAYER.maxpool-nd"
    product_equations = ("PROD.maxpool-nd.vjp", "PROD.maxpool-nd.jvp", "PROD.maxpool-nd.residual")


@register_layer
@unbatched
class MaxPool2d(MaxPoolNd):
    """``torch.nn.MaxPool2d`` on ``(N, C, H, W)``. Equation ``LAYER.maxpool2d``:
    ∂C/∂x[n,c,u,v] = Σ_{(y,x): argmax of window (y,x) is (u,v)} δ[n,c,y,x], the argmax
    being the first maximum in row-major window order."""

    name, dims, equation = "maxpool2d", 2, "LAYER.maxpool2d"


@register_layer
@unbatched
class MaxPool3d(MaxPoolNd):
    """``torch.nn.MaxPool3d`` on ``(N, C, D, H, W)`` (equation ``LAYER.maxpool-nd``)."""

    name, dims, equation = "maxpool3d", 3, "LAYER.maxpool-nd"
    product_equations = ("PROD.maxpool-nd.vjp", "PROD.maxpool-nd.jvp", "PROD.maxpool-nd.residual")


@register_layer
@unbatched
class AvgPool1d(AvgPoolNd):
    """``torch.nn.AvgPool1d`` on ``(N, C, L)`` (equation ``LAYER.avgpool-nd``; torch's 1-d
    class has no ``divisor_override``)."""

    name, dims, equation = "avgpool1d", 1, "LAYER.avgpool-nd"
    product_equations = ("PROD.avgpool-nd.vjp", "PROD.avgpool-nd.jvp", "PROD.avgpool-nd.residual")
    hyperparameters = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad")

    def __init__(
        self,
        kernel_size: int | tuple[int],
        stride: int | tuple[int] | None = None,
        padding: int | tuple[int] = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
    ) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad)


@register_layer
@unbatched
class AvgPool2d(AvgPoolNd):
    """``torch.nn.AvgPool2d`` on ``(N, C, H, W)``. Equation ``LAYER.avgpool2d``:
    ∂C/∂x[u, v] = Σ_{windows (y,x) ∋ (u,v)} δ[y, x] / divisor[y, x]."""

    name, dims, equation = "avgpool2d", 2, "LAYER.avgpool2d"


@register_layer
@unbatched
class AvgPool3d(AvgPoolNd):
    """``torch.nn.AvgPool3d`` on ``(N, C, D, H, W)`` (equation ``LAYER.avgpool-nd``)."""

    name, dims, equation = "avgpool3d", 3, "LAYER.avgpool-nd"
    product_equations = ("PROD.avgpool-nd.vjp", "PROD.avgpool-nd.jvp", "PROD.avgpool-nd.residual")

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """As every pooling, and torch's ``avg_pool3d`` check: no axis shorter than the
        kernel, padding or not (``MaxPool3d`` and the 1-d/2-d classes have no such rule)."""
        shape = super().output_shape(input_shape)
        if any(s < k for s, k in zip(input_shape[1:], self.kernel, strict=True)):
            raise ValueError(
                f"{self!r}: input {tuple(input_shape)} is smaller than the kernel {self.kernel} "
                f"(as torch's avg_pool3d)"
            )
        return shape


@register_layer
@unbatched
class GlobalAvgPool2d(GlobalAvgPoolFast, GlobalAvgPoolProducts, Layer):
    """torch's ``nn.AdaptiveAvgPool2d(1)`` (``((1, 1))``): the mean of each channel,
    ``(N, C, H, W) -> (N, C, 1, 1)`` — :class:`~manual_bp.layers.pooling_adaptive.
    AdaptiveAvgPool2d` with ``output_size=1``, kept for its fused fast step.

    Equation ``LAYER.global-avgpool2d``: ∂C/∂x[n, c, u, v] = δ[n, c] / (H·W).
    """

    name = "global-avgpool2d"
    equation = "LAYER.global-avgpool2d"
    hyperparameters = ()
    batched_ndim = 4

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 3:
            raise ValueError(
                f"{self!r} needs per-sample inputs (C, H, W), got {tuple(input_shape)}"
            )
        return (input_shape[0], 1, 1)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        check_input(x, self, ndim=4, name="x")
        return x.mean(axis=(2, 3), keepdims=True), Cache(x)

    def backward(self, dout: np.ndarray, cache: Cache) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``LAYER.global-avgpool2d``: every position receives δ/(H·W)."""
        x = cache.input
        if not isinstance(dout, np.ndarray) or dout.shape != (*x.shape[:2], 1, 1):
            raise ValueError(
                f"{self!r}: upstream gradient has shape {np.shape(dout)}, "
                f"expected {(*x.shape[:2], 1, 1)}"
            )
        grad = np.broadcast_to(dout / (x.shape[2] * x.shape[3]), x.shape)
        return grad.astype(x.dtype, copy=True), {}

    def __repr__(self) -> str:
        return "GlobalAvgPool2d()"
