"""Batch and layer normalisation — ``torch.nn.BatchNorm1d/2d/3d`` and ``torch.nn.LayerNorm``.

Both layers standardise ``x`` over a set of axes ``A`` (``n`` values per group)::

    μ = mean_A x,   σ² = mean_A (x − μ)²   (biased),   x̂ = (x − μ)/√(σ² + ε),
    y = γ x̂ + β

Batch norm groups by channel (``A`` = batch and spatial axes, Ioffe & Szegedy 2015);
layer norm groups by sample (``A`` = the trailing ``normalized_shape`` axes, Ba et al.
2016). The backward pass is derived in ``docs/layers.md#LAYER.batchnorm``; two forms are
implemented side by side and checked against each other: :func:`normalise_backward_graph`
(:mod:`~manual_bp.layers.normalisation_graph`, with :func:`normalise_forward`) follows the
computational graph node by node, :func:`normalise_backward` is the compact
form in terms of ``x̂`` that the layers use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from manual_bp.layers.base import Cache, Layer, check_input, layer_dtype, register_layer
from manual_bp.layers.normalisation_fast import BatchNormStep, LayerNormStep
from manual_bp.layers.normalisation_graph import normalise_backward_graph, normalise_forward
from manual_bp.layers.normalisation_options import (
    _affine_gradients,
    _flag,
    _positive_float,
    _reset_affine,
)
from manual_bp.layers.normalisation_products import BatchNormProducts, LayerNormProducts

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "LayerNorm",
    "NormCache",
    "normalise_backward",
    "normalise_backward_graph",
    "normalise_forward",
]


@dataclass
class NormCache(Cache):
    """``input`` x; ``x_hat`` the standardised input; ``inv_std`` ``1/√(σ²+ε)`` (keepdims);
    ``batch_stats``: whether the statistics were computed from ``x`` (else running ones);
    ``weight`` γ used (None without affine)."""

    x_hat: np.ndarray
    inv_std: np.ndarray
    batch_stats: bool
    weight: np.ndarray | None


def normalise_backward(
    dx_hat: np.ndarray, x_hat: np.ndarray, inv_std: np.ndarray, axes: tuple[int, ...]
) -> np.ndarray:
    """Compact VJP of ``x ↦ x̂`` (equation ``LAYER.batchnorm``), the form the layers use.

    ``∂C/∂x = (1/√(σ²+ε)) · (g − mean_A g − x̂ · mean_A(g x̂))`` with ``g = ∂C/∂x̂``:
    the direct path minus the mean path minus the variance path (``docs/layers.md``).
    """
    mean_g = dx_hat.mean(axis=axes, keepdims=True)
    mean_gx = (dx_hat * x_hat).mean(axis=axes, keepdims=True)
    return inv_std * (dx_hat - mean_g - x_hat * mean_gx)


class _BatchNorm(BatchNormProducts, Layer):
    """Shared batch norm (``torch.nn.modules.batchnorm._BatchNorm``); subclasses fix ndim.

    Products on the V axis: :class:`~manual_bp.layers.normalisation_products.NormProducts`.
    """

    equation = "LAYER.batchnorm"
    hyperparameters = ("num_features", "eps", "momentum", "affine", "track_running_stats", "bias")
    _ndims: tuple[int, ...] = ()

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: Any = None,
        dtype: Any = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        dtype = layer_dtype(dtype, type(self).__name__, device)
        if isinstance(num_features, bool) or not isinstance(num_features, (int, np.integer)):
            raise ValueError(f"num_features must be a positive integer, got {num_features!r}")
        if num_features < 1:
            raise ValueError(f"num_features must be a positive integer, got {num_features!r}")
        self.num_features = int(num_features)
        self.eps = _positive_float(eps, "eps")
        if momentum is not None:
            if isinstance(momentum, bool) or not 0.0 <= float(momentum) <= 1.0:
                raise ValueError(f"momentum must be in [0, 1] or None, got {momentum!r}")
            momentum = float(momentum)
        self.momentum = momentum
        self.affine = _flag(affine, "affine")
        self.has_bias = _flag(bias, "bias")  # torch 2.13: β learned only if affine and bias
        self.track_running_stats = _flag(track_running_stats, "track_running_stats")
        if self.affine:
            self.params["weight"] = np.ones(self.num_features, dtype)
            if self.has_bias:
                self.params["bias"] = np.zeros(self.num_features, dtype)
        if self.track_running_stats:
            self.buffers["running_mean"] = np.zeros(self.num_features, dtype)
            self.buffers["running_var"] = np.ones(self.num_features, dtype)
            self.buffers["num_batches_tracked"] = np.zeros((), np.int64)

    def reset_parameters(self, rng: np.random.Generator) -> None:
        """γ = 1, β = 0 and fresh running statistics, as torch's ``reset_parameters``."""
        _reset_affine(self.params)
        if self.track_running_stats:
            self.buffers["running_mean"][...] = 0.0
            self.buffers["running_var"][...] = 1.0
            self.buffers["num_batches_tracked"][...] = 0

    def _check(self, x: Any) -> None:
        check_input(x, self, ndim=self._ndims, name="x")
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"{self!r}: x has shape {x.shape}; axis 1 must have {self.num_features} channels"
            )

    def _shape(self, x: np.ndarray) -> tuple[int, ...]:
        """Broadcast shape of per-channel arrays: ``(1, C, 1, ...)``."""
        return (1, self.num_features) + (1,) * (x.ndim - 2)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, NormCache]:
        """``x (N, C, *) -> y (N, C, *)``; training mode updates the running statistics."""
        self._check(x)
        axes = (0, *range(2, x.ndim))
        use_batch = self.training or not self.track_running_stats
        if use_batch and x.size == 0:
            # torch: an empty output; the running statistics stay, but the batch is counted
            # (num_batches_tracked, which momentum=None's average divides by). The empty
            # batch then acts as the affine map of no statistics (x̂ = x, 1/σ = 1): empty
            # products, zero parameter gradients, no mean of nothing.
            if self.training and self.track_running_stats:
                self.buffers["num_batches_tracked"][...] += 1
            use_batch, x_hat = False, x.copy()
            inv_std = np.ones(self._shape(x), x.dtype)
        elif use_batch:
            n = math.prod(x.shape[a] for a in axes)
            if n == 1:  # torch's _verify_batch_size: only exactly one value is refused
                raise ValueError(
                    f"{self!r}: expected more than 1 value per channel when training, got "
                    f"input of shape {x.shape}"
                )
            x_hat, mean, var, inv_std = normalise_forward(x, axes, self.eps)
            if self.training and self.track_running_stats:
                self._update_running(mean.reshape(-1), var.reshape(-1), n)
        else:
            shape = self._shape(x)
            mean = self.buffers["running_mean"].reshape(shape)
            inv_std = 1.0 / np.sqrt(self.buffers["running_var"].reshape(shape) + self.eps)
            x_hat = (x - mean) * inv_std
        weight, beta = self.params.get("weight"), self.params.get("bias")
        out = x_hat
        if weight is not None:
            shape = self._shape(x)
            out = x_hat * weight.reshape(shape)
            if beta is not None:
                out = out + beta.reshape(shape)
        return out, NormCache(x, x_hat, inv_std, use_batch, weight)

    def _update_running(self, mean: np.ndarray, var: np.ndarray, n: int) -> None:
        """Running statistics (equation ``LAYER.batchnorm.running``), torch's convention.

        ``r ← (1 − m)·r + m·stat`` with the UNBIASED variance ``σ²·n/(n − 1)``;
        ``momentum=None`` uses ``m = 1/num_batches_tracked`` (a cumulative average).
        """
        tracked = self.buffers["num_batches_tracked"]
        tracked[...] += 1
        m = 1.0 / float(tracked) if self.momentum is None else self.momentum
        self.buffers["running_mean"][...] = (1.0 - m) * self.buffers["running_mean"] + m * mean
        unbiased = var * (n / (n - 1))
        self.buffers["running_var"][...] = (1.0 - m) * self.buffers["running_var"] + m * unbiased

    def backward(self, dout: np.ndarray, cache: NormCache) -> tuple[np.ndarray, dict]:
        """``LAYER.batchnorm`` (batch statistics) or ``LAYER.batchnorm.eval`` (running ones).

        ``∂C/∂γ = Σ dout·x̂``, ``∂C/∂β = Σ dout`` over batch and spatial axes; ``∂C/∂x``
        is the compact form :func:`normalise_backward` of ``g = dout·γ`` with batch
        statistics, and the affine map ``g/√(running_var + ε)`` with running ones.
        """
        x = cache.input
        if not isinstance(dout, np.ndarray) or dout.shape != x.shape:
            raise ValueError(f"{self!r}: dout has shape {np.shape(dout)}, expected {x.shape}")
        axes = (0, *range(2, x.ndim))
        g = dout if cache.weight is None else dout * cache.weight.reshape(self._shape(x))
        if cache.batch_stats:
            dx = normalise_backward(g, cache.x_hat, cache.inv_std, axes)
        else:
            dx = g * cache.inv_std
        return dx, _affine_gradients(self.params, dout, cache.x_hat, axes)

    def fast_step(self) -> BatchNormStep:
        """The fused form for training (:mod:`~manual_bp.layers.normalisation_fast`)."""
        return BatchNormStep(self)

    @classmethod
    def from_shape(cls, input_shape, *args, n_outputs=None, **kwargs) -> _BatchNorm:
        """``batchnorm1d`` / ``batchnorm2d`` in a spec: ``num_features`` is the channel axis."""
        if args or "num_features" in kwargs:
            return cls(*args, **kwargs)
        if len(input_shape) + 1 not in cls._ndims:
            raise ValueError(f"{cls.name} cannot take per-sample inputs of shape {input_shape}")
        return cls(input_shape[0], **kwargs)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) + 1 not in self._ndims or input_shape[0] != self.num_features:
            raise ValueError(
                f"{self!r} needs per-sample inputs (C={self.num_features}, ...) with "
                f"{[n - 1 for n in self._ndims]} axes, got {tuple(input_shape)}"
            )
        return tuple(input_shape)


