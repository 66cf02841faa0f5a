"""torch forwards of manual_bp activations and costs, keyed by their names.

Each entry is built from torch's own functions. Costs return the *mean over
the batch of per-sample costs* (our convention), obtained from torch's losses
with ``reduction="sum"`` divided by the batch size, times any constant factor
that differs (the ½ of the quadratic cost).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from manual_bp.activations import Activation
from manual_bp.costs import Cost

__all__ = [
    "TORCH_ACTIVATIONS",
    "TORCH_COSTS",
    "TORCH_FUSED_OUTPUTS",
    "torch_activation",
    "torch_cost",
    "torch_fused_output",
]

Tensor = torch.Tensor

#: name -> f(activation_instance) -> (z -> a)
TORCH_ACTIVATIONS: dict[str, Callable[[Activation], Callable[[Tensor], Tensor]]] = {
    "identity": lambda act: lambda z: z,
    "sigmoid": lambda act: torch.sigmoid,
    "tanh": lambda act: torch.tanh,
    "relu": lambda act: F.relu,
}


def _batch_size(a: Tensor) -> int:
    return a.shape[0]


#: name -> f(cost_instance) -> ((a, y) -> mean per-sample cost)
TORCH_COSTS: dict[str, Callable[[Cost], Callable[[Tensor, Tensor], Tensor]]] = {
    # ½‖a − y‖² per sample: F.mse_loss(reduction="sum") is Σ over all elements, no ½.
    "quadratic": lambda cost: lambda a, y: 0.5 * F.mse_loss(a, y, reduction="sum") / _batch_size(a),
    # Nielsen's cross-entropy summed over units; torch clamps each log at −100, which
    # agrees with our definition wherever a ∈ (e⁻¹⁰⁰, 1 − e⁻¹⁰⁰) (see docs/costs.md).
    "cross-entropy": lambda cost: (
        lambda a, y: F.binary_cross_entropy(a, y, reduction="sum") / _batch_size(a)
    ),
}

#: (output activation name, cost name) -> f(act, cost) -> ((z, y) -> mean per-sample cost)
#: The same function of zᴸ as the composition, computed by torch's stable fused loss; used
#: for network-level checks so that saturated outputs are compared to torch's stable
#: form rather than to its clamped probability-space loss.
TORCH_FUSED_OUTPUTS: dict[
    tuple[str, str], Callable[[Activation, Cost], Callable[[Tensor, Tensor], Tensor]]
] = {
    ("sigmoid", "cross-entropy"): lambda act, cost: (
        lambda z, y: F.binary_cross_entropy_with_logits(z, y, reduction="sum") / _batch_size(z)
    ),
}


def torch_activation(activation: Activation) -> Callable[[Tensor], Tensor]:
    """The torch forward ``z -> a`` of a manual_bp activation."""
    try:
        return TORCH_ACTIVATIONS[activation.name](activation)
    except KeyError:
        raise NotImplementedError(f"no torch oracle for activation {activation.name!r}") from None


def torch_cost(cost: Cost) -> Callable[[Tensor, Tensor], Tensor]:
    """The torch forward ``(a, y) -> C`` (mean of per-sample costs) of a manual_bp cost."""
    try:
        return TORCH_COSTS[cost.name](cost)
    except KeyError:
        raise NotImplementedError(f"no torch oracle for cost {cost.name!r}") from None


def torch_fused_output(
    activation: Activation, cost: Cost
) -> Callable[[Tensor, Tensor], Tensor] | None:
    """torch's fused stable loss of ``zᴸ`` for this output pair, if there is one."""
    factory = TORCH_FUSED_OUTPUTS.get((activation.name, cost.name))
    return None if factory is None else factory(activation, cost)
