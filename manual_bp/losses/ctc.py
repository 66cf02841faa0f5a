"""``torch.nn.CTCLoss``: connectionist temporal classification (Graves et al. 2006), in log
space (``docs/ctc.md``).

The loss of one sequence is ``−ln p(l | x)``, the probability of the label sequence ``l``
summed over every frame-level path that collapses to it (merge repeats, then drop blanks).
The forward variables ``α`` sum the paths' prefixes over the blank-extended labels
``l′ = (b, l₁, b, l₂, …, b)``, the backward variables ``β`` their suffixes (``LOSS.ctc``);
their product gives each frame's label occupancy, and the gradient (``LOSS.ctc.grad``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from manual_bp._validation import FLOAT_DTYPES, as_array
from manual_bp.losses.base import Loss, check_reduction, register_loss

__all__ = ["CTCLoss"]


@dataclass(frozen=True)
class CTCCache:
    """What the backward pass reuses: the log-probabilities, the extended labels and their
    masks, ``α`` and ``β`` ``(T, N, L)``, each sequence's ``−ln p`` and lengths."""

    log_probs: np.ndarray  # (T, N, C)
    extended: np.ndarray  # (N, L) label of each extended position
    valid: np.ndarray  # (N, L) the position exists for that sequence
    alpha: np.ndarray
    beta: np.ndarray
    nll: np.ndarray  # (N,)
    input_lengths: np.ndarray
    target_lengths: np.ndarray
    batched: bool


