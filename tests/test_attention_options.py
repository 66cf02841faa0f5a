"""``MultiheadAttention`` with every option of ``torch.nn.MultiheadAttention`` (issue 23).

Equations ``ATT.mha`` (layouts, separate projections, masks, weights), ``ATT.bias-kv``
(``bias_k``/``bias_v`` and the zero key) and ``ATT.dropout`` (dropout on the weights), each
against torch's module itself in float64: the output, the returned weights and the
gradients of every input (query, key, value) and every parameter. Hypothesis draws the
configuration, the layout (time-major, batch-first, unbatched), the sizes and the masks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp import serialization
from manual_bp.layers.attention import MultiheadAttention
from manual_bp.layers.steps import GenericStep
from manual_bp.models.sequential import Sequential

seeds = st.integers(0, 2**31 - 1)


def _torch_twin(layer: MultiheadAttention, kwargs: dict) -> torch.nn.MultiheadAttention:
    module = torch.nn.MultiheadAttention(**kwargs, dtype=torch.float64).train(layer.training)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.from_numpy(layer.params[name]))
    return module


def _mask(rng, kind: str, shape: tuple[int, ...]):
    if kind == "none":
        return None
    keep = rng.random(shape) < 0.7
    keep[..., 0] = True  # every query keeps a key: torch's weights path is finite
    if kind == "bool":
        return ~keep
    return np.where(keep, rng.standard_normal(shape), -np.inf)


def _compare(ours, theirs, rtol=1e-11):
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=1e-12)


@given(
    heads=st.integers(1, 3),
    head_dim=st.integers(1, 3),
    kdim=st.sampled_from([None, 2, 5]),
    vdim=st.sampled_from([None, 3]),
    bias=st.booleans(),
    add_bias_kv=st.booleans(),
    add_zero_attn=st.booleans(),
    layout=st.sampled_from(["time-major", "batch-first", "unbatched"]),
    attn_kind=st.sampled_from(["none", "bool", "float"]),
    attn_3d=st.booleans(),
    padding_kind=st.sampled_from(["none", "bool", "float"]),
    average=st.booleans(),
    seed=seeds,
)
@settings(max_examples=60, deadline=None)
def test_every_option_matches_torch_module(
    heads, head_dim, kdim, vdim, bias, add_bias_kv, add_zero_attn, layout, attn_kind, attn_3d,
    padding_kind, average, seed,
):  # fmt: skip
    """ATT.mha, ATT.bias-kv: output, weights (averaged or per head), ∂query, ∂key, ∂value
    and every parameter gradient against ``nn.MultiheadAttention`` with the same options."""
    rng = np.random.default_rng(seed)
    E = heads * head_dim
    kwargs = dict(embed_dim=E, num_heads=heads, bias=bias, add_bias_kv=add_bias_kv,
                  add_zero_attn=add_zero_attn, kdim=kdim, vdim=vdim,
                  batch_first=layout == "batch-first")  # fmt: skip
    layer = MultiheadAttention(**kwargs, seed=seed)
    for p in layer.params.values():  # biases start at 0 in torch: make every one count
        p[...] = rng.standard_normal(p.shape)
    module = _torch_twin(layer, kwargs)
    N, L, S = int(rng.integers(1, 4)), int(rng.integers(1, 5)), int(rng.integers(1, 5))
    K, V = layer.kdim, layer.vdim

    def shaped(length, width):
        if layout == "unbatched":
            return rng.standard_normal((length, width))
        if layout == "batch-first":
            return rng.standard_normal((N, length, width))
        return rng.standard_normal((length, N, width))

    q, k, v = shaped(L, E), shaped(S, K), shaped(S, V)
    n = 1 if layout == "unbatched" else N
    attn = _mask(rng, attn_kind, (n * heads, L, S) if attn_3d else (L, S))
    padding = _mask(rng, padding_kind, (S,) if layout == "unbatched" else (N, S))
    if attn is not None and padding is not None and attn.dtype != padding.dtype:
        padding = None  # torch refuses a bool and a float mask together
    options = dict(key_padding_mask=padding, attn_mask=attn, average_attn_weights=average)
    out, cache = layer.forward(q, k, v, **options)
    g = rng.standard_normal(out.shape)
    (d_q, d_k, d_v), grads = layer.backward(g, cache)
    qt, kt, vt = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    t_options = {key: None if m is None else torch.tensor(m) for key, m in options.items()
                 if key != "average_attn_weights"}  # fmt: skip
    t_out, t_weights = module(qt, kt, vt, **t_options, average_attn_weights=average)
    t_out.backward(torch.tensor(g))
    _compare(out, t_out.detach().numpy())
    _compare(cache.weights, t_weights.detach().numpy())
    _compare(layer(q, k, v, **options)[1], t_weights.detach().numpy())  # torch's __call__
    for ours, theirs in ((d_q, qt), (d_k, kt), (d_v, vt)):
        _compare(ours, theirs.grad.numpy())
    for name, p in module.named_parameters():
        _compare(grads[name], p.grad.numpy())


def test_defaults_state_dict_and_init_are_torch_s():
    """ATT.mha: torch's defaults (time-major), parameter names and shapes in torch's order,
    and torch's initialisation bounds for every option."""
    layer = MultiheadAttention(6, 2, add_bias_kv=True, kdim=4, vdim=5, seed=0)
    module = torch.nn.MultiheadAttention(6, 2, add_bias_kv=True, kdim=4, vdim=5)
    assert not layer.batch_first and layer.dropout == 0.0
    assert [(n, p.shape) for n, p in layer.params.items()] == [
        (n, tuple(p.shape)) for n, p in module.named_parameters()
    ]
    assert np.abs(layer.params["k_proj_weight"]).max() <= np.sqrt(6 / 10)
    assert layer.params["bias_k"].std() > 0
    x = np.random.default_rng(0).standard_normal((3, 2, 6))  # (L, N, E): time-major
    out, _ = layer.forward(x, x[..., :4], x[..., :5])
    assert out.shape == (3, 2, 6)
    batch_first = MultiheadAttention(6, 2, batch_first=True, seed=0)
    time_major = MultiheadAttention(6, 2, seed=0)
    np.testing.assert_array_equal(
        batch_first.forward(x.transpose(1, 0, 2))[0], time_major.forward(x)[0].transpose(1, 0, 2)
    )


