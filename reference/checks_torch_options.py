"""Verification checks of the torch options issue 23 added (``python -m manual_bp verify``).

Each check builds the library's layer and torch's module with the same options and
parameters, draws a random input and a random upstream gradient, and compares the output,
every input gradient and every parameter gradient in float64:

* ``ATT.bias-kv`` — ``MultiheadAttention`` with ``add_bias_kv`` / ``add_zero_attn``,
  separate key/value sizes, any layout, against ``nn.MultiheadAttention``;
* ``ATT.dropout`` — dropout on the attention weights with the layer's own mask, against
  torch's attention written out with that mask;
* ``LSTM.proj`` — an LSTM with ``proj_size``, against ``nn.LSTM``;
* ``RNN.dropout`` — dropout between stacked recurrent layers with the layer's masks,
  against torch's cells stacked by hand with the same masks;
* ``PAD.map`` — convolutions with a padding mode, against ``F.pad`` + ``F.conv``;
* ``LAYER.adaptive-avgpool2d`` — against ``F.adaptive_avg_pool2d``.

Tolerances scale with magnitudes: for the linear maps (padding, pooling) the same
computation on absolute values; for attention the softmax VJP's magnitude bound
``P ⊙ (|P̄| + Σ|P̄|P)`` with every other factor replaced by its absolute value
(docs/conventions.md, "Precision and tolerances"). The recurrent checks (a few steps of
small sums) are held to ``c·ε`` of the largest entry, as the recurrent tests hold them.
"""

from __future__ import annotations

import dataclasses
from unittest import mock

import numpy as np
import torch

from manual_bp.layers import GRU, LSTM, RNN, Conv1d, Conv2d, MultiheadAttention, attention_sdpa
from manual_bp.layers.pooling_adaptive import AdaptiveAvgPool2d
from reference import checks_convolution  # read at call time (the checks import each other)
from reference.checks import register_check
from reference.compare import Comparison
from reference.sequence_tools import magnitude_scales

__all__: list[str] = []

LAYOUTS = ("time-major", "batch-first", "unbatched")


# ----------------------------------------------------------------------------- attention
def _attention_magnitudes(layer: MultiheadAttention, d_out: np.ndarray, cache) -> tuple:
    """The magnitude bound of every gradient: the backward on absolute values, with the
    softmax VJP ``P ⊙ (P̄ − Σ P̄P)`` bounded by ``P ⊙ (|P̄| + Σ|P̄|P)``."""
    options = {k: layer.hyperparameter(k) for k in layer.hyperparameters}
    absolute = MultiheadAttention(**options)
    for name, array in layer.params.items():
        absolute.params[name][...] = np.abs(array)
    att, core = cache.attention, cache.core
    abs_att = dataclasses.replace(att, q=np.abs(att.q), k=np.abs(att.k), v=np.abs(att.v))
    abs_core = dataclasses.replace(
        core, inputs=tuple(np.abs(a) for a in core.inputs), attention=abs_att,
        merged=np.abs(core.merged),
    )  # fmt: skip
    abs_cache = dataclasses.replace(cache, core=abs_core)

    def abs_softmax_backward(d_p, p):
        return p * (np.abs(d_p) + (np.abs(d_p) * p).sum(axis=-1, keepdims=True))

    with mock.patch.object(attention_sdpa, "softmax_backward", abs_softmax_backward):
        return absolute.backward(np.abs(d_out), abs_cache)


def _shaped(rng, layout: str, n: int, length: int, width: int) -> np.ndarray:
    if layout == "unbatched":
        return rng.standard_normal((length, width))
    if layout == "batch-first":
        return rng.standard_normal((n, length, width))
    return rng.standard_normal((length, n, width))


