"""Divergence: one check and one exception for every training path, with the likely cause.

Both training paths (the readable :meth:`~manual_bp.models.network.Network.backprop` step and the
fused :class:`~manual_bp.training.fused.FusedTrainer`, for every model) call
:func:`check_training_state` at the end of every epoch, with the parameters and the last
cost they computed; the readable path also checks each mini-batch's cost as it goes. A
non-finite parameter or cost raises :class:`DivergenceError` whose one-line message names
the likely cause (:func:`divergence_hint`):

* ``eps = 0`` in an optimizer that divides by a root of squared gradients (Adam, AdamW,
  RMSprop, Adagrad): a coordinate whose gradients are all 0 divides 0 by 0;
* otherwise a learning rate too large for the scale of the problem.

Parameters that are non-finite *before* training are not a learning-rate problem: they
are refused before the first epoch by :func:`check_parameters_finite`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "DivergenceError",
    "check_parameters_finite",
    "check_training_state",
    "divergence_hint",
]


class DivergenceError(FloatingPointError):
    """Training diverged: a parameter or the cost became non-finite (NaN or ±inf).

    A subclass of ``FloatingPointError``, so ``except FloatingPointError`` still catches it.
    """


def _first_nonfinite(params: Sequence[np.ndarray]) -> tuple[int, tuple[int, ...], float] | None:
    if isinstance(params, np.ndarray):  # one flat buffer, not a sequence of scalars
        params = [params]
    for position, p in enumerate(params):
        finite = np.isfinite(p)
        if not finite.all():
            index = tuple(int(i) for i in np.unravel_index(int(np.argmin(finite)), p.shape))
            return position, index, float(p[index])
    return None


def check_parameters_finite(params: Sequence[np.ndarray], names: Sequence[str] | None = None):
    """Refuse parameters that are already non-finite (before any training step).

    Raises
    ------
    ValueError
        Naming the parameter, the index and the value; this is not a learning-rate problem.
    """
    found = _first_nonfinite(params)
    if found is not None:
        position, index, value = found
        name = names[position] if names is not None else f"parameter array {position}"
        raise ValueError(
            f"{name} holds the non-finite value {value} at index {index} before training "
            "started; this is not a learning-rate problem: re-initialise the model or load "
            "finite parameters"
        )


def divergence_hint(optimizer: Any, x: np.ndarray | None = None) -> str:
    """The likely cause of a divergence, as advice (one sentence, no line break)."""
    eps = getattr(optimizer, "eps", None)
    if eps is not None and eps == 0:
        return (
            f"{type(optimizer).__name__} has eps = 0, which divides 0 by 0 where a gradient "
            "and its running average are 0; use eps > 0 (torch's default is 1e-8)"
        )
    lr = getattr(optimizer, "lr", None)
    advice = "lower the learning rate" + ("" if lr is None else f" (lr = {lr:g})")
    if x is not None and x.size:
        scale = float(np.max(np.abs(x)))
        if scale > 1e3:
            advice += f", or scale the inputs (max |x| = {scale:.3g})"
    return advice


def check_training_state(
    params: Sequence[np.ndarray],
    cost: float | None,
    *,
    epoch: int,
    optimizer: Any,
    x: np.ndarray | None = None,
    where: str = "",
    buffers: Sequence[tuple[str, np.ndarray]] = (),
) -> None:
    """Raise :class:`DivergenceError` if ``cost``, any parameter or any floating buffer
    (``(name, array)`` pairs: batch norm's running statistics) is non-finite.

    The message names what became non-finite, in which epoch, and the likely cause. A
    buffer can overflow while the cost stays finite (batch norm normalises inputs of any
    scale, its running variance does not): found here, not when saving.
    """
    problem = None
    if cost is not None and not np.isfinite(cost):
        problem = f"the cost became {cost}"
    else:
        found = _first_nonfinite(params)
        if found is not None:
            position, index, value = found
            problem = f"parameter array {position} became {value} at index {index}"
    floating = [(n, b) for n, b in buffers if b.dtype.kind == "f"]
    if problem is None and floating:
        found = _first_nonfinite([b for _, b in floating])
        if found is not None:
            position, index, value = found
            problem = f"buffer {floating[position][0]} became {value} at index {index}"
    if problem is None:
        return
    at = f" ({where})" if where else ""
    raise DivergenceError(
        f"training diverged in epoch {epoch}{at}: {problem}; {divergence_hint(optimizer, x)}"
    )
