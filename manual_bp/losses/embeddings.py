"""Embedding losses of two or three arrays (``docs/losses_pairs.md``): torch's
``CosineEmbeddingLoss``, ``TripletMarginLoss`` and ``TripletMarginWithDistanceLoss`` (with
its default distance), and ``pairwise_distance`` with torch's numerics (``eps`` added to
the difference, torch's p-norm gradient at zeros and ties).

Second derivatives: not provided here (each is a non-diagonal per-sample Hessian of a norm
or a cosine; the curvature work uses the elementwise losses of
:mod:`manual_bp.losses.margins` and :mod:`manual_bp.losses.gaussian`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from manual_bp.losses.base import reduce, reduce_vjp, register_loss
from manual_bp.losses.margins import _LegacyLoss
from manual_bp.losses.pair_tools import as_float, float_dtype, hinge, target_as, unbroadcast

__all__ = [
    "CosineEmbeddingLoss",
    "TripletMarginLoss",
    "TripletMarginWithDistanceLoss",
    "pairwise_distance",
    "pairwise_distance_backward",
]

#: torch's ``EPSILON`` of ``cosine_embedding_loss``, added to each squared norm: the C++
#: ``float`` constant ``1e-12f`` (9.99999996e-13, not the double 1e-12); it differs from
#: 1e-12 by 4e-9 relatively, which shows in ``cos`` when ``‖x‖² ~ 1e-8``.
COSINE_EPSILON = float(np.float32(1e-12))


def _norm(v: np.ndarray, p: float) -> np.ndarray:
    """``‖v‖_p`` over the last axis (0-d: ``|v|``), as ``torch.norm``."""
    if v.ndim == 0:
        v = v.reshape(1)
    a = np.abs(v)
    if p == math.inf:
        return a.max(axis=-1)
    if p == -math.inf:
        return a.min(axis=-1)
    if p == 0:
        return (a != 0).sum(axis=-1).astype(v.dtype)
    if p == 1:
        return a.sum(axis=-1)
    if p == 2:
        return np.sqrt((v * v).sum(axis=-1))
    with np.errstate(divide="ignore"):
        return (a**p).sum(axis=-1) ** (1 / p)


def _norm_backward(g: np.ndarray, v: np.ndarray, norm: np.ndarray, p: float) -> np.ndarray:
    """``g·∂‖v‖_p/∂v`` as torch's ``norm_backward``: ``sgn(v)|v|^{p−1}/‖v‖^{p−1}``, zero
    where ``‖v‖ = 0`` (and, for ``p < 1``, where ``v = 0``); ``p = ±∞`` shares ``g`` evenly
    among the entries of largest (smallest) modulus; ``p = 0`` has none."""
    shape = v.shape
    if v.ndim == 0:
        v = v.reshape(1)
    g, norm = g[..., None], norm[..., None]
    if p == 0:
        out = np.zeros_like(v * g)
    elif p == 1:
        out = np.sign(v) * g
    elif math.isinf(p):
        mask = np.abs(v) == norm
        out = np.sign(v) * (g / mask.sum(axis=-1, keepdims=True)) * mask
    elif p == 2:
        with np.errstate(divide="ignore", invalid="ignore"):
            out = v * np.where(norm == 0, 0, g / norm)
    elif p < 1:
        with np.errstate(divide="ignore", invalid="ignore"):
            scaled = np.where(v == 0, 0, np.sign(v) * np.abs(v) ** (p - 1))
            out = scaled * g * norm ** (1 - p)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.sign(v) * np.abs(v) ** (p - 1) * np.where(norm == 0, 0, g / norm ** (p - 1))
    return out if shape else out.reshape(())


def pairwise_distance(
    x1: np.ndarray, x2: np.ndarray, p: float = 2.0, eps: float = 1e-6
) -> tuple[np.ndarray, Any]:
    """torch's ``pairwise_distance``: ``‖x₁ − x₂ + ε‖_p`` over the last axis of the
    broadcast pair (``LOSS.triplet-margin``); ``(distance, cache)``."""
    diff = x1 - x2 + x1.dtype.type(eps)
    return _norm(diff, p), (diff, p, x1.shape, x2.shape)


def pairwise_distance_backward(g: np.ndarray, cache: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(∂/∂x₁, ∂/∂x₂)`` of ``⟨g, pairwise_distance(x₁, x₂)⟩`` (``LOSS.triplet-margin.grad``):
    ``±`` the norm's gradient at ``x₁ − x₂ + ε``, summed over broadcast axes."""
    diff, p, shape1, shape2 = cache
    d = _norm_backward(g, diff, _norm(diff, p), p)
    return unbroadcast(d, shape1), unbroadcast(-d, shape2)


