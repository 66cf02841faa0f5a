"""TBPTT.chunk and CLIP.norm against torch; the synthetic sequence tasks.

Truncated BPTT is compared chunk by chunk with torch's loop
(``loss.backward(); h = h.detach()``) on random stacks with one or two recurrent layers;
clipping with ``torch.nn.utils.clip_grad_norm_`` below, above and at the threshold,
for norm types 1, 2, 3 and inf.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.layers import ActivationLayer, Dense
from manual_bp.layers.recurrent import LSTM
from manual_bp.models.sequential import Sequential
from manual_bp.optimizers import Adam
from manual_bp.sequence_data import TASKS, load_task, make_sequences
from manual_bp.sequence_training import clip_grad_norm, train_sequences, truncated_bptt
from reference.checks_sequence_training import clip_check, tbptt_check, tbptt_model

seeds = st.integers(0, 2**31 - 1)


@settings(max_examples=40)
@given(seeds)
def test_truncated_bptt_matches_torch(seed):
    """TBPTT.chunk: per-chunk cost and every gradient equal torch's with detach() between."""
    for comparison in tbptt_check(np.random.default_rng(seed)):
        comparison.check()


def test_truncation_cuts_the_gradient_but_carries_the_state():
    """TBPTT.chunk: the second chunk's output depends on the first (state carried) but its
    gradient does not reach the first chunk's inputs (only its own positions)."""
    rng = np.random.default_rng(3)
    model = tbptt_model(rng, 6)
    x = rng.standard_normal((2, *model.input_shape))
    y = rng.integers(0, model.output_shape[-1], size=(2, 6))
    whole = next(iter(truncated_bptt(model, x, y, 6)))
    chunks = list(truncated_bptt(model, x, y, 3))
    assert len(chunks) == 2 and (chunks[1].start, chunks[1].stop) == (3, 6)
    assert not any(np.allclose(a, b) for a, b in zip(whole.grads, chunks[0].grads, strict=True))
    # a chunk of full length is plain BPTT; the layers' initial_state is restored to None
    assert all(getattr(layer, "initial_state", None) is None for layer in model.layers)
    with pytest.raises(ValueError, match="chunk_length"):
        next(truncated_bptt(model, x, y, 0))


def test_trainer_refuses_a_time_major_layer():
    """Spec-built layers are batch-major (the trainer's form); a layer built with torch's
    default batch_first=False is refused in one line when the model is built (Sequential's
    data is batch-major), so the trainer never feeds it transposed sequences."""
    layers = [LSTM(3, 4), Dense(4, 2), ActivationLayer("softmax")]
    with pytest.raises(ValueError, match=r"^LSTM\(3, 4\) is time-major.*batch_first=True$"):
        Sequential(layers, "log-likelihood", input_shape=(5, 3), seed=0)
    layers[0] = LSTM(3, 4, batch_first=True)
    model = Sequential(layers, "log-likelihood", input_shape=(5, 3), seed=0)
    x, y = np.zeros((2, 5, 3)), np.zeros((2, 5), dtype=int)
    assert np.isfinite(next(truncated_bptt(model, x, y, 2)).cost)


@given(seeds)
def test_clip_grad_norm_matches_torch(seed):
    """CLIP.norm: total norm over all gradients, scale min(1, max/(total+1e-6)), in place."""
    for comparison in clip_check(np.random.default_rng(seed)):
        comparison.check()


def test_clip_grad_norm_edges():
    """CLIP.norm at the edges: zero gradients, empty lists, bad arguments, non-finite norms."""
    g = [np.zeros(3)]
    assert clip_grad_norm(g, 1.0) == 0.0 and not g[0].any()
    assert clip_grad_norm([], 1.0) == 0.0
    g = {"a": np.array([3.0, 4.0])}
    assert clip_grad_norm(g, 1.0) == 5.0
    np.testing.assert_allclose(g["a"], [3 / (5 + 1e-6), 4 / (5 + 1e-6)], rtol=1e-15)
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm([np.ones(2)], 0.0)
    with pytest.raises(ValueError, match="norm_type"):
        clip_grad_norm([np.ones(2)], 1.0, 0.5)
    with pytest.raises(ValueError, match="non-finite"):
        clip_grad_norm([np.array([np.inf])], 1.0)


@pytest.mark.parametrize("task", TASKS)
def test_tasks_are_seeded_and_labelled(task):
    data = load_task(task, n_train=5, n_val=2, n_test=3, length=6, vocab=5, seed=1)
    again = load_task(task, n_train=5, n_val=2, n_test=3, length=6, vocab=5, seed=1)
    np.testing.assert_array_equal(data.x_train, again.x_train)
    assert data.x_train.shape == data.y_train.shape == (5, 6)
    assert data.x_test.shape == (3, 6) and data.y_train.dtype == np.int64
    x, y = data.x_train, data.y_train
    expected = {
        "copy": np.concatenate([np.zeros((5, 1), int), x[:, :-1]], axis=1),
        "reverse": x[:, ::-1],
        "sum": np.cumsum(x, 1) % 5,
        "parity": np.cumsum(x, 1) % 2,
    }[task]
    np.testing.assert_array_equal(y, expected)
    with pytest.raises(ValueError, match="unknown task"):
        make_sequences("sort", 2, 3, 4, np.random.default_rng())


def test_lstm_learns_the_copy_task():
    """End to end: embedding → LSTM → dense → softmax, truncated BPTT and clipping."""
    data = load_task("copy", n_train=256, length=6, vocab=4, seed=0)
    model = Sequential.from_spec(
        [("embedding", (4, 8), {}), ("lstm", (16,), {}), "dense", "softmax"],
        input_shape=(6,),
        n_outputs=4,
        cost="log-likelihood",
        seed=0,
    )
    assert isinstance(model.layers[1], LSTM)
    history = train_sequences(
        model, Adam(lr=0.02), data.x_train, data.y_train, epochs=15, batch_size=32,
        chunk_length=3, max_norm=1.0, seed=0,
    )  # fmt: skip
    assert history[-1] < 0.5 * history[0]
    assert model.accuracy(data.x_test, data.y_test) > 0.9
