"""Margin losses of one input against a ±1 or label target (``docs/losses_pairs.md``):
torch's ``HingeEmbeddingLoss``, ``MarginRankingLoss``, ``SoftMarginLoss``,
``MultiLabelSoftMarginLoss`` and ``MultiLabelMarginLoss``, with torch's signatures,
defaults, input forms (batched and unbatched) and reductions.

Second derivatives: every loss here is elementwise in its input except
``MultiLabelMarginLoss``; :meth:`hessian_diagonal` gives the (then diagonal) Hessian of
``⟨grad_output, value⟩`` with respect to the input — ``σ'`` terms for the soft margins, and
exactly zero away from the hinges for the piecewise-linear ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import expit

from manual_bp.losses.base import Loss, reduce, reduce_vjp, register_loss
from manual_bp.losses.pair_tools import (
    as_float,
    float_dtype,
    hinge,
    legacy_reduction,
    target_as,
    unbroadcast,
)

__all__ = [
    "HingeEmbeddingLoss",
    "MarginRankingLoss",
    "MultiLabelMarginLoss",
    "MultiLabelSoftMarginLoss",
    "SoftMarginLoss",
]


class _LegacyLoss(Loss):
    """A loss taking torch's deprecated ``size_average``/``reduce`` beside ``reduction``."""

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean") -> None:
        super().__init__(legacy_reduction(size_average, reduce, reduction))


@register_loss
class HingeEmbeddingLoss(_LegacyLoss):
    """torch's ``HingeEmbeddingLoss(margin=1.0, reduction='mean')`` (``LOSS.hinge-embedding``,
    ``LOSS.hinge-embedding.grad``).

    ``ℓ = [y ≠ 1]·max(0, Δ − x) + [y ≠ −1]·x``; ``∂ℓ/∂x = −[y ≠ 1][Δ − x ≥ 0] + [y ≠ −1]``
    (the hinge passes its gradient at ``Δ − x = 0``, as torch's ``clamp_min``). The target
    broadcasts against the input; it has no gradient.
    """

    name = "hinge-embedding-loss"
    aliases = ("hingeembeddingloss", "hinge-embedding")
    equation_value = "LOSS.hinge-embedding"
    equation_grad = "LOSS.hinge-embedding.grad"
    hyperparameters = ("margin", "reduction")

    def __init__(self, margin: float = 1.0, size_average=None, reduce=None,
                 reduction: str = "mean") -> None:  # fmt: skip
        super().__init__(size_average, reduce, reduction)
        self.margin = float(margin)

    def forward(self, input: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, Any]:
        dtype = float_dtype(input)  # the target is only compared: it does not promote
        x, y = as_float(input, "input", dtype), target_as(target, dtype)
        clamped, active = hinge(dtype.type(self.margin) - x)
        elements = np.where(y != 1, clamped, 0) + np.where(y != -1, x, 0)
        slope = (np.where(y != -1, 1.0, 0.0) - np.where((y != 1) & active, 1.0, 0.0)).astype(dtype)
        return reduce(elements.astype(dtype), self.reduction), (x.shape, slope, elements.shape)

    def backward(self, grad_output: np.ndarray, cache: Any) -> tuple[np.ndarray, None]:
        shape, slope, out_shape = cache
        g = reduce_vjp(grad_output, out_shape, self.reduction)
        return unbroadcast(g * slope, shape).astype(slope.dtype), None

    def hessian_diagonal(self, grad_output: np.ndarray, cache: Any) -> np.ndarray:
        """Zero: the loss is piecewise linear in the input (undefined only at the hinge)."""
        return np.zeros(cache[0], cache[1].dtype)


