"""torch's ``MultiMarginLoss``: the multi-class hinge with torch's ``1/C`` and class weights
(``docs/losses_classification.md``).

Input ``()``, ``(C)`` or ``(N, C)``; target ``()`` or ``(N)`` (a 1-D input also takes a
``(1,)`` target, as torch); ``'none'`` gives ``(N,)`` for a 1-D target and ``()`` for a 0-d
one. Unlike the library's ``MultiMarginCost`` (Weston–Watkins, no ``1/C``), each sample's sum
is divided by the number of classes, and ``'mean'`` averages over samples (the class weights
do not enter the denominator).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from manual_bp._validation import as_array
from manual_bp.losses.base import Loss, reduce, reduce_vjp, register_loss
from manual_bp.losses.classification import WeightConfig, class_weight

__all__ = ["MultiMarginLoss"]


@dataclass
class MarginCache:
    """The input's shape, the value's element shape, the hinges ``m − x_y + x_j`` (the
    target's own entry masked out), the targets and each row's weight ``w_y``."""

    shape: tuple[int, ...]
    element_shape: tuple[int, ...]
    hinge: np.ndarray
    active: np.ndarray
    labels: np.ndarray
    target_weight: np.ndarray


@register_loss
class MultiMarginLoss(WeightConfig, Loss):
    """torch's ``MultiMarginLoss(p=1, margin=1.0, weight=None, reduction='mean')``
    (``LOSS.multi-margin``, ``LOSS.multi-margin.grad``, ``LOSS.multi-margin.hessian``).

    With ``h_ij = m − x_{i,y_i} + x_ij``: ``ℓ_i = (1/C) Σ_{j≠y_i} w_{y_i} max(0, h_ij)^p``,
    the weight outside the power (torch's kernel and reference; its docstring's
    ``max(0, w·h)^p`` is not what it computes). ``∂ℓ_i/∂x_ij = (w_{y_i}/C) p h_ij^{p−1}`` for
    an active ``j ≠ y_i`` (``h_ij > 0``, strict as torch: 0 exactly at the hinge), and
    ``∂ℓ_i/∂x_{i,y_i} = −Σ_{j≠y_i}`` of those. ``p = 2``'s Hessian is
    ``(2 w_{y_i}/C) Σ_{j active} (e_j − e_{y_i})(e_j − e_{y_i})ᵀ``; ``p = 1``'s is 0.
    """

    name = "multi-margin-loss"
    aliases = ("multimarginloss",)
    equation_value = "LOSS.multi-margin"
    equation_grad = "LOSS.multi-margin.grad"
    hyperparameters = ("p", "margin", "weight", "reduction")

    def __init__(
        self, p: int = 1, margin: float = 1.0, weight: Any = None, reduction: str = "mean"
    ) -> None:
        super().__init__(reduction)
        if isinstance(p, bool) or p not in (1, 2):
            raise ValueError(f"p must be 1 or 2 (torch supports no other), got {p!r}")
        if isinstance(margin, bool) or not isinstance(margin, int | float):
            raise TypeError(f"margin must be a number, got {margin!r}")
        if not np.isfinite(margin):
            raise ValueError(f"margin must be finite, got {margin!r}")
        self.p = int(p)
        self.margin = float(margin)
        self.weight = class_weight(weight)

    def _arrays(self, input: Any, target: Any) -> tuple[np.ndarray, np.ndarray, tuple]:
        x = as_array(input, "input")
        if x.dtype not in (np.float32, np.float64):
            raise TypeError(f"MultiMarginLoss: input must be float32 or float64, got {x.dtype}")
        if x.ndim > 2 or x.size == 0:
            raise ValueError(f"MultiMarginLoss: input must be a non-empty (C) or (N, C) array, "
                             f"got shape {x.shape}")  # fmt: skip
        target = as_array(target, "target")
        if not np.issubdtype(target.dtype, np.integer):
            raise TypeError(f"MultiMarginLoss: target must hold integer class indices, got "
                            f"{target.dtype}")  # fmt: skip
        n_rows = x.shape[0] if x.ndim == 2 else 1
        if target.ndim > 1 or target.size != n_rows or (x.ndim == 2 and target.ndim == 0):
            raise ValueError(f"MultiMarginLoss: target must have shape ({n_rows},)"
                             f"{' or ()' if x.ndim < 2 else ''} for an input of shape "
                             f"{x.shape}, got {target.shape}")  # fmt: skip
        rows = x.reshape(n_rows, -1)
        labels = target.reshape(-1).astype(np.int64)
        n_classes = rows.shape[1]
        bad = (labels < 0) | (labels >= n_classes)
        if bad.any():
            raise ValueError(f"MultiMarginLoss: target holds class {int(labels[bad][0])}, "
                             f"outside [0, {n_classes})")  # fmt: skip
        return rows, labels, target.shape

    def forward(self, input: Any, target: Any) -> tuple[np.ndarray, MarginCache]:
        rows, labels, element_shape = self._arrays(input, target)
        n_rows, n_classes = rows.shape
        if self.weight is not None and self.weight.size != n_classes:
            raise ValueError(f"MultiMarginLoss: weight has {self.weight.size} entries, the "
                             f"input has {n_classes} classes")  # fmt: skip
        index = np.arange(n_rows), labels
        hinge = rows.dtype.type(self.margin) - rows[index][:, None] + rows
        active = hinge > 0
        active[index] = False
        target_weight = (
            np.ones(n_rows, rows.dtype)
            if self.weight is None
            else self.weight.astype(rows.dtype)[labels]
        )
        powered = np.where(active, hinge if self.p == 1 else hinge * hinge, 0.0)
        elements = target_weight * powered.sum(axis=1) / rows.dtype.type(n_classes)
        cache = MarginCache(np.shape(input), element_shape, hinge, active, labels, target_weight)
        value = reduce(elements.reshape(element_shape), self.reduction)
        return value.astype(rows.dtype), cache

    def _row_scale(self, grad_output: Any, cache: MarginCache) -> np.ndarray:
        """``g_i w_{y_i} / C`` per row: the upstream gradient of each sample (through
        ``LOSS.reduction``) times the sample's weight and torch's ``1/C``."""
        dtype = cache.hinge.dtype
        grad_output = np.asarray(grad_output, dtype=dtype)
        if grad_output.shape != (cache.element_shape if self.reduction == "none" else ()):
            raise ValueError(f"MultiMarginLoss: grad_output must have the value's shape, got "
                             f"{grad_output.shape}")  # fmt: skip
        g = np.reshape(reduce_vjp(grad_output, cache.element_shape, self.reduction), -1)
        return g * cache.target_weight / dtype.type(cache.hinge.shape[1])

    def backward(self, grad_output: Any, cache: MarginCache) -> tuple[np.ndarray, None]:
        scale = self._row_scale(grad_output, cache)
        slope = np.where(cache.active, 1.0 if self.p == 1 else 2.0 * cache.hinge, 0.0)
        d_rows = scale[:, None] * slope
        d_rows[np.arange(len(d_rows)), cache.labels] = -d_rows.sum(axis=1)
        return d_rows.reshape(cache.shape), None

    def input_hessian(self, grad_output: Any, cache: MarginCache) -> np.ndarray:
        """The Hessian of ``⟨grad_output, value⟩`` with respect to each row of the input
        (``LOSS.multi-margin.hessian``), shape ``(rows, C, C)``: for ``p = 2``,
        ``2 g_i w_{y_i}/C · Σ_{j active} (e_j − e_y)(e_j − e_y)ᵀ`` (factor: the columns
        ``√(2 g_i w_{y_i}/C)(e_j − e_y)``, when that scale is non-negative); 0 for ``p = 1``
        (piecewise linear; the hinge's Dirac mass at ``h = 0`` is dropped, as autograd)."""
        scale = self._row_scale(grad_output, cache)
        n_rows, n_classes = cache.hinge.shape
        blocks = np.zeros((n_rows, n_classes, n_classes), dtype=cache.hinge.dtype)
        if self.p == 1:
            return blocks
        active = cache.active.astype(blocks.dtype) * (2.0 * scale)[:, None]
        rows = np.arange(n_rows)
        blocks[:, np.arange(n_classes), np.arange(n_classes)] = active
        blocks[rows, cache.labels, :] -= active
        blocks[rows, :, cache.labels] -= active
        blocks[rows, cache.labels, cache.labels] += active.sum(axis=1)
        return blocks
