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


def test_fast_training_with_saturated_sigmoids_overflows_silently_and_equals_readable():
    """A sigmoid unit at ``z < −709`` overflows ``e^{−z}`` to inf and correctly gives 0;
    the fused trainer must neither raise (the suite turns overflow into an error, as a
    user's ``np.seterr(all="raise")`` would) nor differ from the readable step."""
    from manual_bp import train

    rng = np.random.default_rng(6)
    x = rng.standard_normal((8, 2)) * 1e3  # |z| of the first layer far beyond 709
    y = rng.integers(0, 2, size=8)
    nets = [Network([2, 3, 2], "sigmoid", "cross-entropy", seed=7) for _ in range(2)]
    for net, fast in zip(nets, (True, False), strict=True):
        net.weights[0] *= 5.0
        train(net, x, y, epochs=2, batch_size=4, eta=0.1, fast=fast, seed=1)
    for ours, expected in zip(nets[0].weights + nets[0].biases,
                              nets[1].weights + nets[1].biases, strict=True):  # fmt: skip
        np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-14)


def test_fast_training_with_a_user_cost_whose_shortcut_is_not_a_minus_y():
    """A user's cost may declare its own output shortcut ``δᴸ``; where it is not one of
    the library's ``a − y`` shortcuts the fused trainer must call it (via ``cost.delta``),
    not assume ``a − y``: trained parameters equal the readable path's."""
    from manual_bp import train
    from manual_bp.costs import Cost

    def shortcut(z, a, y):  # δᴸ = ∂C/∂a ⊙ tanh'(z) = 2(a − y)(1 − a²)
        return 2.0 * (a - y) * (1.0 - a * a)

    class DoubledQuadratic(Cost):
        name = "doubled-quadratic"
        shortcuts = {"tanh": ("SHORTCUT.tanh-doubled-quadratic", shortcut)}

        def per_sample(self, a, y):
            return ((a - y) ** 2).sum(axis=1)

        def grad(self, a, y):
            return 2.0 * (a - y)

    rng = np.random.default_rng(8)
    x, y = rng.standard_normal((6, 3)), rng.uniform(-0.5, 0.5, size=(6, 2))
    nets = [Network([3, 4, 2], "tanh", DoubledQuadratic(), seed=9) for _ in range(2)]
    for net, fast in zip(nets, (True, False), strict=True):
        train(net, x, y, epochs=2, batch_size=3, eta=0.1, fast=fast, seed=2)
    for ours, expected in zip(nets[0].weights + nets[0].biases,
                              nets[1].weights + nets[1].biases, strict=True):  # fmt: skip
        np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-14)


def _stack(**kwargs):
    from manual_bp import Dense, Sequential

    return Sequential(
        [Dense(3, 5), "tanh", Dense(5, 4), "softmax"], "log-likelihood", input_shape=(3,),
        seed=11, **kwargs,
    )  # fmt: skip


def test_sequential_total_cost_is_the_mean_negative_log_likelihood_in_eval_mode():
    """``Sequential.total_cost(x, y)`` (what training monitors report) against torch:
    ``F.cross_entropy`` of the logits of the same stack, mean over the batch."""
    rng = np.random.default_rng(10)
    model = _stack()
    x, y = rng.standard_normal((7, 3)), rng.integers(0, 4, size=7)
    (W1, b1), (W2, b2) = [
        [torch.tensor(model.layers[i].params[name]) for name in ("weight", "bias")] for i in (0, 2)
    ]
    logits = F.linear(torch.tanh(F.linear(torch.tensor(x), W1, b1)), W2, b2)
    expected = float(F.cross_entropy(logits, torch.tensor(y)))
    assert model.total_cost(x, y) == pytest.approx(expected, rel=1e-12)
    assert model.total_cost(x, np.eye(4)[y]) == pytest.approx(expected, rel=1e-12)


