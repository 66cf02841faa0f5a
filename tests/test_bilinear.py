"""``Bilinear`` (``LAYER.bilinear``, ``PROD.bilinear.*``; docs/padding.md).

Oracle: ``nn.Bilinear`` / ``torch.func`` in float64 with random upstream gradients; sizes,
bias, input forms (two inputs, the one-input quadratic form, unbatched, empty batches,
extra leading axes) drawn by hypothesis; central finite differences; the adjoint identity;
the quadratic form in the middle of random stacks; torch's initialisation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp import Sequential, load, save
from manual_bp.layers import Bilinear
from manual_bp.model_spec import parse_layers
from reference.checks_padding_layers import (
    bilinear_check,
    bilinear_comparisons,
    bilinear_product_comparisons,
)
from reference.products import product_comparisons

seeds = st.integers(0, 2**32 - 1)


@st.composite
def bilinear_cases(draw, one_input=None):
    """A Bilinear layer and its input(s), every option drawn."""
    one = draw(st.booleans()) if one_input is None else one_input
    in1 = draw(st.integers(1, 4))
    in2 = in1 if one else draw(st.integers(1, 4))
    out = draw(st.integers(1, 3))
    bias = draw(st.booleans())
    lead = draw(st.sampled_from([(), (0,), (1,), (3,), (2, 2)]))
    seed = draw(seeds)
    rng = np.random.default_rng(seed)
    layer = Bilinear(in1, in2, out, bias=bias, seed=seed)
    x1 = rng.standard_normal((*lead, in1))
    x2 = None if one else rng.standard_normal((*lead, in2))
    return layer, x1, x2


@settings(max_examples=100)
@given(bilinear_cases(), seeds)
def test_bilinear_matches_torch(case, seed):
    """LAYER.bilinear: output, ∂C/∂x₁, ∂C/∂x₂ (or their sum for x₁ = x₂), ∂A, ∂b vs
    nn.Bilinear, then central finite differences along a random direction."""
    layer, x1, x2 = case
    rng = np.random.default_rng(seed)
    comparisons = bilinear_comparisons(layer, x1, x2, rng)
    assert {c.equation for c in comparisons} == {"LAYER.bilinear"}
    for comparison in comparisons:
        comparison.check()
    out, cache = layer.forward(x1, x2)
    u = rng.standard_normal(out.shape)
    d_in, _ = layer.backward(u, cache)
    d1 = rng.standard_normal(x1.shape)
    d2 = None if x2 is None else rng.standard_normal(x2.shape)
    h = 1e-4

    def cost(s):
        return np.sum(u * layer.forward(x1 + s * d1, None if x2 is None else x2 + s * d2)[0])

    fd = (cost(h) - cost(-h)) / (2 * h)
    ours = np.sum(d_in * d1) if x2 is None else np.sum(d_in[0] * d1) + np.sum(d_in[1] * d2)
    np.testing.assert_allclose(ours, fd, rtol=1e-7, atol=1e-8)


@settings(max_examples=40)
@given(bilinear_cases(one_input=False), seeds)
def test_bilinear_products_match_torch_func(case, seed):
    """PROD.bilinear.vjp / PROD.bilinear.jvp / PROD.bilinear.residual: the two-input
    products and the adjoint identity vs torch.func; the quadratic form through the shared
    product comparisons (per-sample VJPs, symmetry identities)."""
    layer, x1, x2 = case
    rng = np.random.default_rng(seed)
    found = bilinear_product_comparisons(layer, x1, x2, rng)
    assert {c.equation for c in found} == {
        "PROD.bilinear.vjp",
        "PROD.bilinear.jvp",
        "PROD.bilinear.residual",
    }
    for comparison in found:
        comparison.check()
    square = Bilinear(x1.shape[-1], x1.shape[-1], layer.out_features, bias=layer.has_bias, seed=1)
    x = rng.standard_normal((max(x1.shape[0], 1) if x1.ndim > 1 else 2, x1.shape[-1]))
    for comparison in product_comparisons(square, x, rng):
        comparison.check()


@settings(max_examples=10)
@given(seeds)
def test_bilinear_in_random_stacks_matches_torch(seed):
    """LAYER.bilinear: the quadratic form in the middle of a random stack, and alone."""
    for comparison in bilinear_check(np.random.default_rng(seed)):
        comparison.check()


def test_bilinear_initialisation_and_arguments_follow_torch():
    """weight (out, in1, in2) and bias from U(±1/√in1); torch's signature; clear refusals."""
    layer = Bilinear(16, 3, 50, seed=0)
    torch.manual_seed(0)
    theirs = torch.nn.Bilinear(16, 3, 50)
    for name, p in theirs.named_parameters():
        assert layer.params[name].shape == tuple(p.shape)
        bound = 1 / np.sqrt(16)
        assert np.abs(layer.params[name]).max() <= bound
        assert np.abs(layer.params[name]).max() > 0.9 * bound  # not a smaller scale
    assert abs(layer.params["weight"].std() - bound / np.sqrt(3)) < 0.01
    assert "bias" not in Bilinear(2, 3, 4, bias=False).params
    assert Bilinear(2, 3, 4, dtype="float32").params["weight"].dtype == np.float32
    with pytest.raises(ValueError, match="in2_features must be a positive integer"):
        Bilinear(2, 0, 1)
    with pytest.raises(ValueError, match="input2 has shape"):
        Bilinear(2, 3, 1).forward(np.zeros((4, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="same leading axes"):
        Bilinear(2, 3, 1).forward(np.zeros((4, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="one input needs in1_features == in2_features"):
        Bilinear(2, 3, 1).forward(np.zeros((4, 2)))


def test_bilinear_builds_from_a_spec_trains_and_saves(tmp_path):
    """``bilinear(k)`` in ``--layers`` is Bilinear(D, D, k), the quadratic form; a training
    step through the fused trainer's generic step and a save/load round trip."""
    from manual_bp import train

    spec = parse_layers("dense(3), tanh, bilinear(4), dense, softmax")
    model = Sequential.from_spec(spec, input_shape=(5,), n_outputs=2, cost="log-likelihood")
    assert repr(model.layers[2]).startswith("Bilinear(in1_features=3, in2_features=3")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 5)), rng.integers(0, 2, 16)
    before = model.layers[2].params["weight"].copy()
    train(model, x, y, epochs=1, batch_size=8, eta=0.5)
    assert not np.array_equal(before, model.layers[2].params["weight"])
    save(model, tmp_path / "m.json")
    np.testing.assert_array_equal(load(tmp_path / "m.json").predict(x), model.predict(x))
