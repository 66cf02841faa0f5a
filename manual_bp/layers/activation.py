"""An activation function as a parameter-free layer."""

from __future__ import annotations

import numpy as np

from manual_bp.activations import Activation, get_activation

__all__ = ["ActivationLayer"]


class ActivationLayer:
    """``a = σ(z)`` as a :class:`~manual_bp.layers.base.Layer` (no parameters)."""

    params: dict[str, np.ndarray]

    def __init__(self, activation: str | Activation) -> None:
        self.activation = get_activation(activation)
        self.params = {}

    def forward(self, z: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        a = self.activation.forward(z)
        return a, (z, a)

    def backward(
        self, grad_a: np.ndarray, cache: tuple[np.ndarray, np.ndarray]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        z, a = cache
        if grad_a.shape != z.shape:
            raise ValueError(f"upstream gradient has shape {grad_a.shape}, expected {z.shape}")
        return self.activation.backward(grad_a, z, a), {}

    def __repr__(self) -> str:
        return f"ActivationLayer({self.activation!r})"
