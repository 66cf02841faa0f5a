"""``ctc-copy``: a synthetic connectionist-temporal-classification task with blanks.

Each sequence is ``S`` symbols from ``1 … vocab`` (``S`` uniform in ``1 … T // 3``), the
target; the input is ``T`` frames of **noisy one-hot** vectors over ``vocab + 1`` classes
(class 0 the blank): each symbol is held for 1 or 2 frames (a random repeat), a blank frame
separates two symbols at random — always between two equal ones, or the collapse would merge
them — and the frames left over are blanks, split at random before and after. A model
reads the frames and must emit the collapsed symbol sequence (merge repeats, drop blanks):
the alignment is not given, which is what CTC learns (``docs/ctc.md``).

``x``: ``(n, T, vocab + 1)`` floats; ``y``: the packed targets of
:func:`manual_bp.models.loss_cost.pack_targets`, ``(n, 2 + T // 3)`` int64 rows
``(T, S, symbols…, 0-padding)``.
"""

from __future__ import annotations

import numpy as np

from manual_bp.models.loss_cost import pack_targets

__all__ = ["NOISE", "make_ctc_copy"]

#: Standard deviation of the Gaussian noise added to every one-hot frame.
NOISE = 0.2


def _frames(symbols: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """Frame labels ``(length,)``: symbols with random repeats and gaps, blanks elsewhere."""
    body: list[int] = []
    for i, s in enumerate(symbols):
        if i > 0 and (s == symbols[i - 1] or rng.random() < 0.5):
            body.append(0)  # a gap: a blank frame between two symbols
        body.extend([int(s)] * (1 + int(rng.random() < 0.5)))
    lead = int(rng.integers(0, length - len(body) + 1))
    frames = np.zeros(length, np.int64)
    frames[lead : lead + len(body)] = body
    return frames


def make_ctc_copy(
    n: int, length: int, vocab: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of ``n`` sequences of ``length`` frames (module docstring)."""
    if length < 3:
        raise ValueError(f"length must be at least 3 for ctc-copy (a symbol, its repeat and a "
                         f"gap), got {length}")  # fmt: skip
    s_max = length // 3  # each symbol takes at most 3 frames: a gap and two repeats
    target_lengths = rng.integers(1, s_max + 1, size=n)
    targets = np.zeros((n, s_max), np.int64)
    frames = np.zeros((n, length), np.int64)
    for i, s in enumerate(target_lengths):
        targets[i, :s] = rng.integers(1, vocab + 1, size=s)
        frames[i] = _frames(targets[i, :s], length, rng)
    x = np.eye(vocab + 1)[frames] + NOISE * rng.standard_normal((n, length, vocab + 1))
    return x, pack_targets(targets, target_lengths, np.full(n, length))
