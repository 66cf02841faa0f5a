"""EMB.lookup's scatter-add in ``EmbeddingStep``: rows added level by level (each index's
r-th occurrence at level r, so every index's rows are added left to right) give the same
bits as the readable form's ``np.add.at`` (the replaced ``add.reduceat`` did not: it adds a
run's first row to the pairwise sum of the rest) and torch.nn.Embedding's gradient."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.gradcheck import assert_gradients_close
from manual_bp.layers.embedding import Embedding, embedding_backward


@settings(max_examples=15, deadline=None)
@given(
    vocab=st.integers(1, 7),
    batch=st.integers(0, 4),
    length=st.integers(1, 9),
    by_freq=st.booleans(),
    padding=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**31 - 1),
)
def test_level_scatter_same_bits_as_readable_and_matches_torch(
    vocab, batch, length, by_freq, padding, dtype, seed
):
    """Repeats from none (one index per row) to one index everywhere (a single run as long
    as the batch), padding row, scale_grad_by_freq, an empty batch; float32 and float64."""
    rng = np.random.default_rng(seed)
    padding_idx = int(rng.integers(0, vocab)) if padding else None
    layer = Embedding(vocab, 3, padding_idx, scale_grad_by_freq=by_freq, seed=rng, dtype=dtype)
    x = rng.integers(0, vocab, (batch, length))
    d_out = rng.standard_normal((batch, length, 3)).astype(dtype)
    step = layer.fast_step()
    step.forward(x.astype(dtype))
    grads = {"weight": np.full_like(layer.params["weight"], np.nan)}
    assert step.backward(d_out, grads, False) is None
    expected = embedding_backward(d_out, x, vocab, padding_idx, by_freq)
    assert grads["weight"].dtype == dtype
    assert np.array_equal(grads["weight"], expected)  # the same bits, not just close

    module = torch.nn.Embedding(
        vocab, 3, padding_idx, scale_grad_by_freq=by_freq, dtype=torch.float64
    )
    module(torch.tensor(x)).backward(torch.tensor(d_out, dtype=torch.float64))
    tol = {} if dtype == np.float64 else {"rtol": 1e-5, "atol": 1e-5}
    if tol:
        np.testing.assert_allclose(grads["weight"], module.weight.grad.numpy(), **tol)
    else:
        assert_gradients_close(grads["weight"], module.weight.grad.numpy(), name="scatter")


def test_level_scatter_at_the_benchmark_shape():
    """1120 indices into 1000 rows (the lstm workload), and the same batch with a padding
    token filling most positions (hundreds of levels, past SCATTER_LEVELS): the readable
    form's bits."""
    rng = np.random.default_rng(0)
    layer = Embedding(1000, 64, seed=1, dtype=np.float32)
    x = rng.integers(0, 1000, (32, 35))
    x[:, 5:] = 0
    d_out = rng.standard_normal((32, 35, 64)).astype(np.float32)
    step = layer.fast_step()
    step.forward(x.astype(np.float32))
    grads = {"weight": np.empty_like(layer.params["weight"])}
    step.backward(d_out, grads, True)
    expected = embedding_backward(d_out, x, 1000, None)
    assert np.array_equal(grads["weight"], expected)
    x[:, 5:] = rng.integers(0, 1000, (32, 30))
    step.forward(x.astype(np.float32))
    step.backward(d_out, grads, True)
    assert np.array_equal(grads["weight"], embedding_backward(d_out, x, 1000, None))
