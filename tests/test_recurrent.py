"""RNN.step, LSTM.step, GRU.step, BPTT.sequence, EMB.lookup against torch (float64).

Outputs, final states, every parameter gradient, ∂C/∂x and ∂C/∂h0 (∂C/∂c0) with random
upstream gradients on the output sequence AND the final states; hypothesis draws batch,
length (1 included), sizes, layers, bias, bidirectional. Second oracles: central finite
differences and a per-step adjoint test. Every layer also sits in the middle of random
stacks (reference.stack.random_stack(rng, "sequences")).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.layers import LAYERS, get_layer
from manual_bp.layers.embedding import Embedding
from manual_bp.layers.recurrent import GRU, LSTM, RNN
from manual_bp.models.sequential import Sequential
from reference.checks_sequences import (
    KINDS,
    cell_adjoint_check,
    embedding_check,
    embedding_stack_check,
    recurrent_case,
    recurrent_fd_check,
    sequence_stack_check,
)

seeds = st.integers(0, 2**31 - 1)


@given(
    kind=st.sampled_from(KINDS),
    batch=st.integers(1, 4),
    length=st.integers(1, 6),
    input_size=st.integers(1, 5),
    hidden=st.integers(1, 5),
    layers=st.integers(1, 3),
    bias=st.booleans(),
    bidirectional=st.booleans(),
    with_initial=st.booleans(),
    seed=seeds,
)
def test_recurrent_matches_torch(
    kind, batch, length, input_size, hidden, layers, bias, bidirectional, with_initial, seed
):
    """RNN.step / LSTM.step / GRU.step and BPTT.sequence: forward_sequence/backward_sequence
    against torch.nn.RNN/LSTM/GRU(batch_first=True) with our parameters copied in."""
    comparisons = recurrent_case(
        kind, batch, length, input_size, hidden, layers, bias, bidirectional, seed, with_initial
    )
    names = {c.name for c in comparisons}
    assert {"out", "h_T", "∂C/∂x"} <= names
    assert ("∂C/∂h0" in names) == with_initial
    for comparison in comparisons:
        comparison.check()


@settings(max_examples=10)
@given(seeds)
def test_recurrent_matches_finite_differences(seed):
    """BPTT.sequence, RNN.step, LSTM.step, GRU.step against central differences (no torch)."""
    for comparison in recurrent_fd_check(np.random.default_rng(seed)):
        comparison.check()


@given(seeds)
def test_cell_step_adjoint(seed):
    """RNN.step, LSTM.step, GRU.step: ⟨u, J v⟩ = ⟨Jᵀu, v⟩ for every cell's step VJP."""
    for comparison in cell_adjoint_check(np.random.default_rng(seed)):
        comparison.check()


@settings(max_examples=20)  # also run by `verify`
@given(seeds)
def test_recurrent_in_random_stacks(seed):
    """STACK.chain with RNN.step / LSTM.step / GRU.step layers in the middle of a stack."""
    for comparison in sequence_stack_check(np.random.default_rng(seed)):
        comparison.check()


@given(seeds)
def test_embedding_matches_torch(seed):
    """EMB.lookup: repeated indices accumulate (np.add.at), padding row gets no gradient."""
    for comparison in embedding_check(np.random.default_rng(seed)):
        comparison.check()


@settings(max_examples=30)
@given(seeds)
def test_embedding_in_stack(seed):
    """EMB.lookup → recurrent → dense → softmax on integer sequences (labels per step)."""
    for comparison in embedding_stack_check(np.random.default_rng(seed)):
        comparison.check()


def test_parameters_copy_one_to_one_with_torch():
    """Names, shapes and order of the state dict are torch's, for every option."""
    for cls, module in ((RNN, torch.nn.RNN), (LSTM, torch.nn.LSTM), (GRU, torch.nn.GRU)):
        ours = cls(3, 4, 2, bias=False, bidirectional=True)
        theirs = module(3, 4, 2, bias=False, bidirectional=True, batch_first=True)
        shapes = [(k, tuple(v.shape)) for k, v in theirs.state_dict().items()]
        assert [(k, v.shape) for k, v in ours.params.items()] == shapes


def test_default_initialisation_is_torch_uniform():
    layer = LSTM(3, 16, seed=0)
    bound = 1 / 4
    for array in layer.params.values():
        assert np.abs(array).max() <= bound
        assert np.abs(array).max() > 0.9 * bound  # uses the whole range
    emb = Embedding(50, 40, padding_idx=-1, seed=0)
    assert emb.padding_idx == 49 and not emb.params["weight"][49].any()
    assert abs(emb.params["weight"][:49].std() - 1) < 0.05  # N(0, 1)


