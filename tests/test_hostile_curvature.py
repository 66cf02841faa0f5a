"""Every public curvature function, as a careless or hostile user calls it (issue 24, item 3).

The functions are found by introspection of ``manual_bp.curvature`` (``tests/hostile_entries.py``);
:data:`ENTRIES` says how to call each and which kind of value each argument takes, and
``test_every_public_curvature_function_is_covered`` fails when a function is added without
an entry. The catalogues of hostile values are walked exhaustively, and hypothesis draws
further ones (a NaN or an infinity at a random entry, a random wrong shape, a random
non-float dtype; scalar arguments on both sides of and at every edge). Directions: ``None``,
complex, integer, NaN/inf, a wrong count or shape are refused naming ``v``; iteration counts
≤ 0, negative or NaN tolerances, seeds of the wrong kind are named; models the sweeps cannot
use (a convolution, dropout in training mode, NaN weights) are named.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import manual_bp.curvature
from manual_bp import Network
from tests.hostile_curvature_entries import CHAIN_LEVEL, CURVATURE, ENTRIES
from tests.hostile_curvature_values import HOSTILE, flat_direction
from tests.hostile_entries import MODELS, Entry, call, catalogue_cases, check_hostile


def test_every_public_curvature_function_is_covered():
    """The registry test: a public function without an entry (or a stale entry) fails."""
    assert set(CURVATURE) == set(ENTRIES) | CHAIN_LEVEL
    assert not set(ENTRIES) & CHAIN_LEVEL
    for name in CHAIN_LEVEL:
        assert next(iter(inspect.signature(CURVATURE[name]).parameters)) == "chain", name
    for name, entry in ENTRIES.items():  # every argument of every entry is drawn hostile
        assert set(entry.kinds) >= set(inspect.signature(entry.function).parameters), name
    # the package-level names are these same functions
    exported = {getattr(manual_bp.curvature, n) for n in manual_bp.curvature.__all__}
    assert exported <= set(CURVATURE.values())


@pytest.mark.parametrize(
    ("key", "model_key", "argument", "verdict", "value"), catalogue_cases(ENTRIES, HOSTILE)
)
def test_curvature_function_under_hostile_argument(key, model_key, argument, verdict, value):
    check_hostile(ENTRIES[key], model_key, argument, verdict, value)


def test_curvature_never_warns_on_huge_finite_inputs():
    """Inputs whose products overflow give a result or one error naming them — no
    RuntimeWarning, no inf/NaN result (``_checks.entry``)."""
    net, x, y = MODELS["regression"]
    linear = Network([2, 2], "identity", "quadratic", seed=0)
    for function in (CURVATURE["diagonal.diag_ggn"], CURVATURE["stats.grad_norms"]):
        _, error, caught = call(
            Entry(function, None, {}), {"model": linear, "x": x * 1e200, "y": y}
        )
        assert not caught
        assert isinstance(error, ValueError), error
        assert "x and y are too large" in str(error)
    _, error, caught = call(
        Entry(CURVATURE["rop.hvp"], None, {}),
        {"model": net, "x": x, "y": y, "v": np.full(flat_direction(net).size, 1.7e308)},
    )
    assert not caught and isinstance(error, ValueError) and "v are too large" in str(error)
