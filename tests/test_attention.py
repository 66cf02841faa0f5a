"""ATT.softmax, ATT.sdpa, ATT.mha against torch in float64, finite differences, random stacks.

Hypothesis draws batch axes, query/key lengths (1 included), head sizes, heads, bias,
mask kind (none, boolean, float), causal, scale (default 1/√d or explicit) and
self- versus cross-attention; upstream gradients are random.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.layers.attention import (
    MultiheadAttention,
    scaled_dot_product_attention,
    sdpa_backward,
)
from manual_bp.models.sequential import Sequential
from reference.checks_attention import (
    attention_fd_check,
    attention_stack_check,
    mha_case,
    sdpa_adjoint_check,
    sdpa_case,
)
from reference.checks_attention_masks import attention_self_stack_check, mha_mask_case

seeds = st.integers(0, 2**31 - 1)
masks = st.sampled_from(("none", "bool", "float"))


@given(
    batch=st.lists(st.integers(1, 3), max_size=2).map(tuple),
    L=st.integers(1, 5),
    S=st.integers(1, 5),
    d=st.integers(1, 5),
    dv=st.integers(1, 5),
    mask_kind=masks,
    causal=st.booleans(),
    scale=st.none() | st.floats(0.1, 2.0),
    seed=seeds,
)
def test_sdpa_matches_torch(batch, L, S, d, dv, mask_kind, causal, scale, seed):
    """ATT.sdpa (∂q, ∂k, ∂v; 1/√d scale, masks) and ATT.softmax vs torch's SDPA."""
    for comparison in sdpa_case(batch, L, S, d, dv, mask_kind, causal, scale, seed):
        comparison.check()


@given(
    batch=st.integers(1, 3),
    L=st.integers(1, 5),
    S=st.integers(1, 5),
    heads=st.integers(1, 3),
    head_dim=st.integers(1, 3),
    bias=st.booleans(),
    causal=st.booleans(),
    mask_kind=masks,
    self_attention=st.booleans(),
    seed=seeds,
)
def test_mha_matches_torch(
    batch, L, S, heads, head_dim, bias, causal, mask_kind, self_attention, seed
):
    """ATT.mha: q, k, v gradients and every packed parameter gradient vs torch."""
    comparisons = mha_case(
        batch, L, S, heads, head_dim, bias, causal, mask_kind, self_attention, seed
    )
    for comparison in comparisons:
        comparison.check()


@settings(max_examples=10)
@given(seeds)
def test_mha_matches_finite_differences(seed):
    """ATT.mha (and through it ATT.sdpa) against central differences."""
    for comparison in attention_fd_check(np.random.default_rng(seed)):
        comparison.check()


@settings(max_examples=10)  # ~0.5 s a case; also run by `verify`
@given(seeds)
def test_mha_in_random_stacks(seed):
    """ATT.mha self-attention in the middle of random sequence stacks (with LSTM/GRU)."""
    for comparison in attention_stack_check(np.random.default_rng(seed)):
        comparison.check()


def test_parameters_and_init_match_torch():
    ours = MultiheadAttention(6, 2, batch_first=True, seed=0)
    theirs = torch.nn.MultiheadAttention(6, 2, batch_first=True)
    assert [(k, v.shape) for k, v in ours.params.items()] == [
        (k, tuple(v.shape)) for k, v in theirs.state_dict().items()
    ]
    assert not ours.params["in_proj_bias"].any() and not ours.params["out_proj.bias"].any()
    assert np.abs(ours.params["in_proj_weight"]).max() <= np.sqrt(6 / 24)
    assert np.abs(ours.params["out_proj.weight"]).max() <= 1 / np.sqrt(6)
    model = Sequential.from_spec([("mha", (3,), {"causal": True}), "dense"], (4, 6), n_outputs=2)
    assert model.layers[0].embed_dim == 6 and model.layers[0].causal
    assert [n for n, _ in model.named_parameters()][:2] == ["0.in_proj_weight", "0.in_proj_bias"]


def test_causal_and_masks_agree():
    """ATT.sdpa: causal equals a lower-triangular boolean mask; a float −inf mask likewise."""
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 4, 3)) for _ in range(3))
    tri = np.tri(4, dtype=bool)
    causal, _ = scaled_dot_product_attention(q, k, v, causal=True)
    boolean, _ = scaled_dot_product_attention(q, k, v, tri)
    additive, _ = scaled_dot_product_attention(q, k, v, np.where(tri, 0.0, -np.inf))
    np.testing.assert_array_equal(causal, boolean)
    np.testing.assert_array_equal(causal, additive)
    assert np.allclose(causal[:, 0], v[:, 0])  # the first query sees only the first key


def test_masked_keys_get_no_gradient():
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((1, 3, 2)) for _ in range(3))
    mask = np.array([[True, False, True]] * 3)
    _, cache = scaled_dot_product_attention(q, k, v, mask)
    _, d_k, d_v = sdpa_backward(rng.standard_normal((1, 3, 2)), cache)
    assert not d_k[0, 1].any() and not d_v[0, 1].any()


