"""Products on a V axis of batch norm and layer norm (``docs/products.md``, ``PROD.batchnorm*``,
``PROD.layernorm.*``).

Both layers are ``y = γ ⊙ x̂ + β`` with ``x̂ = N(x)`` the standardisation over a group of
``n`` values (the axes ``A``). With statistics of ``x`` itself (batch norm in training mode,
layer norm always) ``N`` is nonlinear, with Jacobian

    J_N T = s ⊙ (T − mean_A T − x̂ ⊙ mean_A(x̂ T)),   s = 1/√(σ² + ε),

which is symmetric (``J_Nᵀ = J_N``), so one function is both its JVP and its VJP. With fixed
(running) statistics ``N`` is affine: ``J_N T = s ⊙ T``. Every product below is built from
``J_N``, γ and ``x̂``, read from the forward cache (never from the layer: a product acts at
the cached point, and never updates running statistics).

Arrays on the V axis carry one more leading axis than the cache's, so the cache's group
axes ``A`` shift by one; ``keepdims`` statistics of the cache broadcast over ``V``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from manual_bp.layers.base import BatchCouplingError, tangent_count

__all__ = [
    "BatchNormProducts",
    "GroupNormProducts",
    "InstanceNormProducts",
    "LayerNormProducts",
    "NormProducts",
    "RMSNormProducts",
    "normalise_jvp",
]


def normalise_jvp(
    T: np.ndarray,
    x_hat: np.ndarray,
    inv_std: np.ndarray,
    axes: tuple[int, ...],
    centred: bool = True,
) -> np.ndarray:
    """``J_N T = s ⊙ (T − mean_A T − x̂ ⊙ mean_A(x̂ T))``: the JVP and (``J_N`` is symmetric)
    the VJP of ``x ↦ x̂`` with batch statistics; ``axes`` are ``T``'s group axes.

    ``centred=False`` is RMS norm's ``x̂ = x/√(mean x² + ε)``: no mean path, ``J_N T =
    s ⊙ (T − x̂ ⊙ mean_A(x̂ T))`` (``LAYER.rmsnorm``)."""
    mean_xt = (x_hat * T).mean(axis=axes, keepdims=True)
    if not centred:
        return inv_std * (T - x_hat * mean_xt)
    mean_t = T.mean(axis=axes, keepdims=True)
    return inv_std * (T - mean_t - x_hat * mean_xt)


def _shift(axes: tuple[int, ...]) -> tuple[int, ...]:
    """Axes of an unstacked array, as axes of its V-stack (negative axes stay)."""
    return tuple(a + 1 if a >= 0 else a for a in axes)


class NormProducts:
    """The five products of ``y = γ ⊙ N(x) + β`` (mixin of batch norm and layer norm).

    A subclass supplies :meth:`_stat_axes` (the group axes ``A`` of an input with ``ndim``
    axes), :meth:`_param_axes` (the axes a parameter gradient sums over), :meth:`_param_view`
    (γ-shaped arrays broadcast against the input) and ``_couples_batch`` (whether batch
    statistics mix the samples, so per-sample shares are undefined).
    """

    params: dict[str, np.ndarray]
    _couples_batch: bool = False
    #: False for RMS norm: no mean is subtracted (the mean path of every product vanishes)
    _centred: bool = True

    def _group(self, A: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """``A`` (``(*lead, *shape)``, ``shape`` the input's) viewed so that the groups are
        axes (:meth:`_stat_axes` of the view). Identity; group norm regroups its channels."""
        return A

    def _stat_axes(self, ndim: int) -> tuple[int, ...]:
        raise NotImplementedError

    def _param_axes(self, ndim: int) -> tuple[int, ...]:
        raise NotImplementedError

    def _param_view(self, p: np.ndarray, ndim: int, stacked: bool) -> np.ndarray:
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers
    def _gamma(self, cache: Any) -> np.ndarray | None:
        """γ at the cached point, broadcastable to the input (None without affine)."""
        if cache.weight is None:
            return None
        return self._param_view(cache.weight, cache.input.ndim, stacked=False)

    def _n_jvp(self, cache: Any, T: np.ndarray) -> np.ndarray:
        """``J_N T`` for a V-stack ``T``: the projection with batch statistics, ``s ⊙ T``
        with running ones."""
        if cache.batch_stats:
            shape = cache.input.shape
            x_hat = self._group(cache.x_hat, shape)
            axes = _shift(self._stat_axes(x_hat.ndim))
            T_g = self._group(T, shape)
            return normalise_jvp(T_g, x_hat, cache.inv_std, axes, self._centred).reshape(T.shape)
        return T * cache.inv_std

    def _reduce(self, cache: Any, A: np.ndarray, sum_batch: bool = True) -> np.ndarray:
        """Sum a V-stack over the parameter axes: ``(V, *p)``, or ``(V, N, *p)`` per sample."""
        axes = self._param_axes(cache.input.ndim)
        if not sum_batch:
            axes = tuple(a for a in axes if a != 0)
        return A.sum(axis=_shift(axes))

    # ------------------------------------------------------------------ products
    def input_vjp(self, cache: Any, M: np.ndarray) -> np.ndarray:
        """``J_xᵀ M = J_N(γ ⊙ M)`` (``PROD.batchnorm1d.vjp``, ``PROD.batchnorm2d.vjp``,
        ``PROD.batchnorm3d.vjp``, ``PROD.layernorm.vjp``, ``PROD.groupnorm.vjp``,
        ``PROD.instancenorm.vjp``, ``PROD.rmsnorm.vjp``): ``J_N`` is symmetric, so the VJP is
        the JVP of ``γ ⊙ M``."""
        gamma = self._gamma(cache)
        return self._n_jvp(cache, M if gamma is None else M * gamma)

    def param_vjp(self, cache: Any, M: np.ndarray, sum_batch: bool = True) -> dict[str, np.ndarray]:
        """``J_γᵀ M = Σ M ⊙ x̂``, ``J_βᵀ M = Σ M`` over the parameter axes (``PROD.*.vjp``).

        ``sum_batch=False`` keeps the batch axis; with batch statistics of a batch norm this
        raises :class:`BatchCouplingError` (``x̂`` of every sample depends on all of them).
        """
        # the coupling is refused before the no-parameter shortcut: a batch norm without
        # affine parameters still couples the samples for every layer below it
        if not sum_batch and self._couples_batch and cache.batch_stats:
            raise BatchCouplingError(
                f"{self!r} uses batch statistics (training mode): every sample's x̂ depends on "
                "the whole batch, so a per-sample share of its parameter gradient is no "
                "per-sample gradient"
            )
        grads = {}
        if "weight" in self.params:
            grads["weight"] = self._reduce(cache, M * cache.x_hat, sum_batch)
        if "bias" in self.params:
            grads["bias"] = self._reduce(cache, M, sum_batch)
        return grads

    def input_jvp(self, cache: Any, T: np.ndarray) -> np.ndarray:
        """``J_x T = γ ⊙ J_N T`` (``PROD.batchnorm1d.jvp``, ``PROD.batchnorm2d.jvp``,
        ``PROD.batchnorm3d.jvp``, ``PROD.layernorm.jvp``, ``PROD.groupnorm.jvp``,
        ``PROD.instancenorm.jvp``, ``PROD.rmsnorm.jvp``)."""
        gamma = self._gamma(cache)
        t_hat = self._n_jvp(cache, T)
        return t_hat if gamma is None else t_hat * gamma

    def param_jvp(self, cache: Any, T_params: dict[str, np.ndarray]) -> np.ndarray:
        """``J_γ T_γ + J_β T_β = x̂ ⊙ T_γ + T_β`` (``PROD.*.jvp``)."""
        if not self.params:
            raise ValueError(f"{self!r} has no parameters to take a tangent of")
        if not T_params:
            raise ValueError(f"{self!r}: param_jvp needs at least one parameter tangent")
        x = cache.input
        V = next(iter(T_params.values())).shape[0]
        out = np.zeros((V, *x.shape), dtype=x.dtype)
        if "weight" in T_params:
            out += cache.x_hat * self._param_view(T_params["weight"], x.ndim, stacked=True)
        if "bias" in T_params:
            out += self._param_view(T_params["bias"], x.ndim, stacked=True)
        return out

    def residual(
        self,
        cache: Any,
        dout: np.ndarray,
        T: np.ndarray | None,
        T_params: dict[str, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``Σ_o dout_o ∇²y_o · (T, T_γ)`` (``PROD.batchnorm1d.residual``,
        ``PROD.batchnorm2d.residual``, ``PROD.batchnorm3d.residual``,
        ``PROD.layernorm.residual``, ``PROD.groupnorm.residual``,
        ``PROD.instancenorm.residual``, ``PROD.rmsnorm.residual``)::

            residual_x = [batch stats] −s² (m_T h̃ + m_h T̃ + x̂ (mean_A(h̃ T) − 3 m_T m_h))
                         + J_N(dout ⊙ T_γ)                       (x–γ block)
            residual_γ = Σ dout ⊙ J_N T                          (γ–x block)
            residual_β = 0

        with ``h = γ ⊙ dout``, ``h̃ = h − mean_A h``, ``T̃ = T − mean_A T``,
        ``m_T = mean_A(x̂ T)``, ``m_h = mean_A(x̂ h)``. With running statistics ``N`` is
        affine: only the mixed x–γ blocks remain (``J_N = s``).
        """
        x = cache.input
        V = tangent_count(T, T_params)
        T_params = T_params or {}
        gamma = self._gamma(cache)
        r_x = np.zeros((V, *x.shape), dtype=x.dtype)
        if T is not None and cache.batch_stats:
            r_x += self._input_input(cache, dout if gamma is None else dout * gamma, T)
        if gamma is None:
            return r_x, {}
        if "weight" in T_params:
            r_x += self._n_jvp(cache, dout * self._param_view(T_params["weight"], x.ndim, True))
        p_shape = (V, *self.params["weight"].shape)
        grads = {"bias": np.zeros(p_shape, dtype=x.dtype)} if "bias" in self.params else {}
        if T is None:
            grads["weight"] = np.zeros(p_shape, dtype=x.dtype)
        else:
            grads["weight"] = self._reduce(cache, dout * self._n_jvp(cache, T))
        return r_x, grads

    def _input_input(self, cache: Any, h: np.ndarray, T: np.ndarray) -> np.ndarray:
        """The x–x block ``d/dt J_N(x + tT)ᵀ h`` with batch statistics (``h`` fixed)::

            −s² (m_T h̃ + m_h T̃ + x̂ (mean_A(h̃ T) − 3 m_T m_h))

        symmetric in two tangents: ``⟨T₂, ·⟩ = −n s² (m_T mean(h̃T₂) + m_T₂ mean(h̃T)
        + m_h mean(T̃ T̃₂) − 3 m_h m_T m_T₂)`` per group.
        """
        shape, inv_std = cache.input.shape, cache.inv_std
        x_hat, h, T_g = (self._group(a, shape) for a in (cache.x_hat, h, T))
        axes = self._stat_axes(x_hat.ndim)
        v_axes = _shift(axes)
        # RMS norm (not centred): h̃ = h, T̃ = T — the same derivation without the mean path
        h_c = h - h.mean(axis=axes, keepdims=True) if self._centred else h
        m_h = (x_hat * h).mean(axis=axes, keepdims=True)
        m_t = (x_hat * T_g).mean(axis=v_axes, keepdims=True)
        t_c = T_g - T_g.mean(axis=v_axes, keepdims=True) if self._centred else T_g
        m_ht = (h_c * T_g).mean(axis=v_axes, keepdims=True)
        r = -(inv_std * inv_std) * (m_t * h_c + m_h * t_c + x_hat * (m_ht - 3 * m_t * m_h))
        return r.reshape(T.shape)


class BatchNormProducts(NormProducts):
    """Batch norm's groups: one per channel, over the batch and spatial axes ``(0, 2, …)``.

    γ, β are ``(C,)``, broadcast as ``(1, C, 1, …)``. With batch statistics (training mode,
    or no running statistics) the samples are coupled: no per-sample shares.
    """

    num_features: int
    _couples_batch = True

    def _stat_axes(self, ndim: int) -> tuple[int, ...]:
        return (0, *range(2, ndim))

    _param_axes = _stat_axes

    def _param_view(self, p: np.ndarray, ndim: int, stacked: bool) -> np.ndarray:
        shape = (1, p.shape[-1]) + (1,) * (ndim - 2)  # p: (C,) or a V-stack (V, C)
        return p.reshape(p.shape[0], *shape) if stacked else p.reshape(shape)


class LayerNormProducts(NormProducts):
    """Layer norm's groups: one per sample (and leading position), over the trailing
    ``normalized_shape`` axes; γ, β of ``normalized_shape`` sum over the leading axes."""

    normalized_shape: tuple[int, ...]

    def _stat_axes(self, ndim: int) -> tuple[int, ...]:
        return tuple(range(ndim - len(self.normalized_shape), ndim))

    def _param_axes(self, ndim: int) -> tuple[int, ...]:
        return tuple(range(ndim - len(self.normalized_shape)))

    def _param_view(self, p: np.ndarray, ndim: int, stacked: bool) -> np.ndarray:
        if not stacked:
            return p  # broadcasts from the trailing axes
        lead = (1,) * (ndim - len(self.normalized_shape))
        return p.reshape(p.shape[0], *lead, *self.normalized_shape)


class GroupNormProducts(BatchNormProducts):
    """Group norm's groups: per sample, ``num_groups`` blocks of ``C/G`` channels with all
    their positions — the input regrouped as ``(N, G, C/G·L)``, normalised over its last
    axis (``LAYER.groupnorm``); γ, β per channel as batch norm's. Samples are not coupled."""

    num_groups: int
    _couples_batch = False

    def _group(self, A: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        lead = A.shape[: A.ndim - len(shape)]
        return A.reshape(*lead, shape[0], self.num_groups, math.prod(shape[1:]) // self.num_groups)

    def _stat_axes(self, ndim: int) -> tuple[int, ...]:
        return (ndim - 1,)  # the last axis of the regrouped view

    def _param_axes(self, ndim: int) -> tuple[int, ...]:
        return (0, *range(2, ndim))


class InstanceNormProducts(BatchNormProducts):
    """Instance norm's groups: one per sample and channel, over the spatial axes
    (``LAYER.instancenorm``); γ, β per channel. Samples are not coupled (running statistics,
    when tracked, only move in the forward pass)."""

    _couples_batch = False

    def _stat_axes(self, ndim: int) -> tuple[int, ...]:
        return tuple(range(2, ndim))

    def _param_axes(self, ndim: int) -> tuple[int, ...]:
        return (0, *range(2, ndim))


class RMSNormProducts(LayerNormProducts):
    """RMS norm: layer norm's groups without the mean (``LAYER.rmsnorm``): ``x̂ = s x``,
    ``s = 1/√(mean x² + ε)``; only γ (no β)."""

    _centred = False
