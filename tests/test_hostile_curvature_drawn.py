"""Hypothesis-drawn hostile values for every public curvature function (the catalogue
walk and the registry are in tests/test_hostile_curvature.py): a NaN or an infinity at a
random entry, a random wrong shape or non-float dtype of an array argument, always refused
naming it; scalar arguments drawn on both sides of and at every edge of their rule."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.hostile_curvature_entries import ENTRIES
from tests.hostile_curvature_values import flat_direction
from tests.hostile_entries import ACCEPT, MODELS, REFUSE, SCALAR_RULES, SCALARS, check_hostile


@st.composite
def drawn_hostile(draw):
    """A random entry and argument of an array kind, made hostile at a random place: a NaN
    or ±inf at a random entry, a random wrong shape, or a random non-float dtype."""
    array_kinds = {"inputs", "targets", "direction", "ggn"}
    choices = [
        (key, model_key, argument, kind)
        for key, entry in ENTRIES.items()
        for model_key in entry.models
        for argument, kind in entry.kinds.items()
        if kind in array_kinds
    ]
    key, model_key, argument, kind = draw(st.sampled_from(choices))
    entry = ENTRIES[key]
    model, x, y = MODELS[model_key]
    base = flat_direction(model) if kind == "direction" else entry.build(model, x, y)[argument]
    base = np.asarray(base)
    if kind == "targets" and base.dtype.kind == "i":
        how = draw(st.sampled_from(["label", "dtype", "shape"]))
    else:
        how = draw(st.sampled_from(["nonfinite", "dtype", "shape"]))
    value = base.copy()
    if how == "nonfinite":
        value = value.astype(float)
        index = draw(st.integers(0, value.size - 1))
        value.reshape(-1)[index] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    elif how == "label":
        index = draw(st.integers(0, value.size - 1))
        value[index] = draw(st.sampled_from([-2, -1, 3, 4, 2**40]))
    elif how == "dtype":
        dtype = draw(st.sampled_from([np.complex64, np.complex128, bool, object, "U3", "S3"]))
        if kind == "direction":  # a direction must be floating point, integers too
            dtype = draw(st.sampled_from([dtype, np.int8, np.int64, np.uint16]))
        value = value.astype(dtype)
    else:
        axis = draw(st.integers(0, value.ndim - 1))
        delta = draw(st.sampled_from([-1, 1]))
        if value.shape[axis] + delta < 1 or (kind == "targets" and value.ndim == 1):
            delta = 1
        shape = list(value.shape)
        shape[axis] += delta
        value = np.resize(value, shape)
    names = ("x", "y") if how == "shape" and kind in ("inputs", "targets") and axis == 0 else ()
    return key, model_key, argument, value, names


@settings(max_examples=60, deadline=None)
@given(case=drawn_hostile())
def test_drawn_hostile_arrays_are_refused_by_name(case):
    """Random hostile arrays: always refused (every one of them is wrong)."""
    key, model_key, argument, value, names = case
    check_hostile(ENTRIES[key], model_key, argument, REFUSE, value, names)


@st.composite
def drawn_scalar(draw):
    choices = [
        (key, argument, kind)
        for key, entry in ENTRIES.items()
        for argument, kind in entry.kinds.items()
        if kind in SCALAR_RULES
    ]
    key, argument, kind = draw(st.sampled_from(choices))
    return key, argument, kind, draw(SCALARS)


@settings(max_examples=100, deadline=None)
@given(case=drawn_scalar())
def test_drawn_scalar_arguments_are_accepted_or_refused_by_rule(case):
    """Iteration counts, tolerances, seeds and flags: accepted exactly when the rule says
    (:data:`~tests.hostile_entries.SCALAR_RULES`), otherwise refused naming the argument."""
    key, argument, kind, value = case
    verdict = ACCEPT if SCALAR_RULES[kind](value) else REFUSE
    if argument == "max_iter" and verdict is ACCEPT:
        value = min(int(value), 3)  # the power iteration's cost grows with it
    check_hostile(ENTRIES[key], ENTRIES[key].models[0], argument, verdict, value)