def test_dropout_on_weights_is_seeded_and_matches_its_mask():
    """ATT.dropout: P̃ = P ⊙ keep/(1 − p) in training — reproducible from the seed, the
    weights returned after dropout as torch's — identity in eval (torch's output exactly);
    the gradients through the mask against torch's autograd on the same mask."""
    rng = np.random.default_rng(3)
    kwargs = dict(embed_dim=4, num_heads=2, dropout=0.4)
    layer = MultiheadAttention(**kwargs, seed=1)
    x = rng.standard_normal((3, 2, 4))
    out, cache = layer.forward(x, x, x)
    keep = cache.attention.keep
    assert keep is not None and set(np.unique(keep)) <= {0.0, 1 / 0.6}
    again = MultiheadAttention(**kwargs, seed=1)
    np.testing.assert_array_equal(again.forward(x, x, x)[0], out)
    np.testing.assert_array_equal(cache.weights, cache.attention.dropped.mean(axis=1))
    # torch's own weights path with our mask: P from torch's module in eval, then ⊙ keep
    module = _torch_twin(layer.eval(), kwargs)
    xt = torch.tensor(x, requires_grad=True)
    W, b = module.in_proj_weight, module.in_proj_bias
    qkv = (xt.transpose(0, 1) @ W.T + b).chunk(3, dim=-1)
    q, k, v = (a.reshape(2, 3, 2, 2).transpose(1, 2) for a in qkv)
    P = torch.softmax(q @ k.transpose(-1, -2) / np.sqrt(2), dim=-1) * torch.tensor(keep)
    t_out = (P @ v).transpose(1, 2).reshape(2, 3, 4) @ module.out_proj.weight.T
    t_out = (t_out + module.out_proj.bias).transpose(0, 1)
    g = rng.standard_normal(out.shape)
    t_out.backward(torch.tensor(g))
    layer.train()
    _compare(out, t_out.detach().numpy())
    (d_q, d_k, d_v), grads = layer.backward(g, cache)
    _compare(d_q + d_k + d_v, xt.grad.numpy())
    for name, p in module.named_parameters():
        _compare(grads[name], p.grad.numpy())
    layer.eval()
    t_eval, _ = module(xt, xt, xt)
    _compare(layer.forward(x, x, x)[0], t_eval.detach().numpy())
    assert layer.forward(x, x, x)[1].attention.keep is None


