"""Random verification cases: a :class:`NetworkSpec` and the network it builds.

A spec holds every structural choice of a case (sizes, activation per layer,
cost, batch, weight scale, kinks, value mode) plus a seed for the values, so a
case is reproducible from its printed repr. The hypothesis strategies in
``tests/strategies.py`` draw specs; the ``verify`` command draws them from a
NumPy generator with :func:`random_spec`. Both build cases with
:func:`build_case`. NumPy only: no torch here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from manual_bp import Network
from manual_bp.activations import ACTIVATIONS
from manual_bp.costs import COSTS, get_cost

__all__ = ["WEIGHT_SCALES", "NetworkSpec", "build_case", "make_targets", "random_spec"]

#: Multiples of the 1/√n_in initialisation: small, default, large, saturating.
WEIGHT_SCALES = (0.1, 1.0, 4.0, 30.0)


@dataclass(frozen=True)
class NetworkSpec:
    """Everything that defines one random verification case.

    ``kink_units``: per hidden/output layer, how many units get ``W`` row = 0
    and ``b`` = 0, so that their ``z`` is exactly 0 for every sample (the kink
    of ReLU-like activations). ``dyadic``: weights, biases and inputs are
    multiples of 1/4 in [−2, 2], so sums in the first layer are exact and
    exact zeros also arise naturally.
    """

    sizes: tuple[int, ...]
    activations: tuple[str, ...]
    cost: str
    batch: int
    weight_scale: float = 1.0
    kink_units: tuple[int, ...] = ()
    dyadic: bool = False
    seed: int = 0


def output_activations_for(cost_name: str) -> list[str]:
    """Output activations whose range fits the cost's domain."""
    valid = get_cost(cost_name).valid_output_activations
    return sorted(valid) if valid is not None else ACTIVATIONS.names()


def random_spec(
    rng: np.random.Generator,
    *,
    max_depth: int = 5,
    max_width: int = 16,
    max_batch: int = 16,
    activations: list[str] | None = None,
    costs: list[str] | None = None,
) -> NetworkSpec:
    """Draw a spec from ``rng`` with the same ranges as the hypothesis strategy."""
    activations = activations or ACTIVATIONS.names()
    cost = str(rng.choice(costs or COSTS.names()))
    depth = int(rng.integers(1, max_depth + 1))
    sizes = tuple(int(s) for s in rng.integers(1, max_width + 1, size=depth + 1))
    outputs = [a for a in output_activations_for(cost) if a in activations] or (
        output_activations_for(cost)
    )
    hidden = [str(rng.choice(activations)) for _ in range(depth - 1)]
    layer_activations = (*hidden, str(rng.choice(outputs)))
    return NetworkSpec(
        sizes=sizes,
        activations=layer_activations,
        cost=cost,
        batch=int(rng.integers(1, max_batch + 1)),
        weight_scale=float(rng.choice(WEIGHT_SCALES)),
        kink_units=tuple(int(rng.integers(0, min(2, n) + 1)) for n in sizes[1:]),
        dyadic=bool(rng.random() < 0.2),
        seed=int(rng.integers(2**31)),
    )


def make_targets(cost_name: str, n_out: int, batch: int, rng: np.random.Generator) -> np.ndarray:
    """Valid targets for the cost: drawn inside its domain, never filtered."""
    kind = get_cost(cost_name).target_kind
    if kind == "real":
        return rng.standard_normal((batch, n_out))
    if kind == "probability":
        y = rng.uniform(0.0, 1.0, (batch, n_out))
        y[rng.random((batch, n_out)) < 0.3] = 0.0  # exact 0s and 1s, as in one-hot targets
        y[rng.random((batch, n_out)) < 0.3] = 1.0
        return y
    if kind == "labels":
        return rng.integers(0, n_out, size=batch)
    if kind == "one-hot":
        return np.eye(n_out)[rng.integers(0, n_out, size=batch)]
    if kind == "distribution":
        y = rng.exponential(size=(batch, n_out))
        return y / y.sum(axis=1, keepdims=True)
    if kind == "count":
        return rng.poisson(2.0, size=(batch, n_out)).astype(np.float64)
    raise ValueError(f"unknown target kind {kind!r} of cost {cost_name!r}")


def build_case(
    spec: NetworkSpec, dtype: np.dtype | type = np.float64
) -> tuple[Network, np.ndarray, np.ndarray]:
    """``(net, x, y)`` for a spec: parameters, inputs and targets from ``spec.seed``."""
    rng = np.random.default_rng(spec.seed)
    net = Network(list(spec.sizes), list(spec.activations), spec.cost, seed=rng, dtype=dtype)
    for l, (W, b) in enumerate(zip(net.weights, net.biases, strict=True)):
        if spec.dyadic:
            W[...] = rng.integers(-8, 9, W.shape) / 4
            b[...] = rng.integers(-8, 9, b.shape) / 4
        else:
            W[...] = rng.standard_normal(W.shape) * spec.weight_scale / np.sqrt(W.shape[1])
            b[...] = rng.standard_normal(b.shape) * spec.weight_scale
        if spec.kink_units:
            kinks = rng.choice(W.shape[0], size=min(spec.kink_units[l], W.shape[0]), replace=False)
            W[kinks] = 0.0
            b[kinks] = 0.0
    if spec.dyadic:
        x = rng.integers(-8, 9, (spec.batch, spec.sizes[0])) / 4
    else:
        x = rng.standard_normal((spec.batch, spec.sizes[0]))
    y = make_targets(spec.cost, spec.sizes[-1], spec.batch, rng)
    return net, x.astype(dtype), y
