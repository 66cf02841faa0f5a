"""The attention step's per-head products inside the row split (``attention_fast``): with
the split taken (batches large enough for two slices) and both sides of the small-product
edge, the step equals the readable form and torch (float64, random upstream gradients,
causal / key-padding masks), 1 and 2 threads give the same bits, float32 included."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp import _threads
from manual_bp.layers.attention import MultiheadAttention
from tests.fast_step_checks import run_fast as _run
from tests.fast_step_checks import thread_count as _thread_count

seeds = st.integers(0, 2**31 - 1)


def _torch(layer, x, g, padding):
    E, H = layer.embed_dim, layer.num_heads
    mha = torch.nn.MultiheadAttention(E, H, bias=layer.has_bias, batch_first=True).double()
    with torch.no_grad():
        for name, p in mha.named_parameters():
            p.copy_(torch.from_numpy(layer.params[name]))
    xt = torch.from_numpy(x).requires_grad_()
    t = x.shape[1]
    mask = torch.triu(torch.ones(t, t, dtype=torch.bool), 1) if layer.causal else None
    kpm = None if padding is None else torch.from_numpy(padding)
    out, _ = mha(xt, xt, xt, attn_mask=mask, key_padding_mask=kpm, need_weights=False)
    out.backward(torch.from_numpy(g))
    return (
        out.detach().numpy(),
        xt.grad.numpy(),
        {n: p.grad.numpy() for n, p in mha.named_parameters()},
    )


def _layer(rng, E, H, causal, bias, dtype=np.float64):
    layer = MultiheadAttention(
        E, H, bias=bias, batch_first=True, causal=causal, seed=rng, dtype=dtype
    )
    if bias:  # torch initialises them to 0: make them count
        layer.params["in_proj_bias"][...] = rng.standard_normal(3 * E)
        layer.params["out_proj.bias"][...] = rng.standard_normal(E)
    return layer


@settings(max_examples=12, deadline=None)
@given(
    n=st.integers(2, 12),
    t=st.sampled_from([16, 32]),
    heads=st.sampled_from([1, 2, 4]),
    causal=st.booleans(),
    bias=st.booleans(),
    padded=st.booleans(),
    need_dx=st.booleans(),
    seed=seeds,
)
def test_split_products_match_readable_and_torch_and_threads(
    n, t, heads, causal, bias, padded, need_dx, seed
):
    """Shapes around the split's edge (one slice or two: ``row_parts`` of ``H·T²`` rows),
    the per-head products small: fast = readable = torch, 1 and 2 threads bit-identical."""
    rng = np.random.default_rng(seed)
    E = 8 * heads
    layer = _layer(rng, E, heads, causal, bias)
    x, g = rng.standard_normal((n, t, E)), rng.standard_normal((n, t, E))
    padding = None
    if padded:
        padding = rng.random((n, t)) < 0.3
        padding[:, 0] = False  # every query keeps a key (torch's need_weights=False path)
    layer.key_padding_mask = padding
    assert 2 * t * t * (E // heads) < _threads.SMALL_PRODUCT_FLOPS  # the products split
    results = []
    for count in (1, 2):
        with _thread_count(count):
            results.append(_run(layer, x, g, need_dx))
    (out, dx, grads), (out2, dx2, grads2) = results
    assert np.array_equal(out, out2) and (dx is None or np.array_equal(dx, dx2))
    assert all(np.array_equal(grads[k], grads2[k]) for k in grads)
    ref_out, cache = layer.forward(x)
    ref_dx, ref_grads = layer.backward(g, cache)
    t_out, t_dx, t_grads = _torch(layer, x, g, padding)
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(out, t_out, rtol=1e-10, atol=1e-12)
    if need_dx:
        np.testing.assert_allclose(dx, ref_dx, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(dx, t_dx, rtol=1e-10, atol=1e-12)
    else:
        assert dx is None
    for name in layer.params:
        np.testing.assert_allclose(grads[name], ref_grads[name], rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(grads[name], t_grads[name], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "t, d, small",
    [(256, 128, False), (256, 127, True), (512, 32, False), (512, 31, True)],
    ids=["at-edge", "below-edge", "at-edge-2", "below-edge-2"],
)
def test_both_sides_of_the_small_product_edge_match_readable(t, d, small):
    """``2·T²·d`` exactly at :data:`SMALL_PRODUCT_FLOPS` (products whole, for BLAS) and one
    below (products in the split): the same results as the readable form."""
    assert (2 * t * t * d < _threads.SMALL_PRODUCT_FLOPS) is small
    rng = np.random.default_rng(t + d)
    layer = _layer(rng, d, 1, True, True)
    x, g = rng.standard_normal((2, t, d)) * 0.1, rng.standard_normal((2, t, d))
    with _thread_count(2):
        out, dx, grads = _run(layer, x, g)
    ref_out, cache = layer.forward(x)
    ref_dx, ref_grads = layer.backward(g, cache)
    np.testing.assert_allclose(out, ref_out, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-11, atol=1e-12)
    for name in layer.params:
        np.testing.assert_allclose(grads[name], ref_grads[name], rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_benchmark_shape_splits_and_keeps_its_bits(dtype):
    """The transformer benchmark's attention (N 16, T 64, E 128, 4 heads, causal): two slices
    on two threads, the same bits as one thread; float32 stays float32."""
    rng = np.random.default_rng(3)
    layer = _layer(rng, 128, 4, True, True, dtype)
    x = rng.standard_normal((16, 64, 128)).astype(dtype)
    g = rng.standard_normal((16, 64, 128)).astype(dtype)
    results = []
    for count in (1, 2, 1):
        with _thread_count(count):
            if count == 2:
                assert _threads.row_parts(16, 4 * 64 * 64) == 2
            results.append(_run(layer, x, g))
    for other in results[1:]:
        assert np.array_equal(results[0][0], other[0]) and np.array_equal(results[0][1], other[1])
        assert all(np.array_equal(results[0][2][k], other[2][k]) for k in other[2])
    assert results[0][0].dtype == results[0][1].dtype == dtype