def test_textbook_nan_with_weights_and_nothing_without_as_torch():
    """ATT.mha: a query left with no key gives NaN when the weights are asked for (torch's
    need_weights=True path) and attends to nothing without them (torch's SDPA path)."""
    layer = MultiheadAttention(4, 2, seed=0)
    module = _torch_twin(layer, dict(embed_dim=4, num_heads=2))
    x = np.random.default_rng(0).standard_normal((3, 4))
    mask = np.zeros((2, 3, 3), bool)
    mask[:, 0] = True
    for need in (True, False):
        out, _ = layer.forward(x, x, x, attn_mask=mask, need_weights=need)
        xt = torch.tensor(x)
        theirs, _ = module(xt, xt, xt, attn_mask=torch.tensor(mask), need_weights=need)
        np.testing.assert_allclose(out, theirs.detach().numpy(), rtol=1e-12, atol=1e-14)
        assert np.isnan(out[0]).all() == need and not np.isnan(out[1:]).any()


def test_zero_size_batch_is_empty_with_zero_parameter_gradients():
    layer = MultiheadAttention(4, 2, add_bias_kv=True, add_zero_attn=True, seed=0)
    x = np.zeros((3, 0, 4))
    out, cache = layer.forward(x, x, x)
    assert out.shape == (3, 0, 4) and cache.weights.shape == (0, 3, 5)
    (d_q, _, _), grads = layer.backward(np.zeros(out.shape), cache)
    assert d_q.shape == x.shape
    assert all(g.shape == layer.params[n].shape and not g.any() for n, g in grads.items())


def test_is_causal_hint_and_bad_forms_refused_in_one_line():
    layer = MultiheadAttention(4, 2, seed=0)
    x = np.zeros((3, 2, 4))
    causal = np.triu(np.ones((3, 3), bool), 1)
    np.testing.assert_array_equal(
        layer.forward(x, x, x, attn_mask=causal, is_causal=True)[0],
        layer.forward(x, x, x, attn_mask=causal)[0],
    )
    with pytest.raises(ValueError, match="is_causal"):
        layer.forward(x, x, x, is_causal=True)
    with pytest.raises(ValueError, match="key has shape"):
        layer.forward(x, np.zeros((3, 4)), x)
    with pytest.raises(ValueError, match="dropout must be in"):
        MultiheadAttention(4, 2, dropout=1.5)
    with pytest.raises(ValueError, match="device="):
        MultiheadAttention(4, 2, device="cuda")
    with pytest.raises(ValueError, match="kdim must be"):
        MultiheadAttention(4, 2, kdim=0)


def test_stack_spec_is_batch_first_and_config_round_trips(tmp_path):
    """ATT.mha: a spec's layer is batch-first (a stack's data is); torch's ``mha(E, heads)``
    spelling too; every option survives save/load, the dropout generator included."""
    model = Sequential.from_spec(
        [("mha", (8, 2), {"dropout": 0.25, "add_bias_kv": True}), "flatten", "dense"],
        (3, 8), n_outputs=2, seed=0,
    )  # fmt: skip
    layer = model.layers[0]
    assert layer.batch_first and layer.num_heads == 2 and layer.add_bias_kv
    with pytest.raises(ValueError, match="batch-first"):
        Sequential.from_spec([("mha", (2,), {"batch_first": False})], (3, 8))
    path = tmp_path / "m.json"
    serialization.save(model, path)
    loaded = serialization.load(path)
    assert loaded.layers[0].get_config() == layer.get_config()
    x = np.random.default_rng(0).standard_normal((2, 3, 8))
    np.testing.assert_array_equal(loaded.layers[0].forward(x)[0], layer.forward(x)[0])
    assert isinstance(layer.fast_step(), GenericStep)  # dropout: the readable form trains


