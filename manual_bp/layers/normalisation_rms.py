"""RMS normalisation — ``torch.nn.RMSNorm`` (Zhang & Sennrich 2019).

Layer norm without the mean: over the trailing ``normalized_shape`` axes (``n`` values)::

    s = 1/√(mean x² + ε),   x̂ = s x,   y = γ ⊙ x̂

and its backward pass is layer norm's with the mean path removed (``LAYER.rmsnorm``,
``docs/layers.md``)::

    ∂C/∂x = s (g − x̂ mean(g x̂)),   g = γ ⊙ ∂C/∂y;   ∂C/∂γ = Σ_(leading axes) ∂C/∂y ⊙ x̂.

``eps=None`` is torch's: the machine epsilon of the input's dtype.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp.layers.base import Layer, check_input, layer_dtype, register_layer
from manual_bp.layers.normalisation import NormCache, _affine_gradients, _flag, _positive_float
from manual_bp.layers.normalisation_products import RMSNormProducts
from manual_bp.layers.normalisation_steps import RMSNormStep

__all__ = ["RMSNorm", "rms_backward", "rms_forward"]


def rms_forward(x: np.ndarray, axes: tuple[int, ...], eps: float) -> tuple[np.ndarray, np.ndarray]:
    """``(x̂, s)`` with ``s = 1/√(mean_A x² + ε)`` (keepdims) over ``axes``."""
    inv_rms = 1.0 / np.sqrt(np.mean(x * x, axis=axes, keepdims=True) + eps)
    return x * inv_rms, inv_rms


def rms_backward(
    dx_hat: np.ndarray, x_hat: np.ndarray, inv_rms: np.ndarray, axes: tuple[int, ...]
) -> np.ndarray:
    """VJP of ``x ↦ x̂ = s x`` (``LAYER.rmsnorm``): ``s (g − x̂ mean_A(g x̂))``.

    The direct path ``s g`` and the path through ``s``: ``∂s/∂x_i = −s³ x_i/n``, so
    ``Σ_j g_j x_j ∂s/∂x_i = −s x̂_i mean(g x̂)``. Layer norm's compact form minus its mean path.
    """
    return inv_rms * (dx_hat - x_hat * (dx_hat * x_hat).mean(axis=axes, keepdims=True))


@register_layer
class RMSNorm(RMSNormProducts, Layer):
    """``torch.nn.RMSNorm(normalized_shape, eps=None, elementwise_affine=True)``.

    Input ``(*, *normalized_shape)`` (an unbatched ``normalized_shape`` alone too, as
    torch); ``weight`` γ of ``normalized_shape`` (ones) when ``elementwise_affine``; no bias.
    """

    name = "rmsnorm"
    equation = "LAYER.rmsnorm"
    product_equations = ("PROD.rmsnorm.vjp", "PROD.rmsnorm.jvp", "PROD.rmsnorm.residual")
    hyperparameters = ("normalized_shape", "eps", "elementwise_affine")

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...],
        eps: float | None = None,
        elementwise_affine: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        dtype = layer_dtype(dtype, "RMSNorm", device)
        shape = (normalized_shape,) if np.ndim(normalized_shape) == 0 else normalized_shape
        if not len(shape) or any(
            isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in shape
        ):
            raise ValueError(
                f"normalized_shape must be positive integers, got {normalized_shape!r}"
            )
        self.normalized_shape = tuple(int(s) for s in shape)
        self.eps = None if eps is None else _positive_float(eps, "eps")
        self.elementwise_affine = _flag(elementwise_affine, "elementwise_affine")
        if self.elementwise_affine:
            self.params["weight"] = np.ones(self.normalized_shape, dtype)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["normalized_shape"] = list(self.normalized_shape)
        return config

    def reset_parameters(self, rng: np.random.Generator) -> None:
        if "weight" in self.params:
            self.params["weight"][...] = 1.0

    def _axes(self, x: np.ndarray) -> tuple[int, ...]:
        return tuple(range(x.ndim - len(self.normalized_shape), x.ndim))

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, NormCache]:
        """``x (*, *normalized_shape) -> y`` of the same shape (``LAYER.rmsnorm``)."""
        check_input(
            x, self, ndim=range(len(self.normalized_shape), 33), trailing=self.normalized_shape
        )
        eps = float(np.finfo(x.dtype).eps) if self.eps is None else self.eps
        x_hat, inv_rms = rms_forward(x, self._axes(x), eps)
        weight = self.params.get("weight")
        out = x_hat if weight is None else x_hat * weight
        return out, NormCache(x, x_hat, inv_rms, True, weight)

    def backward(self, dout: np.ndarray, cache: NormCache) -> tuple[np.ndarray, dict]:
        """``LAYER.rmsnorm``: :func:`rms_backward` of ``g = γ·dout`` over the trailing axes."""
        x = cache.input
        if not isinstance(dout, np.ndarray) or dout.shape != x.shape:
            raise ValueError(f"{self!r}: dout has shape {np.shape(dout)}, expected {x.shape}")
        g = dout if cache.weight is None else dout * cache.weight
        dx = rms_backward(g, cache.x_hat, cache.inv_std, self._axes(x))
        lead = tuple(range(x.ndim - len(self.normalized_shape)))
        return dx, _affine_gradients(self.params, dout, cache.x_hat, lead)

    def fast_step(self) -> RMSNormStep:
        """The fused form for training (:mod:`~manual_bp.layers.normalisation_steps`)."""
        return RMSNormStep(self)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        k = len(self.normalized_shape)
        if len(input_shape) < k or tuple(input_shape[-k:]) != self.normalized_shape:
            raise ValueError(
                f"{self!r}: per-sample input {tuple(input_shape)} does not end in "
                f"{self.normalized_shape}"
            )
        return tuple(input_shape)

    @classmethod
    def from_shape(cls, input_shape, *args, n_outputs=None, **kwargs) -> RMSNorm:
        """``rmsnorm`` in a spec normalises the last axis of its input."""
        if args or "normalized_shape" in kwargs:
            return cls(*args, **kwargs)
        if not input_shape:
            raise ValueError("rmsnorm needs an input with a feature axis")
        return cls(input_shape[-1], **kwargs)

    def __repr__(self) -> str:
        return (
            f"RMSNorm({self.normalized_shape}, eps={self.eps}, "
            f"elementwise_affine={self.elementwise_affine})"
        )
