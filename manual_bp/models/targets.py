"""Targets of a :class:`~manual_bp.sequential.Sequential` and the seed of its backward pass.

The cost of a mini-batch is a mean over **rows**: samples, or the ``N·T`` positions of a
sequence output (torch's ``cross_entropy`` on ``(N·T, C)``). With an ``ignore_index``
(equation ``SEQ.ignore_index``, torch's ``cross_entropy(..., ignore_index=i)``), positions
whose label equals it are not rows of the mean at all::

    m_r = 1[label_r ≠ i],   n = Σ_r m_r,   C = (1/n) Σ_r m_r C_r(a_r),
    ∂C/∂a_r = (m_r/n) ∇ₐC_r          (ignored rows: exactly 0, also through BP1's shortcut)

An ignored position is encoded in the prepared targets as an **all-zero row** (labels are
one-hot encoded, an ignored label gets no 1), so the mask travels with the targets through
mini-batch slicing (:func:`manual_bp.train`) and truncated BPTT chunks. This is why an
``ignore_index`` is only accepted with costs whose targets are classes, where an all-zero
row is never a valid target. A batch in which every position is ignored has no mean
(torch returns NaN); it raises instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from manual_bp._validation import check_finite, not_labels_message
from manual_bp.costs import Cost
from manual_bp.encoding import is_label_vector
from manual_bp.models.loss_cost import LossCost

__all__ = [
    "Seed",
    "check_ignore_index",
    "counted_rows",
    "encode_labels",
    "masked_accuracy",
    "output_seed",
    "prepare_targets",
    "rows",
]


def rows(a: np.ndarray) -> np.ndarray:
    """Costs take ``(rows, n_out)``: positions of a sequence output count as rows."""
    return a if a.ndim == 2 else a.reshape(-1, a.shape[-1])


def check_ignore_index(value: Any, cost: Cost) -> int | None:
    """``value`` as an int (or None), refused with costs whose targets are not classes."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"ignore_index must be an integer or None, got {value!r}")
    if cost.target_kind != "labels":
        raise ValueError(
            f"ignore_index needs a cost whose targets are class labels (log-likelihood, "
            f"categorical-cross-entropy, multi-margin), not {cost.name!r}"
        )
    return int(value)


def encode_labels(
    labels: np.ndarray, n_classes: int, ignore_index: int | None, dtype: np.dtype, name: str
) -> np.ndarray:
    """Integer labels ``(N, *)`` -> one-hot ``(N, *, n_classes)``; ignored labels -> zero rows."""
    flat = labels.reshape(-1)
    ignored = np.zeros(flat.shape, bool) if ignore_index is None else flat == ignore_index
    bad = ~ignored & ((flat < 0) | (flat >= n_classes))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        extra = "" if ignore_index is None else f", or ignore_index={ignore_index}"
        raise ValueError(
            f"{name}: label {int(flat[i])} at index {i} is out of range for {n_classes} "
            f"classes (valid: 0..{n_classes - 1}{extra})"
        )
    out = np.zeros((flat.shape[0], n_classes), dtype=dtype)
    kept = np.flatnonzero(~ignored)
    out[kept, flat[kept]] = 1
    return out.reshape((*labels.shape, n_classes))


def prepare_targets(
    y: Any,
    batch: int,
    out_shape: tuple[int, ...] | None,
    dtype: np.dtype,
    ignore_index: int | None,
    name: str = "y",
) -> np.ndarray:
    """Targets shaped like the output ``(batch, *out_shape)``; labels one-hot encoded.

    Integer labels ``(batch,)`` or ``(batch, *out_shape[:-1])`` (one per position) go
    through :func:`encode_labels`; anything else must be real, finite and output-shaped.
    """
    y = np.asarray(y)
    if is_label_vector(y) or (
        out_shape is not None
        and np.issubdtype(y.dtype, np.integer)
        and y.shape == (batch, *out_shape[:-1])
    ):
        if y.shape[0] != batch:
            raise ValueError(f"{name} has {y.shape[0]} labels for a batch of {batch} inputs")
        if out_shape is None:
            raise ValueError(f"{name}: class labels need a model with a known output shape")
        return encode_labels(y, out_shape[-1], ignore_index, dtype, name)
    if not np.issubdtype(y.dtype, np.number) or np.iscomplexobj(y):
        raise TypeError(f"{name} must be real numbers or integer labels, got dtype {y.dtype}")
    expected = (batch, *out_shape) if out_shape is not None else None
    if expected is not None and y.shape in ((batch,), expected[:-1]) and y.shape != expected:
        label_shape = (
            "(batch,)" if y.ndim == 1 else f"(batch, {', '.join(map(str, out_shape[:-1]))})"
        )
        raise ValueError(
            not_labels_message(y, name, label_shape, f"(batch, {', '.join(map(str, out_shape))})")
        )
    if expected is not None and y.shape != expected:
        raise ValueError(f"{name} has shape {y.shape}; the model's outputs are {expected}")
    y = y.astype(dtype, copy=False)
    check_finite(y, name)
    return y


