"""LAYER.dense: the dense layer's backward with random upstream gradients, alone and mid-network."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from manual_bp import Dense
from reference.checks_misc import dense_layer_check


@given(st.integers(0, 2**31 - 1))
def test_dense_layer_backward_matches_torch(seed):
    """LAYER.dense: ∂C/∂x = dz W, ∂C/∂W = dzᵀx, ∂C/∂b = Σ_rows dz for C = Σ upstream ⊙ out.

    The dense layer under test sits in the MIDDLE of a small network
    (Dense → tanh → [Dense] → sigmoid → Dense) and the upstream gradient at the
    top is random (never all-ones); the oracle is torch autograd in float64.
    The case is the ``verify`` command's own check (reference/checks_misc.py).
    """
    comparisons = dense_layer_check(np.random.default_rng(seed))
    assert {c.name for c in comparisons} == {"∂C/∂W", "∂C/∂b", "∂C/∂x"}
    for comparison in comparisons:
        comparison.check()


def test_dense_layer_rejects_wrong_shapes():
    layer = Dense(3, 2, seed=0)
    with pytest.raises(ValueError, match=r"x has shape \(4, 5\); its last axes must be \(3\)"):
        layer.forward(np.zeros((4, 5)))
    _, cache = layer.forward(np.zeros((4, 3)))
    with pytest.raises(
        ValueError, match=r"upstream gradient has shape \(4, 3\), expected \(4, 2\)"
    ):
        layer.backward(np.zeros((4, 3)), cache)