@register_layer
class BatchNorm1d(_BatchNorm):
    """``torch.nn.BatchNorm1d`` on ``(N, C)`` or ``(N, C, L)``: statistics per channel.

    Parameters
    ----------
    num_features : int — C
    eps : float — added to the variance (default 1e-5)
    momentum : float or None — ``r ← (1−m) r + m·stat``; None: cumulative average
    affine : bool — learn γ (``weight``) and β (``bias``), shape (C,)
    track_running_stats : bool — keep ``running_mean``, ``running_var`` (C,) and
        ``num_batches_tracked``; without them evaluation also uses batch statistics.
    """

    name = "batchnorm1d"
    product_equations = (
        "PROD.batchnorm1d.vjp",
        "PROD.batchnorm1d.jvp",
        "PROD.batchnorm1d.residual",
    )
    _ndims = (2, 3)


@register_layer
class BatchNorm2d(_BatchNorm):
    """``torch.nn.BatchNorm2d`` on ``(N, C, H, W)``: statistics per channel over N, H, W.

    Same options as :class:`BatchNorm1d`.
    """

    name = "batchnorm2d"
    product_equations = (
        "PROD.batchnorm2d.vjp",
        "PROD.batchnorm2d.jvp",
        "PROD.batchnorm2d.residual",
    )
    _ndims = (4,)


