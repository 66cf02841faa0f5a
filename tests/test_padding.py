"""SEQ.ignore_index: padded sequence batches, as torch's ``cross_entropy(ignore_index=…)``.

Against torch (float64) on embedding → RNN/LSTM/GRU stacks → dense with padded batches
(random lengths, random labels, so every upstream gradient is random), through BP1's
shortcut (softmax + log-likelihood) and the general path (identity +
categorical-cross-entropy); truncated BPTT with padded chunks against torch's detach loop;
and the properties that pin the definition: ignored labels change nothing, the mean runs
over the counted positions only, an all-ignored batch is an error.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp import train
from manual_bp.layers import Dense, Embedding
from manual_bp.layers.recurrent import LSTM
from manual_bp.models.sequential import Sequential
from manual_bp.optimizers import SGD
from manual_bp.sequence_training import train_sequences, truncated_bptt
from reference.checks_padding import ignore_index_case, padded_batch
from reference.checks_sequence_training import tbptt_comparisons, tbptt_model
from reference.checks_sequences import KINDS

seeds = st.integers(0, 2**31 - 1)


@settings(max_examples=30)
@given(
    kind=st.sampled_from(KINDS),
    batch=st.integers(1, 4),
    length=st.integers(1, 5),
    n_classes=st.integers(2, 4),
    ignore_class=st.booleans(),
    shortcut=st.booleans(),
    seed=seeds,
)
def test_ignore_index_matches_torch(kind, batch, length, n_classes, ignore_class, shortcut, seed):
    """SEQ.ignore_index: cost, ∂C/∂aᴷ and every ∂C/∂θ equal torch's cross_entropy with
    ignore_index (−100, or a valid class index) on a padded batch."""
    ignore_index = (seed % n_classes) if ignore_class else -100
    comparisons = ignore_index_case(
        kind, batch, length, 4, 3, n_classes, ignore_index, shortcut, seed
    )
    assert {"C", "∂C/∂a", "∂C/∂0.weight"} <= {c.name for c in comparisons}
    for comparison in comparisons:
        comparison.check()


def _model(ignore_index=-100, cost="log-likelihood", out="softmax", seed=0):
    layers = [Embedding(5, 3, padding_idx=0), LSTM(3, 4, batch_first=True), Dense(4, 3), out]
    return Sequential(layers, cost, input_shape=(6,), seed=seed, ignore_index=ignore_index)


@given(seeds)
def test_ignored_labels_change_nothing(seed):
    """SEQ.ignore_index: changing the tokens after each sequence's last counted position
    (a causal LSTM never lets them reach a counted output) leaves the cost and every
    non-embedding gradient bit-equal; the cost is the mean over the counted positions only,
    the seed is zero at ignored positions, accuracy counts only counted positions."""
    rng = np.random.default_rng(seed)
    model = _model(seed=seed)
    x, y = padded_batch(rng, 3, 6, 5, 3, -100)
    base = model.backprop(x, y)
    counted = y != -100
    x2 = np.where(counted, x, rng.integers(0, 5, size=x.shape))  # causal: tail tokens unseen
    x2[:, 0] = x[:, 0]
    tail = np.cumsum(counted[:, ::-1], axis=1)[:, ::-1] == 0  # after the last real label
    x2 = np.where(tail, x2, x)
    other = model.backprop(x2, y)
    assert other.cost == base.cost
    for name, grad in base.params.items():
        if name != "0.weight":  # embedding rows of the changed tokens may differ
            np.testing.assert_array_equal(other.params[name], grad)
    per_position = -np.log(np.take_along_axis(base.output, np.where(counted, y, 0)[..., None], -1))
    assert base.cost == pytest.approx(per_position[counted].mean(), rel=1e-14)
    assert not base.output_grad[~counted].any()
    # the same targets without ignore_index would count the zero rows
    assert model.accuracy(x, y) == pytest.approx(
        np.mean(np.argmax(model.infer(model.prepare_inputs(x)), -1)[counted] == y[counted])
    )


def test_ignore_index_edges():
    """Clear errors: all ignored, a cost without class targets, a bad value; the label
    range message names ignore_index; config and copy keep it."""
    model = _model()
    x = np.ones((2, 6), int)
    with pytest.raises(ValueError, match="every position of the batch is ignored"):
        model.backprop(x, np.full((2, 6), -100))
    with pytest.raises(ValueError, match=r"label 7 .* or ignore_index=-100"):
        model.backprop(x, np.full((2, 6), 7))
    with pytest.raises(ValueError, match="class labels"):
        Sequential([Dense(2, 2)], "quadratic", ignore_index=-100)
    with pytest.raises(TypeError, match="ignore_index must be an integer"):
        _model(ignore_index=True)
    assert model.get_config()["ignore_index"] == -100
    assert "ignore_index" not in _model(ignore_index=None).get_config()
    clone = model.copy()
    y = np.array([[1, 2, -100, -100, -100, -100], [0, 0, 1, 2, 1, -100]])
    assert clone.ignore_index == -100 and clone.backprop(x, y).cost == model.backprop(x, y).cost
    assert "ignore_index=-100" in repr(model)
    # an in-range ignore_index: that class is ignored although it is valid
    zero = _model(ignore_index=0)
    labels = np.array([[0, 1, 2, 0, 1, 2]])
    targets = zero.prepare_targets(labels, 1)
    assert not targets[0, [0, 3]].any() and targets[0, [1, 2, 4, 5]].sum() == 4
    assert zero.backprop(x[:1], labels).cost == pytest.approx(
        _model(ignore_index=-100).backprop(x[:1], np.where(labels == 0, -100, labels)).cost,
        rel=1e-15,
    )


@settings(max_examples=25)
@given(seeds)
def test_truncated_bptt_with_padding_matches_torch(seed):
    """TBPTT.chunk + SEQ.ignore_index: padded labels, chunk by chunk vs torch's nll_loss
    (ignore_index) with detach(); an all-padding chunk yields no cost and zero gradients
    (torch: nan) but still carries the state."""
    rng = np.random.default_rng(seed)
    length, chunk = int(rng.integers(2, 8)), int(rng.integers(1, 4))
    model = tbptt_model(rng, length, ignore_index=-100)
    batch = int(rng.integers(1, 4))
    x = rng.standard_normal((batch, *model.input_shape))
    _, y = padded_batch(rng, batch, length, 2, model.output_shape[-1], -100)
    for comparison in tbptt_comparisons(model, x, y, chunk):
        comparison.check()


def test_all_padding_chunks_take_no_step():
    model = tbptt_model(np.random.default_rng(0), 6, ignore_index=-100)
    x = np.random.default_rng(1).standard_normal((2, *model.input_shape))
    y = np.full((2, 6), -100)
    y[:, :2] = 1
    chunks = list(truncated_bptt(model, x, y, 2))
    assert [c.positions for c in chunks] == [4, 0, 0]
    assert np.isnan(chunks[1].cost) and not any(g.any() for g in chunks[2].grads)
    before = model.flat_parameters.copy()
    with pytest.raises(ValueError, match="no position of the data is counted"):
        train_sequences(model, SGD(lr=0.1), x, np.full((2, 6), -100), epochs=1, chunk_length=2)
    np.testing.assert_array_equal(model.flat_parameters, before)  # no step was taken


def test_train_steps_with_the_masked_gradient():
    """train(): the mini-batch step uses the masked mean."""
    rng = np.random.default_rng(2)
    model = _model(seed=1)
    x, y = padded_batch(rng, 4, 6, 5, 3, -100)
    expected = model.copy()
    grads = expected.backprop(x, y).params
    for name, array in expected.named_parameters():
        array -= 0.5 * grads[name]
    train(model, x, y, epochs=1, batch_size=4, eta=0.5, monitor=(), seed=0)
    np.testing.assert_allclose(model.flat_parameters, expected.flat_parameters, rtol=1e-13)


def test_train_monitoring_honours_ignore_index():
    rng = np.random.default_rng(3)
    model = _model(seed=2)
    x, y = padded_batch(rng, 4, 6, 5, 3, -100)
    history = train(model, x, y, epochs=1, batch_size=4, eta=0.1, seed=0)
    assert history.training_cost[0] == pytest.approx(model.total_cost(x, y), rel=1e-12)
    assert history.training_accuracy[0] == model.accuracy(x, y)
