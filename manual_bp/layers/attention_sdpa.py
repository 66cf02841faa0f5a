"""Scaled dot-product attention — torch's ``F.scaled_dot_product_attention`` — and its VJP.

``S = s·q kᵀ (+ mask)``, ``P = softmax(S)`` row-wise, ``out = P v`` with ``s = 1/√d`` by
default (equations ``ATT.sdpa``, ``ATT.softmax``). Shapes: ``q`` ``(..., L, d)``, ``k``
``(..., S, d)``, ``v`` ``(..., S, d_v)``. Masks follow SDPA: a boolean mask is True where a
query MAY attend; a float mask is added to the scores; ``causal=True`` lets position ``i``
see ``j ≤ i``. A query that may attend to nothing (a row of −inf) gets attention weights 0,
hence output 0 and no gradient — torch 2.x's SDPA ("safe" softmax); with ``safe=False`` it
gets the textbook softmax's 0/0 = NaN, as ``nn.MultiheadAttention(need_weights=True)``.
Split from :mod:`manual_bp.layers.attention` (the module layer) by concept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from manual_bp.layers.attention_masks import additive_mask

__all__ = [
    "AttentionCache",
    "attention_weights",
    "scaled_dot_product_attention",
    "sdpa_backward",
    "softmax_backward",
]


@dataclass
class AttentionCache:
    """``q, k, v``, the attention weights ``P``, the scale ``s`` and, under dropout, the
    multiplier ``m`` (``keep/(1 − p)``) of ``P̃ = P ⊙ m`` (``ATT.dropout``; None: none)."""

    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    weights: np.ndarray
    scale: float
    keep: np.ndarray | None = None

    @property
    def dropped(self) -> np.ndarray:
        """``P̃``, the weights that multiply ``v`` (``P`` itself without dropout)."""
        return self.weights if self.keep is None else self.weights * self.keep


def softmax_backward(d_p: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``∂C/∂S = P ⊙ (∂C/∂P − Σ_j ∂C/∂P_j P_j)`` row-wise (equation ``ATT.softmax``).

    The softmax Jacobian is ``diag(p) − p pᵀ``; applied to a row ``g`` it is
    ``p ⊙ g − p (pᵀg)`` — never formed as a matrix.
    """
    return p * (d_p - (d_p * p).sum(axis=-1, keepdims=True))


def attention_weights(
    scores: np.ndarray, additive: np.ndarray | None, *, safe: bool = True
) -> np.ndarray:
    """``P = softmax(scores + additive)`` row-wise, max-shifted (equation ``ATT.softmax``).

    A row with no admissible key (all −inf): weights 0 when ``safe`` (torch's SDPA), NaN
    otherwise (the textbook softmax's 0/0, as ``nn.MultiheadAttention(need_weights=True)``).
    """
    if additive is not None:
        scores = scores + additive
    peak = scores.max(axis=-1, keepdims=True) if scores.shape[-1] else scores[..., :1]
    if safe:
        peak = np.where(np.isneginf(peak), 0.0, peak)
    # −inf − (−inf): the textbook NaN, asked for; a NaN or +inf score (from a NaN or inf in
    # q or k) makes its row NaN, as torch's softmax does: propagated, not refused
    with np.errstate(invalid="ignore"):
        weights = np.exp(scores - peak)  # max-shifted: exp never overflows
        total = weights.sum(axis=-1, keepdims=True)
        weights /= np.where(total == 0.0, 1.0, total) if safe else total
    return weights


def scaled_dot_product_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    causal: bool = False,
    scale: float | None = None,
) -> tuple[np.ndarray, AttentionCache]:
    """``out = softmax(s·q kᵀ + mask) v`` (equation ``ATT.sdpa``); ``(out, cache)``.

    Parameters
    ----------
    q : (..., L, d); k : (..., S, d); v : (..., S, d_v)
    mask : (..., L, S) bool (True = may attend) or float (added), broadcast over the batch axes
    causal : bool
    scale : float, default ``1/√d``
    """
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"q {q.shape}, k {k.shape}, v {v.shape} do not fit q kᵀ v")
    scale = 1.0 / float(np.sqrt(q.shape[-1])) if scale is None else float(scale)
    scores = scale * (q @ np.swapaxes(k, -1, -2))
    additive = additive_mask(mask, causal, scores.shape[-2:], scores.dtype)
    weights = attention_weights(scores, additive)
    return weights @ v, AttentionCache(q, k, v, weights, scale)


def sdpa_backward(
    d_out: np.ndarray, cache: AttentionCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(∂C/∂q, ∂C/∂k, ∂C/∂v)`` of :func:`scaled_dot_product_attention` (``ATT.sdpa``).

    ``∂v = P̃ᵀ δ``, ``∂P = δ vᵀ`` (``⊙ m`` under dropout), ``∂S`` by :func:`softmax_backward`
    (masked entries have ``P = 0`` and so receive none), ``∂q = s ∂S k``, ``∂k = s ∂Sᵀ q``.
    """
    d_v = np.swapaxes(cache.dropped, -1, -2) @ d_out
    d_weights = d_out @ np.swapaxes(cache.v, -1, -2)
    if cache.keep is not None:  # P̃ = P ⊙ m: ∂P = ∂P̃ ⊙ m (ATT.dropout)
        d_weights = d_weights * cache.keep
    d_scores = softmax_backward(d_weights, cache.weights)
    d_q = cache.scale * (d_scores @ cache.k)
    d_k = cache.scale * (np.swapaxes(d_scores, -1, -2) @ cache.q)
    return d_q, d_k, d_v
