"""Every public name of the package has its hostile-input test, or is listed (issue 24,
"Done when": the introspection test covers every public entry; a registry test fails when
one is missing).

Each name of ``manual_bp.__all__`` is classified by :func:`coverage`: the test that drives
it with hostile values (checked to exist, so a renamed test fails here too), no data of its
own (registries, errors, bases, names). No gap is listed: a new public name fails
:func:`test_every_public_name_is_covered` until a driver reaches it (most kinds by
introspection: a new layer, activation, loss, regulariser or saving function is driven
without a new test).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import numpy as np
import pytest

import manual_bp
from manual_bp._registry import Registry
from manual_bp._validation import as_array
from manual_bp.activations import Activation
from manual_bp.costs import Cost
from manual_bp.layers import Layer
from manual_bp.losses import Loss
from manual_bp.optimizers import Optimizer
from manual_bp.regularizers import Regularizer
from tests.hostile_entries import INTERNAL
from tests.test_hostile_components import FUNCTIONS
from tests.test_hostile_serialization import FUNCTIONS as PATH_FUNCTIONS

#: kind -> (test module, test function) that drives every member of the kind
DRIVERS = {
    "layer": ("tests.test_hostile_layers", "test_hostile_inputs_are_refused_in_one_line_or_"
              "computed_as_torch"),
    "transformer": ("tests.test_hostile_transformer",
                    "test_hostile_arguments_are_refused_in_one_line_or_computed_as_torch"),
    "model": ("tests.test_hostile_layers", "test_hostile_inputs_to_every_model_method"),
    "cost": ("tests.test_validation", "test_every_cost_method_checks_its_arrays_alike"),
    "optimizer": ("tests.test_validation", "test_every_optimizer_checks_its_inputs_alike"),
    "training": ("tests.test_validation", "test_every_entry_point_checks_inputs_alike"),
    "threads": ("tests.test_threads", "test_set_num_threads_refuses_non_positive_integers"),
    "documents": ("tests.test_serialization_legacy", "test_hostile_old_documents_are_named"),
    "gpt config": ("tests.test_gpt_hostile", "test_gpt_config_arguments_are_refused_in_one_line"),
    "loss": ("tests.test_hostile_losses",
             "test_hostile_arguments_are_refused_in_one_line_naming_them"),
    "activation": ("tests.test_hostile_activations",
                   "test_hostile_values_are_refused_in_one_line_or_computed_as_torch"),
    "regularizer": ("tests.test_hostile_components",
                    "test_hostile_component_arguments_are_refused_in_one_line_or_computed"),
    "function": ("tests.test_hostile_components",
                 "test_hostile_component_arguments_are_refused_in_one_line_or_computed"),
    "paths": ("tests.test_hostile_serialization",
              "test_hostile_paths_and_models_into_every_saver"),
}  # fmt: skip
#: names that take no data of their own: registries and tables, errors, bases, result
#: containers, look-ups by name (their specs are checked by tests/test_api.py)
NO_DATA = {
    "__version__", "SCHEMES", "INITIALIZERS", "DatasetError", "SerializationError",
    "StateDictError", "DivergenceError", "Activation", "Regularizer", "Schedule", "History",
    "Gradients", "StackGradients", "Dataset", "get_activation", "get_cost", "get_layer",
    "get_optimizer", "get_regularizer", "get_schedule", "register_activation",
    "register_cost", "get_num_threads", "StepLR", "ExponentialLR", "CosineAnnealingLR",
    "calculate_gain", "load_digits", "load_mnist", "initialize",
    # a configuration record: scalar fields checked on construction, in one line
    # (tests/test_losses_linear.py)
    "LinearCrossEntropyOptions",
}  # fmt: skip


def coverage(name: str, obj: Any) -> str | None:
    """The kind of :data:`DRIVERS` driving ``name``, ``"no data"`` or None."""
    if name in NO_DATA or isinstance(obj, Registry):
        return "no data"
    if isinstance(obj, type):
        if issubclass(obj, Layer):
            transformer = obj.__module__.startswith("manual_bp.layers.transformer")
            return "transformer" if transformer else "layer"
        if name in ("Network", "Sequential", "GPT"):
            return "model"
        if issubclass(obj, Cost):
            return "cost"
        if issubclass(obj, Loss):
            return "loss"
        if issubclass(obj, Optimizer):
            return "optimizer"
        if issubclass(obj, Activation) and obj is not Activation:
            return "activation"
        if issubclass(obj, Regularizer) and obj is not Regularizer:
            return "regularizer"
    if name in FUNCTIONS:
        return "function"
    if name in PATH_FUNCTIONS:
        return "paths"
    return {"train": "training", "set_num_threads": "threads", "GPTConfig": "gpt config"}.get(name)


def test_every_public_name_is_covered():
    unknown = [n for n in manual_bp.__all__ if coverage(n, getattr(manual_bp, n)) is None]
    assert not unknown, f"public names without a hostile test or a listing: {unknown}"


@pytest.mark.parametrize("kind", sorted(DRIVERS))
def test_every_driver_exists(kind):
    module, function = DRIVERS[kind]
    assert inspect.isfunction(getattr(importlib.import_module(module), function, None))


@pytest.mark.parametrize("ragged", [[[1.0, 2.0], [3.0]], [[1.0], [2.0, 3.0], []], [[[1.0]], [2.0]]])
def test_a_ragged_array_is_named_without_numpys_text(ragged):
    """The shared first step (``as_array``): one line naming the argument and the cause,
    not NumPy's "setting an array element with a sequence … inhomogeneous shape"."""
    with pytest.raises(ValueError) as caught:
        as_array(ragged, "x")
    message = str(caught.value)
    assert message.startswith("x is not a rectangular array"), message
    assert not any(f in message for f in INTERNAL) and "inhomogeneous" not in message
    assert "\n" not in message
    assert as_array([[1.0, 2.0]], "x").shape == (1, 2)  # rectangular: kept
    assert as_array(np.zeros((0, 2)), "x").shape == (0, 2)
