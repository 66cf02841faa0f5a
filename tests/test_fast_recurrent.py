"""The recurrent layers' fused training steps (``LSTMStep``, ``LSTM.step``, ``BPTT.sequence``)
against the readable per-step form and torch autograd in float64; 1 vs 2 threads; float32."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.gradcheck import assert_gradients_close
from manual_bp.layers.recurrent import GRU, LSTM, RNN
from manual_bp.layers.recurrent_fast import LSTMStep
from manual_bp.layers.recurrent_steps import GRUStep, RNNStep
from manual_bp.layers.steps import GenericStep
from reference.checks_sequences import torch_recurrent
from tests.fast_step_checks import across_threads

seeds = st.integers(0, 2**31 - 1)


def _run(step, layer, x, d_out, need_dx=True):
    """One forward and backward of ``step``: ``(out, dx, grads)`` as copies."""
    grads = {name: np.full_like(p, np.nan) for name, p in layer.params.items()}
    out = step.forward(x).copy()
    dx = step.backward(d_out.copy(), grads, need_dx)
    return out, None if dx is None else dx.copy(), grads


def _case(rng, batch, length, input_size, hidden, layers, bias, bidirectional, with_initial):
    options = dict(num_layers=layers, bias=bias, bidirectional=bidirectional, batch_first=True)
    fast = LSTM(input_size, hidden, **options, seed=rng)
    readable = LSTM(input_size, hidden, **options, implementation="readable")
    for name, array in fast.params.items():
        readable.params[name][...] = array
    shape = (layers * fast.directions, batch, hidden)
    if with_initial:
        fast.initial_state = readable.initial_state = tuple(
            rng.standard_normal(shape) for _ in range(2)
        )
    x = rng.standard_normal((batch, length, input_size))
    d_out = rng.standard_normal((batch, length, hidden * fast.directions))
    return fast, readable, x, d_out


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 5),
    length=st.integers(1, 7),
    input_size=st.integers(1, 6),
    hidden=st.integers(1, 6),
    layers=st.integers(1, 2),
    bias=st.booleans(),
    bidirectional=st.booleans(),
    with_initial=st.booleans(),
    seed=seeds,
)
def test_lstm_fast_step_equals_readable_and_torch(
    batch, length, input_size, hidden, layers, bias, bidirectional, with_initial, seed
):
    """LSTM.step, BPTT.sequence: the fast step (LSTMStep for one layer and direction, the
    readable form otherwise) equals the readable step and torch's autograd (random ∂C/∂out,
    h0/c0 given or zeros), in float64."""
    rng = np.random.default_rng(seed)
    fast, readable, x, d_out = _case(
        rng, batch, length, input_size, hidden, layers, bias, bidirectional, with_initial
    )
    step = fast.fast_step()
    assert isinstance(step, LSTMStep) == (layers == 1 and not bidirectional)
    out, dx, grads = _run(step, fast, x, d_out)
    out_r, dx_r, grads_r = _run(GenericStep(readable), readable, x, d_out)
    assert_gradients_close(out, out_r, name="LSTMStep out vs readable")
    assert_gradients_close(dx, dx_r, name="LSTMStep ∂C/∂x vs readable")
    for name in grads:
        assert_gradients_close(grads[name], grads_r[name], name=f"LSTMStep {name} vs readable")

    params = {k: torch.tensor(v, requires_grad=True) for k, v in fast.params.items()}
    xt = torch.tensor(x, requires_grad=True)
    states = (
        None if fast.initial_state is None else tuple(torch.tensor(s) for s in fast.initial_state)
    )
    out_t, _ = torch_recurrent(fast, params, xt, states)
    out_t.backward(torch.tensor(d_out))
    assert_gradients_close(out, out_t.detach().numpy(), name="LSTMStep out vs torch")
    assert_gradients_close(dx, xt.grad.numpy(), name="LSTMStep ∂C/∂x vs torch")
    for name, p in params.items():
        assert_gradients_close(grads[name], p.grad.numpy(), name=f"LSTMStep {name} vs torch")


def test_lstm_step_bottom_of_stack_skips_dx_and_reuses_buffers():
    """need_dx=False returns None with the same parameter gradients; a second batch size
    gets its own buffers and the first size's results stay reproducible."""
    rng = np.random.default_rng(0)
    layer = LSTM(3, 4, batch_first=True, seed=1)
    step = layer.fast_step()
    x, d_out = rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 5, 4))
    out, dx, grads = _run(step, layer, x, d_out)
    out2, none, grads2 = _run(step, layer, x, d_out, need_dx=False)
    assert none is None and np.array_equal(out, out2)
    for name in grads:
        assert np.array_equal(grads[name], grads2[name])
    _run(step, layer, rng.standard_normal((3, 2, 3)), rng.standard_normal((3, 2, 4)))
    out3, dx3, grads3 = _run(step, layer, x, d_out)
    assert np.array_equal(out, out3) and np.array_equal(dx, dx3)
    for name in grads:
        assert np.array_equal(grads[name], grads3[name])


