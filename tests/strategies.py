"""Hypothesis strategies drawing whole verification cases.

:func:`network_specs` draws an architecture (depth 1–5, widths 1–16, batch
1–16, an activation per layer, a cost and an output activation valid for it,
a weight scale up to saturation, exact-kink units, dyadic values) and a seed;
:func:`reference.cases.build_case` turns it into ``(net, x, y)``. Valid values
are drawn directly (the output activation is drawn from those the cost
accepts), never filtered.
"""

from __future__ import annotations

from hypothesis import strategies as st

from manual_bp.activations import ACTIVATIONS
from manual_bp.costs import COSTS
from reference.cases import WEIGHT_SCALES, NetworkSpec, output_activations_for

#: Costs under which 20 training steps at the rates of the trajectory tests do not
#: diverge (poisson-nll's exp can): a diverging trajectory amplifies rounding and
#: proves nothing. Used by tests/test_optimizers.py and tests/test_fast_path.py.
STABLE_COSTS = (
    "bce-logits",
    "categorical-cross-entropy",
    "cross-entropy",
    "huber",
    "kl-divergence",
    "log-likelihood",
    "quadratic",
    "smooth-l1",
)

#: Activations whose derivative is smooth everywhere (safe for finite differences).
SMOOTH_ACTIVATIONS = ("identity", "sigmoid", "tanh")


@st.composite
def network_specs(
    draw,
    *,
    max_depth: int = 5,
    max_width: int = 16,
    max_batch: int = 16,
    activations: tuple[str, ...] | None = None,
    costs: tuple[str, ...] | None = None,
    weight_scales: tuple[float, ...] = WEIGHT_SCALES,
    kinks: bool = True,
    dyadic: bool = True,
) -> NetworkSpec:
    activations = activations or tuple(ACTIVATIONS.names())
    cost = draw(st.sampled_from(costs or COSTS.names()))
    depth = draw(st.integers(1, max_depth))
    sizes = tuple(draw(st.lists(st.integers(1, max_width), min_size=depth + 1, max_size=depth + 1)))
    hidden = draw(st.lists(st.sampled_from(activations), min_size=depth - 1, max_size=depth - 1))
    outputs = [a for a in output_activations_for(cost) if a in activations]
    output = draw(st.sampled_from(outputs or output_activations_for(cost)))
    kink_units = tuple(draw(st.integers(0, min(2, n))) for n in sizes[1:]) if kinks else ()
    return NetworkSpec(
        sizes=sizes,
        activations=(*hidden, output),
        cost=cost,
        batch=draw(st.integers(1, max_batch)),
        weight_scale=draw(st.sampled_from(weight_scales)),
        kink_units=kink_units,
        dyadic=draw(st.booleans()) if dyadic else False,
        seed=draw(st.integers(0, 2**31 - 1)),
    )
