"""Symmetric factors of the GGN, exact and Monte-Carlo, as BackPACK's ``SqrtGGNExact``/``MC``.

``CURV.sqrt-ggn``: with ``Sₓ Sₓᵀ = ∇²_f ℓ`` (``CURV.loss-factor``; ``c`` columns),
``G = (1/n) Σₓ Jₓᵀ Sₓ Sₓᵀ Jₓ = Σ_{c,x} s_{c,x} s_{c,x}ᵀ`` with
``s_{c,x} = Jₓᵀ Sₓ[:, c] / √n``: the columns of ``S`` come down the stack on the V axis
(``input_vjp``) and every layer's per-sample ``param_vjp`` turns them into ``(c, n, *p)``
(BackPACK's layout; on an output of ``P`` rows per sample — a sequence's positions —
``(P·c, n, *p)``, one column per row and class). ``CURV.sqrt-ggn-mc``: the same from the
sampled factor (:func:`~manual_bp.curvature.loss.sampled_factor`), ``E[Σ s sᵀ] = G``, with
``M`` columns per sample whatever ``P`` (a draw's rows share one: their cross terms have
mean zero), BackPACK's ``(M, n, *p)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from manual_bp._arguments import as_generator, check_count
from manual_bp.curvature._checks import entry
from manual_bp.curvature.chain import Chain, as_chain
from manual_bp.curvature.diagonal import backpropagate_factor
from manual_bp.curvature.loss import output_factor, sampled_factor

__all__ = ["sqrt_ggn", "sqrt_ggn_mc"]


def _sqrt(
    chain: Chain, caches: list, S: np.ndarray, shape: tuple, sampled: bool = False
) -> list[np.ndarray]:
    """``(c', n, *p)`` per parameter, ``c' = P·c`` columns on an output of ``P`` rows per
    sample (``shape`` the network output's; a sequence's positions: one column per row);
    ``sampled`` (a Monte-Carlo factor): ``c' = c``, a sample's rows in one column
    (:func:`~manual_bp.curvature.loss.factor_columns`)."""
    n = shape[0]
    c = S.shape[2] * (1 if sampled else S.shape[0] // n)
    out = chain.slots()
    at_output = backpropagate_factor(chain, caches, S / math.sqrt(n), shape, sampled=sampled)
    for link, cache, V in zip(chain.links, caches, at_output, strict=True):
        if link.index:
            for name, g in link.ops.param_vjp(cache, V, sum_batch=False).items():
                out[link.index[name]] = g
    return [
        np.zeros((c, n, *shape), chain.dtype) if g is None else np.asarray(g, chain.dtype)
        for g, shape in zip(out, chain.shapes, strict=True)
    ]


@entry("x and y")
def sqrt_ggn(model: Any, x: Any, y: Any) -> list[np.ndarray]:
    """``(c, n, *p)`` per parameter with ``G = Σ_{c,x} s sᵀ`` (``CURV.sqrt-ggn``)."""
    chain = as_chain(model)
    x, y = chain.data(x, y)
    caches, f = chain.forward(x)
    return _sqrt(chain, caches, output_factor(chain, f, y), f.shape)


@entry("x and y")
def sqrt_ggn_mc(
    model: Any, x: Any, y: Any, *, rng: np.random.Generator | int | None = None, n_samples: int = 1
) -> list[np.ndarray]:
    """``(M, n, *p)`` per parameter, ``E[Σ s sᵀ] = G`` (``CURV.sqrt-ggn-mc``)."""
    generator, n_samples = as_generator(rng, "rng"), check_count(n_samples, "n_samples")
    chain = as_chain(model)
    x, y = chain.data(x, y)
    caches, f = chain.forward(x)
    S = sampled_factor(chain, f, y, generator, n_samples)
    return _sqrt(chain, caches, S, f.shape, sampled=True)
