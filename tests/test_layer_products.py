"""The layer products on a leading axis of V vectors (``docs/products.md``).

Every registered layer class provides the input and parameter VJPs (summed and per
sample), the input and parameter JVPs and the second-order residual; each is compared
with ``torch.func`` in float64 with random vectors (:mod:`reference.products`), together
with the identities that tie them (adjoints, per-sample sums, symmetry of the residual,
``V = 1`` equal to ``backward``). This file holds the registry test that makes a new layer
class without products fail, and the products of the dense and activation layers; the
other families' product tests live beside their chapters (``tests/test_products_*.py``).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.activations import ACTIVATIONS
from manual_bp.equations import EQUATIONS
from manual_bp.layers import LAYERS, ActivationLayer, Layer
from reference.checks_components import random_activation
from reference.checks_products import Cube, dense_case
from reference.layer_cases import LAYER_NAMES, layer_case
from reference.products import product_comparisons

seeds = st.integers(0, 2**31 - 1)
PRODUCTS = ("input_vjp", "param_vjp", "input_jvp", "param_jvp", "residual")


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_every_layer_class_declares_its_products(name):
    """A layer class needs its three product IDs, registered (so each has a derivation, an
    implementation naming it and a test naming it: tests/test_equation_registry.py), and
    its own implementation of every product it can have."""
    cls = next(c for c in LAYERS.classes() if c.__name__ == name)
    if cls.products_refusal is not None:  # a declared gap: every product refuses, saying why
        layer, x = layer_case(name, np.random.default_rng(0))
        _, cache = layer.forward(x)
        with pytest.raises(NotImplementedError, match="cross-attention"):
            layer.input_vjp(cache, np.ones((1, *layer.forward(x)[0].shape)))
        return
    kinds = sorted(e.rsplit(".", 1)[1] for e in cls.product_equations)
    assert kinds == ["jvp", "residual", "vjp"], f"{name}.product_equations: {cls.product_equations}"
    for equation in cls.product_equations:
        assert equation in EQUATIONS, f"{name}: {equation} is not registered"
    for product in PRODUCTS:
        if product in ("param_vjp", "param_jvp") and not _has_parameters(cls):
            continue
        if product in ("input_vjp", "input_jvp") and cls.index_input:
            continue
        if product == "residual" and cls.hessian_is_zero:
            continue
        inherited = getattr(cls, product) is getattr(Layer, product)
        assert not inherited, f"{name} inherits Layer.{product}, which only raises"


def _has_parameters(cls: type) -> bool:
    layer, _ = layer_case(cls.__name__, np.random.default_rng(0))
    return bool(layer.params)


def _check(layer: Layer, x: np.ndarray, seed: int) -> None:
    for comparison in product_comparisons(layer, x, np.random.default_rng(seed)):
        comparison.check()


@given(seed=seeds)
@settings(max_examples=12, deadline=None)
def test_dense_products_match_torch_func(seed):
    """PROD.dense.vjp, PROD.dense.jvp, PROD.dense.residual: every product of a dense layer
    on (N, D) and (N, T, D) inputs, with and without bias, against torch.func."""
    layer, x = dense_case(np.random.default_rng(seed))
    _check(layer, x, seed)


@given(seed=seeds)
@settings(max_examples=8, deadline=None)
def test_dense_products_in_the_middle_of_stacks(seed):
    """PROD.dense.vjp, PROD.dense.jvp, PROD.dense.residual at the input a random stack
    feeds a dense layer in its middle."""
    layer, x = layer_case("Dense", np.random.default_rng(seed))
    _check(layer, x, seed)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS.names()))
@given(seed=seeds)
@settings(max_examples=4, deadline=None)
def test_activation_products_match_torch_func(name, seed):
    """PROD.activation.vjp, PROD.activation.jvp, PROD.activation.residual for every
    activation of the catalogue (elementwise ones from σ′ and σ″, coupled ones over the
    last axis), on (N, D) and (N, T, D) inputs."""
    rng = np.random.default_rng(seed)
    layer = ActivationLayer(random_activation(rng, name))
    shape = (
        int(rng.integers(1, 4)),
        *(int(k) for k in rng.integers(1, 5, size=rng.integers(1, 3))),
    )
    _check(layer, 2.0 * rng.standard_normal(shape), seed)


@given(seed=seeds)
@settings(max_examples=10, deadline=None)
def test_elementwise_layer_products_from_derivatives(seed):
    """PROD.elementwise: an ElementwiseLayer's five products come from φ′ and φ″ alone
    (``x³``: φ′ = 3x², φ″ = 6x), against torch.func on (N, D) and (N, C, H, W) inputs."""
    rng = np.random.default_rng(seed)
    shape = (
        int(rng.integers(1, 4)),
        *(int(k) for k in rng.integers(1, 4, size=int(rng.integers(1, 4)))),
    )
    _check(Cube(), rng.standard_normal(shape), seed)


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_unguarded_products_skip_every_entry_check(name, monkeypatch):
    """``unguarded`` (the curvature walks' products, on stacks they built themselves) is the
    layer's own method: no shape/dtype check, no finiteness scan — also under the
    unbatched-input wrapper of convolution and pooling layers, which once kept the entry
    check beneath it (an O(size) scan per product: 8 ms of a 213 ms CNN Hutchinson
    estimate). Equal to the checked entry's result."""
    from manual_bp.layers import _entry
    from manual_bp.layers.base import PRODUCTS, unguarded

    layer, x = layer_case(name, np.random.default_rng(0))
    out, cache = layer.forward(x)
    if not isinstance(out, np.ndarray) or not isinstance(x, np.ndarray) or x.dtype.kind != "f":
        return  # index inputs, tuple outputs: the walks take their products as they are
    M = np.random.default_rng(1).standard_normal((2, *out.shape))
    checked = layer.input_vjp(cache, M) if not type(layer).index_input else None
    for product in PRODUCTS:
        assert not getattr(unguarded(layer, product), "_guarded", False), product
    if layer.children() or name.startswith("LPPool"):
        return  # composites: their products call their parts' checked entries

    def refuse(*args, **kwargs):
        raise AssertionError("an entry check ran")

    monkeypatch.setattr(_entry, "_quiet", refuse)
    monkeypatch.setattr(_entry, "check_like", refuse)
    if checked is not None:
        np.testing.assert_array_equal(unguarded(layer, "input_vjp")(cache, M), checked)
