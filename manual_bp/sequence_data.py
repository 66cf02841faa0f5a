"""Synthetic sequence tasks generated from a seed: copy, reverse, running sum, parity.

Every task returns a :class:`manual_bp.data.Dataset` whose ``x_*`` are integer token
sequences ``(n, T)`` in ``[0, vocab)`` and whose ``y_*`` are per-time-step integer labels
``(n, T)`` in ``[0, n_classes)`` — what an ``embedding → recurrent → dense → softmax``
stack is trained on (:class:`~manual_bp.models.sequential.Sequential` one-hot encodes the labels
and averages the cost over every position).

========= ==================================================== =========
task      label at step t                                      classes
========= ==================================================== =========
copy      ``x[t - delay]`` (``0`` before the first), delay 1   vocab
reverse   ``x[T - 1 - t]`` — needs the whole sequence: use a   vocab
          bidirectional layer (or read the labels at the end)
sum       ``(x[0] + … + x[t]) mod vocab``                      vocab
parity    ``(x[0] + … + x[t]) mod 2`` on bits                  2
========= ==================================================== =========

``ctc-copy`` (:mod:`manual_bp.ctc_data`) is the one task without per-position labels: noisy
one-hot frames with blanks, repeats and gaps, the target the collapsed symbol sequence
(``vocab + 1`` classes, blank 0), trained with ``cost="ctc"``.
"""

from __future__ import annotations

import numpy as np

from manual_bp.data import Dataset

__all__ = ["ALL_TASKS", "TASKS", "load_task", "make_sequences"]

TASKS = ("copy", "reverse", "sum", "parity")
#: Every task ``load_task`` makes: the per-position ones and CTC's.
ALL_TASKS = (*TASKS, "ctc-copy")


def _labels(task: str, x: np.ndarray, vocab: int, delay: int) -> np.ndarray:
    if task == "copy":
        y = np.zeros_like(x)
        y[:, delay:] = x[:, : x.shape[1] - delay] if delay < x.shape[1] else 0
        return y
    if task == "reverse":
        return x[:, ::-1].copy()
    if task == "sum":
        return np.cumsum(x, axis=1) % vocab
    return np.cumsum(x, axis=1) % 2


def make_sequences(
    task: str, n: int, length: int, vocab: int, rng: np.random.Generator, delay: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` int64 arrays ``(n, length)`` of ``task`` (see the module docstring)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
    for name, value, low in (("n", n, 1), ("length", length, 1), ("vocab", vocab, 2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer ≥ {low}, got {value!r}")
    if isinstance(delay, bool) or not isinstance(delay, (int, np.integer)) or delay < 0:
        raise ValueError(f"delay must be a non-negative integer, got {delay!r}")
    vocab = 2 if task == "parity" else vocab
    x = rng.integers(0, vocab, size=(n, length), dtype=np.int64)
    return x, _labels(task, x, vocab, delay).astype(np.int64)


def load_task(
    name: str,
    *,
    n_train: int = 2000,
    n_val: int = 200,
    n_test: int = 200,
    length: int = 8,
    vocab: int = 8,
    delay: int = 1,
    seed: int = 0,
) -> Dataset:
    """Train/validation/test splits of a synthetic task, reproducible from ``seed``.

    ``n_classes`` is ``vocab`` (``2`` for parity). Example: an LSTM on ``reverse``::

        data = load_task("reverse", length=8, vocab=8)
        model = Sequential.from_spec(
            [("embedding", (8, 16), {}), ("lstm", (32,), {"bidirectional": True}),
             "dense", "softmax"], input_shape=(8,), n_outputs=8, cost="log-likelihood")
    """
    rng = np.random.default_rng(seed)
    if name == "ctc-copy":
        from manual_bp.ctc_data import make_ctc_copy

        splits = [make_ctc_copy(n, length, vocab, rng) for n in (n_train, n_val, n_test)]
        return Dataset(*(a for pair in splits for a in pair), name=f"{name}-T{length}-V{vocab}",
                       n_classes=vocab + 1)  # fmt: skip
    splits = [make_sequences(name, n, length, vocab, rng, delay) for n in (n_train, n_val, n_test)]
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = splits
    return Dataset(
        x_train, y_train, x_val, y_val, x_test, y_test,
        name=f"{name}-T{length}-V{vocab}", n_classes=2 if name == "parity" else vocab,
    )  # fmt: skip