@register_check("attention-torch-options")
def attention_options_check(rng: np.random.Generator) -> list[Comparison]:
    """ATT.bias-kv: extra key/value biases and a zero key, separate key/value sizes, any
    layout, against nn.MultiheadAttention."""
    heads, head_dim = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    E, layout = heads * head_dim, LAYOUTS[int(rng.integers(3))]
    add_bias_kv = bool(rng.integers(2))
    kwargs = dict(
        embed_dim=E, num_heads=heads, bias=bool(rng.integers(2)), add_bias_kv=add_bias_kv,
        add_zero_attn=not add_bias_kv or bool(rng.integers(2)),
        kdim=[None, int(rng.integers(1, 5))][int(rng.integers(2))],
        vdim=[None, int(rng.integers(1, 5))][int(rng.integers(2))],
        batch_first=layout == "batch-first",
    )  # fmt: skip
    layer = MultiheadAttention(**kwargs, seed=int(rng.integers(2**31)))
    for p in layer.params.values():  # torch starts biases at 0: make every one count
        p[...] = rng.standard_normal(p.shape)
    module = torch.nn.MultiheadAttention(**kwargs, dtype=torch.float64)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.from_numpy(layer.params[name]))
    n, L, S = int(rng.integers(1, 4)), int(rng.integers(1, 5)), int(rng.integers(1, 5))
    q = _shaped(rng, layout, n, L, E)
    k, v = _shaped(rng, layout, n, S, layer.kdim), _shaped(rng, layout, n, S, layer.vdim)
    out, cache = layer.forward(q, k, v, need_weights=False)
    d_out = rng.standard_normal(out.shape)
    (d_q, d_k, d_v), grads = layer.backward(d_out, cache)
    qt, kt, vt = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    out_t, _ = module(qt, kt, vt, need_weights=False)
    out_t.backward(torch.tensor(d_out))
    (s_q, s_k, s_v), s_params = _attention_magnitudes(layer, d_out, cache)
    eq = "ATT.bias-kv"
    found = [
        Comparison(eq, "out", out, out_t.detach().numpy()),
        Comparison(eq, "∂C/∂query", d_q, qt.grad.numpy(), scale=s_q),
        Comparison(eq, "∂C/∂key", d_k, kt.grad.numpy(), scale=s_k),
        Comparison(eq, "∂C/∂value", d_v, vt.grad.numpy(), scale=s_v),
    ]
    return found + [
        Comparison(eq, f"∂C/∂{name}", grads[name], p.grad.numpy(), scale=s_params[name])
        for name, p in module.named_parameters()
    ]


@register_check("attention-dropout")
def attention_dropout_check(rng: np.random.Generator) -> list[Comparison]:
    """ATT.dropout: P̃ = P ⊙ keep/(1 − p) with the layer's own mask; torch's attention
    written out with the same mask (torch's module draws its own)."""
    heads, head_dim = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    E, n, L = heads * head_dim, int(rng.integers(1, 4)), int(rng.integers(1, 5))
    p = float(rng.choice([0.1, 0.5, 0.9]))
    layer = MultiheadAttention(E, heads, dropout=p, batch_first=True, seed=int(rng.integers(2**31)))
    for param in layer.params.values():
        param[...] = rng.standard_normal(param.shape)
    x = rng.standard_normal((n, L, E))
    out, cache = layer.forward(x)
    keep = torch.tensor(cache.attention.keep)
    d_out = rng.standard_normal(out.shape)
    dx, grads = layer.backward(d_out, cache)
    t = {k: torch.tensor(v, requires_grad=True) for k, v in layer.params.items()}
    xt = torch.tensor(x, requires_grad=True)
    qkv = (xt @ t["in_proj_weight"].T + t["in_proj_bias"]).chunk(3, dim=-1)
    q, k, v = (a.reshape(n, L, heads, head_dim).transpose(1, 2) for a in qkv)
    P = torch.softmax(q @ k.transpose(-1, -2) / np.sqrt(head_dim), dim=-1) * keep
    merged = (P @ v).transpose(1, 2).reshape(n, L, E)
    out_t = merged @ t["out_proj.weight"].T + t["out_proj.bias"]
    out_t.backward(torch.tensor(d_out))
    s_x, s_params = _attention_magnitudes(layer, d_out, cache)
    found = [
        Comparison("ATT.dropout", "out", out, out_t.detach().numpy()),
        Comparison("ATT.dropout", "∂C/∂x", dx, xt.grad.numpy(), scale=s_x),
    ]
    return found + [
        Comparison(
            "ATT.dropout", f"∂C/∂{name}", grads[name], t[name].grad.numpy(), scale=s_params[name]
        )
        for name in layer.params
    ]


