"""Arguments and affine parts shared by the normalisation layers: the one-line checks of
``eps`` and the flags, γ = 1 / β = 0 (torch's ``reset_parameters``), and the affine
gradients ``∂C/∂γ = Σ dout·x̂``, ``∂C/∂β = Σ dout`` (``docs/layers.md``)."""

from __future__ import annotations

import math

import numpy as np

__all__: list[str] = []


def _reset_affine(params: dict[str, np.ndarray]) -> None:
    """γ = 1 and β = 0 where learned (torch's ``reset_parameters``)."""
    if "weight" in params:
        params["weight"][...] = 1.0
    if "bias" in params:
        params["bias"][...] = 0.0


def _affine_gradients(
    params: dict[str, np.ndarray], dout: np.ndarray, x_hat: np.ndarray, axes: tuple[int, ...]
) -> dict[str, np.ndarray]:
    """``∂C/∂γ = Σ dout·x̂`` and ``∂C/∂β = Σ dout`` over ``axes``, for the learned ones."""
    grads = {}
    if "weight" in params:
        grads["weight"] = np.sum(dout * x_hat, axis=axes)
    if "bias" in params:
        grads["bias"] = dout.sum(axis=axes)
    return grads


def _positive_float(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)
