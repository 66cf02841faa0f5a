"""The pooling layers' products on a leading axis of V vectors (``docs/products.md``).

Mixins of :class:`~manual_bp.layers.pooling.MaxPool2d`, ``AvgPool2d`` and
``GlobalAvgPool2d`` (kept apart from the forward/backward code of ``pooling.py``). Every
pooling map is linear in ``x`` between the points where a max-pool winner changes, so the
three share one pattern: the JVP applies the map to the tangent, the VJP scatters each
window's cotangent back over its taps, and the second-order residual is zero.

On ``D`` spatial axes (1-d and 3-d layers name the ``PROD.maxpool-nd.*`` and
``PROD.avgpool-nd.*`` IDs, the 2-d ones ``PROD.maxpool2d.*`` and ``PROD.avgpool2d.*``).
Leading axes: a stack ``(V, N, C, *S)`` is viewed as ``(V·N, C, *S)`` to pad it and to
take its windows (one strided view, no copy), and every per-tap product broadcasts a
``(N, C, Ho, Wo)`` quantity (a winner mask, a divisor) over the V axis; the only Python loop
is over the ``Π k_a`` taps, as in the backward passes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp.layers.base import zero_residual
from manual_bp.layers.pooling_geometry import scatter_taps, tap_views, tiles, to_winners

__all__ = ["AvgPoolProducts", "GlobalAvgPoolProducts", "MaxPoolProducts", "scatter_taps"]


def _tap_views(layer: Any, T: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """Windows ``(V·N, C, *k, *S_out)`` of the zero-padded tangent stack, and its lead."""
    d = layer.dims
    lead, inner = T.shape[: -(d + 2)], T.shape[-(d + 2) :]
    flat = T.reshape(-1, *inner[1:])  # (V·N, C, *S): a view of a contiguous stack
    return layer._windows(flat)[0], lead


class MaxPoolProducts:
    """Products of max pooling: a gather at each window's winner and its transpose."""

    product_equations = ("PROD.maxpool2d.vjp", "PROD.maxpool2d.jvp", "PROD.maxpool2d.residual")
    #: piecewise linear: the Hessian is zero wherever the winners are locally constant
    hessian_is_zero = True

    def input_vjp(self, cache: Any, M: np.ndarray) -> np.ndarray:
        """``J_xᵀ M`` (``PROD.maxpool2d.vjp``, ``PROD.maxpool-nd.vjp``): each window's
        ``M[v, n, c, y]`` goes to its winner ``m(y)`` (first maximum, never a padding tap,
        last NaN; ``LAYER.maxpool2d``) and windows sharing a winner add. ``(V, N, C, *S)``."""
        x = cache.input
        return max_pool_scatter(self, M, cache.index, x.shape, np.result_type(M, x))

    def input_jvp(self, cache: Any, T: np.ndarray) -> np.ndarray:
        """``J_x T`` (``PROD.maxpool2d.jvp``, ``PROD.maxpool-nd.jvp``):
        ``(J_x T)[v, n, c, y] = T[v, n, c, m(y)]``, the tangent at the window's winner (the
        rule the forward recorded in the cache)."""
        index = cache.index  # (N, C, Ho, Wo), broadcast over the V axis
        if tiles(self, cache.input.shape) and np.isfinite(T).all():
            return _tiled_gather(self, T, index, np.result_type(T, cache.input))
        view, lead = _tap_views(self, T)
        out = np.zeros((*lead, *index.shape), dtype=np.result_type(T, cache.input))
        for tap in range(int(np.prod(self.kernel))):
            at = (slice(None), slice(None), *np.unravel_index(tap, self.kernel))
            values = view[at].reshape(out.shape)  # splits V·N: no copy
            np.copyto(out, values, where=index == tap)  # a select: a NaN tangent stays put
        return out

    def param_jvp(self, cache: Any, T_params: dict[str, np.ndarray]) -> np.ndarray:
        raise ValueError(f"{self!r} has no parameters to take a tangent of")

    def residual(self, cache, dout, T, T_params=None):
        """Zero (``PROD.maxpool2d.residual``, ``PROD.maxpool-nd.residual``): out = x[m(y)]
        is a selection, linear in x on each region where the winners do not change; the
        kinks (ties) have measure zero."""
        return zero_residual(self, cache, T, T_params)