# ----------------------------------------------------------------------------- recurrent
def _torch_module(layer, **options) -> torch.nn.Module:
    kind = type(layer).__name__
    cls = {"RNN": torch.nn.RNN, "LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU}[kind]
    if kind == "RNN":
        options["nonlinearity"] = layer.nonlinearity
    return cls(dtype=torch.float64, batch_first=True, **options)


def _recurrent_comparisons(
    eq, layer, x, d_out, cache, out, dx, grads, out_t, xt, params
) -> list[Comparison]:  # fmt: skip
    """Output, ∂C/∂x and every parameter gradient, each bounded by the magnitude of the
    terms it is summed from: a state ``σ(W_ih x + b + W_hh h)`` (or ``W_hr (o ⊙ tanh c)``)
    by ``max(1, |x|)·max row sum |W| + |b|`` terms; gradients by the BPTT replayed on
    absolute values (:func:`reference.sequence_tools.magnitude_scales`)."""
    weights = [v for k, v in layer.params.items() if k.startswith("weight")]
    biases = [v for k, v in layer.params.items() if k.startswith("bias")]
    terms = max(1.0, float(np.abs(x).max(initial=0.0))) * max(
        float(np.abs(w).sum(axis=1).max(initial=0.0)) for w in weights
    )
    terms += 2.0 * max((float(np.abs(b).max()) for b in biases), default=0.0)
    s_x, s_params = magnitude_scales(layer, d_out, cache)
    expected = out_t.detach().numpy()
    found = [
        Comparison(eq, "output", out, expected, scale=np.maximum(np.abs(expected), terms)),
        Comparison(eq, "∂C/∂x", dx, xt.grad.numpy(), scale=s_x),
    ]
    return found + [
        Comparison(eq, f"∂C/∂{name}", grads[name], t.grad.numpy(), scale=s_params.get(name))
        for name, t in params.items()
    ]


@register_check("lstm-projection")
def lstm_projection_check(rng: np.random.Generator) -> list[Comparison]:
    """LSTM.proj: h = W_hr (o ⊙ tanh c), states of size proj_size, against nn.LSTM."""
    hidden = int(rng.integers(2, 5))
    kwargs = dict(input_size=int(rng.integers(1, 4)), hidden_size=hidden,
                  num_layers=int(rng.integers(1, 3)), bias=bool(rng.integers(2)),
                  bidirectional=bool(rng.integers(2)),
                  proj_size=int(rng.integers(1, hidden)))  # fmt: skip
    layer = LSTM(**kwargs, batch_first=True, seed=int(rng.integers(2**31)))
    module = _torch_module(layer, **kwargs)
    params = dict(module.named_parameters())
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(torch.from_numpy(layer.params[name]))
    x = rng.standard_normal((int(rng.integers(1, 4)), int(rng.integers(1, 5)), layer.input_size))
    out, cache = layer.forward(x)
    d_out = rng.standard_normal(out.shape)
    dx, grads = layer.backward(d_out, cache)
    xt = torch.tensor(x, requires_grad=True)
    out_t = module(xt)[0]
    out_t.backward(torch.tensor(d_out))
    return _recurrent_comparisons(
        "LSTM.proj", layer, x, d_out, cache, out, dx, grads, out_t, xt, params
    )


@register_check("recurrent-dropout")
def recurrent_dropout_check(rng: np.random.Generator) -> list[Comparison]:
    """RNN.dropout: in training every layer's output but the last is multiplied by
    keep/(1 − p) (the layer's own masks); torch's layers run one at a time with those masks."""
    cls = (RNN, LSTM, GRU)[int(rng.integers(3))]
    num_layers, bidirectional = int(rng.integers(2, 4)), bool(rng.integers(2))
    hidden, size = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    options = {"nonlinearity": str(rng.choice(["tanh", "relu"]))} if cls is RNN else {}
    # p ≤ 0.5: a mask of 1/(1 − p) ≤ 2 keeps the next layer's tanh out of saturation, where
    # tanh′ = 1 − tanh² is ill-conditioned (its rounding is ε/(1 − tanh²) relative, which no
    # magnitude replay of the products bounds); saturation is the sequence checks' subject.
    p = float(rng.choice([0.2, 0.35, 0.5]))
    layer = cls(size, hidden, num_layers, **options, batch_first=True,
                bidirectional=bidirectional, dropout=p, seed=int(rng.integers(2**31)))  # fmt: skip
    x = rng.standard_normal((int(rng.integers(1, 4)), int(rng.integers(1, 5)), size))
    out, cache = layer.forward(x)
    d_out = rng.standard_normal(out.shape)
    dx, grads = layer.backward(d_out, cache)
    params = {k: torch.tensor(v, requires_grad=True) for k, v in layer.params.items()}
    xt = torch.tensor(x, requires_grad=True)
    h = xt
    for depth in range(num_layers):
        single = _torch_module(layer, input_size=h.shape[-1], hidden_size=hidden,
                               bidirectional=bidirectional)  # fmt: skip
        own = {n.replace(f"_l{depth}", "_l0"): t for n, t in params.items() if f"_l{depth}" in n}
        h, _ = torch.func.functional_call(single, own, (h,))
        if cache.masks[depth] is not None:
            h = h * torch.tensor(cache.masks[depth])
    h.backward(torch.tensor(d_out))
    return _recurrent_comparisons(
        "RNN.dropout", layer, x, d_out, cache, out, dx, grads, h, xt, params
    )


# ----------------------------------------------------------------------------- padding, pooling
@register_check("padding-modes")
def padding_modes_check(rng: np.random.Generator) -> list[Comparison]:
    """PAD.map: a convolution whose padding mode is reflect, replicate or circular, against
    F.pad + F.conv (the map and its adjoint: every padded copy adds back to its source)."""
    dims = int(rng.integers(1, 3))
    size = tuple(int(rng.integers(2, 7)) for _ in range(dims))
    mode = str(rng.choice(["reflect", "replicate", "circular"]))
    limit = min(size) - 1 if mode == "reflect" else min(size)
    padding = int(rng.integers(1, max(1, min(limit, 3)) + 1))
    kernel = int(rng.integers(1, min(size) + 2 * padding + 1))
    cls = Conv1d if dims == 1 else Conv2d
    c_in = int(rng.integers(1, 4))
    layer = cls(c_in, int(rng.integers(1, 4)), min(kernel, 4), stride=int(rng.integers(1, 3)),
                padding=padding, padding_mode=mode, seed=int(rng.integers(2**31)))  # fmt: skip
    x = rng.standard_normal((int(rng.integers(1, 4)), c_in, *size))
    comparisons = checks_convolution.layer_comparisons(layer, x, rng)
    for comparison in comparisons:
        comparison.equation = "PAD.map"
    return comparisons


@register_check("adaptive-avgpool2d-layer")
def adaptive_avgpool2d_check(rng: np.random.Generator) -> list[Comparison]:
    """LAYER.adaptive-avgpool2d: torch's windows floor(i·H/out) … ceil((i+1)·H/out),
    overlapping when the output does not divide the input, against F.adaptive_avg_pool2d."""
    h, w = int(rng.integers(1, 9)), int(rng.integers(1, 9))
    sizes = [int(rng.integers(1, h + 3)), int(rng.integers(1, w + 3))]
    if rng.random() < 0.3:
        sizes[int(rng.integers(2))] = None
    layer = AdaptiveAvgPool2d(tuple(sizes))
    x = rng.standard_normal((int(rng.integers(1, 4)), int(rng.integers(1, 4)), h, w))
    return checks_convolution.layer_comparisons(layer, x, rng)


# ----------------------------------------------------------------------------- embedding
@register_check("embedding-renorm")
def embedding_renorm_check(rng: np.random.Generator) -> list[Comparison]:
    """EMB.renorm: the looked-up rows renormalised in place to at most max_norm (torch's
    embedding_renorm_, its 10⁻⁷ included), the output and the weight's gradient, against
    F.embedding(max_norm=…) on the same weight."""
    from manual_bp.layers import Embedding

    vocab, dim = int(rng.integers(2, 7)), int(rng.integers(1, 5))
    max_norm = float(rng.choice([0.5, 1.0, 2.0]))
    norm_type = float(rng.choice([1.0, 2.0, 3.0]))
    layer = Embedding(
        vocab, dim, max_norm=max_norm, norm_type=norm_type, seed=int(rng.integers(2**31))
    )
    weight = torch.tensor(layer.params["weight"].copy(), requires_grad=True)
    x = rng.integers(0, vocab, size=(int(rng.integers(1, 4)), int(rng.integers(1, 5))))
    out, cache = layer.forward(x)
    d_out = rng.standard_normal(out.shape)
    _, grads = layer.backward(d_out, cache)
    out_t = torch.nn.functional.embedding(torch.tensor(x), weight, max_norm=max_norm,
                                          norm_type=norm_type)  # fmt: skip
    out_t.backward(torch.tensor(d_out))
    magnitude = np.zeros_like(grads["weight"])  # Σ|terms| of each row's sum over its uses
    np.add.at(magnitude, x.reshape(-1), np.abs(d_out).reshape(-1, dim))
    return [
        Comparison("EMB.renorm", "renormalised weight", layer.params["weight"],
                   weight.detach().numpy()),
        Comparison("EMB.renorm", "output", out, out_t.detach().numpy()),
        Comparison("EMB.renorm", "∂C/∂weight", grads["weight"], weight.grad.numpy(),
                   scale=magnitude),
    ]  # fmt: skip
