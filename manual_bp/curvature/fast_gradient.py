"""The gradient by the layers' fast forms: the training step's own sweep, reused.

:func:`~manual_bp.curvature.rop.gradient` needs nothing but ``∇C``, which the fused
training step (:class:`~manual_bp.training.fused.FusedTrainer`) already computes through
every layer's fast form (:meth:`Layer.fast_step`: preallocated buffers, in place, the
layer's own equations checked against its readable form), with the mean's ``1/n`` folded
into the seed. So the curvature gradient asks that trainer instead of walking the readable
layers (``docs/curvature.md``, "The gradient by the fast forms"); the walk stays as the
products' reference (:func:`~manual_bp.curvature.rop.walk_gradient`) and for what the
trainer does not take.

One trainer is kept per model, in ``model.derived`` (which copies of the model leave
out), for the last batch shape asked: its buffers are the saving (a fresh trainer faults in
every buffer's pages on its first pass), and holding one shape's bounds what it keeps — a
call with another batch shape, or after the model's layers or flat parameter buffer changed
(``append``, a dtype change), builds a new one; ``model.derived.clear()`` frees it. Calls on
one model run one at a time (a lock kept beside it: the trainer's buffers and the running
statistics, which a training-mode pass moves and which are restored afterwards — a
curvature query does not move the model).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from manual_bp.curvature.chain import restored
from manual_bp.training.fused import FusedTrainer

__all__: list[str] = []  # internal: gradient() calls it on validated data

_BUILDING = threading.Lock()  # one lock made per model, also when threads race

#: The keys of ``model.derived``: ``(key, trainer)`` for :func:`fused_gradient`, its lock.
_SLOT, _LOCK = "curvature.fused_trainer", "curvature.lock"


def _lock(model: Any) -> threading.Lock:
    with _BUILDING:
        return model.derived.setdefault(_LOCK, threading.Lock())


def _trainer(model: Any, x: np.ndarray, y: np.ndarray) -> FusedTrainer:
    """The kept trainer if built for this model's layers, flat buffer and these batch
    shapes, else a new one in its place (called under the model's lock)."""
    key = (id(model.flat_parameters), tuple(map(id, model.layers)), x.shape, y.shape)
    kept = model.derived.get(_SLOT)
    if kept is None or kept[0] != key:
        kept = model.derived[_SLOT] = (key, FusedTrainer(model))
    return kept[1]


def fused_gradient(model: Any, x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """``∇C`` of the model's mean cost on prepared ``(x, y)`` in ``parameter_arrays()``
    order (fresh arrays), by the fused training step's forward and backward sweep; the
    model's buffers (running statistics) as they were."""
    with _lock(model), restored(b for _, b in model.named_buffers()):
        return _trainer(model, x, y)._gradients_of_prepared(x, y)
