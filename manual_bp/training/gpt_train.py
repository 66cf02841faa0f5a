"""Training a :class:`~manual_bp.models.gpt.GPT` as nanoGPT does: AdamW in two parameter
groups (decay on the 2-D weights — matrices and embeddings — only), global gradient-norm
clipping (:func:`~manual_bp.training.clip.clip_grad_norm_`) and the warm-up + cosine rate
(:class:`~manual_bp.schedules_warmup.WarmupCosineLR`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from manual_bp._threads import parallel_rows
from manual_bp.models.parameters import offset_in
from manual_bp.optimizers.adam import AdamW
from manual_bp.optimizers.base import Optimizer, lerp
from manual_bp.training.clip import clip_grad_norm_, grad_norm

#: elements of one block of the flat AdamW (5 arrays of 32 Ki float32: 640 KiB, in L2)
FLAT_BLOCK = 1 << 15


def _flat_of(arrays: Sequence[np.ndarray]) -> np.ndarray | None:
    """The 1-D buffer that ``arrays`` (C-contiguous, one dtype) tile in order, or None."""
    if not arrays or not all(isinstance(a, np.ndarray) and a.flags.c_contiguous for a in arrays):
        return None
    first, dtype = arrays[0], arrays[0].dtype
    start = first.__array_interface__["data"][0]
    address, total = start, 0
    for a in arrays:
        if a.dtype != dtype or a.__array_interface__["data"][0] != address:
            return None
        address += a.nbytes
        total += a.size
    base = first.base if first.base is not None else first
    while base.base is not None and isinstance(base.base, np.ndarray):
        base = base.base
    lo = base.__array_interface__["data"][0]
    if start < lo or address > lo + base.nbytes or base.dtype != dtype:
        return None
    offset = offset_in(base, first)
    return base.reshape(-1)[offset : offset + total]


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
        self._flat: dict[str, Any] | None = None  # step_flat's moments and blocks

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
        self._flat: dict[str, Any] | None = None

    def step_flat(
        self, params: Sequence[np.ndarray], grads: Sequence[np.ndarray], grad_scale: float = 1.0
    ) -> bool:
        """The same AdamW (``OPT.adamw``, both groups) over flat buffers, for ``params`` that
        are consecutive views of one buffer and ``grads`` the same views of another (the
        fused step's :class:`~manual_bp.models.gpt_fast.FlatGradients`); ``grads`` are
        first multiplied by ``grad_scale`` (the clipping factor, folded into the same pass).
        Returns False, doing nothing, when the arrays are not laid out so.

        The update runs over blocks of :data:`FLAT_BLOCK` elements, every pass of a block
        while it is in cache (torch's foreach AdamW is the anchor: one pass per operation
        over all parameters), blocks split over the threads; each element's operations are
        the readable step's, in its order, so the bits are the per-array step's."""
        flat_p, flat_g = _flat_of(params), _flat_of(grads)
        if flat_p is None or flat_g is None or flat_p.size != flat_g.size:
            return False
        if any(group.t for group in self.groups) and self._flat is None:
            raise ValueError("GroupedAdamW: state from per-array steps; reset() before step_flat")
        if self._flat is None or self._flat["m"].size != flat_p.size:
            chosen, runs, offset = set(self.decay), [], 0
            for i, p in enumerate(params):
                runs.append((offset, offset + p.size, i in chosen))
                offset += p.size
            blocks = [(a, min(a + FLAT_BLOCK, stop), decayed) for start, stop, decayed in runs
                      for a in range(start, stop, FLAT_BLOCK)]  # fmt: skip
            self._flat = {"m": np.zeros_like(flat_p), "v": np.zeros_like(flat_p),
                          "blocks": blocks}  # fmt: skip
        m_all, v_all, blocks = self._flat["m"], self._flat["v"], self._flat["blocks"]
        adam = self.groups[0]
        for group in self.groups:
            group.t += 1
        t, b1, b2, eps = adam.t, adam.beta1, adam.beta2, adam.eps
        step_size = adam.lr / (1.0 - b1**t)
        bc2_sqrt = math.sqrt(1.0 - b2**t)
        shrink = 1.0 - adam.lr * adam.weight_decay

        def work(rows: slice) -> None:
            scratch = np.empty(FLAT_BLOCK, flat_p.dtype)
            for a, z, decayed in blocks[rows]:
                p, g, m, v, d = flat_p[a:z], flat_g[a:z], m_all[a:z], v_all[a:z], scratch[: z - a]
                if grad_scale != 1.0:  # GPT.clip (× 1 would leave the same bits)
                    g *= grad_scale
                if decayed and adam.weight_decay:
                    p *= shrink  # OPT.adamw: θ ← (1 − η·wd) θ
                lerp(m, g, 1.0 - b1, d)  # mₜ = mₜ₋₁ + (1 − β₁)(g − mₜ₋₁)
                v *= b2
                np.multiply(g, g, out=d)
                d *= 1.0 - b2
                v += d
                np.sqrt(v, out=d)
                d /= bc2_sqrt
                d += eps
                np.divide(m, d, out=d)
                d *= step_size
                p -= d

        parallel_rows(work, len(blocks), FLAT_BLOCK)
        return True

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
        """Clip, step, schedule. The fused step's flat gradients (one buffer, views in order)
        are clipped and updated in ONE pass over flat buffers
        (:meth:`GroupedAdamW.step_flat`): the norm over every array, both groups."""
        opt = self.optimizer
        if isinstance(opt, GroupedAdamW) and getattr(grads, "flat", None) is not None:
            scale = 1.0
            if self.grad_clip is not None:  # GPT.clip over all arrays, the factor folded in
                total = grad_norm(list(grads))
                scale = min(1.0, float(self.grad_clip) / (total + 1e-6))
            if opt.step_flat(params, grads, scale):
                if self.schedule is not None:
                    self.schedule.step()
                return
            for g in grads:
                g *= scale
            opt.step(params, grads)
            if self.schedule is not None:
                self.schedule.step()
            return
        if self.grad_clip is not None:
            clip_grad_norm_(grads, self.grad_clip)
        opt.step(params, grads)
        if self.schedule is not None:
            self.schedule.step()