def test_from_spec_infers_input_size():
    model = Sequential.from_spec(
        [("embedding", (7, 5), {}), ("lstm", (6,), {}), ("gru", (3,), {"num_layers": 2}), "dense"],
        input_shape=(4,),
        n_outputs=7,
    )
    assert model.output_shape == (4, 7)
    assert model.layers[1].input_size == 5 and model.layers[2].input_size == 6
    assert {"rnn", "lstm", "gru", "embedding"} <= set(LAYERS)
    clone = get_layer(model.layers[2].get_config())
    assert isinstance(clone, GRU) and clone.num_layers == 2


def test_rnn_relu_kink_matches_torch():
    """relu'(0) = 0 at the kink, as torch: pre-activations of exactly zero."""
    layer = RNN(1, 1, nonlinearity="relu", bias=False, batch_first=True)
    layer.params["weight_ih_l0"][...] = 1.0
    layer.params["weight_hh_l0"][...] = 1.0
    x = np.array([[[0.0], [1.0], [-1.0]]])  # a = 0, 1, 0: twice at the kink
    for comparison in _explicit(layer, x):
        comparison.check()


def _explicit(layer, x):
    from reference.checks_sequences import recurrent_comparisons

    rng = np.random.default_rng(0)
    shape = (layer.num_layers * layer.directions, x.shape[0], layer.hidden_size)
    d_out = rng.standard_normal((*x.shape[:2], layer.hidden_size * layer.directions))
    return recurrent_comparisons(layer, x, [None], d_out, [rng.standard_normal(shape)])


def test_bad_inputs_raise_before_work():
    lstm = LSTM(3, 2, batch_first=True)
    with pytest.raises(ValueError, match=r"input has shape \(3,\)"):
        lstm.forward(np.zeros(3))
    with pytest.raises(ValueError, match=r"input has shape \(2, 4, 5\); expected \(N, T, 3\)"):
        lstm.forward(np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match="length ≥ 1"):
        lstm.forward(np.zeros((2, 0, 3)))
    with pytest.raises(ValueError, match="length ≥ 1"):
        LSTM(3, 2).forward(np.zeros((0, 2, 3)))  # time-major: T is the first axis
    with pytest.raises(ValueError, match=r"h0 has shape \(2, 2\)"):
        lstm.forward_sequence(np.zeros((2, 4, 3)), np.zeros((2, 2)))
    _, _, cache = lstm.forward_sequence(np.zeros((2, 4, 3)))
    with pytest.raises(ValueError, match="d_out has shape"):
        lstm.backward_sequence(np.zeros((2, 4, 3)), None, None, cache)
    with pytest.raises(ValueError, match="nonlinearity"):
        RNN(3, 2, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="hidden_size"):
        GRU(3, 0)
    with pytest.raises(TypeError, match="bidirectional"):
        GRU(3, 2, bidirectional="yes")
    emb = Embedding(4, 2)
    with pytest.raises(ValueError, match="whole numbers"):
        emb.forward(np.array([[0.5, 1.0]]))
    with pytest.raises(ValueError, match="index 4 is outside"):
        emb.forward(np.array([[4, 1]]))
    with pytest.raises(TypeError, match="integers"):
        emb.forward(np.array([["a"]]))
    with pytest.raises(ValueError, match="padding_idx"):
        Embedding(4, 2, padding_idx=4)


def test_embedding_repeated_index_accumulates():
    """EMB.lookup: a row used k times receives the sum of its k gradients."""
    emb = Embedding(3, 2, seed=0)
    _, cache = emb.forward(np.array([[1, 1, 1]]))
    d_out = np.array([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]])
    _, grads = emb.backward(d_out, cache)
    np.testing.assert_array_equal(grads["weight"], [[0, 0], [9, 12], [0, 0]])


def test_float32_model_stays_float32():
    """Every sequence layer computes in the model's dtype (no silent float64 upcast)."""
    spec = [("embedding", (5, 4), {}), ("lstm", (3,), {}), ("mha", (1,), {}), ("gru", (2,), {})]
    spec += [("rnn", (2,), {"bidirectional": True}), "dense", "softmax"]
    model = Sequential.from_spec(
        spec, input_shape=(6,), n_outputs=5, cost="log-likelihood", seed=1, dtype="float32"
    )
    x = np.random.default_rng(0).integers(0, 5, (2, 6))
    result = model.backprop(x, x)
    assert result.output.dtype == np.float32
    assert {g.dtype for g in result.params.values()} == {np.dtype(np.float32)}


