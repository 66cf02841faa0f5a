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
from manual_bp.gradcheck import assert_gradients_close, normalised_error
from reference.conditioning import error_scales
from reference.network import torch_run

__all__ = ["Comparison", "network_comparisons"]


@dataclass
class Comparison:
    """One quantity: ours, the oracle's, and the magnitude scale for its tolerance."""

    equation: str
    name: str
    actual: np.ndarray
    expected: np.ndarray
    scale: np.ndarray | None = None

    @property
    def error(self) -> float:
        """Normalised error ``max|Δ| / max|expected|``."""
        return normalised_error(self.actual, self.expected)

    def check(self, dtype=np.float64, c: float = 64.0) -> float:
        """Assert agreement (``AssertionError`` names the quantity); return the error."""
        return assert_gradients_close(
            self.actual,
            self.expected,
            name=f"{self.equation} {self.name}",
            dtype=dtype,
            c=c,
            scale=self.scale,
        )


def network_comparisons(net: Network, x: np.ndarray, y: np.ndarray) -> list[Comparison]:
    """Every back-propagated quantity of one case, paired with autograd's.

    Equation IDs: ``FWD.dense`` (zˡ, aˡ), ``BP1`` (δᴸ), ``BP2`` (δˡ, l < L),
    ``BP3`` (∂C/∂bˡ), ``BP4`` (∂C/∂Wˡ), ``BP.input`` (∂C/∂x) and the cost's
    value equation (C, when finite).
    """
    grads = net.backprop(x, y)
    run = torch_run(net, x, y)
    scales = error_scales(net, run, grads._targets.astype(np.float64))
    out: list[Comparison] = []
    for l, (z, z_ref) in enumerate(zip(grads.zs, run.zs, strict=True)):
        out.append(Comparison("FWD.dense", f"z[{l + 1}]", z, z_ref))
        out.append(
            Comparison("FWD.dense", f"a[{l + 1}]", grads.activations[l + 1], run.activations[l + 1])
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
            Comparison(net.cost.equation_value, "C", np.array(grads.cost), np.array(run.cost))
        )
    return out
