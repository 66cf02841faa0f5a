"""Checks of torch's remaining elementwise activation modules (issue 26): CELU, Hardshrink,
Hardsigmoid, Hardswish, LogSigmoid, Mish, ReLU6, Softshrink, Softsign, Tanhshrink, Threshold.

Every case plays **each** of them (so that every ``ACT.*``/``ACT2.*`` ID gets cases however
few are run), with options drawn over their whole range — negative CELU ``α`` and Hardshrink
``λ``, ``λ = 0`` — on pre-activations of a random regime plus every edge exactly and one ulp
either side, against torch in float64 with a random upstream gradient:

* ``ACT.<name>``: σ(z) and J_σᵀg (:func:`reference.checks_components.activation_comparisons`);
* ``ACT2.<name>``: σ''(z) and the second-order VJP ``g ⊙ σ'' ⊙ dz`` against torch's double
  backward (``d/dz ⟨∇_z⟨g, σ⟩, dz⟩``), at the scale ``|g||dz|(1 + z²)`` of the curvature
  checks (``reference/checks_curvature.py``).
"""

from __future__ import annotations

import numpy as np
import torch

import reference.checks_components as components  # (imported by each other: attributes
from manual_bp.activations import Activation, get_activation  # are read at call time)
from reference.checks import register_check
from reference.compare import Comparison
from reference.components import torch_activation

__all__ = ["CATALOGUE", "catalogue_activation", "edge_preactivations", "second_comparisons"]

#: The registered names of issue 26's elementwise activations.
CATALOGUE = (
    "celu",
    "hardshrink",
    "hardsigmoid",
    "hardswish",
    "log-sigmoid",
    "mish",
    "relu6",
    "softshrink",
    "softsign",
    "tanhshrink",
    "threshold",
)


def catalogue_activation(rng: np.random.Generator, name: str, regime: str) -> Activation:
    """``name`` with options drawn over torch's accepted range (torch's defaults half the
    time). A negative CELU ``α`` (|α| ≥ ¼) only in the regimes of |z| ≲ 10: ``e^{z/α}``
    overflows beyond in both libraries."""
    default = rng.random() < 0.5
    if name == "celu":
        negative = regime in ("moderate", "kinks") and rng.random() < 0.5
        alpha = float(rng.uniform(0.25, 3.0)) * (-1.0 if negative else 1.0)
        return get_activation({"name": name, "alpha": 1.0 if default else alpha})
    if name == "hardshrink":
        return get_activation({"name": name, "lambd": 0.5 if default else rng.uniform(-1, 3)})
    if name == "softshrink":
        lambd = float(rng.choice([0.0, rng.uniform(0.0, 3.0)]))
        return get_activation({"name": name, "lambd": 0.5 if default else lambd})
    if name == "threshold":
        return get_activation(
            {
                "name": name,
                "threshold": float(rng.uniform(-3.0, 3.0)),
                "value": float(rng.choice([0.0, 20.0 * rng.standard_normal()])),
            }
        )
    return get_activation(name)


def edge_preactivations(
    rng: np.random.Generator, activation: Activation, shape: tuple[int, int], regime: str
) -> np.ndarray:
    """``z`` of a regime, with a final column of every edge and its neighbours one ulp and
    1e-3 away (so that a case always visits both sides of each kink and the kink itself)."""
    z = components.random_preactivations(rng, activation, shape, regime)
    edges = []
    for k in components.kink_points(activation):
        edges += [k, np.nextafter(k, -np.inf), np.nextafter(k, np.inf), k - 1e-3, k + 1e-3]
    if not edges:
        return z
    return np.concatenate([z, np.tile(np.array(edges), (shape[0], 1))], axis=1)


def second_comparisons(
    activation: Activation, z: np.ndarray, g: np.ndarray, dz: np.ndarray
) -> list[Comparison]:
    """σ'' and ``Σ g ∇²σ dz`` against torch's double backward, tagged ``ACT2.<name>``."""
    name = activation.name
    a = activation.forward(z)
    zt = torch.tensor(z, requires_grad=True)
    at = torch_activation(activation)(zt)
    out = []
    for label, upstream, direction, ours in (
        ("σ''", np.ones_like(z), np.ones_like(z), activation.second_derivative(z, a)),
        ("Σ g ∇²σ dz", g, dz, activation.second_vjp(g, dz, z, a)),
    ):
        (first,) = torch.autograd.grad(
            at, zt, torch.tensor(upstream), create_graph=True, retain_graph=True
        )
        if first.requires_grad:
            (second,) = torch.autograd.grad(
                first, zt, torch.tensor(direction), allow_unused=True, retain_graph=True
            )
        else:  # σ' does not depend on z (piecewise-linear σ): torch's graph ends here
            second = None
        expected = np.zeros_like(z) if second is None else second.numpy()
        scale = np.abs(upstream) * np.abs(direction) * (1.0 + z * z)
        out.append(Comparison(f"ACT2.{name}", label, ours, expected, scale))
    return out


@register_check("activations-catalogue")
def activations_catalogue_check(rng: np.random.Generator) -> list[Comparison]:
    """Each issue-26 activation: forward, VJP, σ'' and the second-order VJP against torch."""
    out = []
    for name in CATALOGUE:
        regime = str(rng.choice(components.REGIMES))
        activation = catalogue_activation(rng, name, regime)
        shape = (int(rng.integers(1, 6)), int(rng.integers(1, 9)))
        z = edge_preactivations(rng, activation, shape, regime)
        g = components.random_upstream(rng, z.shape)
        out += components.activation_comparisons(activation, z, g)
        if regime != "saturating":  # |z| ≤ 1e4 makes (1 + z²) a vacuous scale
            out += second_comparisons(activation, z, g, rng.standard_normal(z.shape))
    return out
