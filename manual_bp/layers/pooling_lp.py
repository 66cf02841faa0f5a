"""Power-average pooling ``LPPool1d/2d/3d`` (torch's): ``out = (Σ_window x^p)^{1/p}``.

torch computes it as ``(K·avg_pool(x^p))^{1/p}`` with ``K = Π k_a`` (no padding; with
``ceil_mode`` a clipped window's average divides by its clipped count, so ``K·avg`` is not
its sum — kept, as torch). With ``a[y] = avg(x^p)[y]``, ``f = K·a`` and ``h(f) = f^{1/p}``
(equation ``LAYER.lppool``)::

    ∂C/∂x[u] = p·x[u]^{p−1} · Σ_{windows y ∋ u} (K/c[y]) · h'(f[y]) · δ[y] · [a[y] ≠ 0]

with ``h'(f) = f^{1/p − 1}/p`` and ``c[y]`` the window's count. At a zero window (``a = 0``)
torch's chain ``sign(a)·relu(|a|)`` passes no gradient (``relu``'s backward selects 0 where
its input is 0), so the window sends 0, not ``0·∞``: the bracket. Its products:
``PROD.lppool.*`` (the residual is not zero: ``h`` and ``x^p`` curve). Derivation:
``docs/pooling.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp.layers._unbatched import unbatched
from manual_bp.layers.base import Cache, Layer, check_input, register_layer, zero_residual
from manual_bp.layers.pooling import AvgPoolNd
from manual_bp.layers.pooling_steps import LPPoolStep

__all__ = ["LPPool1d", "LPPool2d", "LPPool3d", "LPPoolNd"]


class _Average1d(AvgPoolNd):
    name, dims = "lppool-average1d", 1


class _Average2d(AvgPoolNd):
    name, dims = "lppool-average2d", 2


class _Average3d(AvgPoolNd):
    name, dims = "lppool-average3d", 3


_AVERAGES = {1: _Average1d, 2: _Average2d, 3: _Average3d}


class LPPoolNd(Layer):
    """Power-average pooling on ``dims`` axes (equation ``LAYER.lppool``)."""

    dims = 2
    batched_ndim = 4
    equation = "LAYER.lppool"
    product_equations = ("PROD.lppool.vjp", "PROD.lppool.jvp", "PROD.lppool.residual")
    hyperparameters = ("norm_type", "kernel_size", "stride", "ceil_mode")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.batched_ndim = cls.dims + 2

    def __init__(
        self,
        norm_type: float,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] | None = None,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(norm_type, bool) or not isinstance(norm_type, (int, float, np.number)):
            raise TypeError(f"norm_type must be a number, got {norm_type!r}")
        if not norm_type > 0:
            raise ValueError(f"norm_type must be positive, got {norm_type!r}")
        self.norm_type = float(norm_type) if isinstance(norm_type, np.number) else norm_type
        # JSON gives back lists: one spelling (a tuple) whatever the round trip
        kernel_size, stride = (
            tuple(v) if isinstance(v, list) else v for v in (kernel_size, stride)
        )
        self.kernel_size, self.stride, self.ceil_mode = kernel_size, stride, bool(ceil_mode)
        # the window averages torch takes: avg_pool(x^p) without padding, ceil_mode as given
        self.average = _AVERAGES[self.dims](kernel_size, stride, 0, ceil_mode)
        self.kernel = self.average.kernel

    def fast_step(self) -> LPPoolStep:
        """Training's fast form: the average pool's step inside torch's composition
        (:mod:`~manual_bp.layers.pooling_steps`)."""
        return LPPoolStep(self)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return self.average.output_shape(input_shape)

    @classmethod
    def from_shape(cls, input_shape, *args, n_outputs=None, **kwargs) -> Layer:
        layer = cls(*args, **kwargs)
        layer.output_shape(tuple(input_shape))
        return layer

    def _terms(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``a = avg(x^p)``, ``f = K·a`` and the window counts ``c`` (in x's precision)."""
        with np.errstate(invalid="ignore"):  # a negative x to a fractional p: NaN, as torch's
            powered = np.power(x, x.dtype.type(self.norm_type))
        a = self.average.forward(powered)[0]
        count = self.average.divisor(x.shape[-self.dims :]).astype(x.dtype)
        return a, a * x.dtype.type(np.prod(self.kernel)), count

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        """``LAYER.lppool``: ``(K·avg(x^p))^{1/p}``, ``(N, C, *S) -> (N, C, *S_out)``."""
        check_input(x, self, ndim=self.dims + 2, name="x")
        self.output_shape(x.shape[1:])
        _, f, _ = self._terms(x)
        with np.errstate(invalid="ignore"):  # a negative f: NaN, as torch's pow
            return np.power(f, x.dtype.type(1.0 / self.norm_type)), Cache(x)

    def _coefficients(self, x: np.ndarray, dtype: Any) -> tuple[np.ndarray, ...]:
        """Per window: ``g1 = (K/c)·h'(f)`` and ``g2 = (K/c)²·h''(f)`` (0 at a zero window),
        and per input ``x^{p−1}·p`` and ``p(p−1)·x^{p−2}``."""
        p = self.norm_type
        a, f, count = self._terms(x)
        K = np.prod(self.kernel)
        with np.errstate(divide="ignore", invalid="ignore"):
            live = a != 0
            safe = np.where(live, f, 1)
            g1 = np.where(live, (K / count) * np.power(safe, 1 / p - 1) / p, 0).astype(dtype)
            second = (1 / p) * (1 / p - 1) * np.power(safe, 1 / p - 2)
            g2 = np.where(live, (K / count) ** 2 * second, 0).astype(dtype)
            d1 = (p * np.power(x, p - 1)).astype(dtype)
            d2 = (
                np.zeros_like(x, dtype=dtype)
                if p == 1
                else (p * (p - 1) * np.power(x, p - 2)).astype(dtype)
            )
        return g1, g2, d1, d2

    def _spread(self, x: np.ndarray, share: np.ndarray) -> np.ndarray:
        """``Σ_{windows y ∋ u} share[y]`` (``share (…, N, C, *S_out)``), the avg pool's
        transpose without its divisor."""
        count = self.average.divisor(x.shape[-self.dims :]).astype(share.dtype)
        return self.average.input_vjp(_Shadow(x), share * count)

    def backward(self, dout: np.ndarray, cache: Cache) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``LAYER.lppool``: ``p·x^{p−1} · Σ_{y ∋ u} (K/c)·h'(f)·δ`` (zero windows send 0)."""
        x = cache.input
        expected = (x.shape[0], *self.output_shape(x.shape[1:]))
        if not isinstance(dout, np.ndarray) or dout.shape != expected:
            raise ValueError(
                f"{self!r}: upstream gradient has shape {np.shape(dout)}, expected {expected}"
            )
        g1, _, d1, _ = self._coefficients(x, x.dtype)
        share = np.where(g1 != 0, g1 * dout, 0)  # a zero window sends 0 even for an ∞ δ
        return (d1 * self._spread(x, share[None])[0]).astype(x.dtype, copy=False), {}

    # ------------------------------------------------------------------ products (V axis)
    def input_vjp(self, cache: Cache, M: np.ndarray) -> np.ndarray:
        """``J_xᵀ M = p·x^{p−1} · Σ_{y ∋ u} (K/c)·h'(f)·M[y]`` (``PROD.lppool.vjp``)."""
        x = cache.input
        g1, _, d1, _ = self._coefficients(x, np.result_type(M, x))
        return d1 * self._spread(x, np.where(g1 != 0, g1 * M, 0))

    def _tangent_sum(self, x: np.ndarray, T: np.ndarray, d1: np.ndarray) -> np.ndarray:
        """``Σ_{i ∈ window y} p·x_i^{p−1}·T_i`` (``(V, N, C, *S_out)``)."""
        count = self.average.divisor(x.shape[-self.dims :]).astype(T.dtype)
        return self.average.input_jvp(_Shadow(x), d1 * T) * count

    def input_jvp(self, cache: Cache, T: np.ndarray) -> np.ndarray:
        """``J_x T = (K/c)·h'(f)·Σ_{i ∈ y} p·x_i^{p−1}·T_i`` (``PROD.lppool.jvp``)."""
        x = cache.input
        g1, _, d1, _ = self._coefficients(x, np.result_type(T, x))
        return g1 * self._tangent_sum(x, T, d1)

    def param_jvp(self, cache: Cache, T_params: dict[str, np.ndarray]) -> np.ndarray:
        raise ValueError(f"{self!r} has no parameters to take a tangent of")

    def residual(self, cache, dout, T, T_params=None):
        """``PROD.lppool.residual``: ``Σ_y δ[y]·∇²out[y]·T`` =
        ``p·x^{p−1} · Σ_{y ∋ u} (K/c)²·h''(f)·δ·(Σ_{i∈y} p·x_i^{p−1} T_i)
        + p(p−1)·x^{p−2}·T · Σ_{y ∋ u} (K/c)·h'(f)·δ`` (zero windows and windows of one
        element: 0). No input tangent (``T`` None: the layer has no parameters): zero."""
        if T is None:
            return zero_residual(self, cache, T, T_params)
        x = cache.input
        dtype = np.result_type(T, x, dout)
        g1, g2, d1, d2 = self._coefficients(x, dtype)
        # a window of one element is out = (K/c)^{1/p}·|x|: linear on each side of 0, its
        # Hessian exactly 0 (the two terms below cancel in exact arithmetic, not in floats)
        several = self.average.divisor(x.shape[-self.dims :]) > 1
        g1, g2 = np.where(several, g1, 0), np.where(several, g2, 0)
        first = d1 * self._spread(x, g2 * dout * self._tangent_sum(x, T, d1))
        second = d2 * T * self._spread(x, (g1 * dout)[None])
        return first + second, {}


class _Shadow:
    """A stand-in cache (``input`` only) for the inner average pooling's products."""

    def __init__(self, x: np.ndarray) -> None:
        self.input = x


@register_layer
@unbatched
class LPPool1d(LPPoolNd):
    """``torch.nn.LPPool1d`` (equation ``LAYER.lppool``)."""

    name, dims = "lppool1d", 1


@register_layer
@unbatched
class LPPool2d(LPPoolNd):
    """``torch.nn.LPPool2d`` (equation ``LAYER.lppool``)."""

    name, dims = "lppool2d", 2


@register_layer
@unbatched
class LPPool3d(LPPoolNd):
    """``torch.nn.LPPool3d`` (equation ``LAYER.lppool``)."""

    name, dims = "lppool3d", 3
