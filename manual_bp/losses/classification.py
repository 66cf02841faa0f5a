"""torch's ``NLLLoss`` and ``CrossEntropyLoss``: class weights, ``ignore_index``, label
smoothing, class-probability targets, K-dimensional inputs (``docs/losses_classification.md``).

Shapes, as torch's: the input is ``(C)``, ``(N, C)`` or ``(N, C, d₁, …, d_K)`` (classes on
axis 1, or axis 0 without a batch); a class-index target is ``()``, ``(N)`` or
``(N, d₁, …, d_K)`` — the input's shape without the class axis — and a class-probability
target (cross-entropy only) has the input's shape. Internally each position of the target is
one *row* ``i`` of ``C`` scores; ``'none'`` returns one loss per row in the target's shape.

Both losses are ``−Σ_c a_ic ℓ_ic`` for a per-row *target mixture* ``a`` and the
log-probabilities ``ℓ`` (the input itself for NLL, ``log_softmax`` for cross-entropy); the
class weights and label smoothing live in ``a`` (:func:`target_mixture`). ``'mean'`` divides
by ``Σ_i w_{y_i}`` over the rows not ignored (the count when no weight is given) for class
indices, and by the number of rows for probability targets, exactly as torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from manual_bp._validation import as_array
from manual_bp.losses.base import Loss, reduce, reduce_vjp, register_loss

__all__ = [
    "CrossEntropyLoss",
    "NLLLoss",
    "class_rows",
    "class_weight",
    "log_softmax_rows",
    "row_upstream",
    "target_mixture",
]


def class_weight(weight: Any) -> np.ndarray | None:
    """A constructor's ``weight``: None, or a 1-D array of finite real numbers (float64)."""
    if weight is None:
        return None
    array = as_array(weight, "weight")
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"weight must be a 1-D array with one entry per class, got shape "
                         f"{array.shape}")  # fmt: skip
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError("weight must hold finite numbers")
    return array


def _float_input(x: Any, owner: str) -> np.ndarray:
    x = as_array(x, "input")
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{owner}: input must be float32 or float64, got {x.dtype}")
    if x.ndim == 0:
        raise ValueError(f"{owner}: input must have a class axis ((C), (N, C) or "
                         f"(N, C, d1, ..., dK)), got a 0-d array")  # fmt: skip
    return x


def to_rows(x: np.ndarray) -> np.ndarray:
    """``(C)`` -> ``(1, C)``; ``(N, C, d…)`` -> ``(N·d…, C)`` (the class axis last)."""
    if x.ndim == 1:
        return x[None, :]
    return np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])


