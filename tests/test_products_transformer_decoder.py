"""The decoder family's V-axis products (``PROD.transformer.*``, ``TF.cross-products``).

``TransformerDecoderLayer``, ``TransformerDecoder`` and ``Transformer`` have two inputs; their
products are taken with respect to the pair when both are given, the one input when the
second is the input itself, the first alone when the second is the layer's attribute
(``docs/transformer.md#PROD.transformer.residual``). Each is checked against ``torch.func``
over torch's own modules in float64 with random vectors, with the adjoint, per-sample and
symmetry identities (:mod:`reference.checks_transformer_products`), in the middle of random
stacks, and at the edges (one target row, one memory row, one admissible key).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.layers import Transformer, TransformerDecoder, TransformerDecoderLayer
from reference.checks_transformer import draw_layer, torch_transformer_call
from reference.checks_transformer_products import (
    DECODERS,
    FORMS,
    cross_products_check,
    decoder_product_comparisons,
)
from reference.layer_cases import layer_case
from reference.products import product_comparisons

seeds = st.integers(0, 2**31 - 1)


def _check_all(comparisons) -> None:
    assert comparisons
    for comparison in comparisons:
        comparison.check()


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("cls", DECODERS, ids=lambda c: c.__name__)
@given(seed=seeds)
@settings(max_examples=2, deadline=None)
def test_decoder_products_match_torch_func(cls, form, seed):
    """PROD.transformer.vjp, PROD.transformer.jvp, PROD.transformer.residual of a decoder
    layer, a decoder stack and a Transformer with both inputs given (pairs of tangents and
    cotangents), one input used as both, or the second a constant attribute; options,
    masks (bool, float, key padding), layouts and unbatched inputs drawn; against
    torch.func, with the adjoint, per-sample and symmetry identities."""
    _check_all(decoder_product_comparisons(np.random.default_rng(seed), cls, form))


@given(seed=seeds)
@settings(max_examples=3, deadline=None)
def test_memory_products_match_torch_func(seed):
    """TF.cross-products: the memory's input VJP, JVP and residual of a decoder layer or
    stack (the cross-attention's key and value paths, summed over the layers), with its
    memory given, against torch.func; the comparisons under TF.cross-products are there."""
    found = cross_products_check(np.random.default_rng(seed))
    assert any(c.equation == "TF.cross-products" for c in found)
    _check_all(found)


@pytest.mark.parametrize("name", [c.__name__ for c in DECODERS])
@given(seed=seeds)
@settings(max_examples=1, deadline=None)
def test_decoder_products_in_the_middle_of_stacks(name, seed):
    """PROD.transformer.vjp, PROD.transformer.jvp, PROD.transformer.residual at the input
    a random sequence stack feeds the layer (its one-input form: memory = input)."""
    layer, x = layer_case(name, np.random.default_rng(seed))
    _check_all(product_comparisons(layer, x, np.random.default_rng(seed)))


def _edge_case(cls, rng, L, S, padding_kept):
    layer = draw_layer(rng, cls, d_model=2, batch_first=True)
    tgt, memory = rng.standard_normal((2, L, 2)), rng.standard_normal((2, S, 2))
    kwargs = {}
    if padding_kept is not None:  # every memory key padded but one
        mask = np.ones((2, S), bool)
        mask[:, padding_kept] = False
        kwargs["src_key_padding_mask" if cls is Transformer else "memory_key_padding_mask"] = mask
    inputs = (memory, tgt) if cls is Transformer else (tgt, memory)

    def oracle(params, a, b):
        import torch

        masks = {k: torch.tensor(v) for k, v in kwargs.items()}
        return torch_transformer_call(layer, params, a, b, **masks)

    return layer, inputs, kwargs, oracle


EDGES = [(1, 1, None), (1, 3, None), (3, 1, None), (2, 3, 0), (2, 3, 2)]


@pytest.mark.parametrize(
    ("cls", "L", "S", "kept"),
    [(cls, *edge) for cls in (TransformerDecoderLayer, TransformerDecoder) for edge in EDGES]
    + [(Transformer, *EDGES[0]), (Transformer, *EDGES[4])],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
def test_decoder_products_at_the_edges(cls, L, S, kept):
    """PROD.transformer.vjp, PROD.transformer.jvp, PROD.transformer.residual and
    TF.cross-products at one target row, one memory row, and a memory padded down to one
    admissible key (its first or its last), against torch.func."""
    rng = np.random.default_rng(L * 100 + S * 10 + (kept or 0))
    layer, inputs, kwargs, oracle = _edge_case(cls, rng, L, S, kept)
    _check_all(product_comparisons(layer, inputs, rng, kwargs=kwargs, oracle=oracle))


def test_products_refuse_attention_dropout_in_training():
    """PROD.transformer.vjp: dropout on the attention weights in training has no products
    (they are taken in eval mode): one line naming it; in eval mode they exist."""
    rng = np.random.default_rng(0)
    layer = draw_layer(rng, TransformerDecoderLayer, d_model=4, dropout=0.5, batch_first=True)
    tgt, memory = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 2, 4))
    out, cache = layer.forward(tgt, memory)
    with pytest.raises(NotImplementedError, match="dropout in training"):
        layer.input_vjp(cache, out[None])
    layer.eval()
    out, cache = layer.forward(tgt, memory)
    d_tgt, d_memory = layer.input_vjp(cache, out[None])
    assert d_tgt.shape == (1, *tgt.shape) and d_memory.shape == (1, *memory.shape)


@pytest.mark.parametrize("cls", [TransformerDecoder, Transformer], ids=lambda c: c.__name__)
def test_backward_equals_the_products_at_one_vector(cls):
    """PROD.transformer.vjp at V = 1 is backward for both inputs, including the memory's
    sum over every decoder layer (two layers each side)."""
    rng = np.random.default_rng(1)
    layer = draw_layer(rng, TransformerDecoderLayer, d_model=4, batch_first=True)
    if cls is TransformerDecoder:
        layer = TransformerDecoder(layer, 2, seed=3)
    else:
        layer = Transformer(4, 2, 2, 2, dim_feedforward=5, dropout=0.0, batch_first=True, seed=3)
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4))
    out, cache = layer.forward(a, b)
    dout = rng.standard_normal(out.shape)
    (d_a, d_b), grads = layer.backward(dout, cache)
    v_a, v_b = layer.input_vjp(cache, dout[None])
    np.testing.assert_allclose(v_a[0], d_a, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(v_b[0], d_b, rtol=1e-12, atol=1e-12)
    for name, g in layer.param_vjp(cache, dout[None]).items():
        np.testing.assert_allclose(g[0], grads[name], rtol=1e-12, atol=1e-12)
