"""Random-case checks shared by the test suite and ``python -m manual_bp verify``.

A check takes a NumPy generator, draws one random case (network, layer,
cost, optimizer trajectory ...), and returns the list of
:class:`~reference.compare.Comparison` it produced, each tagged with the
equation ID it verifies. The ``verify`` command runs every check N times and
reports, per equation ID, the number of cases and the worst error against
each oracle; tests draw the same cases with hypothesis and assert.

Register a new check with ``@register_check("name")`` in a module
``reference/checks_<topic>.py``; such modules are imported automatically.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from reference.cases import NetworkSpec, build_case, random_spec
from reference.compare import Comparison, finite_difference_comparisons, network_comparisons

__all__ = ["CHECKS", "register_check"]

Check = Callable[[np.random.Generator], list[Comparison]]

#: name -> check
CHECKS: dict[str, Check] = {}

#: Activations with a smooth derivative: finite differences are valid everywhere.
SMOOTH_ACTIVATIONS = ("identity", "sigmoid", "tanh")


def register_check(name: str) -> Callable[[Check], Check]:
    def decorator(check: Check) -> Check:
        if name in CHECKS:
            raise ValueError(f"check {name!r} is registered twice")
        CHECKS[name] = check
        return check

    return decorator


@register_check("network")
def network_check(rng: np.random.Generator) -> list[Comparison]:
    """A random network (any activations/costs, saturation, kinks) against autograd."""
    net, x, y = build_case(random_spec(rng))
    return network_comparisons(net, x, y)


def smooth_spec(rng: np.random.Generator) -> NetworkSpec:
    """A small network of smooth units with moderate weights, for finite differences."""
    spec = random_spec(
        rng, max_depth=3, max_width=6, max_batch=4, activations=list(SMOOTH_ACTIVATIONS)
    )
    return NetworkSpec(
        sizes=spec.sizes,
        activations=spec.activations,
        cost=spec.cost,
        batch=spec.batch,
        weight_scale=float(rng.choice([0.5, 1.0, 2.0])),
        seed=spec.seed,
    )


@register_check("network-finite-differences")
def network_fd_check(rng: np.random.Generator) -> list[Comparison]:
    """A small smooth network against central finite differences (no torch)."""
    net, x, y = build_case(smooth_spec(rng))
    return finite_difference_comparisons(net, x, y)


def _load_check_modules() -> None:
    """Import every ``reference/checks_*.py`` so that their ``@register_check``s run."""
    import importlib
    import pkgutil

    import reference

    for module in pkgutil.iter_modules(reference.__path__):
        if module.name.startswith("checks_"):
            importlib.import_module(f"reference.{module.name}")


_load_check_modules()
