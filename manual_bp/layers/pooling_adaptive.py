"""Adaptive pooling on 1, 2 or 3 axes: ``AdaptiveAvgPool1d/2d/3d`` and
``AdaptiveMaxPool1d/2d/3d`` (torch's, with ``return_indices``).

Output index ``y`` of ``O`` on an axis of size ``S`` pools input positions
``[⌊y·S/O⌋, ⌈(y+1)·S/O⌉)`` (torch's ``start_index``/``end_index``), so the windows may
overlap and differ in size. With ``B_a (O_a, S_a)`` the 0/1 matrix of axis ``a``'s windows
and ``D[y] = Π_a |window_a(y_a)|`` (equations ``LAYER.adaptive-avgpool2d``,
``LAYER.adaptive-avgpool-nd``)::

    out = (x ×₁ B_1 ×₂ B_2 …) / D,     ∂C/∂x = (δ / D) ×₁ B_1ᵀ ×₂ B_2ᵀ …

(``×_a``: the product along axis ``a``) — a linear map, so its JVP is the forward on the
tangent, its VJP the backward on each cotangent and its second-order residual zero
(``PROD.adaptive-avgpool2d.*``, ``PROD.adaptive-avgpool-nd.*``). The 0/1 matrices make the
window sums exact sums (as torch's loop), divided once by ``D``. Adaptive MAX pooling over
the same windows is a selection (``LAYER.adaptive-maxpool``;
:mod:`~manual_bp.layers.pooling_select`). ``output_size`` is an int or a tuple; ``None``
keeps that axis's input size. ``AdaptiveAvgPool2d(1)`` is
:class:`~manual_bp.layers.pooling.GlobalAvgPool2d`'s map. Derivation: ``docs/pooling.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp.layers._unbatched import UnbatchedCache, unbatched
from manual_bp.layers.base import Cache, Layer, check_input, register_layer, zero_residual
from manual_bp.layers.pooling_select import (
    SelectCache,
    SelectionProducts,
    select_scatter,
    window_maximum,
)
from manual_bp.layers.pooling_steps import AdaptivePoolStep

__all__ = [
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveAvgPool3d",
    "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d",
    "AdaptiveMaxPool3d",
    "adaptive_bounds",
    "adaptive_windows",
]

_AXES = {1: "(C, L)", 2: "(C, H, W)", 3: "(C, D, H, W)"}


def adaptive_bounds(size: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """torch's windows ``[⌊y·size/out⌋, ⌈(y+1)·size/out⌉)``, ``y = 0 … out − 1``."""
    y = np.arange(out)
    return (y * size) // out, -((-(y + 1) * size) // out)  # the ceiling in integers


def adaptive_windows(size: int, out: int) -> np.ndarray:
    """``B (out, size)``: ``B[y, u] = 1`` for ``⌊y·size/out⌋ ≤ u < ⌈(y+1)·size/out⌉``."""
    start, end = adaptive_bounds(size, out)
    u = np.arange(size)
    return ((u >= start[:, None]) & (u < end[:, None])).astype(np.float64)


def along(A: np.ndarray, B: np.ndarray, axis: int) -> np.ndarray:
    """``A ×_axis B``: ``B (O, S)`` applied to axis ``axis`` of ``A`` (size S -> O)."""
    return np.moveaxis(np.moveaxis(A, axis, -1) @ B.T, -1, axis)


