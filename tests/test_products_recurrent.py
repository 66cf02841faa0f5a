"""Products on a V axis of RNN, LSTM, GRU and Embedding (``docs/products.md``).

Every product (input and parameter VJPs, summed and per sample; input and parameter JVPs;
the second-order residual) against ``torch.func`` in float64 with random vectors
(:mod:`reference.products`; the recurrent oracle is the plain-op twin of
``reference/checks_sequences.py``, itself checked against torch's modules here), plus the
identities (adjoints, per-sample sums, symmetry, ``V = 1`` equal to ``backward``).
Hypothesis draws every option: nonlinearity, stacked layers, bidirectional, bias, the
LSTM's implementation, a caller's ``initial_state``; the embedding's padding index.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.layers import GRU, LSTM, RNN, Embedding, Layer
from reference.checks_sequences import plain_recurrent, torch_recurrent
from reference.layer_cases import layer_case
from reference.products import product_comparisons

seeds = st.integers(0, 2**31 - 1)
options = st.fixed_dictionaries(
    {
        "num_layers": st.integers(1, 3),
        "bias": st.booleans(),
        "bidirectional": st.booleans(),
    }
)


def _check(layer: Layer, x: np.ndarray, seed: int) -> None:
    for comparison in product_comparisons(layer, x, np.random.default_rng(seed)):
        if layer.index_input and comparison.name == "input_vjp vs torch.func":
            # indices carry no derivative: torch's is 0, and so is ours; the oracle asks
            # input_vjp only of layers with an input tangent, so it is compared here
            assert not np.any(comparison.expected)
            out, cache = layer.forward(x)
            M = np.random.default_rng(seed).standard_normal((2, *out.shape))
            np.testing.assert_array_equal(layer.input_vjp(cache, M), np.zeros((2, *x.shape)))
            continue
        comparison.check()


def _recurrent(cls, rng, opts, with_initial: bool, **kwargs):
    """A layer of ``cls`` with ``opts``, its input, and (maybe) a caller's initial state."""
    input_size, hidden = (int(k) for k in rng.integers(1, 5, size=2))
    kwargs.setdefault("batch_first", True)  # the oracle's per-sample products: batch first
    layer = cls(input_size, hidden, **opts, **kwargs, seed=rng)
    batch, length = int(rng.integers(1, 4)), int(rng.integers(1, 5))
    if with_initial:
        shape = (opts["num_layers"] * layer.directions, batch, hidden)
        layer.initial_state = tuple(rng.standard_normal(shape) for _ in range(layer.cell.n_states))
    return layer, rng.standard_normal((batch, length, input_size))


@given(opts=options, nonlinearity=st.sampled_from(["tanh", "relu"]), init=st.booleans(), seed=seeds)
@settings(max_examples=10, deadline=None)
def test_rnn_products_match_torch_func(opts, nonlinearity, init, seed):
    """PROD.rnn.vjp, PROD.rnn.jvp, PROD.rnn.residual: tanh and relu, stacked, either
    direction, with and without bias, from zeros or a caller's initial_state."""
    rng = np.random.default_rng(seed)
    layer, x = _recurrent(RNN, rng, opts, init, nonlinearity=nonlinearity)
    _check(layer, x, seed)


@given(opts=options, fast=st.booleans(), init=st.booleans(), seed=seeds)
@settings(max_examples=10, deadline=None)
def test_lstm_products_match_torch_func(opts, fast, init, seed):
    """PROD.lstm.vjp, PROD.lstm.jvp, PROD.lstm.residual: both implementations (the fast
    form's stacked cache and the readable per-step one), every option, initial (h0, c0)."""
    rng = np.random.default_rng(seed)
    implementation = "fast" if fast else "readable"
    layer, x = _recurrent(LSTM, rng, opts, init, implementation=implementation)
    _check(layer, x, seed)


@given(opts=options, init=st.booleans(), seed=seeds)
@settings(max_examples=10, deadline=None)
def test_gru_products_match_torch_func(opts, init, seed):
    """PROD.gru.vjp, PROD.gru.jvp, PROD.gru.residual: every option, initial h0."""
    rng = np.random.default_rng(seed)
    layer, x = _recurrent(GRU, rng, opts, init)
    _check(layer, x, seed)


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU", "Embedding"])
@given(seed=seeds)
@settings(max_examples=4, deadline=None)
def test_recurrent_products_in_the_middle_of_stacks(name, seed):
    """PROD.rnn.*, PROD.lstm.*, PROD.gru.*, PROD.embedding.* at the input a random stack
    feeds the layer (reference.layer_cases)."""
    layer, x = layer_case(name, np.random.default_rng(seed))
    _check(layer, x, seed)


