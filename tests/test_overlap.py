"""Work run beside a recurrent step's BPTT loop (``manual_bp.layers.overlap``): the dense
layer's ``∂C/∂W`` handed to the LSTM step below it — the same gradients as the readable path
and torch (float64, random upstream gradients), the same bits on 1 and 2 threads, errors
and the BLAS thread count handled."""

from __future__ import annotations

import gc
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import manual_bp
from manual_bp import _threads
from manual_bp.gradcheck import assert_gradients_close
from manual_bp.layers import overlap
from manual_bp.layers.dense import Dense
from manual_bp.layers.recurrent import GRU, LSTM, RNN
from manual_bp.models.sequential import Sequential
from manual_bp.training import FusedTrainer

seeds = st.integers(0, 2**31 - 1)


@contextmanager
def _thread_count(count):
    before = manual_bp.get_num_threads()
    manual_bp.set_num_threads(count)
    try:
        yield count
    finally:
        manual_bp.set_num_threads(before)


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    with _thread_count(request.param) as count:
        yield count


_KINDS = {
    "lstm": (LSTM, torch.nn.LSTM, {}),
    "gru": (GRU, torch.nn.GRU, {}),
    "rnn_tanh": (RNN, torch.nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (RNN, torch.nn.RNN, {"nonlinearity": "relu"}),
}


def _pair(rng, batch, length, width, hidden, out, bias, kind="lstm", dtype=np.float64):
    cls, _, options = _KINDS[kind]
    cell = cls(width, hidden, batch_first=True, bias=bias, seed=rng, dtype=dtype, **options)
    dense = Dense(hidden, out, bias=bias, seed=rng, dtype=dtype)
    return cell, dense


def _grads(layer, dtype):
    return {name: np.full(p.shape, np.nan, dtype) for name, p in layer.params.items()}


@settings(max_examples=20, deadline=None)
@given(
    batch=st.integers(1, 4),
    length=st.integers(1, 6),
    width=st.integers(1, 5),
    hidden=st.integers(1, 6),
    out=st.integers(1, 5),
    bias=st.booleans(),
    kind=st.sampled_from(sorted(_KINDS)),
    threads=st.sampled_from([1, 2]),
    seed=seeds,
)
def test_dense_over_a_recurrent_layer_hands_its_weight_gradient_to_bptt_and_matches_torch(
    batch, length, width, hidden, out, bias, kind, threads, seed
):
    """LSTM/GRU/RNN → Dense as fast steps, random ∂C/∂z: the dense's ∂C/∂W is run by the
    recurrent step (beside its loop) and equals torch's, with every other gradient and ∂C/∂x."""
    rng = np.random.default_rng(seed)
    lstm, dense = _pair(rng, batch, length, width, hidden, out, bias, kind)
    s_lstm, s_dense = lstm.fast_step(), dense.fast_step()
    x = rng.standard_normal((batch, length, width))
    dz = rng.standard_normal((batch, length, out))
    s_dense.forward(s_lstm.forward(x))
    assert s_dense.host is s_lstm
    g_lstm, g_dense = _grads(lstm, x.dtype), _grads(dense, x.dtype)
    dh = s_dense.backward(dz.copy(), g_dense, True)
    assert len(s_lstm.pending) == 1 and np.isnan(g_dense["weight"]).all()  # not yet run
    with _thread_count(threads):
        dx = s_lstm.backward(dh, g_lstm, True).copy()
    assert s_lstm.pending == []

    _, torch_cls, options = _KINDS[kind]
    r = torch_cls(width, hidden, batch_first=True, bias=bias, dtype=torch.float64, **options)
    d = torch.nn.Linear(hidden, out, bias=bias, dtype=torch.float64)
    tensors = {}
    for module, layer, tag in ((r, lstm, "lstm"), (d, dense, "dense")):
        for name, array in layer.params.items():
            setattr(module, name, torch.nn.Parameter(torch.tensor(array)))
            tensors[tag, name] = getattr(module, name)
    xt = torch.tensor(x, requires_grad=True)
    d(r(xt)[0]).backward(torch.tensor(dz))
    assert_gradients_close(dx, xt.grad.numpy(), name="∂C/∂x")
    for (tag, name), t in tensors.items():
        mine = (g_lstm if tag == "lstm" else g_dense)[name]
        assert_gradients_close(mine, t.grad.numpy(), name=f"{tag}.{name}")


def test_the_hand_over_in_a_stack_matches_the_readable_path_and_threads():
    """Embedding → LSTM → Dense → tanh → Dense → softmax (the pair in the middle of a stack):
    the fused gradients equal the readable path's; 1 and 2 threads give the same bits."""
    spec = [("embedding", (30, 6), {}), ("lstm", (9,), {}), ("dense", (7,), {}), "tanh",
            "dense", "softmax"]  # fmt: skip
    model = Sequential.from_spec(spec, (8,), 30, cost="log-likelihood", seed=2)
    rng = np.random.default_rng(4)
    tokens = rng.integers(0, 30, (5, 8)).astype(np.float64)
    labels = rng.integers(0, 30, (5, 8))
    _, readable = model.loss_and_gradients(
        model.prepare_inputs(tokens), model.prepare_targets(labels, 5)
    )
    before = manual_bp.get_num_threads()
    results = []
    try:
        for count in (1, 2, 1):
            manual_bp.set_num_threads(count)
            trainer = FusedTrainer(model)
            results.append(trainer.gradients(tokens, labels))
            assert trainer.steps[2].host is trainer.steps[1]  # the hand-over is taken
            assert trainer.steps[4].host is None
    finally:
        manual_bp.set_num_threads(before)
    for k, (a, b, c, r) in enumerate(zip(*results, readable, strict=True)):
        assert np.array_equal(a, b) and np.array_equal(a, c)
        assert_gradients_close(a, r, name=f"fused vs readable θ[{k}]")


def test_dense_at_the_bottom_of_the_sweep_computes_its_own_weight_gradient():
    """``need_dx`` false (no backward of the step below will follow): nothing is handed over."""
    rng = np.random.default_rng(1)
    lstm, dense = _pair(rng, 3, 4, 2, 5, 3, True)
    s_lstm, s_dense = lstm.fast_step(), dense.fast_step()
    x = rng.standard_normal((3, 4, 2))
    h = s_lstm.forward(x)
    s_dense.forward(h)
    g = _grads(dense, x.dtype)
    dz = rng.standard_normal((3, 4, 3))
    assert s_dense.backward(dz.copy(), g, False) is None
    assert s_lstm.pending == []
    np.testing.assert_allclose(g["weight"], dz.reshape(-1, 3).T @ h.reshape(-1, 5), rtol=1e-12)


def test_host_of_finds_only_an_offered_buffer_alive():
    class Host:
        pending: list = []

    host, buffer = Host(), np.empty((2, 3))
    overlap.offer(buffer, host)
    assert overlap.host_of(buffer) is host
    assert overlap.host_of(np.empty((2, 3))) is None
    assert overlap.host_of(buffer[:]) is None  # a view is another array: no hand-over
    key = id(buffer)
    del buffer
    gc.collect()
    assert key not in overlap._hosts


def test_beside_runs_every_job_and_the_loop(threads):
    seen = []
    overlap.beside([lambda: seen.append("a"), lambda: seen.append("b")], lambda: seen.append(0))
    assert sorted(seen, key=str) == [0, "a", "b"] and seen.index("a") < seen.index("b")
    if threads == 1:
        assert seen == ["a", "b", 0]  # one thread: the jobs first, then the loop
    overlap.beside([], lambda: seen.append(1))
    assert seen[-1] == 1


def test_an_error_in_a_job_reaches_the_caller_after_the_loop(threads):
    finished = []

    def job():
        raise ValueError("job failed")

    with pytest.raises(ValueError, match="job failed"):
        overlap.beside([job], lambda: finished.append(True))
    assert finished == [True] or threads == 1  # one thread: the job raised before the loop
    seen = []  # the worker still serves after an error
    overlap.beside([lambda: seen.append(1)], lambda: None)
    assert seen == [1]


def test_beside_holds_one_blas_thread_and_restores_the_count(threads):
    if _threads._blas is None:
        pytest.skip("NumPy's BLAS is not an OpenBLAS found in /proc/self/maps")
    _, get = _threads._blas
    before, inside = get(), []
    overlap.beside([lambda: inside.append(get())], lambda: inside.append(get()))
    assert inside == [1, 1] and get() == before
    with pytest.raises(RuntimeError):
        overlap.beside([lambda: None], lambda: (_ for _ in ()).throw(RuntimeError("loop")))
    assert get() == before


def test_work_left_by_an_interrupted_backward_is_dropped_at_the_next_forward():
    """A backward pass stopped between the dense and the recurrent step (an error) leaves
    the hand-over behind: the next forward drops it, so no stale product runs later."""
    rng = np.random.default_rng(2)
    lstm, dense = _pair(rng, 2, 3, 2, 4, 3, True)
    s_lstm, s_dense = lstm.fast_step(), dense.fast_step()
    x = rng.standard_normal((2, 3, 2))
    s_dense.forward(s_lstm.forward(x))
    s_dense.backward(rng.standard_normal((2, 3, 3)), _grads(dense, x.dtype), True)
    assert len(s_lstm.pending) == 1
    s_dense.forward(s_lstm.forward(x))
    assert s_lstm.pending == []
