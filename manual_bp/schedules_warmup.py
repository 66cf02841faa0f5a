"""Linear warm-up then cosine decay to a floor, per iteration: nanoGPT's ``get_lr``
(equation ``GPT.warmup-cosine``).

For iteration ``t`` (counted from 0), base rate ``η₀``, warm-up ``W``, decay end ``D > W``::

    ηₜ = η₀ (t + 1) / (W + 1)                                t < W
    ηₜ = η_min + ½ (1 + cos(π (t − W) / (D − W))) (η₀ − η_min)   W ≤ t ≤ D
    ηₜ = η_min                                                t > D

Bound to an optimizer, the schedule sets ``optimizer.lr = η₀'s iteration-0 rate`` at once
and each :meth:`~WarmupCosineLR.step` moves to the next iteration (call it after every
optimizer step, as nanoGPT sets the rate before each).
"""

from __future__ import annotations

import math

from manual_bp.optimizers.base import Optimizer, check_hyperparameter
from manual_bp.schedules import Schedule

__all__ = ["WarmupCosineLR", "warmup_cosine_lr"]


def warmup_cosine_lr(t: int, base_lr: float, warmup_iters: int, lr_decay_iters: int,
                     min_lr: float) -> float:  # fmt: skip
    """``ηₜ`` in closed form (``GPT.warmup-cosine``; the module docstring)."""
    if t < warmup_iters:
        return base_lr * (t + 1) / (warmup_iters + 1)
    if t > lr_decay_iters:
        return min_lr
    ratio = (t - warmup_iters) / (lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (base_lr - min_lr)


class WarmupCosineLR(Schedule):
    """nanoGPT's learning-rate schedule, stepped once per iteration (``GPT.warmup-cosine``).

    Parameters
    ----------
    optimizer : Optimizer, optional
    warmup_iters : int ≥ 0
    lr_decay_iters : int > warmup_iters
    min_lr : float ≥ 0
    """

    name = "warmup_cosine"
    equation = "GPT.warmup-cosine"
    hyperparameters = ("warmup_iters", "lr_decay_iters", "min_lr")

    def __init__(
        self,
        optimizer: Optimizer | None = None,
        warmup_iters: int = 100,
        lr_decay_iters: int = 5000,
        min_lr: float = 0.0,
    ) -> None:
        for label, value in (("warmup_iters", warmup_iters), ("lr_decay_iters", lr_decay_iters)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{label} must be a non-negative integer, got {value!r}")
        if lr_decay_iters <= warmup_iters:
            raise ValueError(
                f"lr_decay_iters ({lr_decay_iters}) must exceed warmup_iters ({warmup_iters})"
            )
        self.warmup_iters, self.lr_decay_iters = warmup_iters, lr_decay_iters
        self.min_lr = check_hyperparameter("min_lr", min_lr)
        super().__init__(optimizer)

    def bind(self, optimizer: Optimizer) -> WarmupCosineLR:
        """Bind at iteration 0 and set ``optimizer.lr`` to iteration 0's rate."""
        fresh = self.optimizer is not optimizer
        super().bind(optimizer)
        if fresh:
            optimizer.lr = self.next_lr(0, optimizer.lr)
        return self

    def next_lr(self, t: int, lr: float) -> float:
        """``ηₜ`` in closed form (``lr``, the previous rate, is not needed)."""
        assert self.base_lr is not None
        return warmup_cosine_lr(t, self.base_lr, self.warmup_iters, self.lr_decay_iters,
                                self.min_lr)  # fmt: skip
