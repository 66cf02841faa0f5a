"""Shared pieces of the pairwise, margin and embedding losses (``docs/losses_pairs.md``):
torch's legacy ``size_average``/``reduce`` arguments, the computing dtype, broadcasting
and its adjoint, and the hinge's active set.
"""

from __future__ import annotations

import numpy as np

from manual_bp.losses.base import check_reduction

__all__ = ["as_float", "float_dtype", "hinge", "legacy_reduction", "target_as", "unbroadcast"]


def legacy_reduction(size_average: bool | None, reduce: bool | None, reduction: str) -> str:
    """torch's ``_Reduction.legacy_get_string``: the deprecated ``size_average``/``reduce``
    pair, when either is given, overrides ``reduction`` (``reduce=False`` gives ``'none'``,
    else ``size_average`` picks ``'mean'`` (default) or ``'sum'``)."""
    if size_average is None and reduce is None:
        return check_reduction(reduction)
    if reduce is not None and not reduce:
        return "none"
    return "mean" if size_average is None or size_average else "sum"


def float_dtype(*arrays: np.ndarray) -> np.dtype:
    """The dtype torch computes in: the promoted dtype of the floating arrays (integer
    targets join it), float64 when none is floating."""
    floats = [a.dtype for a in arrays if a.dtype.kind == "f"]
    return np.result_type(*floats) if floats else np.dtype(np.float64)


def as_float(x: np.ndarray, name: str, dtype: np.dtype) -> np.ndarray:
    """``x`` in ``dtype``; ``TypeError`` naming ``name`` when it is not floating (torch
    differentiates it, so it must be a float array)."""
    if x.dtype.kind != "f":
        raise TypeError(f"{name} must be a floating-point array (torch differentiates it), "
                        f"got dtype {x.dtype}")  # fmt: skip
    return x.astype(dtype, copy=False)


def target_as(target: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A target (integer or float) in the computing dtype."""
    return target.astype(dtype, copy=False)


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The adjoint of broadcasting an array of ``shape`` to ``grad.shape``: sum over the
    leading axes broadcasting added and over the axes where ``shape`` has size 1."""
    grad = np.asarray(grad)
    if grad.shape == tuple(shape):
        return grad
    lead = grad.ndim - len(shape)
    summed = grad.sum(axis=tuple(range(lead))) if lead > 0 else grad
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and summed.shape[i] != 1)
    if axes:
        summed = summed.sum(axis=axes, keepdims=True)
    return np.ascontiguousarray(np.broadcast_to(summed, shape))


def hinge(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(max(u, 0), active)`` with torch's ``clamp_min`` derivative: the gradient passes
    where ``u >= 0`` — at the hinge ``u = 0`` itself too (``LOSS.hinge-embedding.grad``,
    ``LOSS.margin-ranking.grad``, ``LOSS.cosine-embedding.grad``,
    ``LOSS.triplet-margin.grad``); a NaN stays NaN with a zero gradient."""
    return np.where(u >= 0, u, np.where(np.isnan(u), u, 0.0)).astype(u.dtype), u >= 0