@register_loss
class CosineEmbeddingLoss(_LegacyLoss):
    """torch's ``CosineEmbeddingLoss(margin=0.0, reduction='mean')``
    (``LOSS.cosine-embedding``, ``LOSS.cosine-embedding.grad``).

    ``cos = ⟨x₁, x₂⟩ / √((‖x₁‖² + ε)(‖x₂‖² + ε))`` with torch's ``ε = 10⁻¹²``;
    ``ℓ = 1 − cos`` where ``y = 1``, ``max(0, cos − Δ)`` where ``y = −1``, 0 otherwise.
    ``∂cos/∂x₁ = x₂/√(m₁m₂) − cos·x₁/m₁`` (``mₖ = ‖xₖ‖² + ε``; the second term projects out
    the component along ``x₁``), symmetrically for ``x₂``; the hinge passes at
    ``cos − Δ = 0``. Inputs ``(N, D)`` with target ``(N,)``, or ``(D,)`` with a 0-d target;
    the target has no gradient.
    """

    name = "cosine-embedding-loss"
    aliases = ("cosineembeddingloss", "cosine-embedding")
    equation_value = "LOSS.cosine-embedding"
    equation_grad = "LOSS.cosine-embedding.grad"
    hyperparameters = ("margin", "reduction")
    arguments = ("input1", "input2", "target")

    def __init__(self, margin: float = 0.0, size_average=None, reduce=None,
                 reduction: str = "mean") -> None:  # fmt: skip
        super().__init__(size_average, reduce, reduction)
        self.margin = float(margin)

    def forward(self, input1, input2, target) -> tuple[np.ndarray, Any]:
        if target.ndim not in (0, 1) or not input1.ndim == input2.ndim == target.ndim + 1:
            raise ValueError("target must be (N,) with (N, D) inputs or 0-d with (D,) inputs, "
                             f"got input1 {input1.shape}, input2 {input2.shape}, "
                             f"target {target.shape}")  # fmt: skip
        dtype = float_dtype(input1, input2)  # the target is only compared: no promotion
        x1, x2 = as_float(input1, "input1", dtype), as_float(input2, "input2", dtype)
        y = target_as(target, dtype)
        eps = dtype.type(COSINE_EPSILON)
        m1, m2 = (x1 * x1).sum(axis=-1) + eps, (x2 * x2).sum(axis=-1) + eps
        denom = np.sqrt(m1 * m2)
        cos = (x1 * x2).sum(axis=-1) / denom
        clamped, active = hinge(cos - dtype.type(self.margin))
        elements = np.where(y == 1, 1 - cos, 0) + np.where(y == -1, clamped, 0)
        slope = np.where(y == -1, active, 0.0) - np.where(y == 1, 1.0, 0.0)
        cache = (x1, x2, m1, m2, denom, cos, slope.astype(dtype))
        return reduce(elements.astype(dtype), self.reduction), cache

    def backward(self, grad_output, cache) -> tuple[np.ndarray, np.ndarray, None]:
        x1, x2, m1, m2, denom, cos, slope = cache
        d_cos = (reduce_vjp(grad_output, slope.shape, self.reduction) * slope)[..., None]
        c, den = cos[..., None], denom[..., None]
        d1 = d_cos * (x2 / den - c * x1 / m1[..., None])
        d2 = d_cos * (x1 / den - c * x2 / m2[..., None])
        return unbroadcast(d1, x1.shape), unbroadcast(d2, x2.shape), None