def counted_rows(
    y_rows: np.ndarray, ignore_index: int | None, argument: str | None = None
) -> np.ndarray | None:
    """The rows that count (``m_r = 1``): None when nothing is ignored (every row counts).
    A batch with none is refused in one line (prefixed with ``argument``, the caller's name
    of the targets, when given)."""
    if ignore_index is None:
        return None
    mask = y_rows.any(axis=1)
    if not mask.any():
        raise ValueError(
            ("" if argument is None else f"{argument}: ")
            + f"every position of the batch is ignored (all labels equal ignore_index="
            f"{ignore_index}): the mean over no positions is undefined (torch returns nan)"
        )
    return None if mask.all() else mask


class Seed:
    """The cost of a batch and the gradients that start the backward pass.

    Both computed on first use: ``cost`` (a training step that reports no loss, the
    curvature gradient, never needs it) and ``output_grad`` (``∂C/∂aᴷ`` of the mean cost,
    shaped like the output, zero at ignored positions; a backward pass seeded through BP1's
    shortcut, ``input_grad`` = ``∂C/∂zᴷ``, never needs it).
    """

    __slots__ = ("_cost", "_make_cost", "_make_output_grad", "_output_grad", "input_grad")

    def __init__(
        self,
        cost: Callable[[], float],
        output_grad: Callable[[], np.ndarray],
        input_grad: np.ndarray | None,
    ) -> None:
        self._make_cost = cost
        self._cost: float | None = None
        self.input_grad = input_grad
        self._make_output_grad = output_grad
        self._output_grad: np.ndarray | None = None

    @property
    def cost(self) -> float:
        if self._cost is None:
            self._cost = self._make_cost()
        return self._cost

    @property
    def output_grad(self) -> np.ndarray:
        if self._output_grad is None:
            self._output_grad = self._make_output_grad()
        return self._output_grad


def output_seed(
    cost: Cost,
    out: np.ndarray,
    y: np.ndarray,
    ignore_index: int | None,
    *,
    z: np.ndarray | None = None,
    activation: Any = None,
    shortcut: bool = False,
) -> Seed:
    """Mean cost over the counted rows and its gradients (``STACK.chain``, ``SEQ.ignore_index``).

    With ``z``/``activation`` (the output layer's input and activation) the cost is taken
    from ``zᴷ`` where that is stable (:meth:`Cost.value_from_logits`); with ``shortcut``
    (BP1's exact shortcut applies) also ``∂C/∂zᴷ = δᴷ/n``. A torch-named loss as the cost
    (:class:`~manual_bp.models.loss_cost.LossCost`) gives its own value and seed instead.
    """
    if isinstance(cost, LossCost):
        value, grad = cost.seed(out, y)
        return Seed(lambda: value, lambda: grad, None)
    a, t = rows(out), rows(y)
    mask = counted_rows(t, ignore_index)
    if mask is not None:
        a, t = a[mask], t[mask]
    n = a.shape[0]

    def spread(per_row: np.ndarray) -> np.ndarray:
        if mask is None:
            return (per_row / n).reshape(out.shape)
        full = np.zeros((mask.shape[0], out.shape[-1]), dtype=per_row.dtype)
        full[mask] = per_row / n
        return full.reshape(out.shape)

    if z is None:
        return Seed(lambda: cost.value(a, t), lambda: spread(cost.grad(a, t)), None)
    z_rows = rows(z) if mask is None else rows(z)[mask]
    d_z = spread(cost.delta(z_rows, a, t, activation)) if shortcut else None
    value = functools.partial(cost.value_from_logits, z_rows, a, t, activation)
    return Seed(value, lambda: spread(cost.grad(a, t)), d_z)


def masked_accuracy(out: np.ndarray, y: np.ndarray, ignore_index: int | None) -> float:
    """Fraction of counted rows whose argmax equals the target's argmax."""
    a, t = rows(out), rows(y)
    mask = counted_rows(t, ignore_index)
    hits = np.argmax(a, axis=1) == np.argmax(t, axis=1)
    return float(np.mean(hits if mask is None else hits[mask]))