def from_rows(rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of :func:`to_rows` for an array of the input's ``shape``."""
    if len(shape) == 1:
        return rows.reshape(shape)
    moved = (shape[0], *shape[2:], shape[1])
    return np.moveaxis(rows.reshape(moved), -1, 1)


def class_rows(x: np.ndarray, target: Any, owner: str, ignore_index: int) -> np.ndarray:
    """The class-index ``target`` checked against input ``x`` and flattened to rows.

    Shape ``x.shape`` without axis 1 (``()`` for a 1-D input), integer dtype, every entry in
    ``[0, C)`` or equal to ``ignore_index``; errors name ``target``.
    """
    target = as_array(target, "target")
    expected = () if x.ndim == 1 else (x.shape[0], *x.shape[2:])
    if not np.issubdtype(target.dtype, np.integer):
        raise TypeError(f"{owner}: target must hold integer class indices of shape {expected} "
                        f"(or, for cross-entropy, class probabilities of the input's shape "
                        f"{x.shape}), got {target.dtype} of shape {target.shape}")  # fmt: skip
    if target.shape != expected:
        raise ValueError(f"{owner}: target must have shape {expected} for an input of shape "
                         f"{x.shape}, got {target.shape}")  # fmt: skip
    rows = target.reshape(-1).astype(np.int64)
    n_classes = x.shape[0] if x.ndim == 1 else x.shape[1]
    bad = (rows != ignore_index) & ((rows < 0) | (rows >= n_classes))
    if bad.any():
        raise ValueError(f"{owner}: target holds class {int(rows[bad][0])}, outside "
                         f"[0, {n_classes}) and not ignore_index={ignore_index}")  # fmt: skip
    return rows


def log_softmax_rows(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ln softmax(z), softmax(z))`` of each row, shifted by the row maximum (no overflow
    at logits of ±700)."""
    shifted = z - z.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return log_p, np.exp(log_p)


def target_mixture(
    labels: np.ndarray | None,
    probabilities: np.ndarray | None,
    weight: np.ndarray,
    label_smoothing: float,
    ignore_index: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The weighted target mixture ``a`` (rows × C), the kept rows and ``Σ_i w_{y_i}``
    (``LOSS.cross-entropy``).

    Class indices ``y``: ``a_i = (1 − ε) w_{y_i} e_{y_i} + (ε/C) w`` for a row not ignored,
    0 for an ignored row; the mean's total is ``Σ_{i kept} w_{y_i}``. Probabilities ``t``:
    ``a_i = w ⊙ ((1 − ε) t_i + ε/C)``, every row kept, total the row count.
    """
    n_classes = weight.size
    smooth = label_smoothing / n_classes
    if probabilities is not None:
        a = weight * ((1.0 - label_smoothing) * probabilities + smooth)
        kept = np.ones(len(probabilities), dtype=bool)
        return a, kept, np.asarray(float(len(probabilities)))
    kept = labels != ignore_index
    safe = np.where(kept, labels, 0)
    target_weight = np.where(kept, weight[safe], 0.0)
    a = np.zeros((len(labels), n_classes), dtype=weight.dtype)
    a[np.arange(len(labels)), safe] = (1.0 - label_smoothing) * target_weight
    if label_smoothing:
        a += smooth * weight
    a[~kept] = 0.0
    return a, kept, np.asarray(target_weight.sum())


def row_upstream(
    grad_output: Any,
    reduction: str,
    element_shape: tuple[int, ...],
    kept: np.ndarray,
    total: np.ndarray,
    dtype: np.dtype,
    owner: str,
) -> np.ndarray:
    """The upstream gradient of each row's loss (``LOSS.reduction``'s VJP), flat, 0 on rows
    that are ignored (torch writes nothing there, even when the mean is 0/0)."""
    grad_output = np.asarray(grad_output, dtype=dtype)
    if grad_output.shape != (element_shape if reduction == "none" else ()):
        raise ValueError(f"{owner}: grad_output must have the value's shape, "
                         f"got {grad_output.shape}")  # fmt: skip
    element = reduce_vjp(grad_output, element_shape, reduction,
                         total if reduction == "mean" else None)  # fmt: skip
    return np.where(kept, np.reshape(element, -1), 0.0)


@dataclass
class ClassCache:
    """What backward needs: the input's shape, the element shape, the rows' mixture ``a``,
    kept rows, the mean's total, softmax ``p`` (cross-entropy) and ``ln p`` (probability
    targets' gradient)."""

    shape: tuple[int, ...]
    element_shape: tuple[int, ...]
    mixture: np.ndarray
    kept: np.ndarray
    total: np.ndarray
    probabilities: np.ndarray | None
    log_probabilities: np.ndarray | None
    soft_target: bool
    #: Each row's class (0 on ignored rows); None for probability targets.
    labels: np.ndarray | None = None


class WeightConfig:
    """Mixin of losses with a class ``weight`` array: the config holds it as a list (JSON),
    and the hash reads that config as text (a list is not hashable)."""

    weight: np.ndarray | None

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()  # type: ignore[misc]
        config["weight"] = None if self.weight is None else self.weight.tolist()
        return config

    def __hash__(self) -> int:
        return hash(repr(sorted(self.get_config().items())))


class _WeightedClassLoss(WeightConfig, Loss):
    hyperparameters = ("weight", "ignore_index", "reduction")

    def __init__(
        self, weight: Any = None, ignore_index: int = -100, reduction: str = "mean"
    ) -> None:
        super().__init__(reduction)
        self.weight = class_weight(weight)
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int | np.integer):
            raise TypeError(f"ignore_index must be an integer, got {ignore_index!r}")
        self.ignore_index = int(ignore_index)

    def _weights(self, n_classes: int, dtype: np.dtype) -> np.ndarray:
        if self.weight is None:
            return np.ones(n_classes, dtype=dtype)
        if self.weight.size != n_classes:
            raise ValueError(f"{type(self).__name__}: weight has {self.weight.size} entries, "
                             f"the input has {n_classes} classes")  # fmt: skip
        return self.weight.astype(dtype)

    def _element_grad(self, grad_output: Any, cache: ClassCache) -> np.ndarray:
        """The upstream gradient of each row's loss (:func:`row_upstream`)."""
        return row_upstream(grad_output, self.reduction, cache.element_shape, cache.kept,
                            cache.total, cache.mixture.dtype, type(self).__name__)  # fmt: skip