class _TripletBase(_LegacyLoss):
    """``max(0, Δ + d(a, p) − d(a, n))``, ``d(a, n)`` replaced by ``min(d(a, n), d(p, n))``
    under ``swap`` (torch's ``minimum``: a tie shares the gradient equally)."""

    arguments = ("anchor", "positive", "negative")
    _p: float = 2.0
    _eps: float = 1e-6

    def _check_margin(self) -> None:
        if not self.margin > 0:
            raise ValueError(f"margin must be greater than 0, got {self.margin}")

    def forward(self, anchor, positive, negative) -> tuple[np.ndarray, Any]:
        if not anchor.ndim == positive.ndim == negative.ndim:
            raise ValueError("anchor, positive and negative must have the same number of "
                             f"dimensions, got shapes {anchor.shape}, {positive.shape}, "
                             f"{negative.shape}")  # fmt: skip
        dtype = float_dtype(anchor, positive, negative)
        a = as_float(anchor, "anchor", dtype)
        pos = as_float(positive, "positive", dtype)
        neg = as_float(negative, "negative", dtype)
        d_pos, c_pos = pairwise_distance(a, pos, self._p, self._eps)
        d_neg, c_neg = pairwise_distance(a, neg, self._p, self._eps)
        c_swap, w_neg = None, None
        if self.swap:
            d_swap, c_swap = pairwise_distance(pos, neg, self._p, self._eps)
            w_neg = np.where(d_neg == d_swap, 0.5, (d_neg < d_swap).astype(dtype))
            d_neg = np.minimum(d_neg, d_swap)
        clamped, active = hinge(dtype.type(self.margin) + d_pos - d_neg)
        cache = (c_pos, c_neg, c_swap, w_neg, active.astype(dtype), (a, pos, neg))
        return reduce(clamped, self.reduction), cache

    def backward(self, grad_output, cache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c_pos, c_neg, c_swap, w_neg, active, arrays = cache
        g = reduce_vjp(grad_output, active.shape, self.reduction) * active
        d_a, d_p = pairwise_distance_backward(g, c_pos)
        g_neg = -g if w_neg is None else -g * w_neg
        d_a2, d_n = pairwise_distance_backward(g_neg, c_neg)
        d_a = d_a + d_a2
        if c_swap is not None:
            d_p2, d_n2 = pairwise_distance_backward(-g * (1 - w_neg), c_swap)
            d_p, d_n = d_p + d_p2, d_n + d_n2
        return tuple(d.astype(x.dtype) for d, x in zip((d_a, d_p, d_n), arrays, strict=True))


@register_loss
class TripletMarginLoss(_TripletBase):
    """torch's ``TripletMarginLoss(margin=1.0, p=2.0, eps=1e-6, swap=False,
    reduction='mean')`` (``LOSS.triplet-margin``, ``LOSS.triplet-margin.grad``).

    ``ℓ = max(0, Δ + d(a, p) − d(a, n))`` with ``d(u, v) = ‖u − v + ε‖_p`` over the last
    axis; under ``swap`` ``d(a, n)`` becomes ``min(d(a, n), d(p, n))`` (Balntas et al. 2016).
    Gradients: the hinge passes at 0; each distance gives ``±∇‖·‖_p`` to its two arrays.
    Inputs of one number of dimensions, broadcasting; ``(D,)`` gives a 0-d loss.
    """

    name = "triplet-margin-loss"
    aliases = ("tripletmarginloss", "triplet-margin")
    equation_value = "LOSS.triplet-margin"
    equation_grad = "LOSS.triplet-margin.grad"
    hyperparameters = ("margin", "p", "eps", "swap", "reduction")

    def __init__(self, margin: float = 1.0, p: float = 2.0, eps: float = 1e-6,
                 swap: bool = False, size_average=None, reduce=None,
                 reduction: str = "mean") -> None:  # fmt: skip
        super().__init__(size_average, reduce, reduction)
        self.margin, self.p, self.eps, self.swap = float(margin), float(p), float(eps), bool(swap)
        self._check_margin()
        self._p, self._eps = self.p, self.eps


@register_loss
class TripletMarginWithDistanceLoss(_TripletBase):
    """torch's ``TripletMarginWithDistanceLoss(*, distance_function=None, margin=1.0,
    swap=False, reduction='mean')`` with its default distance, ``pairwise_distance``
    (``p = 2``, ``ε = 10⁻⁶``) (``LOSS.triplet-margin-with-distance``,
    ``LOSS.triplet-margin-with-distance.grad``): the triplet loss of
    :class:`TripletMarginLoss` at those defaults. A custom ``distance_function`` (a torch
    callable) is refused: it has no hand-derived gradient here.
    """

    name = "triplet-margin-with-distance-loss"
    aliases = ("tripletmarginwithdistanceloss", "triplet-margin-with-distance")
    equation_value = "LOSS.triplet-margin-with-distance"
    equation_grad = "LOSS.triplet-margin-with-distance.grad"
    hyperparameters = ("distance_function", "margin", "swap", "reduction")

    def __init__(self, *, distance_function: None = None, margin: float = 1.0,
                 swap: bool = False, reduction: str = "mean") -> None:  # fmt: skip
        if distance_function is not None:
            raise ValueError("distance_function: only None (torch's default, "
                             "pairwise_distance) is supported; a custom callable has no "
                             "hand-derived gradient")  # fmt: skip
        super().__init__(reduction=reduction)
        self.distance_function = None
        self.margin, self.swap = float(margin), bool(swap)
        self._check_margin()