@given(
    vocab=st.integers(1, 6),
    dim=st.integers(1, 4),
    padded=st.booleans(),
    index_shape=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    seed=seeds,
)
@settings(max_examples=12, deadline=None)
def test_embedding_products_match_torch_func(vocab, dim, padded, index_shape, seed):
    """PROD.embedding.vjp, PROD.embedding.jvp, PROD.embedding.residual: scatter-add (the
    padding row excluded, repeated rows accumulating, per sample), gather, zero residual;
    indices of any shape (N, *)."""
    rng = np.random.default_rng(seed)
    padding = int(rng.integers(-vocab, vocab)) if padded else None
    layer = Embedding(vocab, dim, padding, seed=rng)
    assert layer.constant_rows() == ({} if padding is None else {"weight": padding % vocab})
    x = rng.integers(0, vocab, size=tuple(index_shape))
    _check(layer, x.astype(float) if rng.integers(2) else x, seed)
    # the padding row is a constant: a tangent in it moves nothing (J adjoint to Jᵀ, whose
    # padding row is 0); the oracle zeroes that row of its tangents, so check it here
    out, cache = layer.forward(x)
    M = rng.standard_normal((2, *out.shape))
    T_W = rng.standard_normal((2, vocab, dim))  # padding row included
    left = np.vdot(M, layer.param_jvp(cache, {"weight": T_W}))
    right = np.vdot(layer.param_vjp(cache, M)["weight"], T_W)
    np.testing.assert_allclose(left, right, rtol=1e-12, atol=1e-12)


@given(
    kind=st.sampled_from(["rnn_tanh", "rnn_relu", "lstm", "gru"]),
    opts=options,
    init=st.booleans(),
    seed=seeds,
)
@settings(max_examples=10, deadline=None)
def test_plain_twins_equal_torch_modules(kind, opts, init, seed):
    """The products' oracle (PROD.rnn.*, PROD.lstm.*, PROD.gru.*) is a plain-op twin: its
    output, final states and every first derivative (x, initial states, parameters) equal
    torch's own nn.RNN/LSTM/GRU (the _VF kernels)."""
    rng = np.random.default_rng(seed)
    cls, kwargs = {"lstm": (LSTM, {}), "gru": (GRU, {})}.get(kind, (RNN, {}))
    if kind.startswith("rnn"):
        kwargs = {"nonlinearity": kind[4:]}
    layer, x = _recurrent(cls, rng, opts, init, **kwargs)
    runs = []
    for forward in (torch_recurrent, plain_recurrent):
        params = {k: torch.tensor(v, requires_grad=True) for k, v in layer.params.items()}
        xt = torch.tensor(x, requires_grad=True)
        given_states = [torch.tensor(s, requires_grad=True) for s in layer.initial_state or ()]
        states = None
        if given_states:
            states = tuple(given_states) if kind == "lstm" else given_states[0]
        out, final = forward(layer, params, xt, states)
        final = final if isinstance(final, tuple) else (final,)
        seeds_ = np.random.default_rng(seed + 1)
        loss = (out * torch.tensor(seeds_.standard_normal(out.shape))).sum()
        for f in final:
            loss = loss + (f * torch.tensor(seeds_.standard_normal(f.shape))).sum()
        loss.backward()
        values = [out, *final, xt.grad, *(s.grad for s in given_states)]
        values += [params[k].grad for k in sorted(params)]
        runs.append([v.detach().numpy() for v in values])
    for theirs, twin in zip(*runs, strict=True):
        np.testing.assert_allclose(twin, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU", "Embedding"])
def test_products_keep_float32(name):
    """PROD.rnn.vjp, PROD.lstm.jvp, PROD.gru.residual, PROD.embedding.vjp and the rest:
    a float32 layer with float32 vectors gives float32 products (no float64 promotion)."""
    rng = np.random.default_rng(7)
    f32 = np.float32
    if name == "Embedding":
        layer: Layer = Embedding(5, 3, 1, seed=rng, dtype=f32)
        x = rng.integers(0, 5, size=(2, 4))
    else:
        cls = {"RNN": RNN, "LSTM": LSTM, "GRU": GRU}[name]
        layer = cls(3, 2, 2, bidirectional=True, batch_first=True, seed=rng, dtype=f32)
        layer.initial_state = tuple(
            rng.standard_normal((4, 2, 2)).astype(f32) for _ in range(layer.cell.n_states)
        )
        x = rng.standard_normal((2, 4, 3)).astype(f32)
    out, cache = layer.forward(x)
    M = rng.standard_normal((3, *out.shape)).astype(f32)
    T = rng.standard_normal((3, *x.shape)).astype(f32)
    T_params = {k: rng.standard_normal((3, *p.shape)).astype(f32) for k, p in layer.params.items()}
    results = [layer.param_vjp(cache, M), layer.param_vjp(cache, M, sum_batch=False)]
    results.append({"jvp": layer.param_jvp(cache, T_params)})
    results.append(layer.residual(cache, out, None if layer.index_input else T, T_params)[1])
    if not layer.index_input:
        results.append({"vjp": layer.input_vjp(cache, M), "jvp": layer.input_jvp(cache, T)})
        results.append({"residual": layer.residual(cache, out, T, T_params)[0]})
    for result in results:
        for key, value in result.items():
            assert value.dtype == f32, f"{name} {key}: {value.dtype}"


def _close(actual, expected) -> None:
    """Equal up to rounding (a memo's row of a V-stack against a fresh sweep of the stack,
    or the sum of two tangent sweeps against one sweep of the sum)."""
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys()
        for name in expected:
            _close(actual[name], expected[name])
        return
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-300)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-13 * scale)


