"""Max pooling over arbitrary per-axis windows, and the products of a selection.

Adaptive max pooling (windows ``[⌊yS/O⌋, ⌈(y+1)S/O⌉)``) and fractional max pooling (windows
``[seq[y], seq[y] + k)``) both pick, in each window, the first maximal input in row-major
order (a NaN: the last NaN; torch's ``val > max || isnan(val)`` scan), and both record
torch's flat index ``Σ_a u_a·Π_{b>a} S_b`` of the winner. Everything after the forward
reads only those indices: the layer is ``out = x[m(y)]``, a selection, so

* ``∂C/∂x[u] = Σ_{y : m(y) = u} δ[y]`` — a scatter-add (overlapping windows add);
* the JVP gathers the tangent at the winners, ``(J_x T)[y] = T[m(y)]``;
* the second-order residual is zero (linear where the winners are locally constant).

The classes name their own IDs (``PROD.adaptive-maxpool.*``, ``PROD.fractional-maxpool.*``).
Derivations: ``docs/pooling.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from manual_bp.layers.base import Cache, zero_residual
from manual_bp.layers.pooling_products import _first_maximum, _first_maximum_with_nan

__all__ = ["SelectCache", "SelectionProducts", "select_gather", "select_scatter", "window_maximum"]


@dataclass
class SelectCache(Cache):
    """``input`` x, ``indices`` (torch's flat index of each window's winner) and, for
    fractional pooling, ``samples``: ``(the (N, C, D) samples,)`` — in a tuple, so that a
    perturbation of the cache's float arrays (the oracle's rounding model) leaves the
    windows alone."""

    indices: np.ndarray
    samples: tuple = ()


def window_maximum(
    x: np.ndarray, starts: list[np.ndarray], ends: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Maxima of ``x (N, C, *S)`` over the windows ``Π_a [starts_a[y_a], ends_a[y_a])`` and
    torch's flat index of each window's winner, both ``(N, C, *O)``.

    Tap ``t ↔ (i_a)`` of window ``y`` reads ``u_a = starts_a[y_a] + i_a`` when inside the
    window; windows shorter than the longest have taps that read nothing (they never win).
    """
    size = x.shape[2:]
    d = len(size)
    out = tuple(len(s) for s in starts)
    longest = [int((e - s).max()) if len(s) else 1 for s, e in zip(starts, ends, strict=True)]
    taps, inside, flats = [], [], []
    for offsets in np.ndindex(*longest):
        where: list[np.ndarray] = []
        valid = np.ones((1,) * d, dtype=bool)
        flat = np.zeros((1,) * d, dtype=np.int64)
        for a in range(d):
            shape = [1] * d
            shape[a] = -1
            position = starts[a] + offsets[a]
            valid = valid & (position < ends[a]).reshape(shape)
            position = np.minimum(position, size[a] - 1).reshape(shape)
            where.append(position)
            flat = flat * size[a] + position
        mask = np.broadcast_to(valid, out)
        taps.append(np.where(mask, x[(..., *where)], -np.inf).astype(x.dtype, copy=False))
        inside.append(mask)
        flats.append(np.broadcast_to(flat, out))
    if np.isnan(x).any():
        result, index = _first_maximum_with_nan(taps, inside)
    else:
        result, index = _first_maximum(taps, inside)
    indices = np.zeros(index.shape, dtype=np.int64)
    for tap, flat in enumerate(flats):
        np.copyto(indices, flat, where=index == tap)
    return result, indices


def select_scatter(
    M: np.ndarray, indices: np.ndarray, x_shape: tuple[int, ...], dtype: Any
) -> np.ndarray:
    """``M (*lead, N, C, *O)`` added into zeros ``(*lead, N, C, *S)`` at ``indices (N, C, *O)``
    (one ``bincount`` over the flattened targets: windows sharing a winner add)."""
    n, c = x_shape[:2]
    plane = int(np.prod(x_shape[2:]))
    lead = M.shape[: M.ndim - indices.ndim]
    groups = int(np.prod(lead)) * n * c
    windows = int(np.prod(indices.shape[2:]))  # explicit: an empty batch has no -1
    targets = indices.reshape(n * c, windows) + (np.arange(n * c) * plane)[:, None]
    targets = targets[None] + (np.arange(int(np.prod(lead))) * n * c * plane)[:, None, None]
    total = np.bincount(targets.ravel(), weights=M.ravel(), minlength=groups * plane)
    return total.reshape(*lead, *x_shape).astype(dtype, copy=False)


def select_gather(T: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """``T (*lead, N, C, *S)`` read at ``indices (N, C, *O)``: ``(*lead, N, C, *O)``."""
    d = indices.ndim - 2
    lead = T.shape[: T.ndim - d - 2]
    flat = T.reshape(*T.shape[: T.ndim - d], int(np.prod(T.shape[T.ndim - d :])))
    windows = int(np.prod(indices.shape[2:]))  # explicit: an empty batch has no -1
    where = np.broadcast_to(
        indices.reshape(*indices.shape[:2], windows), (*lead, *indices.shape[:2], windows)
    )
    return np.take_along_axis(flat, where, axis=-1).reshape(*lead, *indices.shape)


class SelectionProducts:
    """Products of ``out = x[m(y)]`` (the winners' flat indices in ``cache.indices``)."""

    hessian_is_zero = True

    def input_vjp(self, cache: Any, M: np.ndarray) -> np.ndarray:
        """``J_xᵀ M``: each window's ``M`` sent to its winner, windows sharing one adding
        (``PROD.adaptive-maxpool.vjp``, ``PROD.fractional-maxpool.vjp``)."""
        x = cache.input
        return select_scatter(M, cache.indices, x.shape, np.result_type(M, x))

    def input_jvp(self, cache: Any, T: np.ndarray) -> np.ndarray:
        """``J_x T = T[m(y)]``, the tangent at each winner (``PROD.adaptive-maxpool.jvp``,
        ``PROD.fractional-maxpool.jvp``)."""
        return select_gather(T, cache.indices).astype(np.result_type(T, cache.input), copy=False)

    def param_jvp(self, cache: Any, T_params: dict[str, np.ndarray]) -> np.ndarray:
        raise ValueError(f"{self!r} has no parameters to take a tangent of")

    def residual(self, cache, dout, T, T_params=None):
        """Zero (``PROD.adaptive-maxpool.residual``, ``PROD.fractional-maxpool.residual``): a
        selection is linear in x where the winners do not change."""
        return zero_residual(self, cache, T, T_params)