def test_products_in_every_layout_and_refusals():
    """PROD.multihead-attention.vjp: the products take the caller's layout (time-major
    here) and agree with backward; cross-attention and the extra keys are refused."""
    rng = np.random.default_rng(0)
    layer = MultiheadAttention(4, 2, seed=0)
    x = rng.standard_normal((3, 2, 4))  # (L, N, E)
    out, cache = layer.forward(x)
    g = rng.standard_normal(out.shape)
    dx, grads = layer.backward(g, cache)
    np.testing.assert_allclose(layer.input_vjp(cache, g[None])[0], dx, rtol=1e-12, atol=1e-14)
    for name, value in layer.param_vjp(cache, g[None]).items():
        np.testing.assert_allclose(value[0], grads[name], rtol=1e-12, atol=1e-14)
    T = rng.standard_normal((1, *x.shape))
    assert layer.input_jvp(cache, T).shape == (1, *out.shape)
    _, cross = layer.forward(x, x, x)
    with pytest.raises(NotImplementedError, match="cross-attention"):
        layer.input_vjp(cross, g[None])
    extra = MultiheadAttention(4, 2, add_zero_attn=True, seed=0)
    with pytest.raises(NotImplementedError, match="add_bias_kv/add_zero_attn"):
        extra.input_vjp(extra.forward(x)[1], g[None])


def test_products_of_time_major_and_unbatched_are_the_batch_first_ones_transposed():
    """PROD.multihead-attention.jvp, .residual, .vjp: a time-major layer's products are the
    batch-first layer's with the two leading data axes swapped, bit for bit; unbatched
    ones agree with backward."""
    rng = np.random.default_rng(0)
    tm = MultiheadAttention(4, 2, seed=0)
    bf = MultiheadAttention(4, 2, batch_first=True, seed=0)
    x = rng.standard_normal((3, 2, 4))
    _, c_tm = tm.forward(x)
    _, c_bf = bf.forward(x.transpose(1, 0, 2))
    swap = (0, 2, 1, 3)
    T, g = rng.standard_normal((2, *x.shape)), rng.standard_normal(x.shape)
    T_params = {n: rng.standard_normal((2, *p.shape)) for n, p in tm.params.items()}
    np.testing.assert_array_equal(
        tm.input_jvp(c_tm, T).transpose(swap), bf.input_jvp(c_bf, T.transpose(swap))
    )
    np.testing.assert_array_equal(
        tm.param_jvp(c_tm, T_params).transpose(swap), bf.param_jvp(c_bf, T_params)
    )
    r_tm, rp_tm = tm.residual(c_tm, g, T, T_params)
    r_bf, rp_bf = bf.residual(c_bf, g.transpose(1, 0, 2), T.transpose(swap), T_params)
    np.testing.assert_array_equal(r_tm.transpose(swap), r_bf)
    shares_tm = tm.param_vjp(c_tm, T, sum_batch=False)
    shares_bf = bf.param_vjp(c_bf, T.transpose(swap), sum_batch=False)
    for name in tm.params:
        np.testing.assert_array_equal(rp_tm[name], rp_bf[name])
        np.testing.assert_array_equal(shares_tm[name], shares_bf[name])
    _, c_un = tm.forward(x[:, 0])  # unbatched (L, E)
    dx, _ = tm.backward(g[:, 0], c_un)
    np.testing.assert_allclose(tm.input_vjp(c_un, g[None, :, 0])[0], dx, rtol=1e-12, atol=1e-15)
