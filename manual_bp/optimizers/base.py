"""Optimizer protocol and registry.

An optimizer updates parameters in place from their gradients::

    optimizer.step(params, grads)

``params`` and ``grads`` are equally long lists of arrays of equal shapes
(a network passes ``weights + biases``), or two single arrays (one flat
buffer). State (momentum, moment estimates) is kept per position in that list,
so the same list layout must be passed at every step. ``lr`` is a plain
attribute that learning-rate schedules (:mod:`manual_bp.schedules`) change
between epochs.

``weight_decay`` (where offered) follows ``torch.optim``: it is *coupled* L2,
``g ← g + wd·θ`` for **every** array passed (biases included), except in
AdamW, where it is decoupled. Nielsen's :class:`~manual_bp.regularizers.L2`
decays weights only; see ``docs/optimizers.md#OPT.weight-decay``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from manual_bp._registry import Configurable, Registry
from manual_bp._validation import check_real_dtype

__all__ = ["OPTIMIZERS", "Optimizer", "get_optimizer"]


class Optimizer(Configurable):
    """Base class. Subclasses implement :meth:`step`; ``lr`` is the learning rate η.

    Subclasses with state name their per-array buffers in ``_buffers``; they
    are created lazily (zeros, of each parameter's shape and dtype) by
    :meth:`_state` on the first step and checked against the layout afterwards.
    """

    equation = ""
    lr: float
    #: Names of per-array state buffers (zeros on the first step).
    _buffers: tuple[str, ...] = ()

    def step(self, params: Sequence[np.ndarray], grads: Sequence[np.ndarray]) -> None:
        """Update every ``params[i]`` in place from ``grads[i]``."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget accumulated state (momentum buffers, moment estimates, step count)."""
        self._states: list[dict[str, np.ndarray]] | None = None
        self.t = 0

    @staticmethod
    def _as_lists(params, grads) -> tuple[Sequence[np.ndarray], Sequence[np.ndarray]]:
        if isinstance(params, np.ndarray):
            params = [params]
        if isinstance(grads, np.ndarray):
            grads = [grads]
        Optimizer._check(params, grads)
        return params, grads

    @staticmethod
    def _check(params: Sequence[np.ndarray], grads: Sequence[np.ndarray]) -> None:
        """Parameters: writeable float arrays (updated in place); gradients: real arrays
        of the same shapes (never broadcast). Complex, bool and object arrays are refused.
        """
        if len(params) != len(grads):
            raise ValueError(f"{len(params)} parameter arrays but {len(grads)} gradients")
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            if not isinstance(p, np.ndarray):
                raise TypeError(
                    f"parameter {i} must be a NumPy array (updated in place), "
                    f"got {type(p).__name__}"
                )
            check_real_dtype(p, f"parameter {i}")
            if p.dtype.kind != "f":
                raise TypeError(
                    f"parameter {i} has dtype {p.dtype}; parameters must be float arrays "
                    "(an in-place update of integers would truncate)"
                )
            if not p.flags.writeable:
                raise ValueError(f"parameter {i} is read-only; it is updated in place")
            if not isinstance(g, np.ndarray):
                raise TypeError(f"gradient {i} must be a NumPy array, got {type(g).__name__}")
            check_real_dtype(g, f"gradient {i}")
            if p.shape != g.shape:
                raise ValueError(f"gradient {i} has shape {g.shape}, parameter has {p.shape}")

    def _state(self, params: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Per-position state buffers, created on the first step (plus scratch space)."""
        states = getattr(self, "_states", None)
        if states is None:
            states = [
                {name: np.zeros_like(p) for name in (*self._buffers, "scratch", "grad")}
                for p in params
            ]
            self._states = states
            return states
        if len(states) != len(params) or any(
            s["scratch"].shape != p.shape for s, p in zip(states, params, strict=True)
        ):
            raise ValueError(
                f"{type(self).__name__} state was built for shapes "
                f"{[s['scratch'].shape for s in states]}, got {[p.shape for p in params]}; "
                "pass the same parameter layout at every step or call reset()"
            )
        return states

    @staticmethod
    def _decayed(p: np.ndarray, g: np.ndarray, weight_decay: float, out: np.ndarray) -> np.ndarray:
        """Coupled L2 (``OPT.weight-decay``): ``g + wd·θ`` in ``out``; ``g`` itself when wd = 0."""
        if not weight_decay:
            return g
        np.multiply(p, weight_decay, out=out)
        out += g
        return out


def lerp(start: np.ndarray, end: np.ndarray, weight: float, scratch: np.ndarray) -> None:
    """``start ← start + w·(end − start)`` in place, rounded as torch's ``lerp_``.

    torch evaluates ``end − (end − start)(1 − w)`` when ``w ≥ 0.5``, which is
    exact at ``w = 1`` (β = 0); the naive form cancels when ``|end| ≪ |start|``.
    """
    np.subtract(end, start, out=scratch)
    if weight < 0.5:
        scratch *= weight
        start += scratch
    else:
        scratch *= 1.0 - weight
        np.subtract(end, scratch, out=start)


OPTIMIZERS = Registry("optimizer", Optimizer)


def get_optimizer(spec: str | Optimizer | type[Optimizer] | dict[str, Any]) -> Optimizer:
    """An :class:`Optimizer` from a name, class, instance or config dict."""
    return OPTIMIZERS.get(spec)


def check_hyperparameter(
    name: str, value: float, *, low: float = 0.0, high: float = np.inf, closed: str = "left"
) -> float:
    """``value`` as a float, or ``ValueError`` naming it when outside its interval.

    ``closed`` in {"left", "right", "both", "neither"} says which ends are allowed.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    ok_low = value >= low if closed in ("left", "both") else value > low
    ok_high = value <= high if closed in ("right", "both") else value < high
    if not np.isfinite(value) or not (ok_low and ok_high):
        left = "[" if closed in ("left", "both") else "("
        right = "]" if closed in ("right", "both") else ")"
        raise ValueError(f"{name} must be in {left}{low}, {high}{right}, got {value!r}")
    return value
