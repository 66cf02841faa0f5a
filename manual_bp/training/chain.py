"""The fused plain-SGD step of a plain Dense/activation chain, in one function (issue 22).

Nielsen's ``[784, 30, 10]`` step at a mini-batch of 10 is about 20 NumPy calls; between them
the general fused step (:class:`~manual_bp.training.fused.FusedTrainer`) walks its layer
steps, each with its own buffer and thread decisions. For a model whose every layer is a
:class:`~manual_bp.layers.Dense` (2-D input) or an activation layer (softmax included:
its fast forms are called whole, with their kept state, as :class:`ActivationStep` calls
them), :class:`ChainStep` runs the same calls in one loop over prepared rows:

* the same equations with the same NumPy calls as :class:`DenseStep` and
  :class:`ActivationStep` (``FWD.dense``, ``σ.forward_into``; BP1 as the trainer's seed;
  BP2 ``δ W`` and the activation's ``backward_inplace``; BP3 ``1ᵀδ``; BP4 ``δᵀ a``), and
  the trainer's own seed (``FusedTrainer._seed``), so every gradient has its bits;
* the lowest Dense layer's BP4 is fused with ``OPT.sgd``: ``Wᵀ ← Wᵀ − aᵀ δ`` as ONE BLAS
  ``gemm`` with ``β = 1`` into the weight itself (``δ`` already carries ``η/n``), so its
  gradient is never written and the flat update skips it: at Nielsen's sizes that weight is
  98.6 % of the parameters. The gemm runs after ``REG.l2``'s shrink, as the flat update
  did. Only where BLAS runs the product on one thread (``m·k·n`` ≤ :data:`ONE_THREAD_MNK`):
  a threaded product's bits may depend on the thread count.

Used only while no pass would be cut over threads (every layer's output below
``2·MIN_ELEMENTS`` numbers, the general steps' own rule) and for plain SGD (the fused
update); anything else takes the general path. ``tests/test_fused_chain.py`` checks it
against the general fused path, the readable path and torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp._threads import MIN_ELEMENTS
from manual_bp.layers.activation import ActivationStep
from manual_bp.layers.dense import DenseStep

__all__ = ["ONE_THREAD_MNK", "ChainStep"]

#: OpenBLAS runs a gemm on one thread below ``m·k·n = 65536·4`` (its interface's
#: ``SMP_THRESHOLD_MIN · GEMM_MULTITHREAD_THRESHOLD``): the fused BP4 gemm's bits are then
#: the same whatever the thread count.
ONE_THREAD_MNK = 65536 * 4


def _gemm(dtype: np.dtype) -> Any:
    """SciPy's BLAS ``gemm`` of ``dtype`` (None for other dtypes). Imported on first use:
    ``scipy.linalg`` costs ~45 ms and ~6 MB at import, paid only by a run that trains a
    chain."""
    if dtype not in (np.float64, np.float32):
        return None
    from scipy.linalg import blas

    return blas.dgemm if dtype == np.float64 else blas.sgemm


class ChainStep:
    """The chain's fused step (see the module docstring); :meth:`for_trainer` gives one
    for an eligible trainer, else None."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        model = trainer.model
        # one tuple a layer, (is_dense, first, second, third, ∂C/∂W, ∂C/∂b) =
        # Dense: (True, W, Wᵀ, b, its gradient views); activation: (False, σ.forward_into,
        # σ.backward_inplace, its kept-state count, None, None)
        self.layers: list[tuple] = []
        for step, grads in zip(trainer.steps, trainer.layer_grads, strict=True):
            if type(step) is DenseStep:
                W = step.W
                self.layers.append((True, W, W.T, step.b, grads.get("weight"), grads.get("bias")))
            else:
                act = step.activation
                forms = (act.forward_into, act.backward_inplace, step.kept)
                self.layers.append((False, *forms, None, None))
        self.lowest = trainer.lowest
        low = trainer.steps[self.lowest]
        # the lowest weight's place in the flat buffer: the rest is updated by one or two
        # subtracts (torch's state-dict order puts it first in a plain chain)
        flat = model.flat_parameters
        start = (low.W.ctypes.data - flat.ctypes.data) // flat.itemsize
        stop = start + low.W.size
        self.rest = [(flat[a:b], trainer.grad[a:b]) for a, b in ((0, start), (stop, flat.size))
                     if b > a]  # fmt: skip
        self.gemm = _gemm(np.dtype(flat.dtype))
        self.low_T = low.W.T  # Fortran-ordered view: the gemm writes into it in place
        if not self.low_T.flags.f_contiguous:  # a copy would be updated, not the weight
            self.gemm = None
        self._buffers: dict[tuple, tuple] = {}
        self.out: np.ndarray | None = None
        self.z_last: np.ndarray | None = None

    @classmethod
    def for_trainer(cls, trainer: Any) -> ChainStep | None:
        """A chain step when every layer is a Dense or an activation layer, the lowest with
        parameters a Dense, the seed not the generic one and the update plain SGD."""
        steps = trainer.steps
        if not steps or trainer.seed_kind == "generic" or not trainer.fused_update:
            return None
        if trainer.lowest >= len(steps) or type(steps[trainer.lowest]) is not DenseStep:
            return None
        for step in steps:
            if type(step) is DenseStep:
                continue
            if type(step) is not ActivationStep:
                return None
        return cls(trainer)

    def _make(self, x: np.ndarray) -> tuple | None:
        """The buffers of a batch of ``x``'s shape, or None when the chain does not take it
        (not 2-D, or a layer's output large enough for the general steps to split it)."""
        if x.ndim != 2:
            return None
        rows, dt = x.shape[0], x.dtype
        made, width = [], x.shape[1]
        for is_dense, first, _, third, *_ in self.layers:
            if is_dense:  # z, ∂C/∂x, the ones of BP3
                width = first.shape[0]
                made.append((np.empty((rows, width), dt), np.empty((rows, first.shape[1]), dt),
                             np.ones(rows, dt)))  # fmt: skip
            else:  # a, σ's scratch, its kept state (as ActivationStep keeps it)
                state = {"state": np.empty((third, rows, width), dt)} if third else {}
                made.append((np.empty((rows, width), dt), np.empty((rows, width), dt), state))
            if rows * width >= 2 * MIN_ELEMENTS:
                return None
        low_W = self.layers[self.lowest][1]
        fuse = self.gemm is not None and rows * low_W.size <= ONE_THREAD_MNK
        return (made, fuse)

    def takes(self, x: np.ndarray) -> bool:
        """Whether :meth:`step` runs this batch (else the general fused step)."""
        key = x.shape
        found = self._buffers.get(key, False)
        if found is False:
            found = self._buffers[key] = self._make(x)
        return found is not None

    def step(self, x: np.ndarray, y: np.ndarray, lr: float, shrink: float | None) -> None:
        """One plain-SGD step on the batch ``(x, y)`` (:meth:`takes` said yes); ``shrink``
        is ``REG.l2``'s ``1 − ηλ/N`` for the weights, or None."""
        made, fuse = self._buffers[x.shape]
        layers, lowest, trainer = self.layers, self.lowest, self.trainer
        inputs, outs = [], []
        a = x
        for (is_dense, first, second, third, _, _), bufs in zip(layers, made, strict=True):
            inputs.append(a)
            if is_dense:
                a = np.matmul(a, second, out=bufs[0])  # FWD.dense: z = a Wᵀ + b
                if third is not None:
                    a += third
            else:
                a = first(a, bufs[0], **bufs[2])  # σ.forward_into; a = z for the identity
            outs.append(a)
        self.out, self.z_last = a, inputs[-1]
        trainer._last = (a, y)
        g, K = trainer._seed(a, y, lr)  # BP1, the general path's own seed (δᴸ · η/n)
        for k in range(K - 1, lowest - 1, -1):
            is_dense, first, second, third, g_w, g_b = layers[k]
            bufs = made[k]
            if not is_dense:  # σ's VJP in place: g ⊙ σ′(z)
                g = second(g, inputs[k], outs[k], bufs[1], **bufs[2])
                continue
            a_in = inputs[k]
            if k > lowest or not fuse:
                np.dot(g.T, a_in, out=g_w)  # BP4
            if third is not None:
                np.dot(bufs[2], g, out=g_b)  # BP3: 1ᵀ δ
            if k > lowest:
                g = np.matmul(g, first, out=bufs[1])  # BP2: δ W
        params = trainer.model.flat_parameters
        if shrink is not None:  # REG.l2: w ← (1 − ηλ/N) w, before the gradient step
            for i in trainer.decayed:
                trainer.params[i] *= shrink
        if fuse:  # BP4 + OPT.sgd: Wᵀ ← 1·Wᵀ + (−1)·a_inᵀ δ, in place (Fortran view)
            a_in = inputs[lowest]
            self.gemm(-1.0, a_in.T, g.T, 1.0, self.low_T, 0, 1, 1)
            for p, grad in self.rest:
                p -= grad
        else:
            params -= trainer.grad  # OPT.sgd: one call for all layers
