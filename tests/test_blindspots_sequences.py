"""Blind spots of the sequence layers (embedding, recurrent, attention) found by mutation
testing (issue 15, docs/mutation.md; the other layers are in test_blindspots_layers.py):
reprs, error lines, float32 kept, parameters named like torch's.
"""

from __future__ import annotations

import numpy as np
import pytest


# ---------------------------------------------------------------------------- sequences
def test_embedding_errors_name_the_bad_index_and_float32_gradients_stay_float32():
    from manual_bp.layers import Embedding

    layer = Embedding(5, 2, seed=0, dtype=np.float32)
    with pytest.raises(ValueError, match=r"index 7 is outside \[0, 5\)"):
        layer.forward(np.array([[0, 7, 1]]))
    out, cache = layer.forward(np.array([[0, 4, 1]]))
    dx, grads = layer.backward(np.ones_like(out), cache)
    assert dx.dtype == np.float32 and grads["weight"].dtype == np.float32


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_recurrent_layers_have_torch_biases_by_default(kind):
    """torch's recurrent modules have ``bias_ih_l0`` and ``bias_hh_l0`` unless
    ``bias=False``: the same parameter names as ``torch.nn.<kind>(3, 4).state_dict()``."""
    import torch

    from manual_bp import layers

    ours = getattr(layers, kind)(3, 4, seed=0)
    theirs = getattr(torch.nn, kind)(3, 4, batch_first=True)
    assert sorted(ours.params) == sorted(theirs.state_dict())
    assert sorted(getattr(layers, kind)(3, 4, bias=False, seed=0).params) == sorted(
        getattr(torch.nn, kind)(3, 4, bias=False).state_dict()
    )


# ---------------------------------------------------------------------------- attention
def test_attention_repr_and_float32_causal_output():
    from manual_bp.layers import MultiheadAttention

    assert repr(MultiheadAttention(4, 2, bias=False, causal=True)) == (
        "MultiheadAttention(4, 2, bias=False, causal=True)"
    )
    layer = MultiheadAttention(4, 2, causal=True, seed=0, dtype=np.float32)
    x = np.random.default_rng(6).standard_normal((2, 3, 4)).astype(np.float32)
    out, cache = layer.forward(x)
    assert out.dtype == np.float32
    dx, grads = layer.backward(np.ones_like(out), cache)
    assert dx.dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads.values())


def test_mha_mask_has_the_dtype_asked_for():
    """``mha_mask(..., dtype)`` (public: the masks of ``nn.MultiheadAttention`` as one
    additive array): a float32 model gets a float32 mask, not a float64 promotion."""
    from manual_bp.layers.attention import mha_mask

    padding = np.array([[False, True, False]])
    mask = mha_mask(None, padding, True, (1, 2, 3, 3), np.float32)
    assert mask.dtype == np.float32 and mask.shape == (1, 1, 3, 3)
    assert np.isneginf(mask[0, 0, 0, 1:]).all() and mask[0, 0, 2, 0] == 0.0


def test_sequence_layers_reprs_messages_and_float32_parameters():
    from manual_bp.layers import LSTM, Embedding, MultiheadAttention

    assert repr(Embedding(5, 2)) == "Embedding(5, 2)"
    assert repr(Embedding(5, 2, 1)) == "Embedding(5, 2, padding_idx=1)"
    assert repr(LSTM(3, 4)) == "LSTM(3, 4)"
    with pytest.raises(ValueError, match=r"^num_layers must be a positive integer, got 0"):
        LSTM(3, 4, num_layers=0)
    with pytest.raises(ValueError, match=r"takes per-sample sequences \(T, 3\), got .* \(5,\)"):
        LSTM(3, 4).output_shape((5,))
    for layer in (LSTM(3, 4, dtype=np.float32), MultiheadAttention(4, 2, dtype=np.float32)):
        assert all(p.dtype == np.float32 for p in layer.params.values()), layer
    for bad in ((4, True), (4.0, 2), (True, 1)):
        with pytest.raises(ValueError, match="must be a positive integer"):
            MultiheadAttention(*bad)
    layer = MultiheadAttention(4, 2, seed=0)
    x = np.zeros((1, 3, 4))
    with pytest.raises(ValueError, match=r": value has shape \(1, 3, 5\)"):
        layer.attend(x, x, np.zeros((1, 3, 5)))


def test_mha_mask_casts_a_float_mask_to_the_dtype_asked_for():
    from manual_bp.layers.attention import mha_mask

    attn = np.random.default_rng(11).standard_normal((3, 3))  # float64 additive mask
    mask = mha_mask(attn, None, False, (1, 2, 3, 3), np.float32)
    assert mask.dtype == np.float32
    np.testing.assert_array_equal(mask, attn.astype(np.float32))
