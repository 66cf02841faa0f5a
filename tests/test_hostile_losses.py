"""Hostile values into every torch-named loss (issue 24's introspection rule, applied to
issue 26's ``manual_bp.losses``).

Every class of :data:`manual_bp.losses.LOSSES` is built and called with the arguments of
torch's own first ``module_db`` configuration of that class (so the valid call is torch's),
then with one argument at a time replaced by a hostile value — complex, bool, object and
string arrays, ``None``, a ragged nested list. The property: one ``TypeError`` or
``ValueError`` on one line that names the argument, for the checked call
(``loss(...)``) and for the protocol method (``loss.forward(...)``) alike; never NumPy's or
Python's own message. A new loss class is covered without a new test. A loss with
parameters (``LinearCrossEntropyLoss``) is built the same way, and its
``backward_with_params`` gets the hostile values as ``grad_output``.
"""

from __future__ import annotations

import numpy as np
import pytest

from manual_bp.losses import LOSSES
from reference.torch_losses import _numpy, _our_kwargs, configurations

CLASSES = LOSSES.classes()


def _valid_call(cls: type) -> tuple:
    """``(loss, arguments)`` of torch's first test configuration of ``cls`` (``module_db``,
    else ``common_nn``), or default construction on ``(4, 3)`` arrays where torch has none
    (``TripletMarginWithDistanceLoss``)."""
    found = [c for c in configurations({cls.__name__}) if len(c.inputs) == len(cls.arguments)]
    config = found[0] if found else None
    if config is None:
        rng = np.random.default_rng(0)
        return cls(), [rng.standard_normal((4, 3)) for _ in cls.arguments]
    loss = cls(*_numpy(config.args), **_our_kwargs(config))
    return loss, list(_numpy(config.inputs))


def _hostile(value) -> dict:
    array = np.asarray(value)
    return {
        "complex": array.astype(np.complex128) + 1j,
        "bool": array.astype(bool),
        "object": array.astype(object),
        "string": np.full(array.shape, "a"),
        "None": None,
        "ragged": [[1.0, 2.0], [3.0]],
    }


@pytest.mark.parametrize("entry", ["__call__", "forward"])
@pytest.mark.parametrize("cls", CLASSES, ids=[c.__name__ for c in CLASSES])
def test_hostile_arguments_are_refused_in_one_line_naming_them(cls, entry):
    loss, arguments = _valid_call(cls)
    getattr(loss, entry)(*arguments)  # torch's valid call works
    names = cls.arguments
    for position, name in enumerate(names[: len(arguments)]):
        for kind, value in _hostile(arguments[position]).items():
            if kind == "complex" and getattr(cls, "complex_ok", False):
                continue  # torch's L1Loss takes complex tensors (its walk compares them)
            call = list(arguments)
            call[position] = value
            with pytest.raises((TypeError, ValueError)) as error:
                getattr(loss, entry)(*call)
            message = str(error.value)
            assert name in message and "\n" not in message, (
                f"{cls.__name__}.{entry} with a {kind} {name}: {message!r}"
            )


#: the losses with parameters: those that override the protocol's named_parameters
PARAMETRISED = [cls for cls in CLASSES if "named_parameters" in vars(cls)]


def test_a_loss_with_parameters_is_driven():
    assert [cls.__name__ for cls in PARAMETRISED] == ["LinearCrossEntropyLoss"]


@pytest.mark.parametrize("cls", PARAMETRISED, ids=[c.__name__ for c in PARAMETRISED])
def test_hostile_grad_output_into_backward_with_params(cls):
    """The protocol's extension checks its ``grad_output`` as forward checks its arrays:
    one line naming it, a wrong shape included."""
    loss, arguments = _valid_call(cls)
    value, cache = loss.forward(*arguments)
    _, params = loss.backward_with_params(np.ones(np.shape(value)) * 0.5, cache)
    assert set(params) == {name for name, _ in loss.named_parameters()}
    hostile = {**_hostile(value), "shape": np.ones((*np.shape(value), 2))}
    for kind, bad in hostile.items():
        with pytest.raises((TypeError, ValueError)) as error:
            loss.backward_with_params(bad, cache)
        message = str(error.value)
        assert "grad_output" in message and "\n" not in message, (kind, message)
