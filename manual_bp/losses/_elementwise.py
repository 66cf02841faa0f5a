"""The element-wise loss: ``ℓᵢ = f(xᵢ, yᵢ)`` on broadcast input and target, then torch's
reduction (``docs/losses.md``).

Shared by the regression, binary and distribution losses: argument checks (float arrays,
torch's shape rule of each loss), torch's legacy ``size_average``/``reduce`` pair, the
reduction and its VJP, and the sum of a broadcast gradient back onto each argument's shape.
A subclass gives the elements ``f``, the partial derivatives ``∂f/∂x``, ``∂f/∂y`` and the
second derivative ``∂²f/∂x²`` (the output Hessian of an element-wise loss is diagonal).
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar, NamedTuple

import numpy as np

from manual_bp.losses.base import Loss, check_reduction, reduce, reduce_vjp

__all__ = ["ElementwiseCache", "ElementwiseLoss", "legacy_reduction", "sum_to_shape"]


def legacy_reduction(size_average: object, reduce_: object, reduction: str) -> str:
    """torch's ``_Reduction.legacy_get_string``: the deprecated ``size_average``/``reduce``
    pair, when either is given, overrides ``reduction`` (``reduce=False`` → ``'none'``, else
    ``size_average=False`` → ``'sum'``, else ``'mean'``), with torch's warning."""
    if size_average is None and reduce_ is None:
        return reduction
    for value, name in ((size_average, "size_average"), (reduce_, "reduce")):
        if value is not None and not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name} must be a bool or None, got {type(value).__name__}")
    size_average = True if size_average is None else bool(size_average)
    reduce_ = True if reduce_ is None else bool(reduce_)
    result = "none" if not reduce_ else ("mean" if size_average else "sum")
    warnings.warn(f"size_average and reduce args will be deprecated, please use "
                  f"reduction='{result}' instead.", UserWarning, stacklevel=3)  # fmt: skip
    return result


def sum_to_shape(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The adjoint of broadcasting an array of ``shape`` to ``grad.shape``: sum over the
    axes broadcasting added or stretched."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    grad = grad.sum(axis=tuple(range(extra))) if extra else grad
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=stretched, keepdims=True) if stretched else grad


def float_array(value: Any, name: str, complex_ok: bool = False) -> np.ndarray:
    """``value`` as an array if it is a float array (or complex, where ``complex_ok``), else
    a ``TypeError`` naming ``name`` (torch's losses refuse integer inputs: ``"mse_loss" not
    implemented for 'Long'``). ``None`` and ragged nestings never get here: every loss's
    ``forward`` is guarded (:func:`manual_bp.losses.base.checked`)."""
    value = np.asarray(value)
    if value.dtype.kind != "f" and not (complex_ok and value.dtype.kind == "c"):
        raise TypeError(f"{name} must be a float array, got dtype {value.dtype}")
    return value


def optional_float_array(value: Any, name: str) -> np.ndarray | None:
    """A constructor's optional tensor argument (``weight``, ``pos_weight``): ``None`` or a
    float array (a torch tensor, list or NumPy array; copied)."""
    if value is None:
        return None
    if hasattr(value, "detach"):  # a torch tensor, as torch's constructor takes it
        value = value.detach().cpu().numpy()
    array = np.array(value)
    if array.dtype.kind in "iu":
        array = array.astype(np.float64)
    if array.dtype.kind != "f":
        raise TypeError(f"{name} must be None or a float array, got dtype {array.dtype}")
    return array


class ElementwiseCache(NamedTuple):
    """What :meth:`ElementwiseLoss.backward` needs: the broadcast arguments, their own
    shapes, the elements' shape and the mean's denominator."""

    x: np.ndarray
    y: np.ndarray
    input_shape: tuple[int, ...]
    target_shape: tuple[int, ...]
    shape: tuple[int, ...]
    total: float | None