@register_loss
class NLLLoss(_WeightedClassLoss):
    """torch's ``NLLLoss(weight=None, ignore_index=-100, reduction='mean')`` on
    log-probabilities (``LOSS.nll``, ``LOSS.nll.grad``).

    ``ℓ_i = −w_{y_i} x_{i,y_i}`` (0 where ``y_i = ignore_index``); ``'mean'`` is
    ``Σ ℓ_i / Σ_{i kept} w_{y_i}`` (NaN when nothing is kept, as torch's 0/0);
    ``∂ℓ_i/∂x_ic = −w_{y_i} δ_{c,y_i}``. The loss is linear in ``x``: its Hessian is 0.
    """

    name = "nll-loss"
    aliases = ("nllloss",)
    equation_value = "LOSS.nll"
    equation_grad = "LOSS.nll.grad"

    def forward(self, input: Any, target: Any) -> tuple[np.ndarray, ClassCache]:
        x = _float_input(input, "NLLLoss")
        labels = class_rows(x, target, "NLLLoss", self.ignore_index)
        rows = to_rows(x)
        weight = self._weights(rows.shape[1], x.dtype)
        a, kept, total = target_mixture(labels, None, weight, 0.0, self.ignore_index)
        # Gathered, not Σ_c a_ic x_ic: a log-probability of −inf off the target would give NaN.
        index = np.arange(len(labels)), np.where(kept, labels, 0)
        elements = -a[index] * rows[index]
        element_shape = () if x.ndim == 1 else (x.shape[0], *x.shape[2:])
        cache = ClassCache(x.shape, element_shape, a, kept, total.astype(x.dtype), None, None,
                           False, index[1])  # fmt: skip
        value = reduce(elements.reshape(element_shape), self.reduction, cache.total)
        return value.astype(x.dtype), cache

    def backward(self, grad_output: Any, cache: ClassCache) -> tuple[np.ndarray, None]:
        g = self._element_grad(grad_output, cache)
        d_rows = np.zeros_like(cache.mixture)
        # scattered at the targets only: with Σ w_y = 0 torch's −w_y·g/0 is NaN there alone
        index = np.arange(len(g)), cache.labels
        with np.errstate(invalid="ignore"):
            d_rows[index] = -g * cache.mixture[index]
        return from_rows(d_rows, cache.shape), None


