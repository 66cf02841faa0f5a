"""LAYER.dropout: inverted dropout (Dropout, Dropout2d) against torch with our own mask."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.gradcheck import check_layer
from manual_bp.layers import LAYERS, Dense
from manual_bp.layers.dropout import Dropout, Dropout2d
from manual_bp.models.sequential import Sequential
from reference.checks_layers import dropout_check
from reference.stack import random_stack, stack_comparisons

seeds = st.integers(0, 2**31 - 1)
probabilities = st.one_of(st.sampled_from([0.0, 0.5, 0.999, 1.0]), st.floats(0.0, 1.0))


@given(seeds)
def test_dropout_matches_torch(seed):
    """LAYER.dropout: random p (0 … 1), Dropout/Dropout2d, train/eval, random upstream."""
    comparisons = dropout_check(np.random.default_rng(seed))
    for comparison in comparisons:
        comparison.check()


@settings(max_examples=20)
@given(seeds, st.sampled_from([("features", ("dropout", "dense-tanh")),
                               ("images", ("dropout2d",))]))  # fmt: skip
def test_dropout_in_random_stacks(seed, kind_blocks):
    """LAYER.dropout in the middle of random stacks (train step: our mask in torch)."""
    kind, blocks = kind_blocks
    model, x, y = random_stack(np.random.default_rng(seed), kind, blocks=blocks)
    for comparison in stack_comparisons(model, x, y):
        comparison.check()


@given(p=probabilities, seed=seeds, two_d=st.booleans(), training=st.booleans())
def test_forward_and_backward_use_the_same_mask_and_scale(p, seed, two_d, training):
    rng = np.random.default_rng(seed)
    layer = (Dropout2d if two_d else Dropout)(p, seed=seed).train(training)
    x = rng.standard_normal((3, 4, 2, 2) if two_d else (3, 5))
    u = rng.standard_normal(x.shape)
    out, cache = layer.forward(x)
    dx, grads = layer.backward(u, cache)
    assert grads == {}
    if not training:
        assert out is x and dx is u  # evaluation: the identity
        return
    keep = cache.mask
    scale = 0.0 if p == 1.0 else 1.0 / (1.0 - p)
    np.testing.assert_array_equal(out, x * keep * scale)
    np.testing.assert_array_equal(dx, u * keep * scale)
    if two_d:  # whole channels dropped: one draw per (sample, channel)
        assert keep.shape == (3, 4, 1, 1)
    if p == 0.0:
        np.testing.assert_array_equal(out, x)
    if p == 1.0:
        assert not out.any() and not dx.any()


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 0.999])
def test_inverted_dropout_preserves_the_mean(p):
    """E[y] = x: the mean of y over N draws of ones is 1 ± 6·√(p/((1−p)N))."""
    n = 400_000
    out, _ = Dropout(p, seed=1).forward(np.ones((n, 1)))
    assert abs(out.mean() - 1.0) <= 6 * np.sqrt(p / ((1 - p) * n))
    assert abs((out > 0).mean() - (1 - p)) <= 6 * np.sqrt(p * (1 - p) / n)


def test_finite_differences():
    """For a fixed mask dropout is linear: central differences agree (second oracle)."""
    layer = Dropout(0.4, seed=3)
    x = np.random.default_rng(0).standard_normal((4, 6))
    _, cache = layer.forward(x)

    class Fixed:  # replay the same mask
        params: dict = {}

        def forward(self, z):
            return z * cache.mask * cache.scale, cache

        def backward(self, dout, c):
            return layer.backward(dout, c)

    check_layer(Fixed(), x)


def test_masks_reproducible_and_saved_with_extra_state():
    model = Sequential([Dense(4, 6), Dropout(0.5), Dense(6, 2)], seed=7)
    twin = Sequential([Dense(4, 6), Dropout(0.5), Dense(6, 2)], seed=7)
    x = np.ones((5, 4))
    assert np.array_equal(model.forward(x)[1][1].mask, twin.forward(x)[1][1].mask)
    state = json.loads(json.dumps(model.layers[1].get_extra_state()))
    expected = model.forward(x)[1][1].mask
    twin.layers[1].set_extra_state(state)
    assert np.array_equal(twin.forward(x)[1][1].mask, expected)
    copy = model.copy()
    assert np.array_equal(copy.forward(x)[1][1].mask, model.forward(x)[1][1].mask)
    with pytest.raises(ValueError, match="generator"):
        twin.layers[1].set_extra_state({"other": 1})


def test_registry_and_bad_inputs():
    assert {"dropout", "dropout2d"} <= set(LAYERS.names())
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="p must be in"):
            Dropout(bad)
    with pytest.raises(TypeError):
        Dropout("0.5")
    with pytest.raises(ValueError, match="axes"):
        Dropout2d(0.5).forward(np.zeros((2, 3)))
    layer = Dropout(0.5)
    _, cache = layer.forward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="dout"):
        layer.backward(np.zeros((3, 2)), cache)


@pytest.mark.parametrize("shape", [(4,), (2, 3)])
def test_torch_inplace_flag_and_unbatched_inputs(shape):
    """LAYER.dropout with torch's ``inplace=True`` (the same result, the input intact) on
    an unbatched vector and a batch; eval mode is the identity."""
    x = np.full(shape, 2.0)
    layer, plain = Dropout(0.5, True, seed=3), Dropout(0.5, seed=3)
    y, cache = layer.forward(x)
    y_plain, _ = plain.forward(x)
    assert isinstance(y, np.ndarray) and y.shape == shape
    np.testing.assert_array_equal(y, y_plain)
    np.testing.assert_array_equal(x, np.full(shape, 2.0))
    dx, _ = layer.backward(np.ones(shape), cache)
    assert isinstance(dx, np.ndarray)
    np.testing.assert_array_equal(dx, y / 2.0)
    layer.eval()
    assert layer.forward(x)[0] is x
    with pytest.raises(TypeError, match="inplace must be True or False"):
        Dropout(0.5, "yes")