@register_loss
class MarginRankingLoss(_LegacyLoss):
    """torch's ``MarginRankingLoss(margin=0.0, reduction='mean')`` (``LOSS.margin-ranking``,
    ``LOSS.margin-ranking.grad``).

    ``ℓ = max(0, −y(x₁ − x₂) + Δ)``; where ``u = −y(x₁ − x₂) + Δ ≥ 0`` (the hinge included):
    ``∂ℓ/∂x₁ = −y``, ``∂ℓ/∂x₂ = y``, ``∂ℓ/∂y = −(x₁ − x₂)`` (a float target has a gradient,
    as in torch; an integer one has none). The three arrays have one number of dimensions
    and broadcast.
    """

    name = "margin-ranking-loss"
    aliases = ("marginrankingloss", "margin-ranking")
    equation_value = "LOSS.margin-ranking"
    equation_grad = "LOSS.margin-ranking.grad"
    hyperparameters = ("margin", "reduction")
    arguments = ("input1", "input2", "target")

    def __init__(self, margin: float = 0.0, size_average=None, reduce=None,
                 reduction: str = "mean") -> None:  # fmt: skip
        super().__init__(size_average, reduce, reduction)
        self.margin = float(margin)

    def forward(self, input1, input2, target) -> tuple[np.ndarray, Any]:
        if not input1.ndim == input2.ndim == target.ndim:
            raise ValueError("input1, input2 and target must have the same number of "
                             f"dimensions, got shapes {input1.shape}, {input2.shape}, "
                             f"{target.shape}")  # fmt: skip
        dtype = float_dtype(input1, input2, target)
        x1, x2 = as_float(input1, "input1", dtype), as_float(input2, "input2", dtype)
        y = target_as(target, dtype)
        diff = x1 - x2
        clamped, active = hinge(-y * diff + dtype.type(self.margin))
        cache = (x1.shape, x2.shape, target, y, diff, active)
        return reduce(clamped, self.reduction), cache

    def backward(self, grad_output, cache) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        shape1, shape2, target, y, diff, active = cache
        g = reduce_vjp(grad_output, active.shape, self.reduction) * active
        d_target = None
        if target.dtype.kind == "f":
            d_target = unbroadcast(-g * diff, target.shape).astype(diff.dtype)
        return (unbroadcast(-g * y, shape1).astype(diff.dtype),
                unbroadcast(g * y, shape2).astype(diff.dtype), d_target)  # fmt: skip


@register_loss
class SoftMarginLoss(_LegacyLoss):
    """torch's ``SoftMarginLoss(reduction='mean')`` (``LOSS.soft-margin``,
    ``LOSS.soft-margin.grad``).

    ``ℓ = ln(1 + e^{−yx})`` (as ``logaddexp(0, −yx)``: finite where torch's
    ``log1p(exp(−yx))`` overflows to inf beyond ``−yx ≈ 709``);
    ``∂ℓ/∂x = −y·σ(−yx)``, ``∂²ℓ/∂x² = y²σ(yx)σ(−yx)``. The target broadcasts to the
    input's shape (not beyond it, as torch) and has no gradient.
    """

    name = "soft-margin-loss"
    aliases = ("softmarginloss", "soft-margin")
    equation_value = "LOSS.soft-margin"
    equation_grad = "LOSS.soft-margin.grad"
    hyperparameters = ("reduction",)

    def forward(self, input: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, Any]:
        dtype = float_dtype(input, target)
        x, y = as_float(input, "input", dtype), target_as(target, dtype)
        if np.broadcast_shapes(x.shape, y.shape) != x.shape:
            raise ValueError(f"target of shape {y.shape} does not broadcast to the input's "
                             f"shape {x.shape}")  # fmt: skip
        margin = y * x
        return reduce(np.logaddexp(0, -margin), self.reduction), (x.shape, y, margin)

    def backward(self, grad_output: np.ndarray, cache: Any) -> tuple[np.ndarray, None]:
        shape, y, margin = cache
        g = reduce_vjp(grad_output, shape, self.reduction)
        return (-g * y * expit(-margin)).astype(margin.dtype), None

    def hessian_diagonal(self, grad_output: np.ndarray, cache: Any) -> np.ndarray:
        """``g·y²σ(yx)σ(−yx)``: the Hessian of ``⟨grad_output, value⟩`` in the input (diagonal,
        the loss being elementwise)."""
        shape, y, margin = cache
        g = reduce_vjp(grad_output, shape, self.reduction)
        return (g * y * y * expit(margin) * expit(-margin)).astype(margin.dtype)


