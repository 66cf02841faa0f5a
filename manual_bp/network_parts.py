"""Pieces of :class:`~manual_bp.network.Network` kept apart to keep its module short:
the :class:`Gradients` record of a backward pass and the checks of its constructor."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from manual_bp.activations import Activation, get_activation
from manual_bp.costs import Cost

__all__ = [
    "ActivationSpec",
    "Gradients",
    "check_lmbda",
    "check_sizes",
    "per_layer_activations",
]

ActivationSpec = str | Activation | type[Activation] | dict[str, Any]


@dataclass
class Gradients:
    """Result of :meth:`Network.backprop` for a mini-batch of ``n`` samples.

    Attributes
    ----------
    weights : list of (n_l, n_{l−1}) arrays
        ``∂C/∂Wˡ`` of the mean mini-batch cost ``C`` (BP4).
    biases : list of (n_l,) arrays
        ``∂C/∂bˡ`` (BP3).
    deltas : list of (n, n_l) arrays
        Per-sample errors ``δˡ_x = ∂C_x/∂zˡ_x`` (BP1, BP2). Note: ``∂C/∂zˡ`` of
        the mean cost is ``deltas[l] / n``.
    zs : list of (n, n_l) arrays
        Weighted inputs ``z¹ … zᴸ``.
    activations : list of (n, n_l) arrays
        ``a⁰ = x, a¹, …, aᴸ``.
    input_grad : (n, n_in) array
        ``∂C/∂x`` of the mean cost ``C`` (equation ``BP.input``).
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

    @cached_property
    def output_grad(self) -> np.ndarray:
        """Per-sample ``∂C_x/∂aᴸ_x``, shape ``(n, n_out)`` (equation ``COST.*.grad``)."""
        return self._cost_fn.grad(self.activations[-1], self._targets)


def check_sizes(sizes: Sequence[int]) -> list[int]:
    sizes = list(sizes)
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
            raise TypeError(f"sizes must be integers, got {s!r} in {sizes!r}")
    if len(sizes) < 2 or any(s < 1 for s in sizes):
        raise ValueError(
            f"sizes must list at least two positive layer widths (input and output), got {sizes}"
        )
    return [int(s) for s in sizes]


def per_layer_activations(
    activation: ActivationSpec | Sequence[ActivationSpec], n_layers: int
) -> list[Activation]:
    if isinstance(activation, (str, dict, Activation, type)):
        return [get_activation(activation) for _ in range(n_layers)]
    activations = [get_activation(a) for a in activation]
    if len(activations) != n_layers:
        raise ValueError(
            f"got {len(activations)} activations for {n_layers} layers; pass one name, "
            f"or one per layer (len(sizes) - 1)"
        )
    return activations


def check_lmbda(lmbda: Any) -> None:
    """Nielsen's L2 strength λ: a finite real number ≥ 0."""
    if isinstance(lmbda, bool) or not isinstance(lmbda, (int, float, np.integer, np.floating)):
        raise TypeError(f"lmbda must be a real number, got {lmbda!r}")
    if not np.isfinite(lmbda) or lmbda < 0:
        raise ValueError(f"lmbda must be a finite number >= 0, got {lmbda!r}")