def test_bad_inputs():
    x = np.zeros((1, 2, 3))
    with pytest.raises(ValueError, match="nan or \\+inf"):
        scaled_dot_product_attention(x, x, x, np.full((2, 2), np.inf))
    with pytest.raises(TypeError, match="boolean or float"):
        scaled_dot_product_attention(x, x, x, np.zeros((2, 2), int))
    with pytest.raises(ValueError, match="last axes must be"):
        scaled_dot_product_attention(x, x, x, np.ones((2, 3), bool))
    with pytest.raises(ValueError, match="do not fit"):
        scaled_dot_product_attention(x, np.zeros((1, 2, 4)), x)
    with pytest.raises(ValueError, match="not divisible"):
        MultiheadAttention(5, 2)
    layer = MultiheadAttention(4, 2, batch_first=True)
    with pytest.raises(ValueError, match="last axes must be"):
        layer.forward(np.zeros((1, 2, 3)))
    _, cache = layer.forward(np.zeros((1, 2, 4)))
    with pytest.raises(ValueError, match="d_out has shape"):
        layer.backward(np.zeros((1, 3, 4)), cache)


@given(seeds)
def test_sdpa_adjoint(seed):
    """ATT.sdpa: the VJP is the adjoint of the forward-mode derivative, ⟨u, J v⟩ = ⟨Jᵀu, v⟩."""
    for comparison in sdpa_adjoint_check(np.random.default_rng(seed)):
        comparison.check()


@settings(max_examples=40)
@given(
    batch=st.integers(1, 3),
    L=st.integers(1, 5),
    S=st.integers(1, 5),
    heads=st.integers(1, 3),
    head_dim=st.integers(1, 3),
    bias=st.booleans(),
    causal=st.booleans(),
    attn_kind=masks,
    attn_3d=st.booleans(),
    padding_kind=st.sampled_from(("bool", "float")),
    self_attention=st.booleans(),
    seed=seeds,
)
def test_mha_masks_match_torch_module(
    batch, L, S, heads, head_dim, bias, causal, attn_kind, attn_3d, padding_kind,
    self_attention, seed,
):  # fmt: skip
    """ATT.mha: key_padding_mask (bool/float) with attn_mask (none/bool/float, (L, S) or
    (N·heads, L, S)) and causal, against torch.nn.MultiheadAttention, every gradient."""
    comparisons = mha_mask_case(
        batch, L, S, heads, head_dim, bias, causal, attn_kind, attn_3d, padding_kind,
        self_attention, seed,
    )  # fmt: skip
    for comparison in comparisons:
        comparison.check()


@settings(max_examples=25)  # ~0.25 s a case; also run by `verify`
@given(seeds)
def test_mha_self_attention_input_gradient_in_stack(seed):
    """ATT.mha as a layer: ∂C/∂x = ∂C/∂query + ∂C/∂key + ∂C/∂value (x feeds all three),
    checked through the dense layer below it and ∂C/∂x, with a key_padding_mask set."""
    comparisons = attention_self_stack_check(np.random.default_rng(seed))
    assert "∂C/∂x" in {c.name for c in comparisons}
    for comparison in comparisons:
        comparison.check()


def test_fully_masked_query_attends_to_nothing_as_torch_sdpa():
    """ATT.sdpa / ATT.mha: a query with no admissible key gets weights 0 — output 0 before
    out_proj, no gradient — as F.scaled_dot_product_attention and nn.MultiheadAttention
    (need_weights=False) in torch 2.x; the textbook softmax (need_weights=True) gives nan."""
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 2, 3)) for _ in range(3))
    out, cache = scaled_dot_product_attention(q, k, v, np.array([[True, True], [False, False]]))
    assert not out[0, 1].any() and out[0, 0].any() and not cache.weights[0, 1].any()
    d_q, _, _ = sdpa_backward(rng.standard_normal(out.shape), cache)
    assert not d_q[0, 1].any()
    layer = MultiheadAttention(4, 2, batch_first=True, seed=0)
    layer.params["out_proj.bias"][...] = rng.standard_normal(4)
    x = rng.standard_normal((3, 2, 4))
    padding = np.array([[False, True], [True, True], [False, False]])
    out, cache = layer.attend(x, x, x, key_padding_mask=padding)
    np.testing.assert_array_equal(out[1], np.broadcast_to(layer.params["out_proj.bias"], (2, 4)))
    module = torch.nn.MultiheadAttention(4, 2, batch_first=True, dtype=torch.float64)
    module.load_state_dict({n: torch.tensor(p) for n, p in layer.params.items()})
    xt, mask = torch.tensor(x), torch.tensor(padding)
    fast, _ = module(xt, xt, xt, key_padding_mask=mask, need_weights=False)
    np.testing.assert_allclose(out, fast.detach().numpy(), rtol=1e-13, atol=1e-15)
    textbook, _ = module(xt, xt, xt, key_padding_mask=mask, need_weights=True)
    assert torch.isnan(textbook[1]).all() and not torch.isnan(textbook[0]).any()
    d_inputs, _ = layer.backward(rng.standard_normal(x.shape), cache)  # key, value given
    dx = sum(d_inputs)  # x fed the query, the key and the value
    assert not dx[1].any()  # entry 1 reaches the cost only through out_proj.bias
    with pytest.raises(ValueError, match=r"key_padding_mask has shape \(3, 3\)"):
        layer.attend(x, x, x, key_padding_mask=np.zeros((3, 3), bool))
    with pytest.raises(TypeError, match="key_padding_mask must be boolean or float"):
        layer.attend(x, x, x, key_padding_mask=np.zeros((3, 2), int))
    with pytest.raises(ValueError, match=r"attn_mask has shape \(5, 2, 2\)"):
        layer.attend(x, x, x, attn_mask=np.zeros((5, 2, 2), bool))
    with pytest.raises(ValueError, match="nan or \\+inf"):
        layer.attend(x, x, x, attn_mask=np.full((2, 2), np.nan))
