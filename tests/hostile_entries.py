"""The hostile-input property shared by tests/test_hostile_curvature.py and
tests/test_hostile_gradcheck.py (issue 24, item 3).

Public functions are found by introspection (:func:`public_functions`: every public
submodule's ``__all__``); an :class:`Entry` says how to call one and which kind of value each
argument takes. Each kind has a catalogue of hostile values, each with a verdict:
``Same(clean)`` — accepted, and the result must equal the function's own result on the clean
value; ``Accept`` — accepted, a result without NaN; ``Refuse`` — one ``ValueError`` or
``TypeError`` whose one-line message names the argument, raised before the work;
``Either`` — one of the last two (e.g. a finite value so large that the result overflows).
Never a warning, never a NaN result, never a NumPy- or Python-internal message
(:func:`check_hostile`).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

from manual_bp import Dense, Network, Sequential
from manual_bp.gradcheck import GradcheckReport
from manual_bp.layers import ActivationLayer


# --------------------------------------------------------------------------- verdicts
@dataclass(frozen=True)
class Same:
    """Accepted; the result equals the function's own on ``clean``."""

    clean: Any


class Accept:
    """Accepted; any result without NaN."""


class Refuse:
    """One ValueError/TypeError naming the argument."""


class Either:
    """Accepted (no NaN) or refused as :class:`Refuse`."""


ACCEPT, REFUSE, EITHER = Accept(), Refuse(), Either()  # for verdicts computed by rule


# --------------------------------------------------------------------------- introspection
def public_functions(package) -> dict[str, Any]:
    """``{module.name: function}`` for every function in a public submodule's ``__all__``."""
    found = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if inspect.isfunction(obj):
                found[f"{info.name}.{name}"] = obj
    return found


# --------------------------------------------------------------------------- the models
def _regression():
    net = Network([2, 3, 2], "tanh", "quadratic", seed=0)
    rng = np.random.default_rng(1)
    return net, rng.standard_normal((4, 2)), rng.standard_normal((4, 2))


def _classifier():
    model = Sequential(
        [Dense(2, 3), ActivationLayer("sigmoid"), Dense(3, 3), ActivationLayer("softmax")],
        "log-likelihood",
        seed=2,
    )
    rng = np.random.default_rng(3)
    return model, rng.standard_normal((5, 2)), np.array([0, 2, 1, 1, 0])


MODELS = {"regression": _regression(), "classifier": _classifier()}


def hostile_flags(_, model=None):
    yield Same(True), np.True_
    yield Same(False), np.False_
    for value in (1, 0, None, "yes", 1.0, np.array([True])):
        yield Refuse, value


def hostile_counts(_, model=None):
    yield Same(2), np.int64(2)
    yield Same(1), np.uint8(1)
    for value in (0, -1, 2.0, np.float64(2), True, "2", None, [2]):
        yield Refuse, value


def hostile_sample_counts(_, model=None):
    """Counts of random draws for a standard error (``ddof = 1``): ``≥ 2``."""
    yield Same(2), np.int64(2)
    yield Same(3), np.uint8(3)
    for value in (1, 0, -1, 2.0, np.float64(2), True, "2", None, [2]):
        yield Refuse, value


def hostile_optional_counts(_, model=None):
    """A count where None means the default."""
    yield Accept, None
    for verdict, value in hostile_counts(_):
        if value is not None:
            yield verdict, value


def hostile_positives(_, model=None):
    """A finite real number ``> 0`` (a learning rate, a clipping norm, a width)."""
    yield Accept, 1
    yield Accept, 5e-324
    yield Same(float(np.float32(0.5))), np.float32(0.5)
    for value in (0.0, -0.0, -1e-9, -1, np.nan, np.inf, "1", None, True, [1.0]):
        yield Refuse, value


def hostile_widths(_, model=None):
    """A Gaussian's width ``σ``: finite, at least the smallest normal float64."""
    tiny = np.finfo(np.float64).tiny
    yield Accept, tiny
    yield Refuse, np.nextafter(tiny, 0)
    yield Refuse, 5e-324
    for verdict, value in hostile_positives(_):
        if value != 5e-324:
            yield verdict, value


def hostile_tolerances(_, model=None):
    yield Accept, 0.0
    yield Accept, 1
    yield Same(float(np.float32(1e-3))), np.float32(1e-3)
    for value in (-1e-9, -1, np.nan, np.inf, "1e-3", None, True, [1e-3]):
        yield Refuse, value


def hostile_optional_tolerances(_, model=None):
    yield Accept, None
    for verdict, value in hostile_tolerances(_):
        if value is not None:
            yield verdict, value


def hostile_seeds(_, model=None):
    yield Same(5), np.int64(5)
    yield Same(5), np.random.default_rng(5)
    yield Same(5), np.random.SeedSequence(5)
    yield Accept, None
    for value in (-1, 1.5, "5", True, [1.5], object(), np.float64(5)):
        yield Refuse, value


# --------------------------------------------------------------------------- entries
@dataclass
class Entry:
    """How to call a public function: ``build(model, x, y) -> kwargs`` of valid arguments,
    and for each argument its kind (a key of :data:`HOSTILE`)."""

    function: Any
    build: Any
    kinds: dict[str, str]
    models: tuple[str, ...] = ("regression", "classifier")
    asserts: bool = False  # an AssertionError is a result (the comparison failed)


