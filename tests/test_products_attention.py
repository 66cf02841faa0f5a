"""Multi-head self-attention's products on a V axis (``PROD.multihead-attention.*``).

Every product of :class:`MultiheadAttention` as a layer — input and parameter VJPs (summed
and per sample), input and parameter JVPs, the second-order residual — against
``torch.func`` on ``torch.nn.MultiheadAttention`` (float64, SDPA's math kernel), with the
identities of :mod:`reference.products`. Hypothesis draws the batch, the length (1
included), heads, head width, bias, causal and the layer's ``key_padding_mask`` (none,
boolean with sometimes a sample of pure padding, float with −inf entries).
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.layers.attention import MultiheadAttention
from reference.checks_attention_masks import mha_mask_draw
from reference.compare import Comparison
from reference.layer_cases import layer_case
from reference.products import product_comparisons

seeds = st.integers(0, 2**31 - 1)
PADDING = ("none", "bool", "float")


def _layer(rng, batch, length, heads, head_dim, bias, causal, padding, dtype=np.float64):
    layer = MultiheadAttention(
        heads * head_dim, heads, bias=bias, batch_first=True, causal=causal, seed=rng, dtype=dtype
    )
    layer.key_padding_mask = mha_mask_draw(rng, padding, (batch, length))
    x = rng.standard_normal((batch, length, layer.embed_dim)).astype(dtype)
    return layer, x


@given(
    batch=st.integers(1, 3),
    length=st.integers(1, 5),
    heads=st.integers(1, 3),
    head_dim=st.integers(1, 3),
    bias=st.booleans(),
    causal=st.booleans(),
    padding=st.sampled_from(PADDING),
    seed=seeds,
)
@settings(max_examples=30, deadline=None)
def test_mha_products_match_torch_func(batch, length, heads, head_dim, bias, causal, padding, seed):
    """PROD.multihead-attention.vjp, PROD.multihead-attention.jvp,
    PROD.multihead-attention.residual: every product of self-attention, every option of
    the layer (heads, bias, causal, key_padding_mask), against torch.func."""
    rng = np.random.default_rng(seed)
    layer, x = _layer(rng, batch, length, heads, head_dim, bias, causal, padding)
    for comparison in product_comparisons(layer, x, rng):
        comparison.check()


@given(seed=seeds)
@settings(max_examples=10, deadline=None)
def test_mha_products_in_the_middle_of_stacks(seed):
    """PROD.multihead-attention.* at the input a random sequence stack feeds the layer."""
    rng = np.random.default_rng(seed)
    layer, x = layer_case("MultiheadAttention", rng)
    for comparison in product_comparisons(layer, x, rng):
        comparison.check()


def _products(layer, cache, M, T, T_params, g):
    return {
        "input_vjp": layer.input_vjp(cache, M),
        **{f"param_vjp[{n}]": p for n, p in layer.param_vjp(cache, M).items()},
        **{f"per_sample[{n}]": p for n, p in layer.param_vjp(cache, M, sum_batch=False).items()},
        "input_jvp": layer.input_jvp(cache, T),
        "param_jvp": layer.param_jvp(cache, T_params),
        "residual_input": (residual := layer.residual(cache, g, T, T_params))[0],
        **{f"residual[{n}]": p for n, p in residual[1].items()},
    }


@given(
    length=st.integers(1, 4),
    heads=st.integers(1, 3),
    bias=st.booleans(),
    causal=st.booleans(),
    padding=st.sampled_from(PADDING),
    seed=seeds,
)
@settings(max_examples=10, deadline=None)
def test_mha_products_keep_float32(length, heads, bias, causal, padding, seed):
    """PROD.multihead-attention.*: a float32 layer's products are float32 and agree with
    the same layer in float64 to float32 rounding."""
    rng = np.random.default_rng(seed)
    layer, x = _layer(rng, 2, length, heads, 2, bias, causal, padding, np.float32)
    wide = MultiheadAttention(layer.embed_dim, heads, bias=bias, batch_first=True, causal=causal)
    for name, p in layer.params.items():
        wide.params[name][...] = p
    wide.key_padding_mask = layer.key_padding_mask
    out, cache = layer.forward(x)
    _, cache64 = wide.forward(x.astype(np.float64))
    V = 3
    M, T = (rng.standard_normal((V, *out.shape)).astype(np.float32) for _ in range(2))
    g = rng.standard_normal(out.shape).astype(np.float32)
    T_params = {
        n: rng.standard_normal((V, *p.shape)).astype(np.float32) for n, p in layer.params.items()
    }
    ours = _products(layer, cache, M, T, T_params, g)
    T64 = {n: t.astype(np.float64) for n, t in T_params.items()}
    wide_products = _products(wide, cache64, *(a.astype(np.float64) for a in (M, T)), T64, g)
    for key, value in ours.items():
        assert value.dtype == np.float32, f"{key} is {value.dtype}"
        Comparison("PROD.multihead-attention.vjp", key, value, wide_products[key]).check(
            dtype=np.float32
        )


@given(
    length=st.integers(1, 4),
    heads=st.integers(1, 2),
    causal=st.booleans(),
    seed=seeds,
)
@settings(max_examples=10, deadline=None)
def test_mha_products_of_a_sample_of_pure_padding(length, heads, causal, seed):
    """PROD.multihead-attention.vjp, .jvp, .residual: a sample whose keys are all padding
    attends to nothing (out = out_proj.bias): every weight is exactly 0 and has no
    derivative, so its input products and residual are exactly 0, its output tangent is
    T_bo alone, and its share of every parameter VJP but the output bias's is 0."""
    rng = np.random.default_rng(seed)
    layer, x = _layer(rng, 2, length, heads, 2, True, causal, "none")
    padding = rng.random((2, length)) < 0.4
    padding[0] = True  # sample 0: pure padding
    layer.key_padding_mask = padding
    out, cache = layer.forward(x)
    V = 2
    M, T = rng.standard_normal((V, *out.shape)), rng.standard_normal((V, *x.shape))
    T_params = {n: rng.standard_normal((V, *p.shape)) for n, p in layer.params.items()}
    g = rng.standard_normal(out.shape)
    assert not layer.input_vjp(cache, M)[:, 0].any()
    assert not layer.input_jvp(cache, T)[:, 0].any()
    bias_only = np.broadcast_to(T_params["out_proj.bias"][:, None], (V, length, layer.embed_dim))
    np.testing.assert_array_equal(layer.param_jvp(cache, T_params)[:, 0], bias_only)
    shares = layer.param_vjp(cache, M, sum_batch=False)
    for name in ("in_proj_weight", "in_proj_bias", "out_proj.weight"):
        assert not shares[name][:, 0].any(), name
    r_x, _ = layer.residual(cache, g, T, T_params)
    assert not r_x[:, 0].any()