@register_layer
class BatchNorm3d(_BatchNorm):
    """``torch.nn.BatchNorm3d`` on ``(N, C, D, H, W)``: per channel over N, D, H, W."""

    name = "batchnorm3d"
    product_equations = (
        "PROD.batchnorm3d.vjp",
        "PROD.batchnorm3d.jvp",
        "PROD.batchnorm3d.residual",
    )
    _ndims = (5,)


@register_layer
class LayerNorm(LayerNormProducts, Layer):
    """``torch.nn.LayerNorm``: statistics per sample over the trailing ``normalized_shape``.

    Equation ``LAYER.layernorm``. No running statistics; training and evaluation agree.

    Parameters
    ----------
    normalized_shape : int or tuple of int — the trailing axes normalised together
    eps : float
    elementwise_affine : bool — learn ``weight`` γ and ``bias`` β of ``normalized_shape``
    """

    name = "layernorm"
    equation = "LAYER.layernorm"
    product_equations = ("PROD.layernorm.vjp", "PROD.layernorm.jvp", "PROD.layernorm.residual")
    hyperparameters = ("normalized_shape", "eps", "elementwise_affine", "bias")

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        dtype = layer_dtype(dtype, "LayerNorm", device)
        shape = (normalized_shape,) if np.ndim(normalized_shape) == 0 else normalized_shape
        if not shape or any(
            isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in shape
        ):
            raise ValueError(
                f"normalized_shape must be positive integers, got {normalized_shape!r}"
            )
        self.normalized_shape = tuple(int(s) for s in shape)
        self.eps = _positive_float(eps, "eps")
        self.elementwise_affine = _flag(elementwise_affine, "elementwise_affine")
        self.has_bias = _flag(bias, "bias")  # β learned only if elementwise_affine and bias
        if self.elementwise_affine:
            self.params["weight"] = np.ones(self.normalized_shape, dtype)
            if self.has_bias:
                self.params["bias"] = np.zeros(self.normalized_shape, dtype)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["normalized_shape"] = list(self.normalized_shape)
        return config

    def reset_parameters(self, rng: np.random.Generator) -> None:
        _reset_affine(self.params)

    def _axes(self, x: np.ndarray) -> tuple[int, ...]:
        return tuple(range(x.ndim - len(self.normalized_shape), x.ndim))

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, NormCache]:
        """``x (N, *, *normalized_shape) -> y`` of the same shape (``LAYER.layernorm``); an
        unbatched ``x`` of ``normalized_shape`` alone too, as torch."""
        check_input(
            x, self, ndim=range(len(self.normalized_shape), 33), trailing=self.normalized_shape
        )
        x_hat, _, _, inv_std = normalise_forward(x, self._axes(x), self.eps)
        weight, beta = self.params.get("weight"), self.params.get("bias")
        out = x_hat if weight is None else x_hat * weight
        if beta is not None:
            out = out + beta
        return out, NormCache(x, x_hat, inv_std, True, weight)

    def backward(self, dout: np.ndarray, cache: NormCache) -> tuple[np.ndarray, dict]:
        """``LAYER.layernorm``: the compact normalisation VJP over the trailing axes.

        ``∂C/∂γ = Σ_(leading axes) dout·x̂``, ``∂C/∂β = Σ_(leading axes) dout``.
        """
        x = cache.input
        if not isinstance(dout, np.ndarray) or dout.shape != x.shape:
            raise ValueError(f"{self!r}: dout has shape {np.shape(dout)}, expected {x.shape}")
        axes = self._axes(x)
        g = dout if cache.weight is None else dout * cache.weight
        dx = normalise_backward(g, cache.x_hat, cache.inv_std, axes)
        lead = tuple(range(x.ndim - len(self.normalized_shape)))
        return dx, _affine_gradients(self.params, dout, cache.x_hat, lead)

    def fast_step(self) -> LayerNormStep:
        """The fused form for training (:mod:`~manual_bp.layers.normalisation_fast`)."""
        return LayerNormStep(self)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        k = len(self.normalized_shape)
        if tuple(input_shape[-k:]) != self.normalized_shape or len(input_shape) < k:
            raise ValueError(
                f"{self!r}: per-sample input {tuple(input_shape)} does not end in "
                f"{self.normalized_shape}"
            )
        return tuple(input_shape)

    @classmethod
    def from_shape(cls, input_shape, *args, n_outputs=None, **kwargs) -> LayerNorm:
        """``layernorm`` in a spec normalises the last axis of its input."""
        if args or "normalized_shape" in kwargs:
            return cls(*args, **kwargs)
        if not input_shape:
            raise ValueError("layernorm needs an input with a feature axis")
        return cls(input_shape[-1], **kwargs)

    def __repr__(self) -> str:
        return (
            f"LayerNorm({self.normalized_shape}, eps={self.eps}, "
            f"elementwise_affine={self.elementwise_affine}"
            + ("" if self.has_bias else ", bias=False")
            + ")"
        )
