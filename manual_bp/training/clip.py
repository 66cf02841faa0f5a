"""Global gradient-norm clipping, ``torch.nn.utils.clip_grad_norm_`` (equation ``GPT.clip``).

All gradients are treated as one vector ``g``::

    ‖g‖_p = (Σ_i ‖g_i‖_p^p)^{1/p}    (p = ∞: max_i max|g_i|)
    c = min(1, max_norm / (‖g‖_p + 10⁻⁶)),    g_i ← c · g_i

as torch computes it (the per-array norms first, then the norm of those norms; the factor
multiplies every array, also when it is 1). Clipping rescales the whole gradient, so its
direction is kept: only the step length is bounded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["clip_grad_norm_", "grad_norm"]


def grad_norm(grads: Sequence[np.ndarray], norm_type: float = 2.0) -> float:
    """``‖g‖_p`` of the gradients taken as one vector (the per-array norms' norm)."""
    p = float(norm_type)
    if not grads:
        return 0.0
    if math.isinf(p):
        return float(max(np.abs(g).max(initial=0.0) for g in grads))
    norms = np.array([np.linalg.norm(g.reshape(-1), ord=p) for g in grads])
    return float(np.linalg.norm(norms, ord=p))


def clip_grad_norm_(
    grads: Sequence[np.ndarray],
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
) -> float:
    """Scale ``grads`` in place so their global ``norm_type`` norm is at most ``max_norm``;
    return the norm before clipping (torch's ``clip_grad_norm_``, ``GPT.clip``)."""
    if isinstance(grads, np.ndarray):
        grads = [grads]
    max_norm = float(max_norm)
    if not (max_norm > 0 and math.isfinite(max_norm)):
        raise ValueError(f"max_norm must be a positive finite number, got {max_norm!r}")
    if not (float(norm_type) > 0):
        raise ValueError(f"norm_type must be positive, got {norm_type!r}")
    total = grad_norm(grads, norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"the total norm of order {norm_type} of the gradients is {total}")
    coefficient = min(1.0, max_norm / (total + 1e-6))
    for g in grads:
        g *= coefficient  # torch multiplies by the clamped factor, 1 included
    return total
