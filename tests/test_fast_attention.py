"""The fused self-attention step (``ATT.mha``, ``ATT.sdpa``, ``ATT.softmax``) against the
readable form and torch's ``nn.MultiheadAttention`` (float64, random upstream gradients),
with and without causal mask, biases and a key-padding mask; 1 vs 2 threads bit-identical;
float32 in, float32 buffers out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from manual_bp.layers.attention import MultiheadAttention
from tests.fast_step_checks import across_threads, assert_same_bits
from tests.fast_step_checks import run_fast as _run_step


def _torch_mha(layer, x, g, padding):
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
    grads = {name: p.grad.numpy() for name, p in mha.named_parameters()}
    return out.detach().numpy(), xt.grad.numpy(), grads


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("padded", [False, True])
def test_fast_attention_matches_readable_and_torch(causal, bias, padded):
    rng = np.random.default_rng(7)
    layer = MultiheadAttention(24, 3, bias=bias, batch_first=True, causal=causal, seed=1)
    if bias:  # torch initialises them to 0: make them count
        layer.params["in_proj_bias"][...] = rng.standard_normal(72)
        layer.params["out_proj.bias"][...] = rng.standard_normal(24)
    x = rng.standard_normal((5, 9, 24))
    g = rng.standard_normal((5, 9, 24))
    padding = None
    if padded:
        padding = rng.random((5, 9)) < 0.3
        padding[:, 0] = False  # every query keeps a key (torch's need_weights=False path)
    layer.key_padding_mask = padding
    out, dx, grads = _run_step(layer, x, g)
    ref_out, cache = layer.forward(x)
    ref_dx, ref_grads = layer.backward(g, cache)
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-12, atol=1e-13)
    for name in layer.params:
        np.testing.assert_allclose(grads[name], ref_grads[name], rtol=1e-12, atol=1e-13)
    t_out, t_dx, t_grads = _torch_mha(layer, x, g, padding)
    np.testing.assert_allclose(out, t_out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, t_dx, rtol=1e-10, atol=1e-12)
    for name in layer.params:
        np.testing.assert_allclose(grads[name], t_grads[name], rtol=1e-10, atol=1e-12)
    _, none, grads2 = _run_step(layer, x, g, need_dx=False)
    assert none is None
    assert all(np.array_equal(grads2[k], grads[k]) for k in grads)


def test_fast_attention_fully_masked_query_attends_to_nothing():
    layer = MultiheadAttention(8, 2, batch_first=True, seed=0)
    rng = np.random.default_rng(0)
    x, g = rng.standard_normal((2, 4, 8)), rng.standard_normal((2, 4, 8))
    layer.key_padding_mask = np.ones((2, 4), bool)
    layer.key_padding_mask[1, :2] = False  # sample 0: no key at all
    out, dx, grads = _run_step(layer, x, g)
    ref_out, cache = layer.forward(x)
    ref_dx, ref_grads = layer.backward(g, cache)
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-12, atol=1e-13)
    assert np.all(np.isfinite(dx))
    for name in layer.params:
        np.testing.assert_allclose(grads[name], ref_grads[name], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_attention_threads_bit_identical_and_dtype(dtype):
    """Large enough for parallel_rows to split the batch (8 samples × 4·64·64 scores)."""
    layer = MultiheadAttention(64, 4, batch_first=True, causal=True, seed=2, dtype=dtype)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 64, 64)).astype(dtype)
    g = rng.standard_normal((8, 64, 64)).astype(dtype)
    first, second = across_threads(lambda: _run_step(layer, x, g))
    o1, d1, _ = first
    assert o1.dtype == dtype and d1.dtype == dtype
    assert all(v.dtype == dtype for v in layer.fast_step()._make(x))
    assert_same_bits(first, second)
    ref_out, _ = layer.forward(x)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(o1, ref_out, rtol=tol, atol=tol)


@pytest.mark.parametrize(
    "options",
    [{}, {"batch_first": True, "dropout": 0.1}, {"batch_first": True, "add_bias_kv": True},
     {"batch_first": True, "add_zero_attn": True}],
)  # fmt: skip
def test_fast_step_only_for_the_measured_configuration(options):
    """The fused step covers batch-first, packed, no extra keys, no dropout (the benchmark's);
    time-major (torch's default), dropout and extra keys train through the readable form,
    whose step gives the readable gradients."""
    from manual_bp.layers.attention_fast import AttentionStep
    from manual_bp.layers.steps import GenericStep

    assert isinstance(MultiheadAttention(8, 2, batch_first=True).fast_step(), AttentionStep)
    layer = MultiheadAttention(8, 2, seed=0, **options).eval()
    assert isinstance(layer.fast_step(), GenericStep)
    rng = np.random.default_rng(0)
    x, g = rng.standard_normal((3, 4, 8)), rng.standard_normal((3, 4, 8))
    out, dx, grads = _run_step(layer, x, g)
    ref_out, cache = layer.forward(x)
    ref_dx, ref_grads = layer.backward(g, cache)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(dx, ref_dx)
    for name in layer.params:
        np.testing.assert_array_equal(grads[name], ref_grads[name])
