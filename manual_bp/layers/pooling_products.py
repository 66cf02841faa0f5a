"""The pooling layers' products on a leading axis of V vectors (``docs/products.md``).

Mixins of :class:`~manual_bp.layers.pooling.MaxPool2d`, ``AvgPool2d`` and
``GlobalAvgPool2d`` (kept apart from the forward/backward code of ``pooling.py``). Every
pooling map is linear in ``x`` between the points where a max-pool winner changes, so the
three share one pattern: the JVP applies the map to the tangent, the VJP scatters each
window's cotangent back over its taps, and the second-order residual is zero.

Leading axes: a stack ``(V, N, C, H, W)`` is viewed as ``(V·N, C, H, W)`` to pad it and to
take its windows (one strided view, no copy), and every per-tap product broadcasts a
``(N, C, Ho, Wo)`` quantity (a winner mask, a divisor) over the V axis; the only Python loop
is over the ``k_H·k_W`` taps, as in the backward passes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from manual_bp.layers._im2col import pad, windows
from manual_bp.layers.base import zero_residual

__all__ = ["AvgPoolProducts", "GlobalAvgPoolProducts", "MaxPoolProducts", "scatter_taps"]


def scatter_taps(
    layer: Any,
    x_shape: tuple[int, ...],
    lead: tuple[int, ...],
    contribution: Callable[[int], np.ndarray],
    dtype: np.dtype,
) -> np.ndarray:
    """``Σ_taps`` of ``contribution(tap)`` ``(*lead, N, C, Ho, Wo)`` written back at the
    padded input positions the tap reads, ``(*lead, N, C, H, W)`` once unpadded.

    Tap ``t = i·k_W + j`` of window ``(y, x)`` reads padded row ``y·s + i·d`` and column
    ``x·s + j·d``; overlapping windows add (the transpose of a gather is a scatter-add).
    """
    geometry, (ho, wo) = layer._geometry(x_shape[2:])
    (top, bottom), (left, right) = geometry.padding
    n, c, h, w = x_shape
    grad_p = np.zeros((*lead, n, c, h + top + bottom, w + left + right), dtype=dtype)
    (sh, sw), (dh, dw) = layer.strides, layer.dilation_pair
    kw = layer.kernel[1]
    for tap in range(layer.kernel[0] * kw):
        i, j = divmod(tap, kw)
        rows = slice(i * dh, i * dh + sh * (ho - 1) + 1, sh)
        cols = slice(j * dw, j * dw + sw * (wo - 1) + 1, sw)
        grad_p[..., rows, cols] += contribution(tap)
    if not (top or bottom or left or right):
        return grad_p
    return np.ascontiguousarray(grad_p[..., top : top + h, left : left + w])


def _tap_views(layer: Any, T: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """Windows ``(V·N, C, kH, kW, Ho, Wo)`` of the zero-padded tangent stack, and its lead."""
    lead, inner = T.shape[:-4], T.shape[-4:]
    geometry, out = layer._geometry(inner[2:])
    flat = T.reshape(-1, *inner[1:])  # (V·N, C, H, W): a view of a contiguous stack
    return windows(pad(flat, geometry.padding), geometry, out), lead


class MaxPoolProducts:
    """Products of max pooling: a gather at each window's winner and its transpose."""

    product_equations = ("PROD.maxpool2d.vjp", "PROD.maxpool2d.jvp", "PROD.maxpool2d.residual")
    #: piecewise linear: the Hessian is zero wherever the winners are locally constant
    hessian_is_zero = True

    def input_vjp(self, cache: Any, M: np.ndarray) -> np.ndarray:
        """``J_xᵀ M`` (``PROD.maxpool2d.vjp``): each window's ``M[v, n, c, y, x]`` goes to its
        winner ``m(y, x)`` (first maximum, never a padding tap, last NaN; ``LAYER.maxpool2d``)
        and windows sharing a winner add. ``(V, N, C, H, W)``."""
        x = cache.input
        return max_pool_scatter(self, M, cache.index, x.shape, np.result_type(M, x))

    def input_jvp(self, cache: Any, T: np.ndarray) -> np.ndarray:
        """``J_x T`` (``PROD.maxpool2d.jvp``): ``(J_x T)[v, n, c, y, x] = T[v, n, c, m(y, x)]``,
        the tangent at the window's winner (the rule the forward recorded in the cache)."""
        view, lead = _tap_views(self, T)
        index = cache.index  # (N, C, Ho, Wo), broadcast over the V axis
        out = np.zeros((*lead, *index.shape), dtype=np.result_type(T, cache.input))
        kw = self.kernel[1]
        for tap in range(self.kernel[0] * kw):
            values = view[:, :, tap // kw, tap % kw].reshape(out.shape)  # splits V·N: no copy
            np.copyto(out, values, where=index == tap)  # a select: a NaN tangent stays put
        return out

    def param_jvp(self, cache: Any, T_params: dict[str, np.ndarray]) -> np.ndarray:
        raise ValueError(f"{self!r} has no parameters to take a tangent of")

    def residual(self, cache, dout, T, T_params=None):
        """Zero (``PROD.maxpool2d.residual``): out = x[m(y, x)] is a selection, linear in x
        on each region where the winners do not change; the kinks (ties) have measure zero."""
        return zero_residual(self, cache, T, T_params)


def max_pool_scatter(
    layer: Any, M: np.ndarray, index: np.ndarray, x_shape: tuple[int, ...], dtype: np.dtype
) -> np.ndarray:
    """``M`` ``(*lead, N, C, Ho, Wo)`` sent to the winning taps (``LAYER.maxpool2d``).

    ``M·[index = tap]`` is one multiplication when ``M`` is finite; NaN·0 would leak a NaN
    into windows the tap did not win, so a non-finite ``M`` takes the exact select.
    """
    finite = bool(np.isfinite(M).all())

    def contribution(tap: int) -> np.ndarray:
        won = index == tap
        return M * won if finite else np.where(won, M, 0)

    return scatter_taps(layer, x_shape, M.shape[:-4], contribution, dtype)


class AvgPoolProducts:
    """Products of average pooling, a linear map: the JVP is the forward on the tangent."""

    product_equations = ("PROD.avgpool2d.vjp", "PROD.avgpool2d.jvp", "PROD.avgpool2d.residual")
    hessian_is_zero = True

    def input_vjp(self, cache: Any, M: np.ndarray) -> np.ndarray:
        """``J_xᵀ M`` (``PROD.avgpool2d.vjp``): window ``(y, x)`` spreads ``M/D[y, x]`` over its
        ``k_H·k_W`` taps; padding taps are dropped. ``(V, N, C, H, W)``."""
        x = cache.input
        dtype = np.result_type(M, x)
        share = M / self.divisor(x.shape[2:]).astype(dtype)  # D in M's precision: no upcast
        return scatter_taps(self, x.shape, M.shape[:-4], lambda tap: share, dtype)

    def input_jvp(self, cache: Any, T: np.ndarray) -> np.ndarray:
        """``J_x T`` (``PROD.avgpool2d.jvp``): ``Σ_{i,j} T^p[ys + i, xs + j] / D[y, x]``."""
        view, lead = _tap_views(self, T)
        dtype = np.result_type(T, cache.input)
        total = view.sum(axis=(2, 3)).reshape(*lead, *cache.input.shape[:2], *view.shape[-2:])
        return total / self.divisor(cache.input.shape[2:]).astype(dtype)

    def param_jvp(self, cache: Any, T_params: dict[str, np.ndarray]) -> np.ndarray:
        raise ValueError(f"{self!r} has no parameters to take a tangent of")

    def residual(self, cache, dout, T, T_params=None):
        """Zero (``PROD.avgpool2d.residual``): out is linear in x."""
        return zero_residual(self, cache, T, T_params)


class GlobalAvgPoolProducts:
    """Products of the channel mean ``out[n, c] = (1/HW) Σ_{u,v} x[n, c, u, v]``."""

    product_equations = (
        "PROD.global-avgpool2d.vjp",
        "PROD.global-avgpool2d.jvp",
        "PROD.global-avgpool2d.residual",
    )
    hessian_is_zero = True

    def input_vjp(self, cache: Any, M: np.ndarray) -> np.ndarray:
        """``J_xᵀ M = M/(HW)`` at every position (``PROD.global-avgpool2d.vjp``)."""
        x = cache.input
        share = M / (x.shape[2] * x.shape[3])  # (V, N, C, 1, 1)
        return np.broadcast_to(share, (*M.shape[:-4], *x.shape)).copy()

    def input_jvp(self, cache: Any, T: np.ndarray) -> np.ndarray:
        """``J_x T = mean_{u,v} T`` ``(V, N, C, 1, 1)`` (``PROD.global-avgpool2d.jvp``)."""
        return T.mean(axis=(-2, -1), keepdims=True)

    def param_jvp(self, cache: Any, T_params: dict[str, np.ndarray]) -> np.ndarray:
        raise ValueError(f"{self!r} has no parameters to take a tangent of")

    def residual(self, cache, dout, T, T_params=None):
        """Zero (``PROD.global-avgpool2d.residual``): out is linear in x."""
        return zero_residual(self, cache, T, T_params)


# --------------------------------------------------------------------------- the winners
def _first_maximum(
    taps: list[np.ndarray], inside: list[np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Window maxima and the FIRST tap attaining each (torch's tie rule), for NaN-free taps.

    ``m = max_t tap_t`` by pairwise maxima; with ``ne_t = [tap_t ≠ m or tap t in the
    padding]`` the first index is ``ne₀(1 + ne₁(1 + … (1 + ne_{K−2})))``: it stops growing
    at the first tap inside the input equal to ``m``. Whole-array operations only — several
    times faster than a select per tap.
    """
    result = taps[0].copy()
    for values in taps[1:]:
        np.maximum(result, values, out=result)
    index = np.zeros(result.shape, dtype=np.int16)
    for tap in range(len(taps) - 2, -1, -1):
        index += 1
        differs = taps[tap] != result
        index *= differs if inside is None else differs | ~inside[tap]
    return result, index


def _first_maximum_with_nan(
    taps: list[np.ndarray], inside: list[np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray]:
    """torch's CPU rule written out, from ``max = −∞`` at the first tap inside the input:
    ``val > max || isnan(val)`` replaces the running maximum (so the LAST NaN wins)."""
    result = np.full(taps[0].shape, -np.inf, dtype=taps[0].dtype)
    index = np.full(result.shape, -1, dtype=np.int16)
    for tap, values in enumerate(taps):
        better = (values > result) | np.isnan(values)
        first = index < 0
        if inside is not None:
            better &= inside[tap]
            first &= inside[tap]
        better |= first  # the first tap inside the input starts the scan
        np.copyto(result, values, where=better)
        index[better] = tap
    return result, index
