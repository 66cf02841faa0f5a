"""Blind spots of the models (``network``, ``fast``, ``sequential``) found by mutation testing
(issue 15, docs/mutation.md): numbers a user reads that no other test pinned.

Each test states the user-visible behaviour and its oracle; the mutants it kills are
listed in docs/mutation.md.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from manual_bp import Network


def _net(seed: int = 0, sizes=(3, 4, 2), **kwargs) -> Network:
    return Network(list(sizes), "tanh", "quadratic", seed=seed, **kwargs)


@pytest.mark.parametrize("n", [None, 7])
def test_total_cost_adds_the_l2_term_scaled_by_the_training_set_size(n):
    """``total_cost(x, y, λ, n) = C + (λ/2n) Σ‖W‖²`` (Nielsen), ``n`` defaulting to ``len(x)``,
    against torch: the mean of ½‖a − y‖² plus the weight penalty (biases excluded)."""
    rng = np.random.default_rng(1)
    net = _net()
    x, y = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    lmbda = 0.3
    h = torch.tensor(x)
    for W, b, act in zip(net.weights, net.biases, (torch.tanh, torch.tanh), strict=True):
        h = act(F.linear(h, torch.tensor(np.array(W)), torch.tensor(np.array(b)).reshape(-1)))
    cost = 0.5 * ((h - torch.tensor(y)) ** 2).sum(dim=1).mean()
    size = len(x) if n is None else n
    penalty = 0.5 * lmbda / size * sum(float((np.asarray(W) ** 2).sum()) for W in net.weights)
    expected = float(cost) + penalty
    assert net.total_cost(x, y, lmbda, n) == pytest.approx(expected, rel=1e-12)
    assert net.total_cost(x, y) == pytest.approx(float(cost), rel=1e-12)


def test_accuracy_counts_labels_and_one_hot_rows_alike():
    """``accuracy`` is the fraction of argmax predictions equal to the labels, whatever the
    target form; a wrong count of labels is one clear error."""
    rng = np.random.default_rng(2)
    net = _net(seed=3, sizes=(3, 5, 4))
    x = rng.standard_normal((9, 3))
    predicted = net.predict(x)
    labels = predicted.copy()
    labels[:4] = (labels[:4] + 1) % 4  # 4 of 9 wrong
    assert net.accuracy(x, labels) == pytest.approx(5 / 9)
    assert net.accuracy(x, np.eye(4)[labels]) == pytest.approx(5 / 9)
    with pytest.raises(ValueError, match=r"8 labels .*9 inputs"):
        net.accuracy(x, labels[:8])


def test_backprop_single_takes_an_integer_label_like_its_one_hot_row():
    """``backprop_single(x, label)`` (Nielsen's one-sample form) accepts a class label as
    the docstring says, and gives exactly the gradients of the one-hot row."""
    rng = np.random.default_rng(4)
    net = Network([3, 4, 3], "sigmoid", "cross-entropy", seed=5)
    x = rng.standard_normal(3)
    from_label = net.backprop_single(x, 2)
    from_row = net.backprop_single(x, np.eye(3)[2])
    for ours, expected in zip(from_label.weights + from_label.biases,
                              from_row.weights + from_row.biases, strict=True):  # fmt: skip
        np.testing.assert_array_equal(ours, expected)
