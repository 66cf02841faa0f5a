"""torch's classification losses as library components: registry names, configs and
top-level exports, and bad input refused in one line naming the argument
(docs/losses_classification.md; the numerics are in test_losses_classification.py)."""

from __future__ import annotations

import numpy as np
import pytest

import manual_bp
from manual_bp.losses import LOSSES, CrossEntropyLoss, MultiMarginLoss, NLLLoss, get_loss


# ---------------------------------------------------------------------- API and errors
def test_registry_names_configs_and_top_level_exports():
    for cls in (CrossEntropyLoss, NLLLoss, MultiMarginLoss):
        assert getattr(manual_bp, cls.__name__) is cls and cls.__name__ in manual_bp.__all__
        assert LOSSES[cls.__name__] is cls
        instance = cls(weight=[1.0, 2.0, 0.5], reduction="sum")
        assert get_loss(instance.get_config()) == instance
        assert hash(get_loss(instance.get_config())) == hash(instance)
    assert "CrossEntropyLoss" not in manual_bp.costs.__all__
    assert "MultiMarginLoss" not in manual_bp.costs.__all__


@pytest.mark.parametrize(
    "build, call, match",
    [
        (lambda: CrossEntropyLoss(label_smoothing=1.5), None, "label_smoothing"),
        (lambda: CrossEntropyLoss(label_smoothing=-0.1), None, "label_smoothing"),
        (lambda: CrossEntropyLoss(reduction="avg"), None, "reduction"),
        (lambda: NLLLoss(weight=[[1.0, 2.0]]), None, "weight"),
        (lambda: NLLLoss(ignore_index=1.5), None, "ignore_index"),
        (lambda: MultiMarginLoss(p=3), None, "p must"),
        (lambda: MultiMarginLoss(margin=float("nan")), None, "margin"),
        (CrossEntropyLoss, (np.zeros((2, 3)), np.array([0, 3])), "target holds class 3"),
        (NLLLoss, (np.zeros((2, 3)), np.array([0, -2])), "target holds class -2"),
        (CrossEntropyLoss, (np.zeros((2, 3)), np.array([0.0, 1.0])), "target must hold integer"),
        (CrossEntropyLoss, (np.zeros((2, 3)), np.zeros((2, 3), int)), "floating point"),
        (
            lambda: CrossEntropyLoss(ignore_index=0),
            (np.zeros((2, 3)), np.ones((2, 3))),
            "ignore_index",
        ),
        (lambda: NLLLoss(weight=[1.0, 2.0]), (np.zeros((2, 3)), np.array([0, 1])), "weight has"),
        (NLLLoss, (np.zeros((2, 3, 4)), np.zeros((2, 3), int)), "target must have shape"),
        (NLLLoss, (np.zeros((2, 3), int), np.zeros(2, int)), "input must be float"),
        (MultiMarginLoss, (np.zeros((2, 3)), np.array([0, 3])), "target holds class 3"),
        (MultiMarginLoss, (np.zeros((2, 3, 1)), np.array([0, 1])), "input must be"),
        (MultiMarginLoss, (np.zeros((2, 3)), np.array(1)), "target must have shape"),
    ],
)
def test_bad_input_is_one_line_naming_the_argument(build, call, match):
    with pytest.raises((ValueError, TypeError)) as info:
        loss = build()
        if call is not None:
            loss(*call)
    assert match in str(info.value) and "\n" not in str(info.value)
