"""Input checks shared by every public entry point, with errors that name the true cause.

Every array a user hands to the library goes through the same steps, in this order, so
that an error names the *first* thing wrong with it (a dtype problem is never reported as
a shape problem):

1. :func:`as_array` — a rectangular array (ragged nesting is named as such);
2. :func:`check_real_dtype` — real numbers: complex input is refused (never silently
   cast to its real part), as are bool, object, string and date arrays;
3. shape — exact, never broadcast (:func:`check_batch`); a batch with no samples gets
   a message about emptiness (:func:`check_nonempty`);
4. :func:`check_finite` — no NaN or ±inf, also after a cast to a narrower dtype (a float64
   value above float32's range is reported as an overflow);
5. domain — class labels in ``[0, n_classes)`` (:func:`check_labels`), and the target
   domain a cost needs (:func:`check_target_domain`: probabilities in ``[0, 1]``,
   non-negative counts, rows that are distributions, one-hot rows).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "TARGET_DOMAINS",
    "as_array",
    "as_inputs",
    "as_targets",
    "check_batch",
    "check_finite",
    "check_labels",
    "check_layer_array",
    "check_nonempty",
    "check_output_domain",
    "check_real_dtype",
    "check_target_domain",
    "distribution_tolerance",
    "is_label_vector",
    "one_hot_rows",
]

#: Target domains a cost can declare (``Cost.target_kind``), with what each requires.
TARGET_DOMAINS = {
    "real": "finite real numbers",
    "probability": "probabilities in [0, 1]",
    "count": "non-negative counts",
    "distribution": "rows that are probability distributions (non-negative, summing to 1)",
    "labels": "rows that are probability distributions (non-negative, summing to 1)",
    "one-hot": "one-hot rows (a single 1, zeros elsewhere)",
}

#: Output domains a cost can declare (``Cost.output_domain``): where its formula is
#: defined (outside, ``ln`` of a negative number gives NaN). They are deliberately no
#: narrower: a model's last layer need not be the cost's usual output activation (dropout
#: after a softmax scales probabilities above 1), and rounding can step just outside.
OUTPUT_DOMAINS = {
    "real": "real numbers",
    "probability": "probabilities in [0, 1] (e.g. a sigmoid or softmax output)",
    "log-probability": "log-probabilities <= 0 (e.g. a log-softmax output)",
    "non-negative": "non-negative (probabilities, or rates as from a softplus output)",
}


# ---------------------------------------------------------------------- arrays and dtypes
def as_array(x: Any, name: str) -> np.ndarray:
    """``x`` as a NumPy array of real numbers; errors name ``name`` and the cause.

    Raises
    ------
    ValueError
        ``x`` is ragged (nested sequences of different lengths).
    TypeError
        ``x`` is not made of real numbers (see :func:`check_real_dtype`).
    """
    if not isinstance(x, np.ndarray):
        if x is None:
            raise TypeError(f"{name} is None; expected an array of real numbers")
        try:
            x = np.asarray(x)
        except ValueError:  # ragged nesting (NumPy's own text names its internals)
            raise ValueError(
                f"{name} is not a rectangular array (nested rows of different lengths)"
            ) from None
    check_real_dtype(x, name)
    return x


def check_real_dtype(x: np.ndarray, name: str) -> None:
    """Raise ``TypeError`` unless ``x`` holds real numbers (signed/unsigned int or float).

    Complex arrays are refused rather than cast (NumPy's cast silently drops the
    imaginary part); bool arrays are refused because ``True``/``False`` are flags, not
    values; object, string, bytes and date arrays are not numbers.
    """
    kind = x.dtype.kind
    if kind in "iuf":
        return
    if kind == "c":
        raise TypeError(
            f"{name} has complex dtype {x.dtype}; manual_bp computes with real numbers only "
            "(take .real explicitly if the imaginary part is to be dropped)"
        )
    if kind == "b":
        raise TypeError(
            f"{name} has dtype bool; pass real numbers (e.g. .astype(float)) or, for "
            "class labels, integers"
        )
    raise TypeError(f"{name} must be an array of real numbers, got dtype {x.dtype}")


#: The floating dtypes a layer computes in (torch's float32 and float64).
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_layer_array(
    x: Any,
    owner: str,
    name: str,
    dtype: np.dtype | None = None,
    *,
    indices: bool = False,
    widen: bool = False,
) -> None:
    """Raise ``TypeError`` unless ``x`` is a NumPy array of a dtype the layer ``owner`` takes.

    torch's rules, without its silent promotions: a floating layer takes float32 or float64,
    the layer's own ``dtype`` when it has one (a float64 batch is refused by a float32 layer,
    and the other way round, as torch's ``mat1 and mat2 must have the same dtype``); integer
    arrays only where ``indices`` are meant (an embedding's input). Complex, bool, object,
    string and date arrays, nested lists and ``None`` are refused with the dtype named, before
    any work. Values are not looked at: NaN and ±inf propagate, as in torch. ``widen``: a
    float32 array is also accepted for a float64 ``dtype`` (an upstream gradient or tangent:
    widening is exact, the work is done in float64; narrowing is refused).
    """
    if isinstance(x, np.generic):  # a NumPy scalar, e.g. one entry of a stack: 0-d
        x = np.asarray(x)
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{owner}: {name} must be a NumPy array, got {type(x).__name__}")
    kind = x.dtype.kind
    if widen and dtype == np.float64 and x.dtype == np.float32:
        return  # an upstream gradient in float32 for a float64 layer: exact, computed in float64
    if indices:
        if kind in "iu" or x.dtype in FLOAT_DTYPES:  # whole-number floats: a float model's
            return
        raise TypeError(f"{owner}: {name} holds indices and must be integers, got {x.dtype}")
    if dtype is not None and x.dtype == dtype:
        return
    if dtype is None and x.dtype in FLOAT_DTYPES:
        return
    want = "float32 or float64" if dtype is None else f"{np.dtype(dtype).name} (the layer's dtype)"
    hint = ""
    if kind in "iu" or (kind == "f" and dtype is not None):
        target = np.dtype(dtype or np.float64).name
        hint = f" (cast it explicitly, {name}.astype(np.{target}): it is not cast silently)"
    raise TypeError(f"{owner}: {name} has dtype {x.dtype}; expected {want}{hint}")


def check_size(x: np.ndarray, owner: str, name: str, limit: int) -> None:
    """Raise ``ValueError`` when ``x`` spans more bytes than ``limit`` (the machine's memory):
    only a broadcast view or a memory map can, and a layer's work on it could not be allocated.
    """
    if x.size * x.dtype.itemsize > limit:
        raise ValueError(
            f"{owner}: {name} has shape {x.shape}, {x.size * x.dtype.itemsize / 2**30:.3g} GiB "
            f"as {x.dtype}: more than this machine's memory ({limit / 2**30:.3g} GiB)"
        )


def check_nonempty(x: np.ndarray, name: str) -> None:
    """Raise ``ValueError`` when ``x`` has no samples (or no features)."""
    if x.ndim == 0:
        return
    if x.shape[0] == 0:
        raise ValueError(
            f"{name} is empty: it has 0 samples (shape {x.shape}); a mean over no samples "
            "is undefined"
        )
    if x.size == 0:
        raise ValueError(f"{name} is empty: shape {x.shape} has a zero-length axis")


def check_batch(x: np.ndarray, n_features: int, name: str, batch: int | None = None) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(batch, n_features)``."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(x).__name__}")
    expected_batch = "batch" if batch is None else str(batch)
    if x.ndim != 2 or x.shape[1] != n_features or (batch is not None and x.shape[0] != batch):
        raise ValueError(
            f"{name} has shape {x.shape}; expected ({expected_batch}, {n_features}) "
            f"(arrays are batch-major: one row per sample)"
        )


def check_finite(
    array: np.ndarray, name: str, block_rows: int = 4096, source: np.ndarray | None = None
) -> None:
    """Raise ``ValueError`` naming the first non-finite entry of ``array``.

    Checked in blocks of rows so that a training set's check does not allocate a
    full-size boolean temporary (50 000 × 784 would be 39 MB). ``source`` is the array
    before a cast: where it holds a finite value the message says that the cast
    overflowed (a float64 1e39 becomes inf in float32).
    """
    if array.dtype.kind not in "fc" or array.size == 0:
        return  # integers are always finite
    if array.ndim == 0:
        array = array.reshape(1)
        source = None if source is None else np.reshape(source, 1)
    rows = array.reshape(array.shape[0], -1) if array.ndim > 1 else array.reshape(-1, 1)
    for start in range(0, rows.shape[0], block_rows):
        finite = np.isfinite(rows[start : start + block_rows])
        if not finite.all():
            row, column = np.unravel_index(int(np.argmin(finite)), finite.shape)
            flat = (start + int(row)) * rows.shape[1] + int(column)
            index = tuple(int(i) for i in np.unravel_index(flat, array.shape))
            if source is not None and source.dtype != array.dtype:
                original = source[index]
                if np.isfinite(original):
                    raise ValueError(
                        f"{name} has the value {original} at index {index}, which overflows "
                        f"{array.dtype} (largest {np.finfo(array.dtype).max:.4g})"
                    )
            raise ValueError(f"{name} contains a non-finite value {array[index]} at index {index}")


# ---------------------------------------------------------------------- model inputs
def as_inputs(x: Any, n_in: int, dtype: np.dtype, name: str = "x") -> np.ndarray:
    """``x`` as a finite, non-empty ``(batch, n_in)`` array of ``dtype``.

    A single 1-D sample is an error with a hint (``x[None, :]``).
    """
    x = as_array(x, name)
    if x.ndim == 1 and x.shape[0] == n_in:
        raise ValueError(
            f"{name} has shape {x.shape}: a single sample must be passed as a batch of one, "
            f"shape (1, {n_in}) (e.g. {name}[None, :])"
        )
    check_batch(x, n_in, name)
    check_nonempty(x, name)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported by name below
        cast = x.astype(dtype, copy=False)
    check_finite(cast, name, source=x)
    return cast


def check_labels(labels: np.ndarray, n_classes: int, name: str = "labels") -> None:
    """Raise ``ValueError`` naming the first label outside ``[0, n_classes)``."""
    bad = (labels < 0) | (labels >= n_classes)
    if bad.any():
        i = int(np.flatnonzero(bad.reshape(-1))[0])
        index = tuple(int(k) for k in np.unravel_index(i, labels.shape))
        where = index[0] if len(index) == 1 else index
        raise ValueError(
            f"{name}: label {int(labels[index])} at index {where} is out of range for "
            f"{n_classes} classes (valid: 0..{n_classes - 1})"
        )


# Label vectors live here, below the public encoding module (which builds one_hot on
# them), so that these checks never import upward.
def is_label_vector(y: np.ndarray) -> bool:
    """True for a 1-D array of integers (class labels)."""
    return y.ndim == 1 and np.issubdtype(y.dtype, np.integer)


def one_hot_rows(labels: np.ndarray, n_classes: int, dtype: Any) -> np.ndarray:
    """``(batch,)`` labels already checked by :func:`check_labels` -> one-hot rows."""
    out = np.zeros((labels.shape[0], n_classes), dtype=dtype)
    out[np.arange(labels.shape[0]), labels] = 1
    return out


def not_labels_message(y: np.ndarray, name: str, labels: str, rows: str) -> str:
    """The one line for label-shaped targets that are not integers (float class labels)."""
    integral = y.size and np.all(np.isfinite(y)) and np.all(y == np.round(y))
    hint = " (these look like labels: pass them as integers, .astype(int))" if integral else ""
    return (
        f"{name} has shape {y.shape} with dtype {y.dtype}: pass integer class labels "
        f"{labels} or target rows {rows}{hint}"
    )


def as_targets(y: Any, n_out: int, batch: int, dtype: np.dtype, name: str = "y") -> np.ndarray:
    """Finite target rows ``(batch, n_out)``; 1-D integer labels are range-checked, one-hot."""
    y = as_array(y, name)
    if is_label_vector(y):
        if y.shape[0] != batch:
            raise ValueError(f"{name} has {y.shape[0]} labels for a batch of {batch} inputs")
        check_nonempty(y, name)
        check_labels(y, n_out, name)
        return one_hot_rows(y, n_out, dtype)
    if y.ndim == 1:
        raise ValueError(not_labels_message(y, name, "(batch,)", f"(batch, {n_out})"))
    check_batch(y, n_out, name, batch=batch)
    check_nonempty(y, name)
    with np.errstate(over="ignore", invalid="ignore"):
        cast = y.astype(dtype, copy=False)
    check_finite(cast, name, source=y)
    return cast


# ---------------------------------------------------------------------- cost domains
def distribution_tolerance(dtype: np.dtype, n_classes: int) -> float:
    """How far a row sum may be from 1 and still count as a distribution: ``√ε·n``."""
    return math.sqrt(float(np.finfo(dtype).eps)) * max(1, n_classes)


def check_target_domain(y: np.ndarray, kind: str, cost: str) -> None:
    """Raise ``ValueError`` naming the first target outside the domain ``kind``.

    ``kind`` is one of :data:`TARGET_DOMAINS`: ``"real"`` (any finite value),
    ``"probability"`` (each entry in [0, 1]), ``"count"`` (≥ 0), ``"distribution"`` and
    ``"labels"`` (rows ≥ 0 summing to 1 within :func:`distribution_tolerance`),
    ``"one-hot"``. ``y`` is ``(batch, n)`` and finite.
    """
    if kind == "real":
        return
    if kind in ("probability", "count"):
        low, high = 0.0, (1.0 if kind == "probability" else np.inf)
        bad = (y < low) | (y > high)
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{cost}: target {y[index]} at index {index} is outside the cost's domain; "
                f"targets must be {TARGET_DOMAINS[kind]}"
            )
        return
    if kind == "one-hot":
        bad_rows = ~(((y == 0) | (y == 1)).all(axis=1) & (y.sum(axis=1) == 1))
    elif kind in ("distribution", "labels"):
        tol = distribution_tolerance(y.dtype, y.shape[1])
        bad_rows = ~((y >= 0).all(axis=1) & (np.abs(y.sum(axis=1) - 1) <= tol))
    else:
        raise ValueError(f"unknown target domain {kind!r}; valid: {', '.join(TARGET_DOMAINS)}")
    if bad_rows.any():
        i = int(np.flatnonzero(bad_rows)[0])
        what = (
            "one-hot (a single 1, zeros elsewhere)"
            if kind == "one-hot"
            else "a probability distribution (non-negative, summing to 1)"
        )
        raise ValueError(f"{cost}: target row {i} = {y[i]} is not {what}")


def check_output_domain(a: np.ndarray, kind: str, cost: str) -> None:
    """Raise ``ValueError`` when an output lies outside the domain the cost's formula needs.

    NaN outputs pass (a diverged model is reported by the divergence check with its
    cause, not as a domain error).
    """
    if kind == "real":
        return
    if kind == "probability":
        bad = (a < 0) | (a > 1)
    elif kind == "log-probability":
        bad = a > 0
    elif kind == "non-negative":
        bad = a < 0
    else:
        raise ValueError(f"unknown output domain {kind!r}; valid: {', '.join(OUTPUT_DOMAINS)}")
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{cost}: output {a[index]} at index {index} is outside the cost's domain; "
            f"outputs must be {OUTPUT_DOMAINS[kind]}"
        )


def as_cost_arrays(
    a: Any, y: Any, *, cost: str, target_kind: str, output_kind: str, labels: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """``(a, y)`` checked for a cost: real ``(batch, n)`` outputs, targets of the same shape.

    Integer labels ``(batch,)`` are range-checked and one-hot encoded when ``labels``;
    targets must be finite and in ``target_kind``'s domain, outputs in ``output_kind``'s.
    """
    a = as_array(a, f"{cost}: outputs")
    if a.ndim != 2:
        raise ValueError(
            f"{cost}: outputs must be (batch, n_out), got shape {a.shape} "
            "(a single sample is a batch of one: a[None, :])"
        )
    check_nonempty(a, f"{cost}: the batch of outputs")
    if a.dtype.kind != "f":
        a = a.astype(np.float64)
    y = as_array(y, f"{cost}: targets")
    if labels and is_label_vector(y):
        if y.shape[0] != a.shape[0]:
            raise ValueError(f"{cost}: {y.shape[0]} labels for a batch of {a.shape[0]} outputs")
        check_labels(y, a.shape[1], f"{cost}: targets")
        y = one_hot_rows(y, a.shape[1], a.dtype)
    elif y.shape != a.shape:
        raise ValueError(
            f"{cost}: targets have shape {y.shape}, outputs have shape {a.shape}; "
            "they must match (no broadcasting)"
        )
    y = y.astype(a.dtype, copy=False)
    check_finite(y, f"{cost}: targets")
    check_target_domain(y, target_kind, cost)
    check_output_domain(a, output_kind, cost)
    return a, y
