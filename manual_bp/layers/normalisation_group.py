"""Group and instance normalisation — ``torch.nn.GroupNorm``, ``torch.nn.InstanceNorm1d/2d/3d``.

Both are batch norm over regrouped axes (``docs/layers.md#LAYER.groupnorm``): the same
standardisation ``x̂ = (x − μ)/√(σ² + ε)`` over a group ``A`` of ``n`` values, with

* group norm: ``x`` of shape ``(N, C, *S)`` viewed as ``(N, G, (C/G)·|S|)``, one group per
  sample and block of ``C/G`` channels (Wu & He 2018) — layer norm over the last axis of
  the view;
* instance norm: one group per sample and channel, over the spatial axes ``S`` (Ulyanov
  et al. 2016) — batch norm of the ``(1, N·C, *S)`` view, which is how torch computes it.

So the backward pass is :func:`~manual_bp.layers.normalisation.normalise_backward` on the
view, not a new formula; γ, β are per channel (``(C,)``) and their gradients sum over the
batch and spatial axes, as batch norm's.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from manual_bp.layers._unbatched import unbatched
from manual_bp.layers.base import Layer, check_input, layer_dtype, register_layer
from manual_bp.layers.normalisation import (
    NormCache,
    _affine_gradients,
    _flag,
    _positive_float,
    _reset_affine,
    normalise_backward,
)
from manual_bp.layers.normalisation_fast import GroupNormStep
from manual_bp.layers.normalisation_graph import normalise_forward
from manual_bp.layers.normalisation_products import GroupNormProducts, InstanceNormProducts
from manual_bp.layers.normalisation_steps import InstanceNormStep

__all__ = ["GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"]


def _count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_dout(layer: Layer, dout: Any, x: np.ndarray) -> None:
    if not isinstance(dout, np.ndarray) or dout.shape != x.shape:
        raise ValueError(f"{layer!r}: dout has shape {np.shape(dout)}, expected {x.shape}")


def _affine(x_hat: np.ndarray, params: dict[str, np.ndarray], shape: tuple[int, ...]):
    """``γ x̂ + β`` with per-channel γ, β broadcast as ``shape``."""
    out = x_hat
    if "weight" in params:
        out = x_hat * params["weight"].reshape(shape)
        if "bias" in params:
            out = out + params["bias"].reshape(shape)
    return out


@register_layer
class GroupNorm(GroupNormProducts, Layer):
    """``torch.nn.GroupNorm(num_groups, num_channels, eps=1e-5, affine=True, bias=True)``.

    Input ``(N, C, *)``; statistics per sample over each block of ``C/G`` channels and all
    positions (``LAYER.groupnorm``). ``G = 1`` is layer norm over ``(C, *)`` with per-channel
    γ; ``G = C`` is instance norm. No running statistics: training and evaluation agree.
    """

    name = "groupnorm"
    equation = "LAYER.groupnorm"
    product_equations = ("PROD.groupnorm.vjp", "PROD.groupnorm.jvp", "PROD.groupnorm.residual")
    hyperparameters = ("num_groups", "num_channels", "eps", "affine", "bias")

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        device: Any = None,
        dtype: Any = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        dtype = layer_dtype(dtype, "GroupNorm", device)
        self.num_groups = _count(num_groups, "num_groups")
        self.num_channels = _count(num_channels, "num_channels")
        if self.num_channels % self.num_groups:
            raise ValueError(
                f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups})"
            )
        self.eps = _positive_float(eps, "eps")
        self.affine = _flag(affine, "affine")
        self.has_bias = _flag(bias, "bias")
        if self.affine:
            self.params["weight"] = np.ones(self.num_channels, dtype)
            if self.has_bias:
                self.params["bias"] = np.zeros(self.num_channels, dtype)

    def reset_parameters(self, rng: np.random.Generator) -> None:
        _reset_affine(self.params)

    def _shape(self, x: np.ndarray) -> tuple[int, ...]:
        return (1, self.num_channels) + (1,) * (x.ndim - 2)

    def _check(self, x: Any) -> None:
        check_input(x, self, ndim=range(2, 33), name="x")
        if x.shape[1] != self.num_channels:
            raise ValueError(
                f"{self!r}: x has shape {x.shape}; axis 1 must have {self.num_channels} channels"
            )
        n = x.shape[0] * (self.num_channels // self.num_groups) * math.prod(x.shape[2:])
        if n == 1:  # torch's _verify_batch_size on the regrouped sizes
            raise ValueError(
                f"{self!r}: expected more than 1 value per channel when training, got input "
                f"of shape {x.shape}"
            )

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, NormCache]:
        """``x (N, C, *) -> y`` of the same shape: layer norm of the ``(N, G, M)`` view."""
        self._check(x)
        grouped = self._group(x, x.shape)
        if x.size == 0:  # no value to average: the affine map of x̂ = x (empty output)
            x_hat, inv_std = x.copy(), np.ones((*grouped.shape[:2], 1), x.dtype)
        else:
            x_hat_g, _, _, inv_std = normalise_forward(grouped, (2,), self.eps)
            x_hat = x_hat_g.reshape(x.shape)
        out = _affine(x_hat, self.params, self._shape(x))
        return out, NormCache(x, x_hat, inv_std, True, self.params.get("weight"))

    def backward(self, dout: np.ndarray, cache: NormCache) -> tuple[np.ndarray, dict]:
        """``LAYER.groupnorm``: the compact normalisation VJP on the ``(N, G, M)`` view of
        ``g = γ·dout``; ``∂C/∂γ = Σ dout·x̂``, ``∂C/∂β = Σ dout`` over batch and positions."""
        x = cache.input
        _check_dout(self, dout, x)
        g = dout if cache.weight is None else dout * cache.weight.reshape(self._shape(x))
        view = x.shape
        dx = normalise_backward(
            self._group(g, view), self._group(cache.x_hat, view), cache.inv_std, (2,)
        ).reshape(x.shape)
        return dx, _affine_gradients(self.params, dout, cache.x_hat, (0, *range(2, x.ndim)))

    def fast_step(self) -> GroupNormStep:
        """The fused form for training (:mod:`~manual_bp.layers.normalisation_fast`)."""
        return GroupNormStep(self)

    @classmethod
    def from_shape(cls, input_shape, *args, n_outputs=None, **kwargs) -> GroupNorm:
        """``groupnorm(G)`` in a spec: ``num_channels`` is the per-sample axis 0."""
        if len(args) >= 2 or "num_channels" in kwargs:
            return cls(*args, **kwargs)
        if not input_shape:
            raise ValueError("groupnorm needs per-sample inputs with a channel axis")
        return cls(*args, num_channels=input_shape[0], **kwargs)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if not input_shape or input_shape[0] != self.num_channels:
            raise ValueError(
                f"{self!r} needs per-sample inputs (C={self.num_channels}, ...), got "
                f"{tuple(input_shape)}"
            )
        return tuple(input_shape)

    def __repr__(self) -> str:
        return (
            f"GroupNorm({self.num_groups}, {self.num_channels}, eps={self.eps}, "
            f"affine={self.affine}" + ("" if self.has_bias else ", bias=False") + ")"
        )


class _InstanceNorm(InstanceNormProducts, Layer):
    """Shared instance norm (``torch.nn.modules.instancenorm._InstanceNorm``).

    Statistics per sample and channel over the spatial axes (``LAYER.instancenorm``). With
    ``track_running_stats``, training updates running statistics with the batch's mean
    instance statistics (``LAYER.instancenorm.running``) and evaluation uses them
    (``LAYER.batchnorm.eval``'s affine map).
    """

    equation = "LAYER.instancenorm"
    hyperparameters = ("num_features", "eps", "momentum", "affine", "track_running_stats", "bias")
    batched_ndim = 3

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = False,
        track_running_stats: bool = False,
        device: Any = None,
        dtype: Any = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        dtype = layer_dtype(dtype, type(self).__name__, device)
        self.num_features = _count(num_features, "num_features")
        self.eps = _positive_float(eps, "eps")
        if momentum is not None:
            if isinstance(momentum, bool) or not 0.0 <= float(momentum) <= 1.0:
                raise ValueError(f"momentum must be in [0, 1] or None, got {momentum!r}")
            momentum = float(momentum)
        self.momentum = momentum
        self.affine = _flag(affine, "affine")
        self.has_bias = _flag(bias, "bias")
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
        _reset_affine(self.params)
        if self.track_running_stats:
            self.buffers["running_mean"][...] = 0.0
            self.buffers["running_var"][...] = 1.0
            self.buffers["num_batches_tracked"][...] = 0

    def _shape(self, x: np.ndarray) -> tuple[int, ...]:
        return (1, x.shape[1]) + (1,) * (x.ndim - 2)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, NormCache]:
        """``x (N, C, *S) -> y`` of the same shape (one unbatched ``(C, *S)`` sample too)."""
        check_input(x, self, ndim=self.batched_ndim, name="x")
        if x.shape[1] != self.num_features:
            if self.affine or self.track_running_stats:
                raise ValueError(
                    f"{self!r}: x has shape {x.shape}; axis 1 must have {self.num_features} "
                    "channels"
                )
            # torch: num_features is unused without affine parameters (a warning)
            warnings.warn(
                f"{self!r}: num_features unused (input has {x.shape[1]} channels)", stacklevel=2
            )
        axes = tuple(range(2, x.ndim))
        n = math.prod(x.shape[2:])
        use_batch = self.training or not self.track_running_stats
        if use_batch and n == 1:  # torch's _verify_spatial_size
            raise ValueError(
                f"{self!r}: expected more than 1 spatial element when training, got input of "
                f"shape {x.shape}"
            )
        if use_batch and x.size == 0:  # nothing to average: x̂ = x (empty output)
            use_batch, x_hat, inv_std = False, x.copy(), np.ones(self._shape(x), x.dtype)
        elif use_batch:
            x_hat, mean, var, inv_std = normalise_forward(x, axes, self.eps)
            if self.training and self.track_running_stats:
                self._update_running(mean, var, n)
        else:
            shape = self._shape(x)
            inv_std = 1.0 / np.sqrt(self.buffers["running_var"].reshape(shape) + self.eps)
            x_hat = (x - self.buffers["running_mean"].reshape(shape)) * inv_std
        out = _affine(x_hat, self.params, self._shape(x))
        return out, NormCache(x, x_hat, inv_std, use_batch, self.params.get("weight"))

    def _update_running(self, mean: np.ndarray, var: np.ndarray, n: int) -> None:
        """``LAYER.instancenorm.running``: ``r ← (1 − m) r + m·mean_N(stat)``, the unbiased
        per-instance variance; ``momentum=None`` is torch's ``0.0`` (no update), and
        ``num_batches_tracked`` stays (torch's ``F.instance_norm`` never counts)."""
        m = 0.0 if self.momentum is None else self.momentum
        mean_n = mean.reshape(mean.shape[:2]).mean(axis=0)
        var_n = (var.reshape(var.shape[:2]) * (n / (n - 1))).mean(axis=0)
        self.buffers["running_mean"][...] = (1.0 - m) * self.buffers["running_mean"] + m * mean_n
        self.buffers["running_var"][...] = (1.0 - m) * self.buffers["running_var"] + m * var_n

    def backward(self, dout: np.ndarray, cache: NormCache) -> tuple[np.ndarray, dict]:
        """``LAYER.instancenorm`` (instance statistics) or the affine map ``g·s`` (running
        ones); ``∂C/∂γ``, ``∂C/∂β`` summed over batch and positions."""
        x = cache.input
        _check_dout(self, dout, x)
        g = dout if cache.weight is None else dout * cache.weight.reshape(self._shape(x))
        if cache.batch_stats:
            dx = normalise_backward(g, cache.x_hat, cache.inv_std, tuple(range(2, x.ndim)))
        else:
            dx = g * cache.inv_std
        return dx, _affine_gradients(self.params, dout, cache.x_hat, (0, *range(2, x.ndim)))

    def fast_step(self) -> InstanceNormStep:
        """The fused form for training: group norm's step with one group per channel
        (:mod:`~manual_bp.layers.normalisation_steps`)."""
        return InstanceNormStep(self)

    @classmethod
    def from_shape(cls, input_shape, *args, n_outputs=None, **kwargs) -> _InstanceNorm:
        """``instancenorm1d`` … in a spec: ``num_features`` is the per-sample axis 0."""
        if args or "num_features" in kwargs:
            return cls(*args, **kwargs)
        if len(input_shape) != cls.batched_ndim - 1:
            raise ValueError(f"{cls.name} cannot take per-sample inputs of shape {input_shape}")
        return cls(input_shape[0], **kwargs)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != self.batched_ndim - 1:
            raise ValueError(
                f"{self!r} needs per-sample inputs with {self.batched_ndim - 1} axes, got "
                f"{tuple(input_shape)}"
            )
        return tuple(input_shape)


@register_layer
@unbatched
class InstanceNorm1d(_InstanceNorm):
    """``torch.nn.InstanceNorm1d`` on ``(N, C, L)`` or one unbatched ``(C, L)`` sample.

    Parameters (torch's defaults): num_features, eps=1e-5, momentum=0.1, affine=False,
    track_running_stats=False.
    """

    name = "instancenorm1d"
    product_equations = (
        "PROD.instancenorm.vjp",
        "PROD.instancenorm.jvp",
        "PROD.instancenorm.residual",
    )
    batched_ndim = 3


@register_layer
@unbatched
class InstanceNorm2d(_InstanceNorm):
    """``torch.nn.InstanceNorm2d`` on ``(N, C, H, W)`` or ``(C, H, W)``."""

    name = "instancenorm2d"
    product_equations = InstanceNorm1d.product_equations
    batched_ndim = 4


@register_layer
@unbatched
class InstanceNorm3d(_InstanceNorm):
    """``torch.nn.InstanceNorm3d`` on ``(N, C, D, H, W)`` or ``(C, D, H, W)``."""

    name = "instancenorm3d"
    product_equations = InstanceNorm1d.product_equations
    batched_ndim = 5
