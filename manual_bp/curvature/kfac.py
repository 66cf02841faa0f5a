"""Kronecker factors of the GGN block of each layer: KFLR (exact ``S``) and KFAC (MC).

Dense on ``(batch, features)`` below; Dense on ``(batch, *positions, features)``
(``CURV.kfac-expand``) and Conv1d/2d/3d with groups = 1 (``CURV.kfc``, KFC with BackPACK's
scaling) in :mod:`~manual_bp.curvature._kfc`; every other layer with parameters refused.

Scaling convention (``CURV.kfac-scaling``), stated once and followed everywhere: for a
dense layer ``z = x Wᵀ + b`` with the homogeneous input ``x̃ = [x, 1]`` (``[x]`` without
a bias) and ``W̃ = [W | b]`` flattened row-major,

    A = (1/n) Σₓ x̃ₓ x̃ₓᵀ                       (input side,  (m_in + 1)²)
    B = (1/n) Σₓ Σ_c Vₓ[c] Vₓ[c]ᵀ              (output side, m_out²)
    G_W̃ ≈ B ⊗ A                                (numpy: np.kron(B, A))

where ``Vₓ = (∂f/∂z)ᵀ Sₓ`` is the backpropagated factor of the per-sample loss Hessian:
the exact ``S`` (``S Sᵀ = ∇²_f ℓ``) for KFLR (``CURV.kflr``, Botev et al. 2017) and the
sampled gradients (``E[S̃ S̃ᵀ] = ∇²_f ℓ``) for KFAC (``CURV.kfac``, Martens & Grosse 2015).
Each factor carries one ``1/n``, so the product has ``1/n²`` times ``n²`` pairs: the
exact block ``(1/n) Σₓ (Vₓ Vₓᵀ) ⊗ (x̃ₓ x̃ₓᵀ)`` at ``n = 1``, and for every ``n`` when
``Vₓ`` does not depend on ``x`` (a deep linear network with a quadratic cost).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp._arguments import as_generator, as_real_array, check_count
from manual_bp._validation import check_finite
from manual_bp.curvature._checks import entry
from manual_bp.curvature._kfc import check_kronecker, layer_factors
from manual_bp.curvature.chain import Chain, as_chain
from manual_bp.curvature.diagonal import backpropagate_factor
from manual_bp.curvature.loss import output_factor, sampled_factor

__all__ = ["ggn_block", "kfac", "kflr"]


def _factors(chain: Chain, caches, S, f) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(A, B)`` for every link with parameters (:func:`~._kfc.layer_factors`: Dense on
    ``(batch, *positions, features)``, convolution with groups = 1): ``A`` from its cached
    input, ``B`` from the factor columns at its output (V axis)."""
    for link in chain.links:
        if link.index:
            check_kronecker(link.layer)
    if chain.coupling is not None:
        raise TypeError(
            "kfac/kflr: Kronecker factors are defined here for chains of separable layers; "
            f"{chain.coupling}"
        )
    n = f.shape[0]
    at_output = backpropagate_factor(chain, caches, S, f.shape)
    return [
        layer_factors(link, cache, V, n)
        for link, cache, V in zip(chain.links, caches, at_output, strict=True)
        if link.index
    ]


@entry("x and y")
def kflr(model: Any, x: Any, y: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(A, B)]`` per layer with parameters, input first, with the exact factor
    (``CURV.kflr``; convolutions ``CURV.kfc``, sequences ``CURV.kfac-expand``)."""
    chain = as_chain(model)
    x, y = chain.data(x, y)
    caches, f = chain.forward(x)
    return _factors(chain, caches, output_factor(chain, f, y), f)


@entry("x and y")
def kfac(
    model: Any, x: Any, y: Any, *, rng: np.random.Generator | int | None = None, n_samples: int = 1
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(A, B)]`` per layer with parameters with the Monte-Carlo factor (``CURV.kfac``).

    ``E[B] = B_KFLR``; ``A`` is the same as KFLR's.
    """
    generator, n_samples = as_generator(rng, "rng"), check_count(n_samples, "n_samples")
    chain = as_chain(model)
    x, y = chain.data(x, y)
    caches, f = chain.forward(x)
    S = sampled_factor(chain, f, y, generator, n_samples)
    return _factors(chain, caches, S, f)


def ggn_block(model: Any, G: np.ndarray, layer: int) -> np.ndarray:
    """The block of a full GGN (flat ``parameter_arrays()`` order) for ``W̃ = [W | b]``.

    Rows and columns ordered as ``W̃`` flattened row-major, matching ``np.kron(B, A)``.
    ``layer`` counts the dense layers from 0 (a negative index counts from the last, as in
    a list); ``G`` is a finite real ``(P, P)`` matrix, ``P`` the number of parameters.
    """
    chain = as_chain(model)
    dense = [link.index for link in chain.links if link.index]
    if isinstance(layer, (bool, np.bool_)) or not isinstance(layer, (int, np.integer)):
        raise TypeError(f"layer must be an integer (a dense layer's index), got {layer!r}")
    if not -len(dense) <= layer < len(dense):
        raise ValueError(
            f"layer {layer} is out of range: the model has {len(dense)} dense layers "
            f"(valid: {-len(dense)}..{len(dense) - 1})"
        )
    size = sum(int(np.prod(s)) for s in chain.shapes)
    G = as_real_array(G, "G")
    if G.shape != (size, size):
        raise ValueError(f"G has shape {G.shape}; expected ({size}, {size}), the model's GGN")
    check_finite(G, "G")
    index = dense[layer]
    offsets = np.cumsum([0] + [int(np.prod(s)) for s in chain.shapes])
    weight = chain.shapes[index["weight"]]
    m_out, m_in = weight[0], int(np.prod(weight[1:]))  # a kernel flattened as im2col's rows
    idx = (offsets[index["weight"]] + np.arange(m_out * m_in)).reshape(m_out, m_in)
    if "bias" in index:
        idx = np.hstack([idx, (offsets[index["bias"]] + np.arange(m_out))[:, None]])
    idx = idx.ravel()
    return G[np.ix_(idx, idx)]