class ElementwiseLoss(Loss):
    """``value = reduce(f(x, y))`` on the broadcast pair (``LOSS.reduction``).

    ``shape_rule``: ``'warn'`` (torch warns and broadcasts: MSE, L1, Huber, smooth L1),
    ``'same'`` (torch refuses another shape: BCE, BCE with logits) or ``'broadcast'``
    (torch broadcasts silently: KL divergence, Poisson NLL).
    """

    shape_rule: ClassVar[str] = "warn"
    #: Whether complex input and target are taken (torch's ``l1_loss``: ``|x − y|``).
    complex_ok: ClassVar[bool] = False

    # ------------------------------------------------------------------ subclass hooks
    def elements(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The unreduced loss ``f(x, y)`` (``LOSS.<name>``)."""
        raise NotImplementedError

    def partials(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(∂f/∂x, ∂f/∂y)`` element by element (``LOSS.<name>.grad``)."""
        raise NotImplementedError

    def second(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``∂²f/∂x²`` element by element (``LOSS.<name>.hess``)."""
        raise NotImplementedError

    def check_arguments(self, x: np.ndarray, y: np.ndarray) -> None:
        """Domain checks torch makes (BCE: input in [0, 1]); none by default."""

    def mean_total(self, x: np.ndarray, shape: tuple[int, ...]) -> float | None:
        """The mean's denominator (``None``: the element count)."""
        return None

    # ------------------------------------------------------------------ the protocol
    def _prepare(self, input: np.ndarray, target: np.ndarray) -> ElementwiseCache:
        x = float_array(input, "input", self.complex_ok)
        y = float_array(target, "target", self.complex_ok)
        if x.shape != y.shape:
            if self.shape_rule == "same":
                raise ValueError(f"target size {y.shape} must be the same as input size "
                                 f"{x.shape} for {type(self).__name__}")  # fmt: skip
            if self.shape_rule == "warn":
                warnings.warn(
                    f"Using a target size ({y.shape}) that is different to the input size "
                    f"({x.shape}). This will likely lead to incorrect results due to "
                    "broadcasting. Please ensure they have the same size.",
                    UserWarning,
                    stacklevel=4,
                )
        try:
            xb, yb = np.broadcast_arrays(x, y)
        except ValueError:
            raise ValueError(f"target of shape {y.shape} does not broadcast with input of "
                             f"shape {x.shape}") from None  # fmt: skip
        self.check_arguments(xb, yb)
        dtype = np.result_type(x.dtype, y.dtype)
        xb, yb = xb.astype(dtype, copy=False), yb.astype(dtype, copy=False)
        return ElementwiseCache(xb, yb, x.shape, y.shape, xb.shape, self.mean_total(x, xb.shape))

    def forward(self, input: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, Any]:
        """``(value, cache)``: torch's ``reduction`` of :meth:`elements` (``LOSS.reduction``)."""
        cache = self._prepare(input, target)
        with np.errstate(all="ignore"):  # NaN/inf propagate as torch's, without warnings
            ell = self.elements(cache.x, cache.y)
        return reduce(ell, self._reduction(), cache.total), cache

    def _reduction(self) -> str:
        return self.reduction

    def _upstream(self, grad_output: np.ndarray, cache: ElementwiseCache) -> np.ndarray:
        """The upstream gradient of each element (``LOSS.reduction``'s VJP)."""
        grad_output = np.asarray(grad_output, dtype=cache.x.dtype)
        expected = cache.shape if self._reduction() == "none" else ()
        if grad_output.shape != expected:
            raise ValueError(f"grad_output has shape {grad_output.shape}; the value's shape "
                             f"is {expected}")  # fmt: skip
        return reduce_vjp(grad_output, cache.shape, self._reduction(), cache.total)

    def backward(self, grad_output: np.ndarray, cache: ElementwiseCache) -> tuple[np.ndarray, ...]:
        """``(∂input, ∂target)`` of ``⟨grad_output, value⟩``: the upstream gradient of each
        element times ``∂f/∂x`` and ``∂f/∂y``, summed back over broadcast axes."""
        upstream = self._upstream(grad_output, cache)
        with np.errstate(all="ignore"):
            dx, dy = self.partials(cache.x, cache.y)
            return (sum_to_shape(upstream * dx, cache.input_shape),
                    sum_to_shape(upstream * dy, cache.target_shape))  # fmt: skip

    def hessian_diagonal(self, grad_output: np.ndarray, cache: ElementwiseCache) -> np.ndarray:
        """The diagonal of ``∂²⟨grad_output, value⟩/∂input²`` (``LOSS.<name>.hess``): an
        element-wise loss has a diagonal Hessian in its input, ``g ⊙ ∂²f/∂x²`` summed back
        over broadcast axes (each input element still feeds only elements of its own)."""
        upstream = self._upstream(grad_output, cache)
        with np.errstate(all="ignore"):
            return sum_to_shape(upstream * self.second(cache.x, cache.y), cache.input_shape)


def reduction_argument(reduction: object, size_average: object, reduce_: object) -> str:
    """``reduction`` checked, then overridden by the legacy pair as torch does."""
    return legacy_reduction(size_average, reduce_, check_reduction(reduction))
