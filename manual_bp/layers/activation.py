"""An activation function of the catalogue as a parameter-free layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from manual_bp.activations import Activation, get_activation
from manual_bp.layers.base import Cache, Layer, register_layer

__all__ = ["ActivationCache", "ActivationLayer"]


@dataclass
class ActivationCache(Cache):
    """``input`` z and the output ``a = σ(z)`` (several σ' are cheapest from ``a``)."""

    output: np.ndarray


@register_layer
class ActivationLayer(Layer):
    """``a = σ(z)`` for any activation of the catalogue (no parameters).

    The backward pass is the activation's VJP — BP1/BP2's ``⊙ σ'(z)`` for an elementwise
    σ, the full Jacobian product for softmax (``ACT.*``). In a stack spec the activation's
    own name stands for this layer: ``"relu"``, ``{"name": "leaky-relu", "alpha": 0.2}``.
    Softmax and log-softmax act on the last axis.
    """

    name = "activation"
    hyperparameters = ("activation",)

    def __init__(self, activation: str | Activation | dict[str, Any] = "identity") -> None:
        super().__init__()
        self.activation = get_activation(activation)

    @property
    def equation(self) -> str:  # type: ignore[override]
        return self.activation.equation

    def forward(self, z: np.ndarray) -> tuple[np.ndarray, ActivationCache]:
        if not isinstance(z, np.ndarray) or z.ndim < 2:
            raise ValueError(f"{self!r}: input must be a batch, got shape {np.shape(z)}")
        a = self.activation.forward(z)
        return a, ActivationCache(z, a)

    def backward(
        self, grad_a: np.ndarray, cache: ActivationCache
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        z = cache.input
        if not isinstance(grad_a, np.ndarray) or grad_a.shape != z.shape:
            raise ValueError(
                f"{self!r}: upstream gradient has shape {np.shape(grad_a)}, expected {z.shape}"
            )
        return self.activation.backward(grad_a, z, cache.output), {}

    def jvp(self, cache: ActivationCache, dx, dparams=None) -> np.ndarray:
        """``da = J_σ dz``: the activation's own forward-mode product (:meth:`Activation.jvp`)."""
        if dx is None:
            return np.zeros_like(cache.output)
        return self.activation.jvp(dx, cache.input, cache.output)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "activation": self.activation.get_config()}

    def __repr__(self) -> str:
        return f"ActivationLayer({self.activation!r})"