def max_pool_scatter(
    layer: Any, M: np.ndarray, index: np.ndarray, x_shape: tuple[int, ...], dtype: np.dtype
) -> np.ndarray:
    """``M`` ``(*lead, N, C, Ho, Wo)`` sent to the winning taps (``LAYER.maxpool2d``).

    ``M·[index = tap]`` is one multiplication when ``M`` is finite; NaN·0 would leak a NaN
    into windows the tap did not win, so a non-finite ``M`` takes the exact select.
    """
    finite = bool(np.isfinite(M).all())
    lead = M.shape[: -(layer.dims + 2)]
    if finite and tiles(layer, x_shape):
        # each input position in one window: every tap slice written once (no scatter-add)
        out = np.empty((*lead, *x_shape), dtype=dtype)
        return to_winners(out, M, index, layer.kernel, np.empty(index.shape, dtype=bool))

    def contribution(tap: int) -> np.ndarray:
        won = index == tap
        return M * won if finite else np.where(won, M, 0)

    return scatter_taps(layer, x_shape, lead, contribution, dtype)


def _tiled_gather(layer: Any, T: np.ndarray, index: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``MaxPoolProducts.input_jvp`` when the windows tile the input and ``T`` is finite:
    ``Σ_taps T_tap·[tap won]`` (exactly one term is nonzero per window), products on the
    tiled views in place of selects (``copyto(where=)`` is several times slower)."""
    taps = tap_views(np.ascontiguousarray(T, dtype=dtype), layer.kernel)
    out = np.empty(taps[0].shape, dtype=dtype)
    term = np.empty_like(out)
    won = np.empty(index.shape, dtype=bool)
    for tap, values in enumerate(taps):
        np.equal(index, tap, out=won)
        np.multiply(values, won, out=term if tap else out)
        if tap:
            out += term
    return out


class AvgPoolProducts:
    """Products of average pooling, a linear map: the JVP is the forward on the tangent."""

    product_equations = ("PROD.avgpool2d.vjp", "PROD.avgpool2d.jvp", "PROD.avgpool2d.residual")
    hessian_is_zero = True

    def input_vjp(self, cache: Any, M: np.ndarray) -> np.ndarray:
        """``J_xᵀ M`` (``PROD.avgpool2d.vjp``, ``PROD.avgpool-nd.vjp``): window ``y``
        spreads ``M/D[y]`` over its ``Π k_a`` taps; padding taps are dropped. ``(V, N, C, *S)``."""
        x = cache.input
        dtype = np.result_type(M, x)
        share = M / self.divisor(x.shape[2:]).astype(dtype)  # D in M's precision: no upcast
        if tiles(self, x.shape):  # each position in one window: every tap slice written once
            out = np.empty((*M.shape[: -(self.dims + 2)], *x.shape), dtype=dtype)
            for target in tap_views(out, self.kernel):
                target[...] = share
            return out
        return scatter_taps(self, x.shape, M.shape[: -(self.dims + 2)], lambda tap: share, dtype)

    def input_jvp(self, cache: Any, T: np.ndarray) -> np.ndarray:
        """``J_x T`` (``PROD.avgpool2d.jvp``, ``PROD.avgpool-nd.jvp``):
        ``Σ_i T^p[y·s + i] / D[y]``."""
        view, lead = _tap_views(self, T)
        dtype = np.result_type(T, cache.input)
        d = self.dims
        total = view.sum(axis=tuple(range(2, 2 + d)))
        total = total.reshape(*lead, *cache.input.shape[:2], *total.shape[2:])
        return total / self.divisor(cache.input.shape[2:]).astype(dtype)

    def param_jvp(self, cache: Any, T_params: dict[str, np.ndarray]) -> np.ndarray:
        raise ValueError(f"{self!r} has no parameters to take a tangent of")

    def residual(self, cache, dout, T, T_params=None):
        """Zero (``PROD.avgpool2d.residual``, ``PROD.avgpool-nd.residual``): out is linear in x."""
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
    index = np.zeros(result.shape, dtype=np.int16 if len(taps) < 2**15 else np.int64)
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
    index = np.full(result.shape, -1, dtype=np.int16 if len(taps) < 2**15 else np.int64)
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
