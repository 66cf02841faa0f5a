"""Targets as class labels or one-hot vectors."""

from __future__ import annotations

import numpy as np

from manual_bp._validation import (
    as_array,
    check_finite,
    check_labels,
    is_label_vector,
    one_hot_rows,
)

__all__ = ["is_label_vector", "one_hot", "to_labels"]


def one_hot(labels: np.ndarray, n_classes: int, dtype=np.float64) -> np.ndarray:
    """``(batch,)`` integer labels -> ``(batch, n_classes)`` one-hot rows.

    Raises ``ValueError`` naming the first label outside ``[0, n_classes)``; ``TypeError``
    for labels that are not integers (floats, bools, complex).
    """
    if isinstance(n_classes, (bool, np.bool_)) or not isinstance(n_classes, (int, np.integer)):
        containers = (np.ndarray, list, tuple, dict, set)  # their repr may span lines
        shown = type(n_classes).__name__ if isinstance(n_classes, containers) else repr(n_classes)
        raise TypeError(f"n_classes must be an integer, got {shown:.60}".replace("\n", " "))
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    labels = as_array(labels, "labels")
    if not is_label_vector(labels):
        raise ValueError(
            f"labels must be a 1-D integer array, got shape {labels.shape} dtype {labels.dtype}"
        )
    check_labels(labels, n_classes, "labels")
    return one_hot_rows(labels, n_classes, dtype)


def to_labels(y: np.ndarray) -> np.ndarray:
    """Class labels from labels (returned as is) or from one-hot / score rows (argmax).

    Labels must be ``>= 0``; rows must be finite (an argmax over NaN is meaningless).
    """
    y = as_array(y, "y")
    if is_label_vector(y):
        if y.size and y.min() < 0:
            raise ValueError(f"y: label {int(y.min())} is negative; labels are 0, 1, …")
        return y
    if y.ndim != 2:
        raise ValueError(
            f"y must be integer labels (batch,) or rows (batch, classes), got shape {y.shape} "
            f"dtype {y.dtype}"
        )
    check_finite(y, "y")
    return np.argmax(y, axis=1)
