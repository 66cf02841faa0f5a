"""The fast training steps (``layer.fast_step()``, ``manual_bp/layers/steps.py``) and the
trainer that runs them, under hostile input (issue 24).

The steps take unchecked arrays: they are no public entry (no step class is exported by the
package, ``fast_step`` is listed as no entry in :mod:`tests.test_hostile_layers`). What a
user reaches is :class:`~manual_bp.training.fused.FusedTrainer`; its data entries are listed
in :data:`TRAINER_ENTRIES` (a new public method fails :func:`test_every_trainer_method_is_
covered` until listed), and their one check, :func:`~manual_bp.layers.steps.
check_trainer_data`, refuses every hostile value in one line naming the argument.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import manual_bp
import manual_bp.layers
import manual_bp.training
from manual_bp import LAYERS, Network, Sequential
from manual_bp.layers.steps import check_trainer_data
from manual_bp.optimizers import SGD
from manual_bp.training import FusedTrainer
from tests.hostile_entries import INTERNAL, _names
from tests.test_hostile_layers import REFUSED, SHAPES, _hostile, _kind, _ours
from tests.test_save_every_layer import BUILDERS

#: the trainer's public methods that take data -> how they are checked
TRAINER_ENTRIES = {
    "gradients": "model.prepare_inputs / prepare_targets",
    "step": "check_trainer_data (x, y, index)",
    "run_epoch": "check_trainer_data (x, y, batches)",
}
#: public members without data: a property
TRAINER_NOT_ENTRIES = {"fused_update"}


def test_every_trainer_method_is_covered():
    publics = {n for n, _ in inspect.getmembers(FusedTrainer) if not n.startswith("_")}
    unknown = publics - set(TRAINER_ENTRIES) - TRAINER_NOT_ENTRIES
    assert not unknown, f"FusedTrainer: public methods not covered: {sorted(unknown)}"


#: public methods of a step that are hooks of its own forward/backward (the tiled pooling
#: steps' ``tiled_forward``/``tiled_backward``, called after the shape dispatch)
STEP_HOOKS = {"tiled_forward", "tiled_backward"}
#: the trainer's optional third call: the lowest step's BP4 fused with plain SGD
TRAINER_OPTIONAL = {"backward_sgd"}


def _exported() -> set[str]:
    names = set()
    for package in (manual_bp, manual_bp.layers, manual_bp.training):
        names |= set(getattr(package, "__all__", None) or dir(package))
    return names


@pytest.mark.parametrize("name", sorted(BUILDERS))
@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fast_steps_are_no_public_entry(name, data):
    """Every layer's fast step (as the trainer builds it) is a class the package does not
    export, with the trainer's two methods (and its optional ``backward_sgd``) and nothing
    else public: no entry of its own."""
    layer = BUILDERS[name][1](data.draw, SHAPES[_kind(name)])
    layer.train(data.draw(st.booleans()))
    step = type(layer.fast_step())
    assert step.__name__ not in _exported(), f"{name}: {step.__name__} is exported"
    publics = {n for n, v in inspect.getmembers(step) if not n.startswith("_") and callable(v)}
    unknown = publics - {"forward", "backward"} - TRAINER_OPTIONAL - STEP_HOOKS
    assert not unknown and {"forward", "backward"} <= publics, f"{step.__name__}: {unknown}"


def test_every_registered_class_has_a_builder_for_the_step_check():
    assert {cls.__name__ for cls in LAYERS.classes()} <= set(BUILDERS)


# ---------------------------------------------------------------------- the entry check
def _models():
    return {
        "Network": Network([3, 4, 2], seed=0),
        "Sequential": Sequential.from_spec(
            [("dense", (4,), {}), "relu", ("dense", (2,), {}), "softmax"],
            input_shape=(3,),
            seed=0,
        ),
    }


MODELS = _models()


def _valid(model, n: int, rng):
    x = rng.standard_normal((n, 3))
    y = model.prepare_targets(rng.integers(0, 2, n), n)
    return x, y


INDEX_HOSTILE = {
    "float": (lambda n: np.arange(n, dtype=float), False),
    "bool": (lambda n: np.ones(n, bool), False),
    "2-D": (lambda n: np.arange(n).reshape(1, n), False),
    "list": (lambda n: list(range(n)), False),
    "None in a list": (None, False),
    "-1": (lambda n: np.array([0, -1]), False),
    "n": (lambda n: np.array([0, n]), False),  # one past the last row
    "n - 1": (lambda n: np.array([0, n - 1]), True),  # the last row
    "empty": (lambda n: np.array([], np.int64), True),
    "uint8": (lambda n: np.arange(n, dtype=np.uint8), True),
}
Y_HOSTILE = ("labels", "float32", "complex", "rows+1", "width+1", "None", "nested list")


def _hostile_y(y: np.ndarray, how: str):
    if how == "labels":
        return y.argmax(axis=1)
    if how == "float32":
        return y.astype(np.float32)
    if how == "complex":
        return y.astype(complex)
    if how == "rows+1":
        return np.concatenate([y, y[:1]])
    if how == "width+1":
        return np.concatenate([y, y[:, :1]], axis=1)
    return None if how == "None" else y.tolist()


def _expect_refusal(call, names: tuple[str, ...]) -> None:
    with pytest.raises((TypeError, ValueError)) as caught:
        call()
    message = str(caught.value)
    assert _ours(caught.value), f"not manual_bp's own raise: {message!r}"
    assert "\n" not in message and not any(f in message for f in INTERNAL), message
    assert any(_names(message, n) for n in names), f"{message!r} omits {names}"


@pytest.mark.parametrize("model_name", sorted(MODELS))
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_trainer_data_check_refuses_in_one_line_naming_the_argument(model_name, data):
    """``x`` (every refused kind of the layer tests), ``y`` (labels not prepared, another
    dtype, other rows or width) — refused in one line naming the argument, before any step;
    valid data passes."""
    model = MODELS[model_name]
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    n = data.draw(st.integers(1, 4))
    x, y = _valid(model, n, rng)
    check_trainer_data(model, x, y, np.arange(n), [np.arange(n)])
    target = data.draw(st.sampled_from(["x", "y"]))
    if target == "x":
        how = data.draw(st.sampled_from([h for h in REFUSED if h not in ("int",)]))
        hostile = _hostile(x, how, x.dtype)
        _expect_refusal(lambda: check_trainer_data(model, hostile, y), ("x",))
        return
    how = data.draw(st.sampled_from(Y_HOSTILE))
    hostile = _hostile_y(y, how)
    _expect_refusal(lambda: check_trainer_data(model, x, hostile), ("y",))


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("target", ["index", "batches"])
@pytest.mark.parametrize("how", sorted(INDEX_HOSTILE))
@pytest.mark.parametrize("n", [1, 3])
def test_row_indices_are_checked_at_both_edges(model_name, target, how, n):
    """``index``/``batches``: not integers, not 1-D, or out of range at both edges (``n − 1``
    accepted, ``n`` and ``−1`` refused) — refused in one line naming the argument."""
    model = MODELS[model_name]
    x, y = _valid(model, n, np.random.default_rng(n))
    make, accepted = INDEX_HOSTILE[how]
    if target == "index" and make is None:
        return  # None is step's "every row"
    index = None if make is None else make(n)
    if target == "index":
        kwargs, names = {"index": index}, ("index",)
    else:
        kwargs, names = {"batches": [np.arange(n), index]}, ("batches", "batches[1]")
    if accepted:
        check_trainer_data(model, x, y, **kwargs)
    else:
        _expect_refusal(lambda: check_trainer_data(model, x, y, **kwargs), names)


def test_batches_of_the_wrong_kind_are_refused():
    model = MODELS["Network"]
    x, y = _valid(model, 3, np.random.default_rng(0))
    for batches in ("012", iter([np.arange(3)]), {0: np.arange(3)}, np.arange(3)):
        _expect_refusal(lambda b=batches: check_trainer_data(model, x, y, batches=b), ("batches",))
    check_trainer_data(model, x, y, batches=(np.arange(2), np.array([2])))  # a tuple
    check_trainer_data(model, x, y, batches=[])  # an epoch of no batches


# ---------------------------------------------------------------------- the public path
# FusedTrainer.step/run_epoch call check_trainer_data at their entry. Without it hostile
# data reached the fast steps: NumPy's "output array is not acceptable", and an index past
# the last row silently clipped to it.
@pytest.mark.parametrize("entry", ["step", "run_epoch"])
@pytest.mark.parametrize("how", ["complex x", "float32 x", "index past the end", "labels y"])
def test_the_trainer_refuses_hostile_data_at_its_entry(entry, how):
    model = Network([3, 4, 2], seed=0)
    x, y = _valid(model, 4, np.random.default_rng(0))
    index, name = np.arange(4), "x"
    if how == "complex x":
        x = x.astype(complex)
    elif how == "float32 x":
        x = x.astype(np.float32)
    elif how == "labels y":
        y, name = y.argmax(axis=1), "y"
    else:
        index, name = np.array([0, 4]), ("index" if entry == "step" else "batches")
    trainer = FusedTrainer(model, SGD(lr=0.1), n_train=4)
    before = model.flat_parameters.copy()
    if entry == "step":
        _expect_refusal(lambda: trainer.step(x, y, index), (name,))
    else:
        _expect_refusal(lambda: trainer.run_epoch(x, y, [index]), (name,))
    np.testing.assert_array_equal(model.flat_parameters, before)  # refused before any step
