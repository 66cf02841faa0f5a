"""Checks of ``CTCLoss`` (``docs/ctc.md``) for ``verify`` and ``tests/test_ctc.py``.

One random case: a batch of sequences with their own frame and label counts (repeated
labels likely, some alignments impossible), any blank index, padded, concatenated or
unbatched targets, every reduction and ``zero_infinity``; compared with ``torch.nn.CTCLoss``
in float64 under a random upstream gradient, and with central finite differences of
``L(log_softmax(u))`` in the logits ``u`` (independent of torch).

Bounds. The value is minus a log-sum over paths of sums of ``T`` log-probabilities, so it
rounds relative to ``Σ_t max_c |ln y_t(c)|``; the occupancy ``γ = exp(α̂ + β̂ − ln y + L)``
takes the rounding of its exponent (``~ε`` times that same sum) as a relative error, so a
gradient entry's scale is ``|w_n| (1 + Σ_t max_c |ln y_t(c)|)`` with ``w_n`` the reduction's
weight of its sequence.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from manual_bp.gradcheck import finite_difference_gradient
from manual_bp.losses import CTCLoss
from reference.checks import register_check
from reference.compare import Comparison

__all__ = ["ctc_case", "ctc_comparisons", "ctc_finite_difference_comparisons", "torch_ctc"]


def ctc_case(rng: np.random.Generator, *, possible: bool | None = None) -> dict[str, Any]:
    """A random CTC batch; ``possible=True`` draws only alignments some path fits."""
    T, C = int(rng.integers(1, 9)), int(rng.integers(2, 6))
    unbatched = not rng.integers(5)
    N = 1 if unbatched else int(rng.integers(1, 5))
    blank = int(rng.integers(C))
    labels = [c for c in range(C) if c != blank]
    # few labels: repeats (which need a blank between them) are common
    t_len = rng.integers(0 if rng.integers(4) else 1, T + 1, size=N)
    s_len = rng.integers(0, 5, size=N)
    targets = [rng.choice(labels[: int(rng.integers(1, len(labels) + 1))], size=int(s))
               for s in s_len]  # fmt: skip
    if possible:
        for n in range(N):
            while _frames_needed(targets[n]) > t_len[n]:
                targets[n] = targets[n][:-1]
        s_len = np.array([len(t) for t in targets])
    form = "unbatched" if unbatched else ("padded", "concatenated")[int(rng.integers(2))]
    if form != "padded":  # unbatched: one sequence's concatenation, as torch reads it
        target_array = np.concatenate([np.asarray(t, dtype=np.int64) for t in targets])
    else:
        width = int(s_len.max(initial=0)) + int(rng.integers(0, 3))  # padding past the lengths
        target_array = rng.choice(labels, size=(N, width)).astype(np.int64)
        for n, t in enumerate(targets):
            target_array[n, : len(t)] = t
    logits = 2.0 * rng.standard_normal((T, N, C))
    return {
        "logits": logits[:, 0] if unbatched else logits,
        "targets": target_array,
        "input_lengths": t_len,
        "target_lengths": s_len,
        "options": {
            "blank": blank,
            "reduction": ("none", "mean", "sum")[int(rng.integers(3))],
            "zero_infinity": bool(rng.integers(2)),
        },
    }


def _frames_needed(target: np.ndarray) -> int:
    """The fewest frames a path reading ``target`` needs: one per label, one more per pair
    of equal neighbours (the blank between them)."""
    target = np.asarray(target)
    return len(target) + int((target[1:] == target[:-1]).sum())


def _log_softmax(u: np.ndarray) -> np.ndarray:
    shifted = u - u.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def torch_ctc(case: dict[str, Any], log_probs: np.ndarray, grad_output: np.ndarray):
    """torch's loss and its gradient with respect to ``log_probs`` under ``grad_output``."""
    lp = torch.tensor(log_probs, requires_grad=True)
    loss = torch.nn.CTCLoss(**case["options"])(
        lp, torch.tensor(case["targets"]), torch.tensor(case["input_lengths"]),
        torch.tensor(case["target_lengths"]),
    )  # fmt: skip
    (grad,) = torch.autograd.grad(loss, lp, torch.tensor(grad_output))
    return loss.detach().numpy(), grad.numpy()


