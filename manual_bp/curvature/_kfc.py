"""Kronecker factors of one layer's GGN block: Dense on ``(N, *T, D)`` and convolution (KFC).

Every factor here comes from the layer's cached input and the factor columns ``V``
``(c, n, *out)`` the walk brings to its output (``V = Jᵀ S``, :func:`backpropagate_factor`
of :mod:`~manual_bp.curvature.diagonal`; ``S`` exact for KFLR, sampled for KFAC). One
``1/n`` in each factor, the bias folded into ``A`` by a homogeneous coordinate (a row of
ones), ``G_W̃ ≈ B ⊗ A`` over ``W̃ = [W.reshape(C_out, -1) | b]`` flattened row-major.

``CURV.kfac-expand`` — Dense on ``(n, *T, D)`` (``T``: ``R = ΠT`` positions sharing the
weight), the *expand* convention of Eschenhagen et al. 2023 (every position an extra
sample; the form of the KFAC paper's batch of ``n·R`` rows)::

    A = (1/(n R)) Σ_{x,t} x̃_{x,t} x̃_{x,t}ᵀ,       B = (1/n) Σ_{c,x,t} V_{c,x,t} V_{c,x,t}ᵀ

On ``(batch, features)`` (``R = 1``) this is ``CURV.kflr`` itself.

``CURV.kfc`` — Conv1d/2d/3d with ``groups = 1`` (Grosse & Martens 2016), with BackPACK
1.7.1's scaling (``HBPConvNd``): ``ũ_{x,l}`` the unfolded patch of sample ``x`` at output
location ``l`` (``l = 1 … L``; the im2col column, padding and padding modes included) with a
1 appended for the bias::

    A = (1/n) Σ_x Σ_l ũ_{x,l} ũ_{x,l}ᵀ           (summed over locations, ÷ samples only)
    B = (1/n) Σ_{c,x} s_{c,x} s_{c,x}ᵀ,  s_{c,x} = Σ_l V_{c,x,:,l}

``A`` is KFC's ``Ω`` (summed, not averaged, over the ``L`` locations); ``B`` is the exact
(KFLR) or sampled (KFAC) GGN block of the bias — KFC's ``|T|·Γ`` under its assumption of
spatially uncorrelated derivatives, but formed from the location-summed columns as BackPACK
does. At ``n = 1`` and ``L = 1`` both conventions are the exact GGN block.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp.layers.convolution import Conv1d, Conv2d, Conv3d
from manual_bp.layers.dense import Dense

__all__ = [
    "KRONECKER_LAYERS",
    "KRONECKER_TYPES",
    "check_kronecker",
    "conv_factors",
    "dense_factors",
    "dense_input_factor",
    "layer_factors",
]

#: What :func:`layer_factors` accepts, named in its error message.
KRONECKER_LAYERS = "Dense (on (batch, *positions, features)) and Conv1d/Conv2d/Conv3d (groups=1)"
_CONV = (Conv1d, Conv2d, Conv3d)
#: The layer classes with Kronecker factors here.
KRONECKER_TYPES = (Dense, *_CONV)


def _homogeneous(rows: np.ndarray, bias: bool, axis: int) -> np.ndarray:
    """``rows`` with a row (``axis=0``) or column (``axis=1``) of ones for the bias."""
    if not bias:
        return rows
    ones = np.ones((1, rows.shape[1]) if axis == 0 else (rows.shape[0], 1), rows.dtype)
    return np.concatenate([rows, ones], axis=axis)


def dense_factors(
    inp: np.ndarray, V: np.ndarray, n: int, bias: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``(A, B)`` of a dense map on ``(n, *T, D)`` inputs (``CURV.kfac-expand``)."""
    flat = V.reshape(-1, V.shape[-1])
    return dense_input_factor(inp, bias), flat.T @ flat / n


def dense_input_factor(inp: np.ndarray, bias: bool) -> np.ndarray:
    """``A = (1/(n R)) Σ_{x,t} x̃ x̃ᵀ`` of a dense map's input ``(n, *T, D)``."""
    rows = _homogeneous(inp.reshape(-1, inp.shape[-1]), bias, axis=1)
    return rows.T @ rows / rows.shape[0]  # n·R rows


def conv_factors(
    layer: Any, cache: Any, V: np.ndarray, n: int, bias: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``(A, B)`` of a convolution with ``groups = 1`` (``CURV.kfc``), BackPACK's scaling."""
    U = _homogeneous(layer._cols(cache)[0], bias, axis=0)  # (C_in·Πk (+1), L·n)
    A = U @ U.T / n  # summed over the L locations, averaged over the n samples
    s = V.reshape(V.shape[0] * V.shape[1], V.shape[2], -1).sum(axis=2)  # Σ_l V: (c·n, C_out)
    return A, s.T @ s / n


def check_kronecker(layer: Any, what: str = "kfac/kflr") -> None:
    """Refuse, in one line naming ``layer``, a layer with parameters but no factors here."""
    if type(layer) not in KRONECKER_TYPES:
        raise TypeError(
            f"{what}: Kronecker factors are defined here for {KRONECKER_LAYERS}; {layer!r} has none"
        )
    if type(layer) in _CONV and layer.groups != 1:
        raise TypeError(
            f"{what}: Kronecker factors of {layer!r} are not derived for groups = "
            f"{layer.groups} (only groups = 1: one weight matrix against one patch)"
        )


def layer_factors(link: Any, cache: Any, V: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(A, B)`` of one link with parameters (checked by :func:`check_kronecker`) from its
    cache and the factor columns ``V`` ``(c, n, *out)`` at its output."""
    layer, bias = link.layer, "bias" in link.index
    if type(layer) is Dense:
        return dense_factors(cache.input, V, n, bias)
    return conv_factors(layer, cache, V, n, bias)
