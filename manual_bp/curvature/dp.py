"""Differentially private SGD (Abadi et al. 2016), step for step as Opacus 1.6's
``DPOptimizer`` (flat clipping, ``loss_reduction="mean"``).

``CURV.dp-sgd``: with the per-sample gradients ``gₓ = ∇θ Cₓ``
(:func:`~manual_bp.curvature.per_sample.per_sample_gradients`) and their norm over all
parameters ``‖gₓ‖``,

    cₓ = min(1, C / (‖gₓ‖ + 10⁻⁶))                 (clip factor; Opacus's 10⁻⁶)
    g̃ = (Σₓ cₓ gₓ + σ C ξ) / B,   ξ ~ N(0, I)       (B: expected batch size, default n)
    θ ← θ − η g̃

so every clipped ``cₓ gₓ`` has norm ≤ ``C`` (the sensitivity) and the noise's standard
deviation is ``σ·C`` per coordinate before the division by ``B``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp._arguments import as_generator, check_count, check_number
from manual_bp.curvature._checks import entry
from manual_bp.curvature.chain import as_chain
from manual_bp.curvature.per_sample import per_sample_gradients, per_sample_norms

__all__ = ["dp_gradient", "dp_sgd_step"]

#: Opacus's guard against a zero norm in the clip factor (``optimizers/optimizer.py``).
CLIP_EPSILON = 1e-6


@entry("x and y")
def dp_gradient(
    model: Any,
    x: Any,
    y: Any,
    *,
    max_grad_norm: float,
    noise_multiplier: float,
    noise: Any = None,
    rng: np.random.Generator | int | None = None,
    expected_batch_size: int | None = None,
) -> list[np.ndarray]:
    """The privatised gradient ``g̃`` (``CURV.dp-sgd``), shaped like the parameters.

    ``noise``: the standard-normal draws ``ξ`` (a direction shaped like the parameters,
    as :func:`~manual_bp.curvature.rop.hvp`'s ``v``); None draws them from ``rng``.
    Opacus's noise tensor is ``σ C ξ``.
    """
    max_grad_norm = check_number(max_grad_norm, "max_grad_norm")
    noise_multiplier = check_number(noise_multiplier, "noise_multiplier", zero=True)
    if expected_batch_size is not None:
        expected_batch_size = check_count(expected_batch_size, "expected_batch_size")
    generator = as_generator(rng, "rng")  # also when noise is given: a bad rng is named
    chain = as_chain(model)
    if noise is None:
        noise = [generator.standard_normal(s) for s in chain.shapes]
    noise = chain.check_direction(noise, "noise")
    gradients = per_sample_gradients(model, x, y)
    batch = gradients[0].shape[0] if expected_batch_size is None else expected_batch_size
    clip = np.minimum(max_grad_norm / (per_sample_norms(gradients) + CLIP_EPSILON), 1.0)
    std = noise_multiplier * max_grad_norm
    return [
        (np.einsum("n,n...->...", clip, g) + std * xi) / batch
        for g, xi in zip(gradients, noise, strict=True)
    ]


def dp_sgd_step(
    model: Any,
    x: Any,
    y: Any,
    *,
    lr: float,
    max_grad_norm: float,
    noise_multiplier: float,
    noise: Any = None,
    rng: np.random.Generator | int | None = None,
    expected_batch_size: int | None = None,
) -> list[np.ndarray]:
    """One DP-SGD step in place, ``θ ← θ − lr·g̃`` (:func:`dp_gradient`'s arguments);
    returns ``g̃``. Every argument is checked before the parameters change."""
    lr = check_number(lr, "lr")
    grads = dp_gradient(
        model,
        x,
        y,
        max_grad_norm=max_grad_norm,
        noise_multiplier=noise_multiplier,
        noise=noise,
        rng=rng,
        expected_batch_size=expected_batch_size,
    )
    for p, g in zip(model.parameter_arrays(), grads, strict=True):
        p -= lr * g.astype(p.dtype, copy=False)
    return grads