def test_lstm_step_float32_and_thread_count_independent():
    """float32 in, float32 buffers and gradients out; 1 and 2 threads give the same bits."""
    rng = np.random.default_rng(3)
    layer = LSTM(16, 24, batch_first=True, seed=2, dtype=np.float32)
    layer.initial_state = tuple(
        rng.standard_normal((1, 8, 24)).astype(np.float32) for _ in range(2)
    )
    x = rng.standard_normal((8, 11, 16)).astype(np.float32)
    d_out = rng.standard_normal((8, 11, 24)).astype(np.float32)
    results = across_threads(lambda: _run(layer.fast_step(), layer, x, d_out))
    (out, dx, grads), (out2, dx2, grads2) = results
    assert out.dtype == dx.dtype == np.float32
    assert all(
        v.dtype == np.float32
        for v in layer.fast_step().__dict__.values()
        if isinstance(v, np.ndarray)
    )
    assert np.array_equal(out, out2) and np.array_equal(dx, dx2)
    for name in grads:
        assert grads[name].dtype == np.float32 and np.array_equal(grads[name], grads2[name])
    readable = LSTM(16, 24, batch_first=True, dtype=np.float32, implementation="readable")
    for name, array in layer.params.items():
        readable.params[name][...] = array
    readable.initial_state = layer.initial_state
    out_r, dx_r, _ = _run(GenericStep(readable), readable, x, d_out)
    np.testing.assert_allclose(out, out_r, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dx, dx_r, rtol=1e-4, atol=1e-5)


def test_lstm_step_float32_benchmark_shape_same_bits_on_one_and_two_threads():
    """The benchmark's shape (batch 32, 128 units: BPTT's chunks of steps, a last short one)
    in float32: the same bits on 1 and 2 threads."""
    rng = np.random.default_rng(5)
    layer = LSTM(64, 128, batch_first=True, seed=4, dtype=np.float32)
    x = rng.standard_normal((32, 9, 64)).astype(np.float32)
    d_out = rng.standard_normal((32, 9, 128)).astype(np.float32)
    results = across_threads(lambda: _run(layer.fast_step(), layer, x, d_out), (1, 2, 1))
    for other in results[1:]:
        assert np.array_equal(results[0][0], other[0]) and np.array_equal(results[0][1], other[1])
        for name in results[0][2]:
            assert np.array_equal(results[0][2][name], other[2][name])


