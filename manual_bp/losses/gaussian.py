"""torch's ``GaussianNLLLoss`` (``docs/losses_pairs.md``): the negative log-likelihood of a
target under a Gaussian of predicted mean and variance, with torch's variance shapes and
its clamp of the variance at ``eps``.

Second derivatives: :meth:`GaussianNLLLoss.hessian_diagonal` gives the Hessian of
``⟨grad_output, value⟩`` with respect to the input (the mean), ``g/v`` — diagonal, and
exact (the loss is quadratic in the mean).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from manual_bp._validation import as_array
from manual_bp.losses.base import Loss, reduce, reduce_vjp, register_loss
from manual_bp.losses.pair_tools import as_float, float_dtype, target_as, unbroadcast

__all__ = ["GaussianNLLLoss"]


def _var_shape(input_shape: tuple[int, ...], var_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape ``var`` takes against the input, as torch decides it: the input's own
    (heteroscedastic); the input's without its last axis (homoscedastic: a trailing axis
    of 1 is added); or the input's rank with one mismatched axis, of size 1."""
    if var_shape == input_shape:
        return var_shape
    if input_shape[:-1] == var_shape:
        return (*var_shape, 1)
    if (
        len(input_shape) == len(var_shape)
        and sum(v for i, v in zip(input_shape, var_shape, strict=True) if i != v) == 1
    ):
        return var_shape
    raise ValueError(f"var is of incorrect size: {var_shape} for an input of shape "
                     f"{input_shape}")  # fmt: skip


@register_loss
class GaussianNLLLoss(Loss):
    """torch's ``GaussianNLLLoss(*, full=False, eps=1e-6, reduction='mean')``
    (``LOSS.gaussian-nll``, ``LOSS.gaussian-nll.grad``).

    ``ℓ = ½(ln v + (x − y)²/v) [+ ½ ln 2π]`` with ``v = max(var, eps)``. torch clamps under
    ``no_grad``, so the gradient in ``var`` is the unclamped formula evaluated at the
    clamped value: ``∂ℓ/∂var = ½(1/v − (x − y)²/v²)``, also where ``var < eps``.
    ``∂ℓ/∂x = (x − y)/v = −∂ℓ/∂y``; ``∂²ℓ/∂x² = 1/v``. ``var`` has the input's shape, or
    lacks its last axis, or has one axis of size 1 where the input's differs, or is a
    Python float (no gradient then); the target broadcasts.
    """

    name = "gaussian-nll-loss"
    aliases = ("gaussiannllloss", "gaussian-nll")
    equation_value = "LOSS.gaussian-nll"
    equation_grad = "LOSS.gaussian-nll.grad"
    hyperparameters = ("full", "eps", "reduction")
    arguments = ("input", "target", "var")

    def __init__(self, *, full: bool = False, eps: float = 1e-6, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.full, self.eps = bool(full), float(eps)

    def __call__(self, *arrays: Any) -> np.ndarray:
        """As torch's module: ``var`` may be a Python float (one variance for every entry)."""
        if len(arrays) == 3 and isinstance(arrays[2], float):
            return self.forward(as_array(arrays[0], "input"), as_array(arrays[1], "target"),
                                arrays[2])[0]  # fmt: skip
        return super().__call__(*arrays)

    def forward(self, input, target, var) -> tuple[np.ndarray, Any]:
        var_is_float = isinstance(var, float)
        if var_is_float:
            if var < 0:
                raise ValueError("var has negative entry/entries")
            var = np.full(input.shape, var, dtype=float_dtype(input))
        elif np.any(var < 0):
            raise ValueError("var has negative entry/entries")
        var_shape = var.shape
        var = var.reshape(_var_shape(input.shape, var.shape))
        dtype = float_dtype(input, target, var)
        x, y = as_float(input, "input", dtype), target_as(target, dtype)
        v = np.maximum(as_float(var, "var", dtype), dtype.type(self.eps))
        r = x - y
        elements = 0.5 * (np.log(v) + r * r / v)
        if self.full:
            elements = elements + dtype.type(0.5 * math.log(2 * math.pi))
        cache = (x.shape, target, var.shape, None if var_is_float else var_shape, r, v)
        return reduce(elements, self.reduction), cache

    def backward(self, grad_output, cache) -> tuple[np.ndarray, np.ndarray | None, Any]:
        x_shape, target, v_shape, var_shape, r, v = cache
        g = reduce_vjp(grad_output, np.broadcast_shapes(r.shape, v.shape), self.reduction)
        d_x = g * r / v
        d_target = None
        if target.dtype.kind == "f":
            d_target = unbroadcast(-d_x, target.shape).astype(r.dtype)
        d_var = None
        if var_shape is not None:
            d_v = g * (0.5 / v - 0.5 * (r / v) ** 2)
            d_var = unbroadcast(d_v, v_shape).reshape(var_shape).astype(r.dtype)
        return unbroadcast(d_x, x_shape).astype(r.dtype), d_target, d_var

    def hessian_diagonal(self, grad_output: np.ndarray, cache: Any) -> np.ndarray:
        """``g/v``: the Hessian of ``⟨grad_output, value⟩`` in the input (diagonal)."""
        x_shape, _, _, _, r, v = cache
        g = reduce_vjp(grad_output, np.broadcast_shapes(r.shape, v.shape), self.reduction)
        return unbroadcast(g / v, x_shape).astype(r.dtype)
