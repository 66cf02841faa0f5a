"""The statistics of a normalisation and the readable, node-by-node form of its backward
pass (``LAYER.batchnorm``, ``docs/layers.md``). The compact form the layers use,
:func:`~manual_bp.layers.normalisation.normalise_backward`, is checked against
:func:`normalise_backward_graph`.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["normalise_backward_graph", "normalise_forward"]


def normalise_forward(
    x: np.ndarray, axes: tuple[int, ...], eps: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x̂, μ, σ², 1/√(σ²+ε))`` with statistics over ``axes`` (keepdims, biased σ²)."""
    mean = x.mean(axis=axes, keepdims=True)
    centred = x - mean
    var = np.mean(centred * centred, axis=axes, keepdims=True)
    inv_std = 1.0 / np.sqrt(var + eps)
    return centred * inv_std, mean, var, inv_std


def normalise_backward_graph(
    dx_hat: np.ndarray, x: np.ndarray, axes: tuple[int, ...], eps: float
) -> np.ndarray:
    """Readable VJP of ``x ↦ x̂``, one node of the graph at a time (``LAYER.batchnorm``).

    Graph: ``μ = mean x``, ``c = x − μ``, ``v = mean c²``, ``s = (v + ε)^(−½)``,
    ``x̂ = c s``. Walk it backwards, adding each path's contribution to ``∂C/∂x``.
    """
    n = math.prod(x.shape[a] for a in axes)
    mu = x.mean(axis=axes, keepdims=True)
    c = x - mu
    v = np.mean(c * c, axis=axes, keepdims=True)
    s = (v + eps) ** -0.5
    # x̂ = c·s: c feeds x̂ directly; s feeds x̂ for every member of the group.
    dc = dx_hat * s
    ds = np.sum(dx_hat * c, axis=axes, keepdims=True)
    # s = (v + ε)^(−½)
    dv = ds * (-0.5) * (v + eps) ** -1.5
    # v = (1/n) Σ c²: the variance path back into c
    dc = dc + dv * 2.0 * c / n
    # c = x − μ: the direct path into x, and the mean path through μ
    dmu = -np.sum(dc, axis=axes, keepdims=True)
    # μ = (1/n) Σ x
    return dc + dmu / n
