"""Training a :class:`~manual_bp.models.gpt.GPT` as nanoGPT does: AdamW in two parameter
groups (decay on the 2-D weights — matrices and embeddings — only), global gradient-norm
clipping (:func:`~manual_bp.training.clip.clip_grad_norm_`) and the warm-up + cosine rate
(:class:`~manual_bp.schedules_warmup.WarmupCosineLR`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from manual_bp.optimizers.adam import AdamW
from manual_bp.optimizers.base import Optimizer
from manual_bp.training.clip import clip_grad_norm_

__all__ = ["GroupedAdamW", "NanoGPTStep", "configure_optimizers", "train_step"]


class GroupedAdamW(Optimizer):
    """torch's ``AdamW([{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay":
    0}])``: one AdamW per group (Adam is per-array, so two instances stepped together are the
    one optimizer); ``lr`` sets both groups' rate. ``decay`` lists the positions, in the
    ``step`` lists, of the arrays decayed."""

    name = "grouped_adamw"
    equation = "OPT.adamw"

    def __init__(self, decay: Sequence[int], lr: float = 6e-4, weight_decay: float = 0.1,
                 betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8) -> None:  # fmt: skip
        self.decay = sorted(int(i) for i in decay)
        self.groups = (AdamW(lr, weight_decay=weight_decay, betas=betas, eps=eps),
                       AdamW(lr, weight_decay=0.0, betas=betas, eps=eps))  # fmt: skip

    @property
    def lr(self) -> float:  # type: ignore[override]
        return self.groups[0].lr

    @lr.setter
    def lr(self, value: float) -> None:
        for group in self.groups:
            group.lr = float(value)

    @property
    def t(self) -> int:  # type: ignore[override]
        return self.groups[0].t

    def reset(self) -> None:
        if hasattr(self, "groups"):
            for group in self.groups:
                group.reset()

    def step(self, params: Sequence[np.ndarray], grads: Sequence[np.ndarray]) -> None:
        """AdamW (``OPT.adamw``) on each group."""
        params, grads = self._as_lists(params, grads)
        chosen = set(self.decay)
        if chosen and max(chosen) >= len(params):
            raise ValueError(f"decay lists position {max(chosen)}; there are {len(params)} arrays")
        for group, keep in zip(self.groups, (True, False), strict=True):
            picked = [i for i in range(len(params)) if (i in chosen) == keep]
            if picked:
                group.step([params[i] for i in picked], [grads[i] for i in picked])


def configure_optimizers(model: Any, weight_decay: float = 0.1, learning_rate: float = 6e-4,
                         betas: tuple[float, float] = (0.9, 0.95),
                         eps: float = 1e-8) -> GroupedAdamW:  # fmt: skip
    """nanoGPT's ``configure_optimizers``: decay every parameter of two or more axes (the
    linear weights and the embeddings), not the biases and LayerNorm weights."""
    return GroupedAdamW(model.regularized_indices(), learning_rate, weight_decay, betas, eps)


def train_step(model: Any, optimizer: Optimizer, idx: Any, targets: Any,
               grad_clip: float | None = 1.0, schedule: Any = None) -> float:  # fmt: skip
    """One iteration: loss and gradients, clipping to ``grad_clip`` (None: none), the
    optimizer's update of the parameters in place, then the schedule's next rate. Returns
    the loss."""
    loss, grads = model.loss_and_gradients(idx, targets)
    if grad_clip is not None:
        clip_grad_norm_(grads, grad_clip)
    optimizer.step(model.parameter_arrays(), grads)
    if schedule is not None:
        schedule.step()
    return loss


class NanoGPTStep(Optimizer):
    """nanoGPT's iteration as one optimizer, so :func:`~manual_bp.training.train` (its
    readable path, ``fast=False``) runs it unchanged: global-norm clipping of the gradients
    to ``grad_clip`` (None: none), ``optimizer``'s step (:class:`GroupedAdamW`), then the
    per-iteration ``schedule``'s next rate (:class:`~manual_bp.schedules_warmup.WarmupCosineLR`,
    bound here; None: a constant rate)."""

    name = "nanogpt_step"
    equation = "OPT.adamw"

    def __init__(self, optimizer: Optimizer, grad_clip: float | None = 1.0,
                 schedule: Any = None) -> None:  # fmt: skip
        self.optimizer, self.grad_clip, self.schedule = optimizer, grad_clip, schedule
        if schedule is not None:
            schedule.bind(optimizer)

    @property
    def lr(self) -> float:  # type: ignore[override]
        return self.optimizer.lr

    @lr.setter
    def lr(self, value: float) -> None:
        self.optimizer.lr = value

    @property
    def t(self) -> int:  # type: ignore[override]
        return self.optimizer.t

    def reset(self) -> None:
        if hasattr(self, "optimizer"):
            self.optimizer.reset()

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "grad_clip": self.grad_clip}

    def step(self, params: Sequence[np.ndarray], grads: Sequence[np.ndarray]) -> None:
        if self.grad_clip is not None:
            clip_grad_norm_(grads, self.grad_clip)
        self.optimizer.step(params, grads)
        if self.schedule is not None:
            self.schedule.step()
