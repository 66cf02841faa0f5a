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


class _Hardsigmoid(torch.autograd.Function):
    """``F.hardsigmoid`` with torch's own first derivative (reverse and forward mode) and a zero
    second derivative.

    torch raises on the double backward of ``hardsigmoid_backward`` (not implemented), which
    the second-order checks need; its slope is piecewise constant, so the derivative of the
    backward with respect to ``z`` is 0. The slope itself is torch's kernel's, read off
    ``hardsigmoid_backward(1, z)`` (``1·c`` is exact, so ``g·slope`` is torch's ``g·c``).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(z: Tensor) -> Tensor:
        return F.hardsigmoid(z)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[0])
        ctx.save_for_forward(inputs[0])

    @staticmethod
    def _slope(z: Tensor) -> Tensor:
        return torch.ops.aten.hardsigmoid_backward(torch.ones_like(z), z.detach())

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (z,) = ctx.saved_tensors
        return grad * _Hardsigmoid._slope(z)

    @staticmethod
    def jvp(ctx, tangent: Tensor) -> Tensor:
        """Forward mode (``torch.func.jvp``): the same slope times the tangent."""
        (z,) = ctx.saved_tensors
        return tangent * _Hardsigmoid._slope(z)


#: name -> f(activation_instance) -> (z -> a)
TORCH_ACTIVATIONS: dict[str, Callable[[Activation], Callable[[Tensor], Tensor]]] = {
    "identity": lambda act: lambda z: z,
    "sigmoid": lambda act: torch.sigmoid,
    "tanh": lambda act: torch.tanh,
    "relu": lambda act: F.relu,
    "leaky-relu": lambda act: lambda z: F.leaky_relu(z, negative_slope=act.alpha),
    "elu": lambda act: lambda z: F.elu(z, alpha=act.alpha),
    "selu": lambda act: F.selu,
    "softplus": lambda act: lambda z: F.softplus(z, beta=act.beta, threshold=act.threshold),
    "gelu": lambda act: lambda z: F.gelu(z, approximate=act.approximate),
    "silu": lambda act: F.silu,
    "hardtanh": lambda act: lambda z: F.hardtanh(z, min_val=act.min_val, max_val=act.max_val),
    # issue 26: torch's remaining elementwise activation modules
    "celu": lambda act: lambda z: F.celu(z, alpha=act.alpha),
    "hardshrink": lambda act: lambda z: F.hardshrink(z, lambd=act.lambd),
    "hardsigmoid": lambda act: _Hardsigmoid.apply,
    "hardswish": lambda act: F.hardswish,
    "log-sigmoid": lambda act: F.logsigmoid,
    "mish": lambda act: F.mish,
    "relu6": lambda act: F.relu6,
    "softshrink": lambda act: lambda z: F.softshrink(z, lambd=act.lambd),
    "softsign": lambda act: F.softsign,
    "tanhshrink": lambda act: F.tanhshrink,
    "threshold": lambda act: lambda z: F.threshold(z, act.threshold, act.value),
    # Coupled: over the units of each sample, the last dim ((batch, n) and (1, n) alike).
    "softmax": lambda act: lambda z: F.softmax(z, dim=-1),
    "softmin": lambda act: lambda z: F.softmin(z, dim=-1),
    "log-softmax": lambda act: lambda z: F.log_softmax(z, dim=-1),
}


def _batch_size(a: Tensor) -> int:
    return a.shape[0]


def _labels(y: Tensor) -> Tensor:
    """Class labels of one-hot target rows (torch's class-index losses need them)."""
    return y.argmax(dim=1)


def _log_likelihood(a: Tensor, y: Tensor) -> Tensor:
    """``−Σ y ln a`` summed: ``F.nll_loss(log a, labels)`` for one-hot ``y``, any soft ``y``.

    Masked twice (``where`` before the log and after) so that the gradient is
    exactly 0, not 0/0, where ``y = 0`` and the softmax output underflowed to 0.
    """
    nonzero = y != 0
    safe_log = torch.log(torch.where(nonzero, a, torch.ones_like(a)))
    return -torch.where(nonzero, y * safe_log, torch.zeros_like(a)).sum()


#: name -> f(cost_instance) -> ((a, y) -> mean per-sample cost)
TORCH_COSTS: dict[str, Callable[[Cost], Callable[[Tensor, Tensor], Tensor]]] = {
    # ½‖a − y‖² per sample: F.mse_loss(reduction="sum") is Σ over all elements, no ½.
    "quadratic": lambda cost: lambda a, y: 0.5 * F.mse_loss(a, y, reduction="sum") / _batch_size(a),
    # Nielsen's cross-entropy summed over units; torch clamps each log at −100, which
    # agrees with our definition wherever a ∈ (e⁻¹⁰⁰, 1 − e⁻¹⁰⁰) (see docs/costs.md).
    "cross-entropy": lambda cost: (
        lambda a, y: F.binary_cross_entropy(a, y, reduction="sum") / _batch_size(a)
    ),
    "bce-logits": lambda cost: (
        lambda a, y: F.binary_cross_entropy_with_logits(a, y, reduction="sum") / _batch_size(a)
    ),
    "log-likelihood": lambda cost: lambda a, y: _log_likelihood(a, y) / _batch_size(a),
    # F.cross_entropy with probability targets: −Σⱼ yⱼ log_softmax(a)ⱼ per sample.
    "categorical-cross-entropy": lambda cost: (
        lambda a, y: F.cross_entropy(a, y, reduction="sum") / _batch_size(a)
    ),
    "mae": lambda cost: lambda a, y: F.l1_loss(a, y, reduction="sum") / _batch_size(a),
    "huber": lambda cost: (
        lambda a, y: F.huber_loss(a, y, delta=cost.threshold, reduction="sum") / _batch_size(a)
    ),
    "smooth-l1": lambda cost: (
        lambda a, y: F.smooth_l1_loss(a, y, beta=cost.beta, reduction="sum") / _batch_size(a)
    ),
    # multi_margin_loss divides each sample's hinge sum by the number of classes; we do not.
    "multi-margin": lambda cost: (
        lambda a, y: (
            F.multi_margin_loss(a, _labels(y), p=1, margin=cost.margin, reduction="sum")
            * a.shape[1]
            / _batch_size(a)
        )
    ),
    # kl_div(input = log-probabilities, target = probabilities); "batchmean" = Σ / batch.
    "kl-divergence": lambda cost: (
        lambda a, y: F.kl_div(a, y, reduction="batchmean", log_target=False)
    ),
    "poisson-nll": lambda cost: (
        lambda a, y: (
            F.poisson_nll_loss(
                a, y, log_input=cost.log_input, full=False, eps=cost.eps, reduction="sum"
            )
            / _batch_size(a)
        )
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
    # softmax + log-likelihood = cross-entropy of the logits (log-sum-exp, no underflow).
    ("softmax", "log-likelihood"): lambda act, cost: (
        lambda z, y: F.cross_entropy(z, y, reduction="sum") / _batch_size(z)
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