@given(opts=options, fast=st.booleans(), time_major=st.booleans(), seed=seeds)
@settings(max_examples=6, deadline=None)
def test_lstm_sweep_memo_equals_fresh_sweeps(opts, fast, time_major, seed):
    """PROD.lstm.vjp, PROD.lstm.jvp, PROD.lstm.residual through the per-cache memo
    (recurrent_lstm_products): repeated, reordered and partly new cotangent rows, the
    residual after input_jvp and param_jvp (their records summed), the gradient's rows after
    the residual — each equal to the product on a fresh cache; a result handed out and then
    changed in place does not change what the memo gives later."""
    rng = np.random.default_rng(seed)
    implementation = "fast" if fast else "readable"
    layer, x = _recurrent(
        LSTM, rng, opts, False, implementation=implementation, batch_first=not time_major
    )
    if time_major:
        x = np.ascontiguousarray(x.swapaxes(0, 1))
    out, cache = layer.forward(x)

    def fresh():
        return layer.forward(x)[1]

    M = rng.standard_normal((3, *out.shape))
    T = rng.standard_normal((1, *x.shape))
    T_params = {k: rng.standard_normal((1, *p.shape)) for k, p in layer.params.items()}
    g = rng.standard_normal(out.shape)
    _close(layer.param_vjp(cache, M[:2]), layer.param_vjp(fresh(), M[:2]))
    mixed = M[[2, 1, 0, 1]]  # rows 0 and 1 kept, row 2 new, row 1 twice
    _close(layer.input_vjp(cache, mixed), layer.input_vjp(fresh(), mixed))
    per_sample = layer.param_vjp(cache, mixed, sum_batch=False)
    _close(per_sample, layer.param_vjp(fresh(), mixed, sum_batch=False))
    handed = layer.input_jvp(cache, T)
    _close(handed, layer.input_jvp(fresh(), T))
    handed += 1.0  # the caller's array, not the memo's
    _close(layer.param_jvp(cache, T_params), layer.param_jvp(fresh(), T_params))
    residual = layer.residual(cache, g, T, T_params)  # from the two sweeps above
    _close(residual[0], layer.residual(fresh(), g, T, T_params)[0])
    _close(residual[1], layer.residual(fresh(), g, T, T_params)[1])
    _close(layer.input_jvp(cache, T), layer.input_jvp(fresh(), T))
    both = np.concatenate([M[:1], g[None]])  # the HVP's [R{g}, g] after the residual's g
    _close(layer.input_vjp(cache, both), layer.input_vjp(fresh(), both))
