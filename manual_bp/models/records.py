"""What a backward pass returns: :class:`StackGradients` (every model) and Nielsen's
:class:`Gradients` (a :class:`~manual_bp.models.network.Network`'s ``backprop``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from manual_bp.costs import Cost

__all__ = ["Gradients", "StackGradients"]


@dataclass
class StackGradients:
    """Result of :meth:`Sequential.backprop` on a mini-batch of ``n`` samples.

    Attributes
    ----------
    cost : float
        Mean mini-batch cost ``C = (1/n) Σ_x C_x``.
    params : dict name -> array
        ``∂C/∂θ`` for every parameter, under its dotted state-dict name (``"0.weight"``).
    layers : list of dict
        The same gradients per layer, under the layer's own names.
    input_grad : array or None
        ``∂C/∂x``, shaped like the input (``None`` after ``backprop(..., input_grad=False)``).
    output : array
        The model's output ``aᴷ``.
    output_grad : array
        ``∂C/∂aᴷ`` of the mean cost (computed on first use: a pass seeded through BP1's
        shortcut at ``zᴷ`` does not need it).
    caches : list
        Every layer's cache (its first field is the layer's input).
    """

    cost: float
    params: dict[str, np.ndarray]
    layers: list[dict[str, np.ndarray]]
    input_grad: np.ndarray | None
    output: np.ndarray
    caches: list[Any]
    #: The prepared targets (labels one-hot encoded; ignored positions all-zero rows).
    targets: np.ndarray | None = None
    _seed: Any = field(default=None, repr=False)

    @property
    def output_grad(self) -> np.ndarray:
        return self._seed.output_grad


@dataclass
class Gradients:
    """Result of :meth:`Network.backprop` for a mini-batch of ``n`` samples.

    Attributes
    ----------
    weights, biases : lists of arrays
        ``∂C/∂Wˡ`` (BP4) and ``∂C/∂bˡ`` (BP3) of the mean mini-batch cost ``C``.
    deltas : list of (n, n_l) arrays
        Per-sample errors ``δˡ_x = ∂C_x/∂zˡ_x`` (BP1, BP2); ``∂C/∂zˡ`` is ``deltas[l] / n``.
    zs, activations : lists of arrays
        Weighted inputs ``z¹ … zᴸ``; ``a⁰ = x, a¹, …, aᴸ``.
    input_grad : (n, n_in) array
        ``∂C/∂x`` of the mean cost (equation ``BP.input``).
    cost : float
        The mini-batch cost ``C``.
    """

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    deltas: list[np.ndarray]
    zs: list[np.ndarray]
    activations: list[np.ndarray]
    input_grad: np.ndarray
    cost: float
    _cost_fn: Cost = field(repr=False)
    _targets: np.ndarray = field(repr=False)
    _caches: list[Any] = field(repr=False, default_factory=list)

    @cached_property
    def output_grad(self) -> np.ndarray:
        """Per-sample ``∂C_x/∂aᴸ_x``, shape ``(n, n_out)`` (equation ``COST.*.grad``)."""
        return self._cost_fn.grad(self.activations[-1], self._targets)
