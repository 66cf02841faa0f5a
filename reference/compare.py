"""Named comparisons between manual_bp and the torch oracle, one per equation ID.

:func:`network_comparisons` runs one case through ``Network.backprop`` and
through :func:`reference.network.torch_run` and pairs every quantity with its
oracle under the equation ID it verifies. Tests assert them
(:meth:`Comparison.check`); the ``verify`` command tabulates their errors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from manual_bp import Network
from manual_bp.gradcheck import (
    assert_gradients_close,
    finite_difference_gradient,
    normalised_error,
)
from reference.conditioning import ambiguous_samples, error_scales
from reference.network import torch_run

__all__ = [
    "Comparison",
    "drop_ambiguous_samples",
    "finite_difference_comparisons",
    "network_comparisons",
]


@dataclass
class Comparison:
    """One quantity: ours, the oracle's, and the magnitude scale for its tolerance."""

    equation: str
    name: str
    actual: np.ndarray
    expected: np.ndarray
    scale: np.ndarray | None = None
    #: "torch" (autograd) or "finite-differences".
    oracle: str = "torch"
    #: Absolute bound replacing c·ε·max|expected| (finite differences).
    atol: float | None = None

    @property
    def error(self) -> float:
        """Normalised error ``max|Δ| / max|expected|``."""
        return normalised_error(self.actual, self.expected)

    def check(self, dtype=np.float64, c: float = 64.0) -> float:
        """Assert agreement (``AssertionError`` names the quantity); return the error."""
        return assert_gradients_close(
            self.actual,
            self.expected,
            name=f"{self.equation} {self.name} (vs {self.oracle})",
            dtype=dtype,
            c=c,
            scale=self.scale,
            atol=self.atol,
            rtol=0.0 if self.atol is not None else None,
        )


def drop_ambiguous_samples(
    net: Network, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` without the samples whose reference gradient is undefined.

    See :func:`reference.conditioning.ambiguous_samples`: a unit within rounding
    distance of a kink. Rare (a cancellation that is exactly 0 in exact
    arithmetic); every other sample is kept, so the case is still checked.
    """
    ambiguous = ambiguous_samples(net, torch_run(net, x, y))
    if not ambiguous.any():
        return x, y
    keep = ~ambiguous
    return np.asarray(x)[keep], np.asarray(y)[keep]


def network_comparisons(net: Network, x: np.ndarray, y: np.ndarray) -> list[Comparison]:
    """Every back-propagated quantity of one case, paired with autograd's.

    Equation IDs: ``FWD.dense`` (zˡ, aˡ), ``BP1`` (δᴸ), ``BP2`` (δˡ, l < L),
    ``BP3`` (∂C/∂bˡ), ``BP4`` (∂C/∂Wˡ), ``BP.input`` (∂C/∂x) and the cost's
    value equation (C, when finite).
    """
    x, y = drop_ambiguous_samples(net, x, y)
    if len(x) == 0:
        return []
    grads = net.backprop(x, y)
    run = torch_run(net, x, y)
    scales = error_scales(net, run, grads._targets.astype(np.float64))
    out: list[Comparison] = []
    for l, (z, z_ref) in enumerate(zip(grads.zs, run.zs, strict=True)):
        out.append(Comparison("FWD.dense", f"z[{l + 1}]", z, z_ref, scales.zs[l]))
        out.append(
            Comparison(
                "FWD.dense",
                f"a[{l + 1}]",
                grads.activations[l + 1],
                run.activations[l + 1],
                scales.activations[l + 1],
            )
        )
    n_layers = len(net.weights)
    out.append(
        Comparison("BP1", f"δ[{n_layers}]", grads.deltas[-1], run.deltas[-1], scales.deltas[-1])
    )
    for l in range(n_layers - 1):
        out.append(
            Comparison("BP2", f"δ[{l + 1}]", grads.deltas[l], run.deltas[l], scales.deltas[l])
        )
    for l in range(n_layers):
        out.append(
            Comparison("BP3", f"∂C/∂b[{l + 1}]", grads.biases[l], run.biases[l], scales.biases[l])
        )
        out.append(
            Comparison(
                "BP4", f"∂C/∂W[{l + 1}]", grads.weights[l], run.weights[l], scales.weights[l]
            )
        )
    out.append(Comparison("BP.input", "∂C/∂x", grads.input_grad, run.input_grad, scales.input_grad))
    if np.isfinite(grads.cost):
        out.append(
            Comparison(
                net.cost.equation_value,
                "C",
                np.array(grads.cost),
                np.array(run.cost),
                np.array(scales.cost),
            )
        )
    return out


#: Central differences with h = 1e-6·max(1, |θ|) in float64 carry an error of about
#: h²·|C‴|/6 + ε·|C|/h ≈ 1e-10 for these networks; the bound leaves a margin of
#: ~100 and still flags any error of a derivation (which is of order one). Where the
#: cost itself is noisy, the estimate's own error |D(h) − D(2h)| is added.
FD_STEP = 1e-6
FD_RTOL = 1e-6
FD_ATOL = 1e-8


def finite_difference_comparisons(net: Network, x: np.ndarray, y: np.ndarray) -> list[Comparison]:
    """∂C/∂Wˡ, ∂C/∂bˡ and ∂C/∂x from backprop against central finite differences of C.

    Independent of torch. Use smooth activations and moderate weights: at a
    kink or in deep saturation a finite difference does not approximate the
    derivative.
    """
    if net.dtype != np.float64:
        raise TypeError("finite-difference checks need a float64 network")
    grads = net.backprop(x, y)
    targets = grads._targets
    x = np.array(x, dtype=np.float64)  # a private copy to perturb

    def cost() -> float:
        return net.cost.value(net.feedforward(x), targets)

    # Rounding the outputs (absolute ε·max(|a|, 1)) moves C by ε·Σ|∂C/∂a|·max(|a|, 1): large
    # where ln(1 − a) is taken of a probability next to 1. A difference quotient divides
    # that noise by its step, so it is part of the oracle's own error.
    a = grads.activations[-1]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        grad_a = np.abs(net.cost.grad(a, targets))
    grad_a = np.where(np.isfinite(grad_a), grad_a, 0.0)
    cost_noise = float(np.finfo(np.float64).eps * (grad_a * np.maximum(np.abs(a), 1)).sum(1).mean())

    def compare(equation: str, name: str, actual: np.ndarray, param: np.ndarray) -> Comparison:
        expected, fd_error = finite_difference_gradient(cost, param, h=FD_STEP, return_error=True)
        steps = FD_STEP * np.maximum(1.0, np.abs(param))
        atol = (
            FD_RTOL * float(np.abs(expected).max(initial=0.0))
            + FD_ATOL * (1 + abs(grads.cost))
            + 4.0 * fd_error
            + 8.0 * cost_noise / steps
        )
        return Comparison(equation, name, actual, expected, oracle="finite-differences", atol=atol)

    out = []
    for l in range(len(net.weights)):
        out.append(compare("BP4", f"∂C/∂W[{l + 1}]", grads.weights[l], net.weights[l]))
        out.append(compare("BP3", f"∂C/∂b[{l + 1}]", grads.biases[l], net.biases[l]))
    out.append(compare("BP.input", "∂C/∂x", grads.input_grad, x))
    return out