@register_loss
class MultiLabelSoftMarginLoss(_LegacyLoss):
    """torch's ``MultiLabelSoftMarginLoss(weight=None, reduction='mean')``
    (``LOSS.multilabel-soft-margin``, ``LOSS.multilabel-soft-margin.grad``).

    Over the last (class) axis of ``C`` entries:
    ``ℓ = −(1/C) Σ_c w_c [y_c ln σ(x_c) + (1 − y_c) ln σ(−x_c)]``;
    ``∂ℓ/∂x_c = (w_c/C)(σ(x_c) − y_c)``, ``∂ℓ/∂y_c = −(w_c/C)·x_c`` (a float target has a
    gradient, as in torch), ``∂²ℓ/∂x_c² = (w_c/C)σ(x_c)σ(−x_c)``. ``weight`` broadcasts
    against the input (torch's buffer; no gradient).
    """

    name = "multilabel-soft-margin-loss"
    aliases = ("multilabelsoftmarginloss", "multilabel-soft-margin")
    equation_value = "LOSS.multilabel-soft-margin"
    equation_grad = "LOSS.multilabel-soft-margin.grad"
    hyperparameters = ("weight", "reduction")

    def __init__(self, weight: Any = None, size_average=None, reduce=None,
                 reduction: str = "mean") -> None:  # fmt: skip
        super().__init__(size_average, reduce, reduction)
        self.weight = None if weight is None else as_float(np.asarray(weight), "weight",
                                                           np.dtype(np.float64))  # fmt: skip

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["weight"] = None if self.weight is None else self.weight.tolist()
        return config

    def __hash__(self) -> int:
        return hash(repr(self.get_config()))

    def forward(self, input: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, Any]:
        if input.ndim == 0:
            raise ValueError("input must have a class axis (at least 1 dimension), got a 0-d "
                             "array")  # fmt: skip
        dtype = float_dtype(input, target)
        x, y = as_float(input, "input", dtype), target_as(target, dtype)
        w = dtype.type(1.0) if self.weight is None else self.weight.astype(dtype)
        # −[y ln σ(x) + (1 − y) ln σ(−x)] = y·softplus(−x) + (1 − y)·softplus(x)
        terms = w * (y * np.logaddexp(0, -x) + (1 - y) * np.logaddexp(0, x))
        per_sample = terms.sum(axis=-1) / dtype.type(x.shape[-1])
        return reduce(per_sample, self.reduction), (x, y, w, target, terms.shape)

    def backward(self, grad_output, cache) -> tuple[np.ndarray, np.ndarray | None]:
        x, y, w, target, shape = cache
        g = reduce_vjp(grad_output, shape[:-1], self.reduction)[..., None] * (w / x.shape[-1])
        d_input = unbroadcast(np.broadcast_to(g * (expit(x) - y), shape), x.shape)
        d_target = None
        if target.dtype.kind == "f":
            d_target = unbroadcast(np.broadcast_to(-g * x, shape), target.shape)
        return d_input.astype(x.dtype), None if d_target is None else d_target.astype(x.dtype)

    def hessian_diagonal(self, grad_output: np.ndarray, cache: Any) -> np.ndarray:
        """``g·(w_c/C)σ(x_c)σ(−x_c)``: the Hessian of ``⟨grad_output, value⟩`` in the input
        (diagonal: each class enters through its own term)."""
        x, _, w, _, shape = cache
        g = reduce_vjp(grad_output, shape[:-1], self.reduction)[..., None] * (w / x.shape[-1])
        h = np.broadcast_to(g * expit(x) * expit(-x), shape)
        return unbroadcast(h, x.shape).astype(x.dtype)


