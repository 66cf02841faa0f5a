"""The Transformer family against torch's modules (``docs/transformer.md``).

torch's ``nn.Transformer*`` modules in float64 are the oracle, called with the library's
parameters (same names), random upstream gradients, drawn options (pre/post-norm,
relu/gelu/tanh-GELU, bias, eps, both layouts and unbatched inputs, bool/float/padding masks);
central finite differences with dropout in training (the layer's own masks replayed).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.layers import (
    Transformer,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)
from reference.checks_transformer import (
    draw_layer,
    torch_comparisons,
    transformer_case,
    transformer_chain_check,
    transformer_products_check,
)

seeds = st.integers(0, 2**31 - 1)


def _check_all(comparisons) -> None:
    assert comparisons
    for comparison in comparisons:
        comparison.check()


@given(seed=seeds)
@settings(max_examples=25, deadline=None)
def test_encoder_layer_matches_torch(seed):
    """TF.encoder-layer: output, ∂src and every parameter gradient equal torch's module's."""
    rng = np.random.default_rng(seed)
    layer = draw_layer(rng, TransformerEncoderLayer)
    _check_all(torch_comparisons(layer, transformer_case(layer, rng), rng, "TF.encoder-layer"))


@given(seed=seeds)
@settings(max_examples=25, deadline=None)
def test_decoder_layer_matches_torch(seed):
    """TF.decoder-layer: output, ∂tgt, ∂memory and every parameter gradient equal torch's."""
    rng = np.random.default_rng(seed)
    layer = draw_layer(rng, TransformerDecoderLayer)
    _check_all(torch_comparisons(layer, transformer_case(layer, rng), rng, "TF.decoder-layer"))


@pytest.mark.parametrize("cls", [TransformerEncoder, TransformerDecoder, Transformer])
@given(seed=seeds)
@settings(max_examples=10, deadline=None)
def test_stacks_match_torch(cls, seed):
    """TF.encoder, TF.decoder, TF.transformer: the stacks (and the memory's gradient summed
    over the decoder's layers, the encoder's backward started from it) equal torch's."""
    rng = np.random.default_rng(seed)
    layer = draw_layer(rng, cls, d_model=2 * int(rng.integers(1, 4)) + int(rng.integers(2)))
    _check_all(torch_comparisons(layer, transformer_case(layer, rng), rng, layer.equation))


@given(seed=seeds)
@settings(max_examples=10, deadline=None)
def test_the_chain_is_the_composition_of_the_childrens_vjps(seed):
    """TF.layer-chain: the fast form (the blocks' own steps) equals the readable chain, and
    a two-layer encoder in the middle of a random stack equals torch's gradients."""
    _check_all(transformer_chain_check(np.random.default_rng(seed)))


@given(seed=seeds)
@settings(max_examples=10, deadline=None)
def test_transformer_products_match_torch_func(seed):
    """PROD.transformer.vjp, PROD.transformer.jvp, PROD.transformer.residual: every product
    of an encoder layer or stack against torch.func, plus the adjoint identities."""
    _check_all(transformer_products_check(np.random.default_rng(seed)))


@given(seed=seeds)
@settings(max_examples=8, deadline=None)
def test_dropout_in_training_matches_central_differences(seed):
    """TF.encoder-layer and TF.decoder-layer with dropout in training (seeded masks): the
    backward equals central differences of the same masks (a deep copy replays them)."""
    rng = np.random.default_rng(seed)
    cls = (TransformerEncoderLayer, TransformerDecoderLayer)[int(rng.integers(2))]
    layer = draw_layer(rng, cls, d_model=4, dropout=0.3)
    case = transformer_case(layer, rng)
    inputs, kwargs = case["inputs"], case["kwargs"]
    frozen = copy.deepcopy(layer)
    out, cache = layer.forward(*inputs, **kwargs)
    d_out = rng.standard_normal(out.shape)
    d_inputs, _ = layer.backward(d_out, cache)
    d_first = d_inputs[0] if isinstance(d_inputs, tuple) else d_inputs

    def cost(first: np.ndarray) -> float:
        replay = copy.deepcopy(frozen)
        return float(np.sum(replay.forward(first, *inputs[1:], **kwargs)[0] * d_out))

    h = 1e-6
    direction = rng.standard_normal(inputs[0].shape)
    numeric = (cost(inputs[0] + h * direction) - cost(inputs[0] - h * direction)) / (2 * h)
    assert np.isclose(numeric, np.sum(d_first * direction), rtol=1e-6, atol=1e-8)
    same = copy.deepcopy(frozen).forward(*inputs, **kwargs)[0]
    assert np.array_equal(same, out)  # the seeded masks are replayed exactly


def test_torch_names_signature_and_defaults():
    """torch's state-dict names and defaults; bad input names its argument in one line."""
    import inspect

    import torch

    layer = TransformerEncoderLayer(8, 2)
    assert layer.dim_feedforward == 2048 and layer.dropout == 0.1 and not layer.batch_first
    torch_layer = torch.nn.TransformerEncoderLayer(8, 2)
    assert [n for n, _ in layer.named_parameters()] == [
        n for n, _ in torch_layer.named_parameters()
    ]
    for cls in (TransformerEncoderLayer, TransformerDecoderLayer, Transformer):
        ours = inspect.signature(cls).parameters
        theirs = inspect.signature(getattr(torch.nn, cls.__name__)).parameters
        for name, parameter in theirs.items():
            if name in ("activation", "device", "dtype"):
                continue
            assert name in ours, (cls, name)
            assert ours[name].default == parameter.default, (cls, name)
    model = torch.nn.Transformer(8, 2, 1, 1, 16)
    ours = Transformer(8, 2, 1, 1, 16)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in model.named_parameters()]
    with pytest.raises(ValueError, match="src has shape"):
        layer.forward(np.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match="activation"):
        TransformerEncoderLayer(8, 2, activation="tanh")
    with pytest.raises(ValueError, match="is_causal"):
        layer.forward(np.zeros((2, 3, 8)), is_causal=True)