@register_loss
class CrossEntropyLoss(_WeightedClassLoss):
    """torch's ``CrossEntropyLoss(weight=None, ignore_index=-100, reduction='mean',
    label_smoothing=0.0)`` on logits (``LOSS.cross-entropy``, ``LOSS.cross-entropy.grad``,
    ``LOSS.cross-entropy.hessian``).

    With the target mixture ``a`` of :func:`target_mixture` and ``p = softmax(z)`` per row:
    ``ℓ_i = −Σ_c a_ic ln p_ic``, ``∂ℓ_i/∂z_i = (Σ_c a_ic) p_i − a_i`` (softmax minus the
    weighted target mixture), ``∂ℓ_i/∂t_ic = −(1 − ε) w_c ln p_ic`` for a probability target,
    and ``∂²ℓ_i/∂z_i² = (Σ_c a_ic)(diag p_i − p_i p_iᵀ)``.
    """

    name = "cross-entropy-loss"
    aliases = ("crossentropyloss",)
    equation_value = "LOSS.cross-entropy"
    equation_grad = "LOSS.cross-entropy.grad"
    hyperparameters = ("weight", "ignore_index", "reduction", "label_smoothing")

    def __init__(
        self,
        weight: Any = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(weight, ignore_index, reduction)
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, int | float):
            raise TypeError(f"label_smoothing must be a number, got {label_smoothing!r}")
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)

    def forward(self, input: Any, target: Any) -> tuple[np.ndarray, ClassCache]:
        x = _float_input(input, "CrossEntropyLoss")
        target = as_array(target, "target")
        rows = to_rows(x)
        weight = self._weights(rows.shape[1], x.dtype)
        soft = target.shape == x.shape
        if soft:
            if not np.issubdtype(target.dtype, np.floating):
                raise TypeError(f"CrossEntropyLoss: a target of the input's shape {x.shape} "
                                f"holds class probabilities and must be floating point, got "
                                f"{target.dtype}")  # fmt: skip
            if self.ignore_index >= 0:
                raise ValueError(f"CrossEntropyLoss: ignore_index={self.ignore_index} is not "
                                 "supported for class-probability targets")  # fmt: skip
            labels, probabilities = None, to_rows(target.astype(x.dtype))
        else:
            labels = class_rows(x, target, "CrossEntropyLoss", self.ignore_index)
            probabilities = None
        a, kept, total = target_mixture(
            labels, probabilities, weight, self.label_smoothing, self.ignore_index
        )
        log_p, p = log_softmax_rows(rows)
        elements = -(a * log_p).sum(axis=1)
        element_shape = () if x.ndim == 1 else (x.shape[0], *x.shape[2:])
        cache = ClassCache(x.shape, element_shape, a, kept, total.astype(x.dtype), p,
                           log_p if soft else None, soft)  # fmt: skip
        value = reduce(elements.reshape(element_shape), self.reduction, cache.total)
        return value.astype(x.dtype), cache

    def backward(self, grad_output: Any, cache: ClassCache) -> tuple[np.ndarray, np.ndarray | None]:
        g = self._element_grad(grad_output, cache)
        a, p = cache.mixture, cache.probabilities
        with np.errstate(invalid="ignore"):  # Σ w_y = 0 with rows kept: NaN, as torch's 0·∞
            d_rows = g[:, None] * (a.sum(axis=1, keepdims=True) * p - a)
        d_target = None
        if cache.soft_target:
            weight = self._weights(a.shape[1], a.dtype)
            d_target = from_rows(
                -(1.0 - self.label_smoothing) * g[:, None] * weight * cache.log_probabilities,
                cache.shape,
            )
        return from_rows(d_rows, cache.shape), d_target

    def input_hessian(self, grad_output: Any, cache: ClassCache) -> np.ndarray:
        """The Hessian of ``⟨grad_output, value⟩`` with respect to each row of logits
        (``LOSS.cross-entropy.hessian``): ``g_i (Σ_c a_ic)(diag p_i − p_i p_iᵀ)``, shape
        ``element_shape + (C, C)`` — the full Hessian is block-diagonal over rows. With
        ``g_i Σ_c a_ic ≥ 0`` (non-negative weights and upstream) its symmetric factor is
        ``√(g_i Σ_c a_ic) (diag √p_i − p_i √p_iᵀ)``."""
        g = self._element_grad(grad_output, cache)
        p = cache.probabilities
        mass = g * cache.mixture.sum(axis=1)
        blocks = mass[:, None, None] * (
            np.einsum("ic,cd->icd", p, np.eye(p.shape[1], dtype=p.dtype))
            - p[:, :, None] * p[:, None, :]
        )
        return blocks.reshape(*cache.element_shape, p.shape[1], p.shape[1])