@register_loss
class MultiLabelMarginLoss(_LegacyLoss):
    """torch's ``MultiLabelMarginLoss(reduction='mean')`` (``LOSS.multilabel-margin``,
    ``LOSS.multilabel-margin.grad``).

    Input ``(C,)`` or ``(N, C)`` (or 0-d, one class); target of the same shape, integer
    class indices read up to the first ``−1``. With ``J`` the listed targets (repeats
    counted each time) and ``T`` their set:
    ``ℓ = (1/C) Σ_{j∈J} Σ_{i∉T} max(0, 1 − x_j + x_i)``; where ``z = 1 − x_j + x_i > 0``
    (strictly: torch's kernel skips ``z = 0``) the pair adds ``1/C`` to ``∂ℓ/∂x_i`` and
    ``−1/C`` to ``∂ℓ/∂x_j``. ``'mean'`` divides by the number of samples. Piecewise linear:
    zero Hessian.
    """

    name = "multilabel-margin-loss"
    aliases = ("multilabelmarginloss", "multilabel-margin")
    equation_value = "LOSS.multilabel-margin"
    equation_grad = "LOSS.multilabel-margin.grad"
    hyperparameters = ("reduction",)

    def forward(self, input: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, Any]:
        if input.ndim > 2:
            raise ValueError(f"input must be 0-d, (C,) or (N, C), got shape {input.shape}")
        if target.shape != input.shape:
            raise ValueError(f"target must have the input's shape {input.shape}, "
                             f"got {target.shape}")  # fmt: skip
        if target.dtype.kind not in "iu":
            raise TypeError(f"target must hold integer class indices, got dtype {target.dtype}")
        dtype = float_dtype(input)
        x = as_float(input, "input", dtype).reshape(-1, max(input.shape[-1:] or (1,)))
        t = target.reshape(x.shape).astype(np.int64)
        n_class = x.shape[1]
        if t.size and (t.min() < -1 or t.max() >= n_class):
            raise ValueError(f"target values must lie in [-1, {n_class}), got "
                             f"[{t.min()}, {t.max()}]")  # fmt: skip
        # Targets are read up to the first −1 of each row.
        listed = np.cumprod(t != -1, axis=1).astype(bool)
        onehot = (t[:, :, None] == np.arange(n_class)) & listed[:, :, None]  # (N, J, C)
        is_target = onehot.any(axis=1)
        x_target = np.take_along_axis(x, np.where(listed, t, 0), axis=1)  # (N, J)
        z = 1 - x_target[:, :, None] + x[:, None, :]
        active = listed[:, :, None] & ~is_target[:, None, :] & (z > 0)
        per_sample = np.where(active, z, 0).sum(axis=(1, 2)) / dtype.type(n_class)
        if input.ndim <= 1:
            per_sample = per_sample.reshape(())
        value = reduce(per_sample.astype(dtype), self.reduction)
        return value, (input.shape, active, onehot, per_sample.shape, dtype)

    def backward(self, grad_output: np.ndarray, cache: Any) -> tuple[np.ndarray, None]:
        shape, active, onehot, out_shape, dtype = cache
        n_class = active.shape[2]
        g = reduce_vjp(grad_output, out_shape, self.reduction).reshape(-1, 1) / n_class
        pushed = active.sum(axis=1)  # +1 per active pair at the non-target i
        pulled = np.einsum("nj,njc->nc", active.sum(axis=2), onehot.astype(dtype))
        return (g * (pushed - pulled)).astype(dtype).reshape(shape), None

    def hessian_diagonal(self, grad_output: np.ndarray, cache: Any) -> np.ndarray:
        """Zero: piecewise linear in the input."""
        return np.zeros(cache[0], cache[4])
