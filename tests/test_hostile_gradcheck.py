"""Every public gradient checker (``manual_bp.gradcheck``) under hostile arguments (issue 24,
item 3), with the property of ``tests/hostile_entries.py``: tolerances ≤ 0 where a positive one is
meant (``c``), negative or NaN ``rtol``/``atol``, steps outside ``(0, 1)``, seeds of the wrong
kind, non-callables, layers without the protocol, arrays that are complex, bool, strings,
ragged or non-finite are refused before any work in one line naming the argument.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import manual_bp.gradcheck
from manual_bp import Dense
from tests.hostile_entries import (
    ACCEPT,
    REFUSE,
    SCALAR_RULES,
    SCALARS,
    Accept,
    Either,
    Entry,
    Refuse,
    Same,
    catalogue_cases,
    check_hostile,
    hostile_flags,
    hostile_optional_tolerances,
    hostile_seeds,
    hostile_tolerances,
    public_functions,
)

GRADCHECK = public_functions(manual_bp.gradcheck)


# --------------------------------------------------------------------------- gradcheck entries
class _Doubler:
    """A parameter-free layer of the protocol: ``out = 2x``."""

    params: dict = {}

    def forward(self, x):
        return 2 * x, None

    def backward(self, dout, cache):
        return 2 * dout, {}


def _layer_x(seed=6):
    return Dense(3, 2, seed=0), np.random.default_rng(seed).standard_normal((4, 3))


def _arrays(seed=7):
    rng = np.random.default_rng(seed)
    expected = rng.standard_normal((3, 2))
    return expected * (1 + 1e-15), expected


def _fd_x():
    return np.linspace(-1.0, 1.0, 5)


def _build_check_layer(_m, _x, _y):
    layer, x = _layer_x()
    return {"layer": layer, "x": x, "seed": 0, "h": 1e-6, "rtol": 1e-6, "atol": 1e-8, "c": 64.0}


def _build_check_vjp(_m, _x, _y):
    return {
        "function": np.tanh, "vjp": lambda d, z: d * (1 - np.tanh(z) ** 2),
        "x": np.linspace(-2, 2, 8).reshape(2, 4), "seed": 1, "c": 64.0,
    }  # fmt: skip


def _build_compare(_m, _x, _y):
    actual, expected = _arrays()
    return {"actual": actual, "expected": expected, "c": 64.0, "rtol": 1e-12, "atol": 1e-12}


GRADCHECK_ENTRIES: dict[str, Entry] = {
    "layers.check_layer": Entry(
        GRADCHECK["layers.check_layer"],
        _build_check_layer,
        {
            "layer": "protocol_layer",
            "x": "layer_input",
            "upstream": "upstream",
            "seed": "seed",
            "torch_forward": "callable_or_none",
            "h": "step",
            "rtol": "tolerance",
            "atol": "tolerance",
            "c": "positive",
        },
        models=("regression",),
    ),
    "layers.check_vjp": Entry(
        GRADCHECK["layers.check_vjp"],
        _build_check_vjp,
        {
            "function": "callable",
            "vjp": "callable",
            "x": "layer_input",
            "seed": "seed",
            "torch_function": "callable_or_none",
            "c": "positive",
        },
        models=("regression",),
    ),
    "compare.assert_gradients_close": Entry(
        GRADCHECK["compare.assert_gradients_close"],
        lambda m, x, y: {**_build_compare(m, x, y), "name": "g", "dtype": np.float64},
        {
            "actual": "compared",
            "expected": "compared",
            "name": "name",
            "dtype": "dtype",
            "c": "positive",
            "rtol": "optional_tolerance",
            "atol": "bound",
            "scale": "bound",
        },
        models=("regression",),
        asserts=True,
    ),
    "compare.bound_ratio": Entry(
        GRADCHECK["compare.bound_ratio"],
        _build_compare,
        {
            "actual": "compared",
            "expected": "compared",
            "dtype": "dtype",
            "c": "positive",
            "rtol": "optional_tolerance",
            "atol": "bound",
            "scale": "bound",
        },
        models=("regression",),
    ),
    "compare.normalised_error": Entry(
        GRADCHECK["compare.normalised_error"],
        lambda m, x, y: dict(zip(("actual", "expected"), _arrays(), strict=True)),
        {"actual": "compared", "expected": "compared"},
        models=("regression",),
    ),
    "compare.tolerance": Entry(
        GRADCHECK["compare.tolerance"],
        lambda m, x, y: {"dtype": np.float32, "c": 8.0},
        {"dtype": "dtype", "c": "positive"},
        models=("regression",),
    ),
    "compare.finite_difference_gradient": Entry(
        GRADCHECK["compare.finite_difference_gradient"],
        lambda m, x, y: {"f": lambda: 1.0, "x": _fd_x(), "h": 1e-6, "return_error": False},
        {"f": "objective", "x": "fd_point", "h": "step", "return_error": "flag"},
        models=("regression",),
    ),
}


def hostile_protocol_layers(_, model=None):
    class ParamsList(_Doubler):
        params = [np.zeros(2)]

    class Int32Params(_Doubler):
        params = {"w": np.zeros(2, np.int32)}

    for value in (None, object(), "Dense", ParamsList(), Int32Params()):
        yield Refuse, value
    yield Accept, _Doubler()


def hostile_layer_inputs(x, model=None):
    yield Refuse, None
    yield Refuse, x * 1j
    yield Refuse, np.full_like(x, np.nan)
    yield Refuse, x[:0]
    yield Refuse, x.astype(str)
    yield Refuse, x > 0
    yield Refuse, [[1.0], [2.0, 3.0]]
    yield Accept, x.tolist()
    yield Accept, np.asfortranarray(x)


def hostile_upstreams(_, model=None):
    yield Accept, None
    shape = (4, 2)
    yield Accept, np.random.default_rng(8).standard_normal(shape)
    for value in (np.ones((4, 3)), np.ones(shape) * 1j, np.full(shape, np.nan), np.ones(shape) > 0,
                  "abc"):  # fmt: skip
        yield Refuse, value


def hostile_callables(_, model=None):
    for value in (None, 3, "tanh"):
        yield Refuse, value


def hostile_callables_or_none(_, model=None):
    for value in (3, "torch.tanh"):
        yield Refuse, value


def hostile_steps(_, model=None):
    yield Accept, 1e-5
    yield Accept, np.finfo(np.float64).eps  # the edge: the smallest step not lost
    for value in (0, 1, -1e-6, np.nan, np.inf, True, "1e-6", None, 5e-324, 1e-16):
        yield Refuse, value


def hostile_positives(_, model=None):
    yield Accept, 1
    yield Accept, np.float32(8)
    for value in (0, -1.0, np.nan, np.inf, "64", None, True):
        yield Refuse, value


def hostile_bounds(_, model=None):
    yield Accept, None
    yield Accept, 0.0
    yield Accept, np.full((3, 2), 1e-9)
    yield Accept, np.full((1, 2), 1e-9)
    for value in (-1.0, np.nan, np.inf, np.ones(4), np.full((3, 2), -1.0), np.ones((3, 2)) * 1j,
                  "1e-9", np.full((3, 2), np.nan)):  # fmt: skip
        yield Refuse, value


def hostile_compared(a, model=None):
    yield Refuse, None
    yield Refuse, a * 1j
    yield Refuse, a.astype(str)
    yield Refuse, a > 0
    yield Refuse, [[1.0], [2.0, 3.0]]
    yield Either, a[:, :1]  # bound_ratio: inf; the others: refused by name
    yield Either, np.full_like(a, np.nan)  # documented: an infinite error (or assertion)
    yield Same(a), a.tolist()


def hostile_names(_, model=None):
    for value in (3, None, b"g"):
        yield Refuse, value


def hostile_dtypes(_, model=None):
    yield Same(np.float64), "float64"
    yield Accept, np.float16
    for value in (np.int64, int, bool, np.complex128, "abc", object, "str"):
        yield Refuse, value


def hostile_objectives(_, model=None):
    yield Accept, lambda: np.float32(2.0)
    yield Accept, lambda: np.array(2.0)
    for value in (None, 3.0, lambda: "a", lambda: np.ones(2), lambda: float("nan"),
                  lambda: None, lambda: 1j, lambda: True):  # fmt: skip
        yield Refuse, value


def hostile_fd_points(x, model=None):
    yield Refuse, x.tolist()
    yield Refuse, x.astype(np.float32)
    yield Refuse, x.astype(int)
    yield Refuse, x * 1j
    yield Refuse, np.full_like(x, np.nan)
    yield Accept, x[::2]  # a 1-D strided view is perturbed in place through itself
    yield Refuse, np.arange(12.0).reshape(3, 4)[:, :3]  # reshape(-1) would copy
    yield Refuse, None
    yield Accept, x.reshape(5, 1)


HOSTILE = {
    "flag": hostile_flags,
    "tolerance": hostile_tolerances,
    "optional_tolerance": hostile_optional_tolerances,
    "seed": hostile_seeds,
    "protocol_layer": hostile_protocol_layers,
    "layer_input": hostile_layer_inputs,
    "upstream": hostile_upstreams,
    "callable": hostile_callables,
    "callable_or_none": hostile_callables_or_none,
    "step": hostile_steps,
    "positive": hostile_positives,
    "bound": hostile_bounds,
    "compared": hostile_compared,
    "name": hostile_names,
    "dtype": hostile_dtypes,
    "objective": hostile_objectives,
    "fd_point": hostile_fd_points,
}


def test_every_public_gradient_checker_is_covered():
    """The registry test: a public function without an entry (or a stale entry) fails."""
    assert set(GRADCHECK) == set(GRADCHECK_ENTRIES)


@pytest.mark.parametrize(
    ("key", "model_key", "argument", "verdict", "value"),
    catalogue_cases(GRADCHECK_ENTRIES, HOSTILE),
)
def test_gradient_checker_under_hostile_argument(key, model_key, argument, verdict, value):
    check_hostile(GRADCHECK_ENTRIES[key], model_key, argument, verdict, value)


@st.composite
def drawn_scalar(draw):
    choices = [
        (key, argument, kind)
        for key, entry in GRADCHECK_ENTRIES.items()
        for argument, kind in entry.kinds.items()
        if kind in SCALAR_RULES
    ]
    key, argument, kind = draw(st.sampled_from(choices))
    return key, argument, kind, draw(SCALARS)


@settings(max_examples=100, deadline=None)
@given(case=drawn_scalar())
def test_drawn_scalar_arguments_are_accepted_or_refused_by_rule(case):
    """Steps, tolerances, multiples of ε, seeds and flags: accepted exactly when the rule
    says (:data:`~tests.hostile_entries.SCALAR_RULES`), otherwise refused naming the argument."""
    key, argument, kind, value = case
    verdict = ACCEPT if SCALAR_RULES[kind](value) else REFUSE
    check_hostile(GRADCHECK_ENTRIES[key], "regression", argument, verdict, value)
