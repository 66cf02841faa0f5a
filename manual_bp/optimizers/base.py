"""Optimizer protocol and registry.

An optimizer updates parameters in place from their gradients::

    optimizer.step(params, grads)

``params`` and ``grads`` are equally long lists of arrays of equal shapes
(a network passes ``weights + biases``, or one flat buffer). State (momentum,
moment estimates) is kept per position in that list, so the same list layout
must be passed at every step. ``lr`` is a plain attribute that learning-rate
schedules may change between steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from manual_bp._registry import Configurable, Registry

__all__ = ["OPTIMIZERS", "Optimizer", "get_optimizer"]


class Optimizer(Configurable):
    """Base class. Subclasses implement :meth:`step`; ``lr`` is the learning rate η."""

    equation = ""
    lr: float

    def step(self, params: Sequence[np.ndarray], grads: Sequence[np.ndarray]) -> None:
        """Update every ``params[i]`` in place from ``grads[i]``."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget accumulated state (momentum buffers, moment estimates, step count)."""

    @staticmethod
    def _check(params: Sequence[np.ndarray], grads: Sequence[np.ndarray]) -> None:
        if len(params) != len(grads):
            raise ValueError(f"{len(params)} parameter arrays but {len(grads)} gradients")
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            if p.shape != g.shape:
                raise ValueError(f"gradient {i} has shape {g.shape}, parameter has {p.shape}")


OPTIMIZERS = Registry("optimizer", Optimizer)


def get_optimizer(spec: str | Optimizer | type[Optimizer] | dict[str, Any]) -> Optimizer:
    """An :class:`Optimizer` from a name, class, instance or config dict."""
    return OPTIMIZERS.get(spec)
