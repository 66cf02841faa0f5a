"""torch's activation modules that are layers here: ``GLU`` changes the shape, ``Softmax2d``
takes only images (``docs/activations.md``, "Activation modules").

* ``GLU(dim=-1)`` (Dauphin et al. 2017) halves its input along ``dim`` into ``a`` (first
  half) and ``b`` (second half): ``out = a ⊙ s``, ``s = sigmoid(b)`` (``LAYER.glu``)::

      ∂C/∂a = g ⊙ s,   ∂C/∂b = g ⊙ a ⊙ s(1 − s).

  An activation maps a shape to itself (the :class:`~manual_bp.activations.Activation`
  protocol and every activation test rely on it), so GLU is a layer.
* ``Softmax2d()`` is softmax over the channel axis (``dim=-3``) of ``(N, C, H, W)`` or
  ``(C, H, W)``: the activation layer of ``Softmax(dim=-3)`` (``ACT.softmax``), refusing any
  other number of axes as torch does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from manual_bp.activations import Softmax, _sigmoid
from manual_bp.layers.activation import ActivationCache, ActivationLayer
from manual_bp.layers.activation_steps import GLUStep
from manual_bp.layers.base import Cache, Layer, check_input, register_layer, zero_residual

__all__ = ["GLU", "GLUCache", "Softmax2d"]


@dataclass
class GLUCache(Cache):
    """``input`` x; ``axis`` the (negative) halved axis; the halves' ``a`` and ``s = σ(b)``."""

    axis: int
    a: np.ndarray
    s: np.ndarray


@register_layer
class GLU(Layer):
    """``torch.nn.GLU(dim=-1)``: ``a ⊙ sigmoid(b)`` of the two halves of the input along
    ``dim`` (torch's axis count: the batch axis included). Equation ``LAYER.glu``; products
    ``PROD.glu.*``. No parameters."""

    name = "glu"
    equation = "LAYER.glu"
    product_equations = ("PROD.glu.vjp", "PROD.glu.jvp", "PROD.glu.residual")
    hyperparameters = ("dim",)

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
            raise TypeError(f"GLU: dim must be an integer, got {dim!r}")
        self.dim = int(dim)

    def _axis(self, ndim: int) -> int:
        """The negative axis ``dim`` names in an ``ndim``-d input (torch's range rule)."""
        if ndim == 0:
            raise ValueError("GLU: x is 0-d; glu does not support scalars (nothing to halve)")
        if not -ndim <= self.dim < ndim:
            raise ValueError(
                f"GLU: dim={self.dim} is out of range for a {ndim}-d input "
                f"(expected to be in range of [{-ndim}, {ndim - 1}])"
            )
        return self.dim - ndim if self.dim >= 0 else self.dim

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, GLUCache]:
        """``out = a ⊙ σ(b)``, ``(a, b)`` the halves of ``x`` along ``dim`` (``LAYER.glu``)."""
        check_input(x, self, name="x")
        axis = self._axis(x.ndim)
        if x.shape[axis] % 2:
            raise ValueError(
                f"GLU: x has shape {x.shape}; halving dimension must be even, but dimension "
                f"{self.dim} is size {x.shape[axis]}"
            )
        a, b = np.split(x, 2, axis=axis)
        s = _sigmoid(b)
        return a * s, GLUCache(x, axis, a, s)

    def backward(self, dout: np.ndarray, cache: GLUCache) -> tuple[np.ndarray, dict]:
        """``∂C/∂x = [g ⊙ s, g ⊙ a ⊙ s(1 − s)]`` along ``dim`` (``LAYER.glu``)."""
        return self.input_vjp(cache, dout[None])[0], {}

    def fast_step(self) -> GLUStep:
        """The fused form for training: the readable expressions in buffers
        (:mod:`~manual_bp.layers.activation_steps`)."""
        return GLUStep(self)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The per-sample shape with the halved axis (``dim`` counts the batch axis)."""
        shape = list(input_shape)
        axis = self._axis(len(shape) + 1)
        if axis == -len(shape) - 1:
            raise ValueError(f"{self!r}: dim={self.dim} halves the batch axis of a model")
        if shape[axis] % 2:
            raise ValueError(f"{self!r}: axis {self.dim} has odd size {shape[axis]}")
        shape[axis] //= 2
        return tuple(shape)

    # ------------------------------------------------------------------ products (V axis)
    # The cached axis is negative, so the same code serves the V-stacked arrays.
    def input_vjp(self, cache: GLUCache, M: np.ndarray) -> np.ndarray:
        """``J_xᵀ M = [M ⊙ s, M ⊙ a ⊙ s(1 − s)]`` along ``dim`` (``PROD.glu.vjp``)."""
        s = cache.s
        return np.concatenate([M * s, M * (cache.a * s * (1.0 - s))], axis=cache.axis)

    def input_jvp(self, cache: GLUCache, T: np.ndarray) -> np.ndarray:
        """``J_x T = s ⊙ T_a + a ⊙ s(1 − s) ⊙ T_b`` (``PROD.glu.jvp``)."""
        Ta, Tb = np.split(T, 2, axis=cache.axis)
        s = cache.s
        return Ta * s + Tb * (cache.a * s * (1.0 - s))

    def param_jvp(self, cache: GLUCache, T_params: dict[str, np.ndarray]) -> np.ndarray:
        raise ValueError(f"{self!r} has no parameters to take a tangent of")

    def residual(self, cache, dout, T, T_params=None):
        """``Σ_o dout_o ∇²out_o T`` (``PROD.glu.residual``): with ``s′ = s(1 − s)`` and
        ``s″ = s′(1 − 2s)``, the ``a``-part ``dout ⊙ s′ ⊙ T_b`` and the ``b``-part
        ``dout ⊙ (s′ ⊙ T_a + a ⊙ s″ ⊙ T_b)`` (``∂²out/∂a² = 0``)."""
        if T is None:  # no input direction (and no parameters): zero, or the shared refusal
            return zero_residual(self, cache, T, T_params)
        Ta, Tb = np.split(T, 2, axis=cache.axis)
        s = cache.s
        s1 = s * (1.0 - s)
        s2 = s1 * (1.0 - 2.0 * s)
        part_a = dout * s1 * Tb
        part_b = dout * (s1 * Ta + cache.a * s2 * Tb)
        return np.concatenate([part_a, part_b], axis=cache.axis), {}

    def __repr__(self) -> str:
        return f"GLU(dim={self.dim})"


@register_layer
class Softmax2d(ActivationLayer):
    """``torch.nn.Softmax2d()``: softmax over the channels of ``(N, C, H, W)`` or ``(C, H, W)``
    at each position (``ACT.softmax`` along ``dim=-3``). Its products are the activation
    layer's (``PROD.activation.*``)."""

    name = "softmax2d"
    hyperparameters = ()

    def __init__(self) -> None:
        super().__init__(Softmax(dim=-3))

    def forward(self, z: np.ndarray) -> tuple[np.ndarray, ActivationCache]:
        check_input(z, self, ndim=(3, 4), name="z")
        return super().forward(z)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 3:
            raise ValueError(
                f"{self!r} needs per-sample inputs (C, H, W), got {tuple(input_shape)}"
            )
        return tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name}

    def __repr__(self) -> str:
        return "Softmax2d()"