def _scales(case, log_probs, loss_module, cache):
    """Magnitude scales of the value and of the gradient (module docstring)."""
    x = log_probs if log_probs.ndim == 3 else log_probs[:, None]
    frames = np.arange(x.shape[0])[:, None] < case["input_lengths"][None, :]
    spread = (np.abs(x).max(axis=-1) * frames).sum(axis=0)  # (N,)
    value_scale = loss_module._reduce(1.0 + spread, case["target_lengths"], log_probs.ndim == 3)
    return value_scale, 1.0 + spread


def ctc_comparisons(case: dict[str, Any], rng: np.random.Generator) -> list[Comparison]:
    """``LOSS.ctc`` and ``LOSS.ctc.grad`` against torch, with a random ``grad_output``."""
    loss = CTCLoss(**case["options"])
    log_probs = _log_softmax(case["logits"])
    args = (case["targets"], case["input_lengths"], case["target_lengths"])
    value, cache = loss.forward(log_probs, *args)
    grad_output = rng.standard_normal(np.shape(value))
    (grad, *rest) = loss.backward(grad_output, cache)
    assert rest == [None, None, None], "targets and lengths have no gradient"
    want_value, want_grad = torch_ctc(case, log_probs, grad_output)
    value_scale, spread = _scales(case, log_probs, loss, cache)
    weights = np.abs(grad_output).reshape(-1) if loss.reduction == "none" else (
        np.abs(grad_output) * loss._weights(cache.target_lengths, np.float64))  # fmt: skip
    per_sequence = weights * spread
    grad_scale = per_sequence if log_probs.ndim == 3 else per_sequence[0]
    grad_scale = np.broadcast_to(grad_scale[..., None] if log_probs.ndim == 3 else grad_scale,
                                 log_probs.shape)  # fmt: skip
    return [
        Comparison("LOSS.ctc", "CTC loss", value, want_value, scale=np.asarray(value_scale)),
        Comparison("LOSS.ctc.grad", "∂L/∂log_probs", grad, want_grad, scale=grad_scale),
    ]


def ctc_finite_difference_comparisons(
    case: dict[str, Any], rng: np.random.Generator
) -> list[Comparison]:
    """``LOSS.ctc.grad`` against central differences of ``⟨g, L(log_softmax(u))⟩`` in ``u``
    (the logits: torch's form of the gradient is the exact one through the log-softmax)."""
    loss = CTCLoss(**case["options"])
    u = np.array(case["logits"], dtype=np.float64)
    args = (case["targets"], case["input_lengths"], case["target_lengths"])
    value, cache = loss.forward(_log_softmax(u), *args)
    grad_output = rng.standard_normal(np.shape(value))
    (grad, *_) = loss.backward(grad_output, cache)

    def weighted() -> float:
        return float(np.sum(grad_output * loss.forward(_log_softmax(u), *args)[0]))

    expected, fd_error = finite_difference_gradient(weighted, u, h=1e-6, return_error=True)
    atol = 1e-7 * (1.0 + float(np.abs(expected).max(initial=0.0))) + 4.0 * fd_error
    return [Comparison("LOSS.ctc.grad", "∂L/∂logits", grad, expected,
                       oracle="finite-differences", atol=atol)]  # fmt: skip


@register_check("ctc")
def ctc_check(rng: np.random.Generator) -> list[Comparison]:
    """LOSS.ctc and LOSS.ctc.grad against torch.nn.CTCLoss (every option and target form,
    impossible alignments included) and against finite differences (possible ones)."""
    comparisons = ctc_comparisons(ctc_case(rng), rng)
    return comparisons + ctc_finite_difference_comparisons(ctc_case(rng, possible=True), rng)
