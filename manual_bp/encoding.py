"""Targets as class labels or one-hot vectors."""

from __future__ import annotations

import numpy as np

__all__ = ["is_label_vector", "one_hot", "to_labels"]


def is_label_vector(y: np.ndarray) -> bool:
    """True for a 1-D array of integers (class labels)."""
    return y.ndim == 1 and np.issubdtype(y.dtype, np.integer)


def one_hot(labels: np.ndarray, n_classes: int, dtype=np.float64) -> np.ndarray:
    """``(batch,)`` integer labels -> ``(batch, n_classes)`` one-hot rows.

    Raises ``ValueError`` naming the first label outside ``[0, n_classes)``.
    """
    labels = np.asarray(labels)
    if not is_label_vector(labels):
        raise ValueError(
            f"labels must be a 1-D integer array, got shape {labels.shape} dtype {labels.dtype}"
        )
    bad = (labels < 0) | (labels >= n_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"label {int(labels[i])} at index {i} is out of range for {n_classes} classes "
            f"(valid: 0..{n_classes - 1})"
        )
    out = np.zeros((labels.shape[0], n_classes), dtype=dtype)
    out[np.arange(labels.shape[0]), labels] = 1
    return out


def to_labels(y: np.ndarray) -> np.ndarray:
    """Class labels from labels (returned as is) or from one-hot / score rows (argmax)."""
    y = np.asarray(y)
    if is_label_vector(y):
        return y
    if y.ndim != 2:
        raise ValueError(f"expected labels (batch,) or rows (batch, classes), got shape {y.shape}")
    return np.argmax(y, axis=1)