def _logsumexp3(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``ln(eᵃ + eᵇ + eᶜ)`` elementwise, ``−∞`` where all three are ``−∞`` (no NaN)."""
    m = np.maximum(np.maximum(a, b), c)
    finite = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        total = np.log(np.exp(a - finite) + np.exp(b - finite) + np.exp(c - finite))
    return np.where(np.isneginf(m), -np.inf, total + finite)


def _shift(x: np.ndarray, k: int) -> np.ndarray:
    """``x`` moved ``k`` places along the last axis (right for ``k > 0``), ``−∞`` filled."""
    out = np.full_like(x, -np.inf)
    if k > 0:
        out[..., k:] = x[..., :-k]
    else:
        out[..., :k] = x[..., -k:]
    return out


def _integers(value: Any, name: str) -> np.ndarray:
    """Lengths or targets as an integer array; torch's tuple/list/tensor forms, not a bare
    number (torch refuses one) and not floats or bools."""
    if isinstance(value, (bool, int, float, np.generic)):
        raise TypeError(f"{name} must be a tuple, list or array of integers, got "
                        f"{type(value).__name__} {value!r}")  # fmt: skip
    array = as_array(value, name)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {array.dtype}")
    return array.astype(np.int64)


@register_loss
class CTCLoss(Loss):
    """``torch.nn.CTCLoss(blank=0, reduction='mean', zero_infinity=False)``.

    ``forward(log_probs, targets, input_lengths, target_lengths)``:

    * ``log_probs`` — ``(T, N, C)``, or ``(T, C)`` unbatched: log-probabilities over ``C``
      classes per frame (a log-softmax output; the gradient is torch's, which assumes it);
    * ``targets`` — ``(N, S)`` padded, or the ``(Σ target_lengths,)`` concatenation, or
      ``(S,)`` unbatched with ``S`` the target length: class indices in ``[0, C)`` other
      than ``blank``;
    * ``input_lengths``, ``target_lengths`` — ``(N,)`` (a tuple, list or integer array), or
      ``()`` / ``(1,)`` unbatched.

    The value per sequence is ``−ln p(l | x)`` (``LOSS.ctc``); ``'mean'`` divides each by its
    target length (at least 1) and averages over the batch, as torch. An impossible alignment
    (more labels, with repeats separated by a blank, than frames) has an infinite loss and,
    as torch's, a NaN gradient on its frames — unless ``zero_infinity``, which makes both 0.
    """

    name = "ctc-loss"
    aliases = ("ctcloss", "ctc")
    equation_value = "LOSS.ctc"
    equation_grad = "LOSS.ctc.grad"
    arguments = ("log_probs", "targets", "input_lengths", "target_lengths")
    hyperparameters = ("blank", "reduction", "zero_infinity")

    def __init__(self, blank: int = 0, reduction: str = "mean", zero_infinity: bool = False):
        if isinstance(blank, bool) or not isinstance(blank, (int, np.integer)) or blank < 0:
            raise ValueError(f"blank must be a non-negative integer, got {blank!r}")
        if not isinstance(zero_infinity, (bool, np.bool_)):
            raise TypeError(f"zero_infinity must be True or False, got {zero_infinity!r}")
        self.blank = int(blank)
        self.reduction = check_reduction(reduction)
        self.zero_infinity = bool(zero_infinity)

    # ------------------------------------------------------------------ inputs
    def _inputs(self, log_probs, targets, input_lengths, target_lengths):
        """Checked ``(T, N, C)`` log-probabilities, ``(N, S)`` padded targets and lengths."""
        log_probs = as_array(log_probs, "log_probs")
        if log_probs.dtype not in FLOAT_DTYPES:
            raise TypeError(f"log_probs must be float32 or float64, got dtype {log_probs.dtype}")
        if log_probs.ndim not in (2, 3) or log_probs.size == 0:
            raise ValueError(f"log_probs must be a non-empty (T, N, C) or unbatched (T, C) "
                             f"array, got shape {log_probs.shape}")  # fmt: skip
        batched = log_probs.ndim == 3
        x = log_probs if batched else log_probs[:, None, :]
        T, N, C = x.shape
        if not self.blank < C:
            raise ValueError(f"blank {self.blank} is not a class of log_probs ({C} classes)")
        targets = _integers(targets, "targets")
        lengths = [_integers(v, n) for v, n in ((input_lengths, "input_lengths"),
                                                (target_lengths, "target_lengths"))]  # fmt: skip
        for k, name in enumerate(("input_lengths", "target_lengths")):
            lengths[k] = lengths[k].reshape(-1)
            if lengths[k].shape != (N,):
                raise ValueError(f"{name} must hold one length per sequence ({N}), "
                                 f"got shape {lengths[k].shape}")  # fmt: skip
            if (lengths[k] < 0).any():
                raise ValueError(f"{name} must be non-negative, got {lengths[k].tolist()}")
        t_len, s_len = lengths
        if (t_len > T).any():
            raise ValueError(f"input_lengths must be at most the {T} frames of log_probs, "
                             f"got {t_len.tolist()}")  # fmt: skip
        targets = self._padded(targets, s_len, batched)
        inside = np.arange(targets.shape[1])[None, :] < s_len[:, None]
        used = targets[inside]
        if ((used < 0) | (used >= C) | (used == self.blank)).any():
            raise ValueError(f"targets must be class indices in [0, {C}) other than the blank "
                             f"{self.blank}, got {sorted(set(used.tolist()))}")  # fmt: skip
        return x, np.where(inside, targets, self.blank), t_len, s_len, batched

    @staticmethod
    def _padded(targets: np.ndarray, s_len: np.ndarray, batched: bool) -> np.ndarray:
        """``(N, S)`` targets from torch's padded, concatenated or unbatched forms."""
        if targets.ndim == 2 and batched:
            if targets.shape[0] != len(s_len) or (s_len > targets.shape[1]).any():
                raise ValueError(f"targets of shape {targets.shape} do not hold "
                                 f"target_lengths {s_len.tolist()}")  # fmt: skip
            return targets
        if targets.ndim != 1:
            raise ValueError(f"targets must be (N, S) or concatenated (Σ S,), got shape "
                             f"{targets.shape}")  # fmt: skip
        # unbatched (S,) targets are the concatenated form of one sequence, as torch's
        if targets.shape[0] != int(s_len.sum()):
            raise ValueError(f"concatenated targets must have Σ target_lengths = "
                             f"{int(s_len.sum())} entries, got {targets.shape[0]}")  # fmt: skip
        padded = np.zeros((len(s_len), max(int(s_len.max(initial=0)), 1)), dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(s_len)[:-1]])
        for n, (start, length) in enumerate(zip(starts, s_len, strict=True)):
            padded[n, :length] = targets[start : start + length]
        return padded

    # ------------------------------------------------------------------ forward
    def forward(self, log_probs, targets, input_lengths, target_lengths):
        """``(loss, cache)``: ``−ln p(l | x)`` per sequence by the α recursion (``LOSS.ctc``),
        reduced as torch.

        ``α_t(s) = (α_{t−1}(s) + α_{t−1}(s−1) + [l′_s ≠ b, l′_s ≠ l′_{s−2}] α_{t−1}(s−2))
        · y_t(l′_s)``, in log space; ``p(l | x) = α_{T−1}(L−1) + α_{T−1}(L−2)``.
        """
        x, padded, t_len, s_len, batched = self._inputs(
            log_probs, targets, input_lengths, target_lengths
        )
        T, N, _ = x.shape
        L = 2 * padded.shape[1] + 1
        extended = np.full((N, L), self.blank, dtype=np.int64)
        extended[:, 1::2] = padded
        valid = np.arange(L)[None, :] <= 2 * s_len[:, None]
        # the jump s−2 → s is allowed onto a label that differs from the one two back
        skip = np.zeros((N, L), dtype=bool)
        skip[:, 2:] = (extended[:, 2:] != self.blank) & (extended[:, 2:] != extended[:, :-2])
        emit = np.where(valid, x[:, np.arange(N)[:, None], extended], -np.inf)  # (T, N, L)
        alpha = np.full((T, N, L), -np.inf, dtype=x.dtype)
        alpha[0, :, :2] = emit[0, :, :2]
        for t in range(1, T):
            prev = alpha[t - 1]
            jump = np.where(skip, _shift(prev, 2), -np.inf)
            alpha[t] = _logsumexp3(prev, _shift(prev, 1), jump) + emit[t]
        beta = self._beta(emit, skip, t_len, s_len)
        nll = self._nll(alpha, t_len, s_len)
        cache = CTCCache(x, extended, valid, alpha, beta, nll, t_len, s_len, batched)
        return self._reduce(nll, s_len, batched), cache

    @staticmethod
    def _beta(emit, skip, t_len, s_len) -> np.ndarray:
        """``β_t(s)``: the suffixes from frame ``t`` (its emission included), started at each
        sequence's own last frame ``T_n − 1`` on the last two extended positions."""
        T, N, L = emit.shape
        beta = np.full((T, N, L), -np.inf, dtype=emit.dtype)
        ends = np.zeros((N, L), dtype=bool)
        ends[np.arange(N), 2 * s_len] = True
        ends[np.arange(N), np.maximum(2 * s_len - 1, 0)] = True
        skip_ahead = np.zeros_like(skip)
        skip_ahead[:, :-2] = skip[:, 2:]  # the jump s → s+2 is the α jump into s+2
        nxt = np.full((N, L), -np.inf, dtype=emit.dtype)
        for t in range(T - 1, -1, -1):
            jump = np.where(skip_ahead, _shift(nxt, -2), -np.inf)
            rec = _logsumexp3(nxt, _shift(nxt, -1), jump) + emit[t]
            start = np.where(ends, emit[t], -np.inf)
            last, inside = (t == t_len - 1)[:, None], (t < t_len - 1)[:, None]
            beta[t] = np.where(last, start, np.where(inside, rec, -np.inf))
            nxt = beta[t]
        return beta

    @staticmethod
    def _nll(alpha, t_len, s_len) -> np.ndarray:
        """``−ln p(l | x)`` per sequence; 0 for an empty target over no frames, ``∞`` for a
        label sequence that no path over the frames produces."""
        N = alpha.shape[1]
        rows = np.arange(N)
        last = alpha[np.maximum(t_len - 1, 0), rows]  # (N, L)
        end = last[rows, 2 * s_len]
        before = np.where(s_len > 0, last[rows, np.maximum(2 * s_len - 1, 0)], -np.inf)
        with np.errstate(divide="ignore"):
            log_p = np.logaddexp(end, before)
        log_p = np.where(t_len == 0, np.where(s_len == 0, 0.0, -np.inf), log_p)
        return (-log_p).astype(alpha.dtype)

    def _weights(self, s_len: np.ndarray, dtype) -> np.ndarray:
        """``∂(reduced)/∂nllₙ``: 1 ('sum'), or ``1/(N·max(Sₙ, 1))`` ('mean')."""
        if self.reduction == "mean":
            return (1.0 / (len(s_len) * np.maximum(s_len, 1))).astype(dtype)
        return np.ones(len(s_len), dtype=dtype)

    def _reduce(self, nll: np.ndarray, s_len: np.ndarray, batched: bool) -> np.ndarray:
        if self.zero_infinity:
            nll = np.where(np.isinf(nll), nll.dtype.type(0), nll)
        if self.reduction == "none":
            return nll if batched else nll.reshape(())
        return np.asarray(np.sum(nll * self._weights(s_len, nll.dtype)), dtype=nll.dtype)

    # ------------------------------------------------------------------ backward
    def backward(self, grad_output, cache: CTCCache):
        """``(∂log_probs, None, None, None)`` (``LOSS.ctc.grad``), torch's form:

        ``∂(−ln p)/∂u_t(c) = y_t(c) − (1/p) Σ_{s: l′_s = c} α_t(s) β_t(s) / y_t(c)`` with
        ``y = e^{log_probs}``: the gradient with respect to the logits ``u`` of a log-softmax
        whose output is ``log_probs`` (what torch returns as the gradient of ``log_probs``;
        through the log-softmax's VJP it is the exact gradient). Zero on frames past a
        sequence's length.
        """
        x, nll = cache.log_probs, cache.nll
        T, N, C = x.shape
        g = np.asarray(grad_output, dtype=x.dtype)
        per_sequence = (
            g.reshape(N)
            if self.reduction == "none"
            else g * self._weights(cache.target_lengths, x.dtype)
        )
        # occupancy of each extended position: α β / y, normalised by p = e^{−nll}
        emit = x[:, np.arange(N)[:, None], cache.extended]  # (T, N, L): y_t(l′_s) in logs
        with np.errstate(invalid="ignore", over="ignore"):
            # an impossible sequence: −∞ + ∞ = NaN on its frames, as torch's
            occupancy = np.exp(cache.alpha + cache.beta - emit + nll[None, :, None])
        occupancy = np.where(cache.valid[None], occupancy, 0.0)
        onehot = (cache.extended[:, :, None] == np.arange(C)).astype(x.dtype)  # (N, L, C)
        per_class = np.einsum("tnl,nlc->tnc", occupancy, onehot)
        grad = np.exp(x) - per_class
        frames = np.arange(T)[:, None] < cache.input_lengths[None, :]  # (T, N)
        grad = np.where(frames[:, :, None], grad, 0.0)
        if self.zero_infinity:
            grad = np.where(np.isinf(nll)[None, :, None], 0.0, grad)
        grad = (grad * per_sequence[None, :, None]).astype(x.dtype)
        return (grad if cache.batched else grad[:, 0, :]), None, None, None