def test_sequential_rejects_non_numeric_inputs_with_a_type_error():
    """Strings or objects as inputs: one clear ``TypeError`` naming the dtype."""
    model = _stack()
    for bad in (np.array([["a", "b", "c"]]), np.array([[1, None, 2]], dtype=object)):
        with pytest.raises(TypeError, match=r"x must be .*real numbers"):
            model.predict(bad)


def test_a_bad_layer_spec_is_named_in_full_in_the_error():
    """``Sequential.from_spec``: the one-line error names the layer's index and its spec,
    whatever its form (a name, a config dict, a malformed tuple)."""
    from manual_bp import Sequential

    cases = [
        (["gru"], r"layer 0 \(gru\): gru needs per-sample sequences"),
        ([{"name": "dense", "out_features": 2, "x": 1}], r"layer 0 \(dense\): "),
        ([("conv2d", (3,))], r"layer 0 \(\('conv2d', \(3,\)\)\): "),
    ]
    for spec, message in cases:
        with pytest.raises(ValueError, match=message):
            Sequential.from_spec(spec, (3,), 2, cost="quadratic")


def test_a_float32_stack_stays_float32_from_data_to_gradients():
    """``Sequential(dtype=float32)`` given float64 inputs and float64 target rows: every
    parameter, buffer (batch norm's running statistics), output and gradient is float32."""
    from manual_bp import Dense, Sequential
    from manual_bp.layers import BatchNorm1d

    rng = np.random.default_rng(12)
    model = Sequential(
        [Dense(3, 4), BatchNorm1d(4), "tanh", Dense(4, 2), "softmax"], "log-likelihood",
        input_shape=(3,), seed=13, dtype=np.float32,
    )  # fmt: skip
    x, y = rng.standard_normal((6, 3)), np.eye(2)[rng.integers(0, 2, size=6)]
    assert all(a.dtype == np.float32 for _, a in model.named_parameters())
    floats = [a for _, a in model.named_buffers() if a.dtype.kind == "f"]  # not the counter
    assert len(floats) == 2 and all(a.dtype == np.float32 for a in floats)
    grads = model.backprop(x, y)
    assert grads.input_grad.dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads.params.values())
    assert model.infer(model.prepare_inputs(x)).dtype == np.float32
    for targets in (y, y.argmax(axis=1)):  # rows and labels: the model's dtype
        assert model.prepare_targets(targets, 6).dtype == np.float32


def test_saturated_softmax_log_likelihood_uses_the_shortcut_and_stays_finite():
    """Logits so large that the softmax underflows to exactly 0: ``δᴸ = a − y`` (the
    SHORTCUT, as torch's fused ``cross_entropy``) keeps the gradient finite and equal to
    torch's; the general path would divide by a = 0."""
    from manual_bp import Dense, Sequential

    model = Sequential([Dense(2, 3), "softmax"], "log-likelihood", input_shape=(2,), seed=14)
    model.layers[0].params["weight"][...] = [[900.0, 0.0], [0.0, 0.0], [-900.0, 0.0]]
    model.layers[0].params["bias"][...] = 0.0
    x, y = np.array([[1.0, 0.5], [-1.0, 2.0]]), np.array([1, 0])
    grads = model.backprop(x, y)
    W = torch.tensor(model.layers[0].params["weight"], requires_grad=True)
    F.cross_entropy(torch.tensor(x) @ W.T, torch.tensor(y)).backward()
    assert np.isfinite(grads.params["0.weight"]).all()
    np.testing.assert_allclose(grads.params["0.weight"], W.grad.numpy(), rtol=1e-12, atol=0)


def test_sequential_config_keeps_the_input_shape():
    """``get_config`` records ``input_shape`` (``None`` when not given) and ``copy``
    rebuilds the same model from it."""
    from manual_bp import Sequential

    with_shape = _stack()
    assert with_shape.get_config()["input_shape"] == [3]
    assert with_shape.copy().input_shape == (3,)
    assert Sequential(["tanh"], "quadratic").get_config()["input_shape"] is None  # none known