class _AdaptiveNd(Layer):
    """Shared frame: ``output_size`` parsing, shapes and the windows on ``dims`` axes."""

    dims = 2
    batched_ndim = 4
    hyperparameters: tuple[str, ...] = ("output_size",)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.batched_ndim = cls.dims + 2

    def __init__(self, output_size: Any) -> None:
        super().__init__()
        tuple_given = isinstance(output_size, (tuple, list))
        items = tuple(output_size) if tuple_given else (output_size,) * self.dims
        if len(items) != self.dims or any(
            v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0)
            for v in items
        ):
            raise ValueError(
                f"output_size must be an integer ≥ 0 or {self.dims} of them (or None), "
                f"got {output_size!r}"
            )
        # a tuple as torch keeps it (and as a JSON list comes back)
        self.output_size = tuple(items) if tuple_given else output_size
        self.sizes = tuple(None if v is None else int(v) for v in items)

    def _out(self, size: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(size[a] if self.sizes[a] is None else self.sizes[a] for a in range(self.dims))

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = tuple(input_shape)
        if len(shape) != self.dims + 1:
            raise ValueError(f"{self!r} needs per-sample inputs {_AXES[self.dims]}, got {shape}")
        if min(shape[1:]) < 1:
            raise ValueError(f"{self!r}: input {shape} has an empty spatial axis (as torch)")
        return (shape[0], *self._out(shape[1:]))

    def _check_dout(self, dout: np.ndarray, x: np.ndarray) -> None:
        expected = (x.shape[0], *self.output_shape(x.shape[1:]))
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
        return f"{type(self).__name__}({self.output_size!r})"


class AdaptiveAvgPoolNd(_AdaptiveNd):
    """Adaptive average pooling on ``dims`` axes (``LAYER.adaptive-avgpool2d`` in 2-d,
    ``LAYER.adaptive-avgpool-nd`` in 1-d and 3-d): ``out = (x ×₁ B_1 …) / D``."""

    hessian_is_zero = True

    def fast_step(self) -> AdaptivePoolStep:
        """Training's fast form: an output size dividing the input size is a tiled plain
        pool (:mod:`~manual_bp.layers.pooling_steps`); others the readable form."""
        return AdaptivePoolStep(self, "avg")

    def _maps(self, size: tuple[int, ...], dtype: Any) -> tuple[list[np.ndarray], np.ndarray]:
        """The ``B_a`` of input size ``size`` and ``D``, in ``dtype``."""
        out = self._out(size)
        maps = [adaptive_windows(size[a], out[a]) for a in range(self.dims)]
        divisor = maps[0].sum(axis=1)
        for B in maps[1:]:
            divisor = np.multiply.outer(divisor, B.sum(axis=1))
        return [B.astype(dtype) for B in maps], divisor.astype(dtype)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        """``(x ×₁ B_1 ×₂ B_2 …) / D``, ``(N, C, *S) -> (N, C, *O)``."""
        check_input(x, self, ndim=self.dims + 2, name="x")
        self.output_shape(x.shape[1:])
        return self._apply(x, x.shape[2:], x.dtype), Cache(x)

    def _apply(self, A: np.ndarray, size: tuple[int, ...], dtype: Any) -> np.ndarray:
        maps, divisor = self._maps(size, dtype)
        for a, B in enumerate(maps):
            A = along(A, B, A.ndim - self.dims + a)
        return A / divisor

    def _transpose(self, A: np.ndarray, size: tuple[int, ...], dtype: Any) -> np.ndarray:
        maps, divisor = self._maps(size, dtype)
        A = A / divisor
        for a, B in enumerate(maps):
            A = along(A, B.T, A.ndim - self.dims + a)
        return A

    def backward(self, dout: np.ndarray, cache: Cache) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``∂C/∂x = (δ / D) ×₁ B_1ᵀ …`` (each window spreads its ``δ/D`` over its
        positions; overlapping windows add)."""
        x = cache.input
        self._check_dout(dout, x)
        return self._transpose(dout, x.shape[2:], x.dtype).astype(x.dtype, copy=False), {}

    # ------------------------------------------------------------------ products (V axis)
    def input_vjp(self, cache: Cache, M: np.ndarray) -> np.ndarray:
        """``J_xᵀ M = (M / D) ×₁ B_1ᵀ …`` per cotangent (``PROD.adaptive-avgpool2d.vjp``,
        ``PROD.adaptive-avgpool-nd.vjp``)."""
        x = cache.input
        return self._transpose(M, x.shape[2:], np.result_type(M, x))

    def input_jvp(self, cache: Cache, T: np.ndarray) -> np.ndarray:
        """``J_x T = (T ×₁ B_1 …) / D``, the forward on each tangent
        (``PROD.adaptive-avgpool2d.jvp``, ``PROD.adaptive-avgpool-nd.jvp``)."""
        x = cache.input
        return self._apply(T, x.shape[2:], np.result_type(T, x))

    def param_jvp(self, cache: Cache, T_params: dict[str, np.ndarray]) -> np.ndarray:
        raise ValueError(f"{self!r} has no parameters to take a tangent of")

    def residual(self, cache, dout, T, T_params=None):
        """Zero (``PROD.adaptive-avgpool2d.residual``, ``PROD.adaptive-avgpool-nd.residual``):
        the map is linear in x."""
        return zero_residual(self, cache, T, T_params)


@register_layer
@unbatched
class AdaptiveAvgPool1d(AdaptiveAvgPoolNd):
    """``torch.nn.AdaptiveAvgPool1d`` (equation ``LAYER.adaptive-avgpool-nd``)."""

    name, dims, equation = "adaptive-avgpool1d", 1, "LAYER.adaptive-avgpool-nd"
    aliases = ("adaptiveavgpool1d",)
    product_equations = (
        "PROD.adaptive-avgpool-nd.vjp",
        "PROD.adaptive-avgpool-nd.jvp",
        "PROD.adaptive-avgpool-nd.residual",
    )


@register_layer
@unbatched
class AdaptiveAvgPool2d(AdaptiveAvgPoolNd):
    """``torch.nn.AdaptiveAvgPool2d``. Equation ``LAYER.adaptive-avgpool2d``:
    ``out = (B_H x B_Wᵀ) / D``, ``∂C/∂x = B_Hᵀ (δ / D) B_W``.

    Parameters
    ----------
    output_size : int, or a pair of ints / ``None`` (``None``: that axis keeps its size)
    """

    name, dims, equation = "adaptive-avgpool2d", 2, "LAYER.adaptive-avgpool2d"
    aliases = ("adaptiveavgpool2d",)
    product_equations = (
        "PROD.adaptive-avgpool2d.vjp",
        "PROD.adaptive-avgpool2d.jvp",
        "PROD.adaptive-avgpool2d.residual",
    )


@register_layer
@unbatched
class AdaptiveAvgPool3d(AdaptiveAvgPoolNd):
    """``torch.nn.AdaptiveAvgPool3d`` (equation ``LAYER.adaptive-avgpool-nd``)."""

    name, dims, equation = "adaptive-avgpool3d", 3, "LAYER.adaptive-avgpool-nd"
    aliases = ("adaptiveavgpool3d",)
    product_equations = (
        "PROD.adaptive-avgpool-nd.vjp",
        "PROD.adaptive-avgpool-nd.jvp",
        "PROD.adaptive-avgpool-nd.residual",
    )


class AdaptiveMaxPoolNd(SelectionProducts, _AdaptiveNd):
    """Adaptive max pooling on ``dims`` axes. Equation ``LAYER.adaptive-maxpool``:
    ``out[y] = x[m(y)]``, ``m(y)`` the first maximum of window ``Π_a [⌊y_a S_a/O_a⌋,
    ⌈(y_a+1) S_a/O_a⌉)``; ∂C/∂x[u] = Σ_{y : m(y) = u} δ[y].

    ``return_indices=True``: ``layer(x)`` returns ``(out, indices)`` as torch's module does
    (:meth:`indices` reads them off a forward's cache).
    """

    equation = "LAYER.adaptive-maxpool"
    product_equations = (
        "PROD.adaptive-maxpool.vjp",
        "PROD.adaptive-maxpool.jvp",
        "PROD.adaptive-maxpool.residual",
    )
    hyperparameters = ("output_size", "return_indices")

    def __init__(self, output_size: Any, return_indices: bool = False) -> None:
        super().__init__(output_size)
        if not isinstance(return_indices, (bool, np.bool_)):
            raise TypeError(f"return_indices must be True or False, got {return_indices!r}")
        self.return_indices = bool(return_indices)

    def fast_step(self) -> AdaptivePoolStep:
        """Training's fast form: an output size dividing the input size is a tiled plain
        pool (:mod:`~manual_bp.layers.pooling_steps`); others the readable form."""
        return AdaptivePoolStep(self, "max")

    def __call__(self, x: np.ndarray) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """torch's module call: ``out``, or ``(out, indices)`` with ``return_indices``."""
        out, cache = self.forward(x)
        return (out, self.indices(cache)) if self.return_indices else out

    def indices(self, cache: SelectCache | UnbatchedCache) -> np.ndarray:
        """torch's ``indices`` (``int64``, out's shape): the winner's flat index in ``S``."""
        if isinstance(cache, UnbatchedCache):
            return self.indices(cache.inner)[0]
        return cache.indices

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, SelectCache]:
        """``LAYER.adaptive-maxpool``: ``(N, C, *S) -> (N, C, *O)``, each window's first
        maximum (its flat index cached)."""
        check_input(x, self, ndim=self.dims + 2, name="x")
        self.output_shape(x.shape[1:])
        out = self._out(x.shape[2:])
        bounds = [adaptive_bounds(s, o) for s, o in zip(x.shape[2:], out, strict=True)]
        result, indices = window_maximum(x, [b[0] for b in bounds], [b[1] for b in bounds])
        return result, SelectCache(x, indices)

    def backward(
        self, dout: np.ndarray, cache: SelectCache
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``LAYER.adaptive-maxpool``: each window's δ added at its winner."""
        x = cache.input
        self._check_dout(dout, x)
        return select_scatter(dout, cache.indices, x.shape, x.dtype), {}


@register_layer
@unbatched
class AdaptiveMaxPool1d(AdaptiveMaxPoolNd):
    """``torch.nn.AdaptiveMaxPool1d`` (equation ``LAYER.adaptive-maxpool``)."""

    name, dims = "adaptive-maxpool1d", 1


@register_layer
@unbatched
class AdaptiveMaxPool2d(AdaptiveMaxPoolNd):
    """``torch.nn.AdaptiveMaxPool2d`` (equation ``LAYER.adaptive-maxpool``)."""

    name, dims = "adaptive-maxpool2d", 2


@register_layer
@unbatched
class AdaptiveMaxPool3d(AdaptiveMaxPoolNd):
    """``torch.nn.AdaptiveMaxPool3d`` (equation ``LAYER.adaptive-maxpool``)."""

    name, dims = "adaptive-maxpool3d", 3
