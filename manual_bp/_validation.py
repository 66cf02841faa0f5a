"""Input checks with errors that name the array, its shape and what was expected."""

from __future__ import annotations

import numpy as np

from manual_bp.encoding import is_label_vector, one_hot

__all__ = ["as_inputs", "as_targets", "check_batch", "check_finite"]


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


def as_inputs(x, n_in: int, dtype: np.dtype, name: str = "x") -> np.ndarray:
    """``x`` as a ``(batch, n_in)`` array of ``dtype``; a single 1-D sample is an error."""
    x = np.asarray(x)
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise TypeError(f"{name} must be numeric, got dtype {x.dtype}")
    if x.ndim == 1 and x.shape[0] == n_in:
        raise ValueError(
            f"{name} has shape {x.shape}: a single sample must be passed as a batch of one, "
            f"shape (1, {n_in}) (e.g. {name}[None, :])"
        )
    check_batch(x, n_in, name)
    return x.astype(dtype, copy=False)


def as_targets(y, n_out: int, batch: int, dtype: np.dtype, name: str = "y") -> np.ndarray:
    """Targets as ``(batch, n_out)`` rows; 1-D integer labels are one-hot encoded."""
    y = np.asarray(y)
    if is_label_vector(y):
        if y.shape[0] != batch:
            raise ValueError(f"{name} has {y.shape[0]} labels for a batch of {batch} inputs")
        return one_hot(y, n_out, dtype=dtype)
    if not np.issubdtype(y.dtype, np.number):
        raise TypeError(f"{name} must be numeric, got dtype {y.dtype}")
    if y.ndim == 1:
        raise ValueError(
            f"{name} has shape {y.shape} with dtype {y.dtype}: pass integer class labels "
            f"(batch,) or target rows (batch, {n_out})"
        )
    check_batch(y, n_out, name, batch=batch)
    return y.astype(dtype, copy=False)


def check_finite(array: np.ndarray, name: str, block_rows: int = 4096) -> None:
    """Raise ``ValueError`` naming the first non-finite entry of ``array``.

    Checked in blocks of rows so that a training set's check does not allocate a
    full-size boolean temporary (50 000 × 784 would be 39 MB).
    """
    rows = array.reshape(array.shape[0], -1) if array.ndim > 1 else array.reshape(-1, 1)
    for start in range(0, rows.shape[0], block_rows):
        finite = np.isfinite(rows[start : start + block_rows])
        if not finite.all():
            row, column = np.unravel_index(int(np.argmin(finite)), finite.shape)
            flat = (start + int(row)) * rows.shape[1] + int(column)
            index = tuple(int(i) for i in np.unravel_index(flat, array.shape))
            raise ValueError(f"{name} contains a non-finite value {array[index]} at index {index}")
