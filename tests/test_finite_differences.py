"""The second, torch-independent oracle: central finite differences in float64."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from reference.cases import NetworkSpec, build_case
from reference.compare import finite_difference_comparisons
from tests.strategies import SMOOTH_ACTIVATIONS, network_specs


@given(
    network_specs(
        max_depth=3,
        max_width=6,
        max_batch=4,
        activations=SMOOTH_ACTIVATIONS,
        weight_scales=(0.5, 1.0, 2.0),
        kinks=False,
        dyadic=False,
    )
)
def test_backprop_matches_finite_differences(spec: NetworkSpec):
    """BP3, BP4 and BP.input against (C(θ + h) − C(θ − h)) / 2h on smooth networks."""
    net, x, y = build_case(spec)
    for comparison in finite_difference_comparisons(net, x, y):
        comparison.check()


@given(st.sampled_from(["BP3", "BP4", "BP.input"]))
def test_finite_difference_oracle_catches_a_wrong_gradient(equation):
    """The FD oracle is not vacuous: a gradient off by 1% fails its comparison."""
    spec = NetworkSpec(
        sizes=(3, 4, 2), activations=("tanh", "sigmoid"), cost="quadratic", batch=3, seed=1
    )
    net, x, y = build_case(spec)
    comparison = next(c for c in finite_difference_comparisons(net, x, y) if c.equation == equation)
    comparison.actual = comparison.actual * 1.01
    try:
        comparison.check()
    except AssertionError:
        return
    raise AssertionError("a 1% error passed the finite-difference check")