def _hidden_case(kind, rng, batch, length, input_size, hidden, layers, bias, bidi, initial):
    options = {"nonlinearity": kind[4:]} if kind.startswith("rnn") else {}
    cls = GRU if kind == "gru" else RNN
    layer = cls(
        input_size, hidden, num_layers=layers, bias=bias, bidirectional=bidi, batch_first=True,
        seed=rng, **options,
    )  # fmt: skip
    if initial:
        layer.initial_state = (rng.standard_normal((layers * layer.directions, batch, hidden)),)
    x = rng.standard_normal((batch, length, input_size))
    d_out = rng.standard_normal((batch, length, hidden * layer.directions))
    return layer, x, d_out


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(["rnn_tanh", "rnn_relu", "gru"]),
    batch=st.integers(1, 5),
    length=st.integers(1, 7),
    input_size=st.integers(1, 6),
    hidden=st.integers(1, 6),
    layers=st.integers(1, 2),
    bias=st.booleans(),
    bidirectional=st.booleans(),
    with_initial=st.booleans(),
    seed=seeds,
)
def test_rnn_and_gru_fast_steps_equal_readable_and_torch(
    kind, batch, length, input_size, hidden, layers, bias, bidirectional, with_initial, seed
):
    """RNN.step, GRU.step, BPTT.sequence: RNNStep/GRUStep (one layer and direction; the
    readable form otherwise) equal the readable per-step cells and torch's autograd."""
    rng = np.random.default_rng(seed)
    layer, x, d_out = _hidden_case(
        kind, rng, batch, length, input_size, hidden, layers, bias, bidirectional, with_initial
    )
    step = layer.fast_step()
    single = layers == 1 and not bidirectional
    assert isinstance(step, GRUStep if kind == "gru" else RNNStep) == single
    out, dx, grads = _run(step, layer, x, d_out)
    out_r, dx_r, grads_r = _run(GenericStep(layer), layer, x, d_out)
    assert_gradients_close(out, out_r, name=f"{kind} step out vs readable")
    assert_gradients_close(dx, dx_r, name=f"{kind} step ∂C/∂x vs readable")
    for name in grads:
        assert_gradients_close(grads[name], grads_r[name], name=f"{kind} {name} vs readable")
    params = {k: torch.tensor(v, requires_grad=True) for k, v in layer.params.items()}
    xt = torch.tensor(x, requires_grad=True)
    h0 = None if layer.initial_state is None else torch.tensor(layer.initial_state[0])
    out_t, _ = torch_recurrent(layer, params, xt, h0)
    out_t.backward(torch.tensor(d_out))
    assert_gradients_close(out, out_t.detach().numpy(), name=f"{kind} out vs torch")
    assert_gradients_close(dx, xt.grad.numpy(), name=f"{kind} ∂C/∂x vs torch")
    for name, p in params.items():
        assert_gradients_close(grads[name], p.grad.numpy(), name=f"{kind} {name} vs torch")


@pytest.mark.parametrize("kind", ["rnn_tanh", "rnn_relu", "gru"])
def test_rnn_and_gru_steps_float32_and_thread_count_independent(kind):
    """float32 buffers and gradients; 1 and 2 threads give the same bits."""
    rng = np.random.default_rng(5)
    layer, x, d_out = _hidden_case(kind, rng, 8, 9, 12, 20, 1, True, False, True)
    x, d_out = x.astype(np.float32), d_out.astype(np.float32)
    for name, array in list(layer.params.items()):
        layer.params[name] = array.astype(np.float32)
    layer.initial_state = (layer.initial_state[0].astype(np.float32),)
    results = across_threads(lambda: _run(layer.fast_step(), layer, x, d_out))
    (out, dx, grads), (out2, dx2, grads2) = results
    assert out.dtype == dx.dtype == np.float32
    assert np.array_equal(out, out2) and np.array_equal(dx, dx2)
    for name in grads:
        assert grads[name].dtype == np.float32 and np.array_equal(grads[name], grads2[name])
    out_r, dx_r, _ = _run(GenericStep(layer), layer, x, d_out)
    np.testing.assert_allclose(out, out_r, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dx, dx_r, rtol=1e-4, atol=1e-5)


def test_readable_lstm_trains_through_its_readable_form():
    """LSTM(implementation="readable") keeps the per-step readable form in training."""
    assert isinstance(LSTM(2, 3, implementation="readable").fast_step(), GenericStep)