#: Fragments of messages that come from NumPy or Python internals, not from the library.
INTERNAL = (
    "ufunc", "casting rule", "could not broadcast", "operands could not", "could not convert",
    "object is not", "not subscriptable", "index out of", "list index", "SeedSequence",
    "not inexact", "unsupported operand", "can't multiply", "'NoneType'", "has no attribute",
    "cannot be interpreted", "setting an array element", "expected non-negative integer",
)  # fmt: skip


# --------------------------------------------------------------------------- the property
def _values(result) -> list[np.ndarray]:
    """Every number of a result as float64 arrays (reports: their measured errors)."""
    if isinstance(result, GradcheckReport):
        return [np.array(list(result.finite_differences.values()), dtype=float)]
    if isinstance(result, (list, tuple)):
        return [a for item in result for a in _values(item)]
    if result is None:
        return []
    if hasattr(result, "links"):  # a Chain
        return [np.array([len(result.links)], dtype=float)]
    return [np.asarray(result, dtype=float)]


def call(entry: Entry, kwargs: dict):
    """``(result, error, warning messages)`` of one call."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result, error = entry.function(**kwargs), None
        except Exception as exc:  # judged below
            result, error = None, exc
    return result, error, [str(w.message) for w in caught]


def _names(message: str, argument: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(argument)}(?![\w])", message) is not None


def check_hostile(entry: Entry, model_key: str, argument: str, verdict, value, names=()) -> None:
    """The property; ``names``: the arguments a refusal may name (default ``argument``)."""
    model, x, y = MODELS[model_key]
    kwargs = entry.build(model, x, y)
    clean_kwargs = dict(kwargs)
    kwargs[argument] = value
    result, error, caught = call(entry, kwargs)
    where = f"{entry.function.__name__}({argument}={value!r:.80})"
    assert not caught, f"{where} warned: {caught}"
    if error is not None and entry.asserts and type(error) is AssertionError:
        assert isinstance(verdict, Either), f"{where}: {error!r}"
        return
    if error is not None:
        message = str(error)
        assert isinstance(verdict, (Refuse, Either)), (
            f"{where} refused an accepted input: {error!r}"
        )
        assert type(error) in (ValueError, TypeError), f"{where} raised {error!r}"
        assert "\n" not in message, f"{where}: a message of several lines: {message!r}"
        named = any(_names(message, name) for name in names or (argument,))
        assert named, f"{where}: the message does not name it: {message!r}"
        assert not any(f in message for f in INTERNAL), f"{where}: internal message {message!r}"
        # a hostile input is refused before any work, not found by the result's check
        late = "the result is not finite" in message
        assert isinstance(verdict, Either) or not late, f"{where}: refused only after the work"
        return
    assert not isinstance(verdict, Refuse), f"{where} accepted a hostile input"
    values = _values(result)
    assert not any(np.isnan(v).any() for v in values), f"{where}: NaN in the result"
    if entry.function.__module__.startswith("manual_bp.curvature"):
        assert all(np.isfinite(v).all() for v in values), f"{where}: a non-finite result"
    if isinstance(verdict, Same):
        clean_kwargs[argument] = verdict.clean
        expected, error, _ = call(entry, clean_kwargs)
        assert error is None, f"{where}: the clean call raised {error!r}"
        for got, want in zip(values, _values(expected), strict=True):
            np.testing.assert_array_equal(got, want, err_msg=where)


def catalogue_cases(entries: dict[str, Entry], hostile: dict) -> list:
    """Every (entry, model, argument, verdict, value) of the catalogues, as pytest params."""
    cases = []
    for key, entry in entries.items():
        for model_key in entry.models:
            model, x, y = MODELS[model_key]
            valid = entry.build(model, x, y)
            for argument, kind in entry.kinds.items():
                for verdict, value in hostile[kind](valid.get(argument), model):
                    verdict = verdict() if isinstance(verdict, type) else verdict
                    case = (key, model_key, argument, verdict, value)
                    name = f"{key}-{model_key}-{argument}-{len(cases)}"
                    cases.append(pytest.param(*case, id=name))
    return cases


def _real(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


#: Which drawn scalars each kind accepts (both sides of, and exactly at, every edge).
SCALAR_RULES = {
    "count": lambda v: _real(v) and isinstance(v, (int, np.integer)) and v >= 1,
    "sample_count": lambda v: _real(v) and isinstance(v, (int, np.integer)) and v >= 2,
    "optional_count": lambda v: (
        v is None or (_real(v) and isinstance(v, (int, np.integer)) and v >= 1)
    ),
    "tolerance": lambda v: _real(v) and np.isfinite(v) and v >= 0,
    "positive": lambda v: _real(v) and np.isfinite(v) and v > 0,
    # a Gaussian's width: its peak 1/(σ√2π) overflows below the smallest normal float
    "width": lambda v: _real(v) and np.isfinite(v) and v >= np.finfo(np.float64).tiny,
    "step": lambda v: _real(v) and np.finfo(np.float64).eps <= v < 1,
    "seed": lambda v: v is None or (_real(v) and isinstance(v, (int, np.integer)) and v >= 0),
    "flag": lambda v: isinstance(v, (bool, np.bool_)),
}

SCALARS = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([np.int64(0), np.int64(1), np.uint8(2), np.float32(0.5), np.float64(1.0)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, 5e-324, 1 - 2**-53, np.nextafter(0, 1), np.nan]),
    st.booleans(),
    st.sampled_from([np.True_, np.False_]),
    st.none(),
    st.text(max_size=2),
)
