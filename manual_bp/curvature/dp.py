"""Differentially private SGD (Abadi et al. 2016), step for step as Opacus 1.6's
``DPOptimizer`` (flat clipping, ``loss_reduction="mean"``).

``CURV.dp-sgd``: with the per-sample gradients ``gₓ = ∇θ Cₓ``
(:func:`~manual_bp.curvature.per_sample.per_sample_gradients`; never materialised here,
see :func:`_privatised`) and their norm over all parameters ``‖gₓ‖``,

    cₓ = min(1, C / (‖gₓ‖ + 10⁻⁶))                 (clip factor; Opacus's 10⁻⁶)
    g̃ = (Σₓ cₓ gₓ + σ C ξ) / B,   ξ ~ N(0, I)       (B: expected batch size, default n)
    θ ← θ − η g̃

so every clipped ``cₓ gₓ`` has norm ≤ ``C`` (the sensitivity) and the noise's standard
deviation is ``σ·C`` per coordinate before the division by ``B``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from manual_bp._arguments import as_generator, check_count, check_number
from manual_bp.curvature._checks import check_results, entry
from manual_bp.curvature.chain import as_chain
from manual_bp.curvature.stats import errors

__all__ = ["dp_gradient", "dp_sgd_step"]

#: Opacus's guard against a zero norm in the clip factor (``optimizers/optimizer.py``).
CLIP_EPSILON = 1e-6


@dataclass(frozen=True)
class _Settings:
    """DP-SGD's arguments, checked (:func:`_settings`): the one validation path of both
    public functions."""

    max_grad_norm: float
    noise_multiplier: float
    noise: list[np.ndarray]
    expected_batch_size: int | None


def _settings(
    model: Any,
    max_grad_norm: Any,
    noise_multiplier: Any,
    noise: Any,
    rng: Any,
    expected_batch_size: Any,
) -> _Settings:
    """Every DP-SGD argument checked in one place, each refused in one line naming it;
    ``noise`` drawn from ``rng`` when None (a bad ``rng`` is named even when ``noise`` is
    given)."""
    max_grad_norm = check_number(max_grad_norm, "max_grad_norm")
    noise_multiplier = check_number(noise_multiplier, "noise_multiplier", zero=True)
    if expected_batch_size is not None:
        expected_batch_size = check_count(expected_batch_size, "expected_batch_size")
    generator = as_generator(rng, "rng")
    chain = as_chain(model)
    if noise is None:
        noise = [generator.standard_normal(s) for s in chain.shapes]
    noise = chain.check_direction(noise, "noise")
    return _Settings(max_grad_norm, noise_multiplier, noise, expected_batch_size)


def _privatised(model: Any, x: Any, y: Any, settings: _Settings) -> list[np.ndarray]:
    """``g̃ = (Σₓ cₓ gₓ + σ C ξ) / B`` (``CURV.dp-sgd``) for checked settings, without
    materialising the per-sample gradients: ``‖gₓ‖²`` is the sum over layers of each
    layer's ``‖J_θᵀ δₓ‖²`` (:meth:`~manual_bp.curvature.link.Link.grad_norms`: ``‖δₓ‖²‖xₓ‖²``
    for a dense layer), and since ``param_vjp`` is linear in the cotangent,
    ``Σₓ cₓ gₓ = J_θᵀ (c ⊙ δ)``, one batch-summed VJP per layer of the clipped errors
    (Goodfellow 2015; "ghost clipping", Lee & Kifer 2021)."""
    chain, found = errors(model, x, y)
    n = found[0][2].shape[0]
    batch = settings.expected_batch_size or n
    C = settings.max_grad_norm
    squares = np.zeros(n, chain.dtype)
    for link, cache, delta in found:
        for norms in link.grad_norms(cache, delta).values():
            squares += norms
    clip = np.minimum(C / (np.sqrt(squares) + CLIP_EPSILON), 1.0).astype(chain.dtype)
    out = chain.slots()
    for link, cache, delta in found:
        scaled = delta * clip.reshape(n, *([1] * (delta.ndim - 1)))
        link.add(out, link.ops.param_vjp(cache, scaled[None]))
    out = chain.results(out)
    std = settings.noise_multiplier * C
    return [(g + std * xi) / batch for g, xi in zip(out, settings.noise, strict=True)]


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
    settings = _settings(model, max_grad_norm, noise_multiplier, noise, rng, expected_batch_size)
    return _privatised(model, x, y, settings)


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
    settings = _settings(model, max_grad_norm, noise_multiplier, noise, rng, expected_batch_size)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        grads = _privatised(model, x, y, settings)
    check_results(grads, "dp_sgd_step", "x and y")  # before the parameters change
    for p, g in zip(model.parameter_arrays(), grads, strict=True):
        p -= lr * g.astype(p.dtype, copy=False)
    return grads
