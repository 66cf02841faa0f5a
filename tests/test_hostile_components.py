"""Hostile values into the public components without a layer or a model of their own
(issue 24): every regulariser class's ``penalty``/``add_gradient`` (found in the registry),
``fans``, ``one_hot``, ``to_labels`` and ``nielsen_sgd``.

Each argument takes, one at a time, the hypothesis-drawn values of its kind's catalogue
(:data:`HOSTILE`), judged by the shared property of ``tests/hostile_entries.py``
(:func:`~tests.hostile_entries.check_hostile`): the result of the clean call for an
equivalent form (``Same``), any result (``Accept``), or one ``TypeError``/``ValueError`` on
one line naming the argument (``Refuse``) — never a warning, a NumPy or Python message, or a
silent cast. :data:`FUNCTIONS` lists the public functions driven here; the registry test
(``tests/test_hostile_registry.py``) classifies a public name by it.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from manual_bp import Network
from manual_bp.encoding import one_hot, to_labels
from manual_bp.initializers import fans
from manual_bp.regularizers import REGULARIZERS
from manual_bp.training.loop import nielsen_sgd
from tests.hostile_entries import (
    Entry,
    Refuse,
    Same,
    check_hostile,
    hostile_counts,
    hostile_tolerances,
)

REFUSE, ACCEPT = Refuse(), Same  # ACCEPT(clean): the clean call's result


def hostile_weight_lists(clean, model=None):
    """A list of parameter arrays (a regulariser's ``weights``/``grads``)."""
    yield Same(clean), tuple(clean)
    yield Same(clean), [np.asfortranarray(w) for w in clean]
    for value in (
        None, clean[0], "ab", 3.0, [w.tolist() for w in clean], [w + 1j for w in clean],
        [w > 0 for w in clean], [w.astype(np.int64) for w in clean],
        [w.astype(np.float16) for w in clean], [w.astype(object) for w in clean], [None],
    ):  # fmt: skip
        yield REFUSE, value


def hostile_paired_lists(clean, model=None):
    """Weights and their gradients (``add_gradient``): also each other's shapes and dtypes."""
    yield from hostile_weight_lists(clean)
    for value in ([w[:1] for w in clean], clean[:1], [w.astype(np.float32) for w in clean]):
        yield REFUSE, value


def hostile_shapes(clean, model=None):
    yield Same(clean), list(clean)
    yield Same(clean), np.array(clean)
    yield Same(clean), tuple(np.int64(s) for s in clean)
    for value in (None, 1.5, "ab", b"ab", object(), (3, 1.5), (3, -1), (True, 2), {3: 4}):
        yield REFUSE, value


def hostile_labels(clean, model=None):
    yield Same(clean), clean.tolist()
    yield Same(clean), clean.astype(np.int32)
    for value in (
        None, clean.astype(float), clean + 0.5, clean > 0, clean + 1j, clean[None], clean[0],
        np.array([0, 1, 3]), np.array([-1, 0, 1]), "ab", [[0], [1, 2]], clean.astype(object),
    ):  # fmt: skip
        yield REFUSE, value


def hostile_targets(clean, model=None):
    yield Same(clean), clean.tolist()
    yield Same(clean), np.eye(3)[clean]  # one-hot rows: their argmax
    for value in (
        None, clean.astype(float), np.array([0.0, np.nan, 1.0]), clean[0], clean[None, None],
        np.array([-1, 0, 1]), clean + 1j, clean > 0, "ab", [[0], [1, 2]],
        np.array([[0.0, np.nan], [1.0, 0.0]]), np.array([[np.inf, 0.0], [1.0, 0.0]]),
    ):  # fmt: skip
        yield REFUSE, value


def hostile_pairs(clean, model=None):
    x, y = clean
    yield Same(clean), [x, y]
    for value in (None, (x,), (x, y, y), x, "ab", (x + 1j, y), (x, None), (x[:2], y)):
        yield REFUSE, value


def hostile_learning_rates(clean, model=None):
    for verdict, value in hostile_tolerances(clean):
        yield (REFUSE if value == 0 else verdict), value


HOSTILE = {
    "weights": hostile_weight_lists,
    "paired": hostile_paired_lists,
    "count": hostile_counts,
    "shape": hostile_shapes,
    "labels": hostile_labels,
    "targets": hostile_targets,
    "pair": hostile_pairs,
    "tolerance": hostile_tolerances,
    "rate": hostile_learning_rates,
}

WEIGHTS = [np.array([[0.5, -1.0], [2.0, 0.0]]), np.array([[1.5, -0.25, 3.0]])]


def _regulariser_entries() -> dict[str, Entry]:
    """Every registered regulariser's two methods, with λ = 0.5 (found in the registry)."""
    entries = {}
    for cls in REGULARIZERS.classes():
        instance = cls(0.5)
        entries[f"{cls.__name__}.penalty"] = Entry(
            instance.penalty,
            lambda m, x, y: {"weights": [w.copy() for w in WEIGHTS], "n_train": 10},
            {"weights": "weights", "n_train": "count"},
            models=("regression",),
        )
        entries[f"{cls.__name__}.add_gradient"] = Entry(
            instance.add_gradient,
            lambda m, x, y: {
                "weights": [w.copy() for w in WEIGHTS],
                "grads": [np.ones_like(w) for w in WEIGHTS],
                "n_train": 10,
            },
            {"weights": "paired", "grads": "paired", "n_train": "count"},
            models=("regression",),
        )
    return entries


@functools.wraps(nielsen_sgd)
def _nielsen_sgd(**kwargs):
    """``nielsen_sgd`` on a fresh model each call (its history's costs: numbers to compare)."""
    kwargs["net"] = Network([2, 3, 2], "tanh", "quadratic", seed=0)
    return nielsen_sgd(**kwargs, seed=1).training_cost


_LABELS = np.array([0, 2, 1])
_X = np.random.default_rng(4).standard_normal((4, 2))
_Y = np.random.default_rng(5).standard_normal((4, 2))

#: public function name -> its entry
FUNCTIONS = {
    "fans": Entry(fans, lambda m, x, y: {"shape": (3, 4, 5)}, {"shape": "shape"},
                  models=("regression",)),
    "one_hot": Entry(one_hot, lambda m, x, y: {"labels": 0 * _LABELS, "n_classes": 3},
                     {"labels": "labels", "n_classes": "count"}, models=("regression",)),
    "to_labels": Entry(to_labels, lambda m, x, y: {"y": _LABELS.copy()}, {"y": "targets"},
                       models=("regression",)),
    "nielsen_sgd": Entry(
        _nielsen_sgd,
        lambda m, x, y: {"training_data": (_X, _Y), "epochs": 1, "mini_batch_size": 2,
                         "eta": 0.1, "lmbda": 0.0},
        {"training_data": "pair", "epochs": "count", "mini_batch_size": "count",
         "eta": "rate", "lmbda": "tolerance"},
        models=("regression",),
    ),
}  # fmt: skip
ENTRIES = {**_regulariser_entries(), **FUNCTIONS}
#: what a refusal may name besides the argument (train's names for nielsen_sgd's pair)
ALSO = {"training_data": ("x", "y")}


def _catalogue(key: str) -> list:
    entry = ENTRIES[key]
    valid = entry.build(None, None, None)
    return [
        (argument, verdict() if isinstance(verdict, type) else verdict, value)
        for argument, kind in entry.kinds.items()
        for verdict, value in HOSTILE[kind](valid[argument])
    ]


@pytest.mark.parametrize("key", sorted(ENTRIES))
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_hostile_component_arguments_are_refused_in_one_line_or_computed(key, data):
    cases = _catalogue(key)
    argument, verdict, value = data.draw(st.sampled_from(cases), label="case")
    check_hostile(ENTRIES[key], "regression", argument, verdict, value, (argument,
                  *ALSO.get(argument, ())))  # fmt: skip


def test_add_gradient_of_an_accepted_form_adds_the_same_gradient():
    """The in-place result (a method returning None): tuple and Fortran forms add alike."""
    for cls in REGULARIZERS.classes():
        want = [np.ones_like(w) for w in WEIGHTS]
        cls(0.5).add_gradient(WEIGHTS, want, 10)
        got = [np.asfortranarray(np.ones_like(w)) for w in WEIGHTS]
        cls(0.5).add_gradient(tuple(np.asfortranarray(w) for w in WEIGHTS), tuple(got), 10)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)
        read_only = [w.copy() for w in WEIGHTS]
        for w in read_only:
            w.flags.writeable = False
        cls(0.5).add_gradient(read_only, [np.ones_like(w) for w in WEIGHTS], 10)  # not written
        with pytest.raises(ValueError, match=r"^\w+\.add_gradient: grads\[0\] is read-only"):
            cls(0.5).add_gradient(WEIGHTS, read_only, 10)