@given(
    batch=st.integers(1, 4),
    length=st.integers(1, 6),
    input_size=st.integers(1, 5),
    hidden=st.integers(1, 5),
    bias=st.booleans(),
    seed=seeds,
)
def test_lstm_fast_form_equals_readable_form(batch, length, input_size, hidden, bias, seed):
    """LSTM.step: the hoisted-projection fast form equals the per-step readable form."""
    from manual_bp.gradcheck import assert_gradients_close
    from manual_bp.layers.recurrent_fast import lstm_backward_fast, lstm_forward_fast

    rng = np.random.default_rng(seed)
    layer = LSTM(input_size, hidden, bias=bias, batch_first=True, seed=rng)
    x = rng.standard_normal((batch, length, input_size))
    h0, c0, d_hT, d_cT = (rng.standard_normal((1, batch, hidden)) for _ in range(4))
    d_out = rng.standard_normal((batch, length, hidden))
    out, (h_T, c_T), cache = layer.forward_sequence(x, h0, c0)
    readable = (out, h_T[0], c_T[0], *layer.backward_sequence(d_out, d_hT, d_cT, cache))
    params = {k: layer.params.get(f"{k}_l0") for k in ("weight_ih", "weight_hh", "bias_ih")}
    params["bias_hh"] = layer.params.get("bias_hh_l0")
    out_f, (h_f, c_f), cache_f = lstm_forward_fast(x, h0[0], c0[0], params)
    dx, dh0, dc0, grads = lstm_backward_fast(d_out, d_hT[0], d_cT[0], cache_f)
    fast = (out_f, h_f, c_f, dx, dh0[None], dc0[None])
    for name, a, b in zip(("out", "h_T", "c_T", "dx", "dh0", "dc0"), fast, readable, strict=False):
        assert_gradients_close(a, b, name=f"LSTM.step fast {name}")
    for name, grad in readable[-1].items():
        assert_gradients_close(grads[name.removesuffix("_l0")], grad, name=f"LSTM.step {name}")


@given(
    batch=st.integers(1, 3),
    length=st.integers(1, 5),
    input_size=st.integers(1, 4),
    hidden=st.integers(1, 4),
    layers=st.integers(1, 2),
    bias=st.booleans(),
    bidirectional=st.booleans(),
    seed=seeds,
)
def test_lstm_implementations_agree_and_match_torch(
    batch, length, input_size, hidden, layers, bias, bidirectional, seed
):
    """LSTM.step, BPTT.sequence: LSTM(implementation="fast") — the training path — and
    "readable" give the same outputs, final states and gradients (stacked, bidirectional),
    and the readable one matches torch (the fast one is the default of every other test)."""
    from manual_bp.gradcheck import assert_gradients_close
    from reference.checks_sequences import recurrent_comparisons

    rng = np.random.default_rng(seed)
    options = dict(num_layers=layers, bias=bias, bidirectional=bidirectional, batch_first=True)
    fast = LSTM(input_size, hidden, **options, seed=rng)
    readable = LSTM(input_size, hidden, **options, implementation="readable")
    for name, array in fast.params.items():
        readable.params[name][...] = array
    shape = (layers * fast.directions, batch, hidden)
    x = rng.standard_normal((batch, length, input_size))
    h0, c0, d_hT, d_cT = (rng.standard_normal(shape) for _ in range(4))
    d_out = rng.standard_normal((batch, length, hidden * fast.directions))
    results = []
    for layer in (fast, readable):
        out, (h_T, c_T), cache = layer.forward_sequence(x, h0, c0)
        results.append((out, h_T, c_T, *layer.backward_sequence(d_out, d_hT, d_cT, cache)))
    names = ("out", "h_T", "c_T", "∂C/∂x", "∂C/∂h0", "∂C/∂c0")
    for name, a, b in zip(names, results[0], results[1], strict=False):
        assert_gradients_close(a, b, name=f"LSTM.step fast vs readable {name}")
    for name, grad in results[1][-1].items():
        assert_gradients_close(
            results[0][-1][name], grad, name=f"LSTM.step fast vs readable {name}"
        )
    for comparison in recurrent_comparisons(readable, x, [h0, c0], d_out, [d_hT, d_cT]):
        comparison.check()
    assert fast.fast and not readable.fast
    assert get_layer(readable.get_config()).implementation == "readable"
    with pytest.raises(ValueError, match="implementation must be"):
        LSTM(2, 2, implementation="cudnn")
