"""A-priori rounding scales of the normalisation layers' gradients and one checked step
against torch (used by ``reference/checks_normalisation.py`` and the tests).

The compact VJPs cancel (to exactly zero for a group of two values with ε ≪ σ²), so each
gradient's tolerance is set by the magnitude of its terms, not by the tiny result.
"""

from __future__ import annotations

import numpy as np
import torch

from manual_bp.layers._unbatched import UnbatchedCache
from manual_bp.layers.normalisation_lrn import LocalResponseNorm, window_sum
from reference.compare import Comparison
from reference.stack import torch_layer_forward

__all__ = ["norm_terms", "one_step"]


def norm_terms(layer, upstream: np.ndarray, cache) -> dict[str, np.ndarray]:
    """Σ|terms| of the gradients of a normalisation layer (``NormProducts``) or of LRN.

    As ``reference.checks_layers.norm_scales``, on the layer's own groups (the regrouped
    view of group norm, no mean for RMS norm): ``x̂`` carries ``(|x| + mean|x|)·s`` of
    rounding, and the compact VJP cancels to far below its terms.
    """
    if isinstance(layer, LocalResponseNorm):
        x, q = cache.input, cache.scale / cache.base
        before, after = layer._reach()
        back = window_sum(np.abs(upstream * x) * q, 1, after, before)
        coef = 2.0 * abs(layer.alpha * layer.beta) / layer.size
        return {"x": np.abs(upstream) * cache.scale + coef * np.abs(x) * back}
    unbatched = isinstance(cache, UnbatchedCache)
    if unbatched:
        cache, upstream = cache.inner, upstream[None]
    x = cache.input
    shape = x.shape
    gamma = layer._gamma(cache)
    size = layer._group(np.abs(x), shape)
    axes = layer._stat_axes(size.ndim)
    centred = cache.batch_stats and layer._centred
    offset = size.mean(axis=axes, keepdims=True) if centred else 0.0
    x_hat = np.abs(layer._group(cache.x_hat, shape)) + (size + offset) * cache.inv_std
    g = layer._group(np.abs(upstream if gamma is None else upstream * gamma), shape)
    lead = layer._param_axes(x.ndim)
    x_hat_full = x_hat.reshape(shape)
    y = x_hat_full if gamma is None else x_hat_full * np.abs(gamma)
    scales = {
        "output": y[0] if unbatched else y,
        "weight": np.sum(np.abs(upstream) * x_hat_full, axis=lead),
        "bias": np.sum(np.abs(upstream), axis=lead),
    }
    if cache.batch_stats:
        mean_g = g.mean(axis=axes, keepdims=True)
        mean_gx = (g * x_hat).mean(axis=axes, keepdims=True)
        scale_x = (cache.inv_std * (g + mean_g + x_hat * mean_gx)).reshape(shape)
        scales["x"] = scale_x[0] if unbatched else scale_x
    return scales


def one_step(layer, x, upstream, *, equation: str, buffers_equation: str | None = None):
    """One forward+backward of ``layer`` against autograd on ``C = Σ upstream ⊙ out``."""
    params = {n: torch.tensor(a, requires_grad=True) for n, a in layer.params.items()}
    buffers = {n: torch.tensor(np.array(a)) for n, a in layer.buffers.items()}
    out, cache = layer.forward(x)
    dx, grads = layer.backward(upstream, cache)
    xt = torch.tensor(x, requires_grad=True)
    ref = torch_layer_forward(layer, params, buffers, xt, cache)
    scales = norm_terms(layer, upstream, cache)
    (ref * torch.tensor(upstream)).sum().backward()
    comparisons = [
        Comparison(
            equation, "output", out, ref.detach().numpy(), np.abs(out) + scales.get("output", 1.0)
        ),
        Comparison(equation, "∂C/∂x", dx, xt.grad.numpy(), scales.get("x")),
    ]
    for name, tensor in params.items():
        comparisons.append(
            Comparison(equation, f"∂C/∂{name}", grads[name], tensor.grad.numpy(), scales.get(name))
        )
    for name, tensor in buffers.items():
        comparisons.append(
            Comparison(
                buffers_equation or equation, name, layer.buffers[name].copy(), tensor.numpy()
            )
        )
    return comparisons
