"""The gradient by the layers' fast forms: the training step's own sweep, reused.

:func:`~manual_bp.curvature.rop.gradient` needs nothing but ``∇C``, which the fused
training step (:class:`~manual_bp.training.fused.FusedTrainer`) already computes through
every layer's fast form (:meth:`Layer.fast_step`: preallocated buffers, in place, the
layer's own equations checked against its readable form), with the mean's ``1/n`` folded
into the seed. So the curvature gradient asks that trainer instead of walking the readable
layers (``docs/curvature.md``, "The gradient by the fast forms"); the walk stays as the
products' reference (:func:`~manual_bp.curvature.rop.walk_gradient`) and for what the
trainer does not take.

The trainer is built once per model and kept on it (its buffers are the saving: a fresh
trainer faults in every buffer's pages on its first pass) in ``model.derived``, which
copies of the model leave out, rebuilt when the model's layers
or its flat parameter buffer change (``append`` re-allocates it). Running statistics a
training-mode pass moves are restored afterwards: a curvature query does not move the
model.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from manual_bp.curvature.chain import restored
from manual_bp.training.fused import FusedTrainer

__all__: list[str] = []  # internal: gradient() calls it on validated data

_BUILDING = threading.Lock()  # one trainer built per model, also when threads race

#: The key of ``model.derived`` holding ``(key, trainer)`` for :func:`fused_gradient`.
_SLOT = "curvature.fused_trainer"


def _trainer(model: Any) -> tuple[FusedTrainer, threading.Lock]:
    """The model's kept trainer and its lock, rebuilt if its layers or flat buffer
    changed. The lock: the trainer's buffers serve one call at a time (two threads asking
    for the gradient of one model wait for each other, as the walk never had to)."""
    key = (id(model.flat_parameters), tuple(map(id, model.layers)))
    with _BUILDING:
        kept = model.derived.get(_SLOT)
        if kept is None or kept[0] != key:
            kept = model.derived[_SLOT] = (key, FusedTrainer(model), threading.Lock())
    return kept[1], kept[2]


def fused_gradient(model: Any, x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """``∇C`` of the model's mean cost on prepared ``(x, y)`` in ``parameter_arrays()``
    order (fresh arrays), by the fused training step's forward and backward sweep; the
    model's buffers (running statistics) as they were."""
    trainer, lock = _trainer(model)
    with lock, restored(b for _, b in model.named_buffers()):
        return trainer.gradients_of_prepared(x, y)
