"""Chapter ``docs/training.md``: initialisation, the SGD step, L2 weight decay, the loop."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from manual_bp import L2, SGD, Network
from manual_bp.gradcheck import assert_gradients_close
from manual_bp.training import nielsen_sgd, train
from reference.cases import build_case
from tests.strategies import network_specs


def test_default_initializer_statistics():
    """INIT.default: W ~ N(0, 1/n_in) and b ~ N(0, 1); 'large' draws W ~ N(0, 1).

    With 200 000 weights the sample variance has a relative standard error of
    √(2/200000) ≈ 0.3 %, so a 3 % band is > 9 standard errors wide yet rejects
    a missing or doubled 1/√n_in (a factor of 400 or 2).
    """
    net = Network([400, 500, 10], seed=0, initializer="default")
    W = net.weights[0]
    assert abs(W.mean()) < 5 * np.sqrt(1 / 400 / W.size)
    assert W.var() * 400 == pytest.approx(1.0, rel=0.03)
    biases = np.concatenate(list(net.biases))
    assert biases.var() == pytest.approx(1.0, rel=0.3)
    large = Network([400, 500, 10], seed=0, initializer="large")
    assert large.weights[0].var() == pytest.approx(1.0, rel=0.03)


def test_initializer_is_seeded():
    a, b = Network([5, 4, 3], seed=7), Network([5, 4, 3], seed=7)
    for Wa, Wb in zip(a.weights, b.weights, strict=True):
        np.testing.assert_array_equal(Wa, Wb)
    assert not np.array_equal(Network([5, 4, 3], seed=8).weights[0], a.weights[0])


def _torch_params(net):
    weights = [torch.tensor(np.array(W), requires_grad=True) for W in net.weights]
    biases = [torch.tensor(np.array(b), requires_grad=True) for b in net.biases]
    return weights, biases


def _set_grads(tensors, grads):
    for t, g in zip(tensors, grads, strict=True):
        t.grad = torch.tensor(np.array(g))


@given(network_specs(max_depth=3, max_width=8), st.floats(0.01, 5.0))
def test_sgd_step_matches_torch(spec, eta):
    """OPT.sgd: θ ← θ − η ∂C/∂θ equals torch.optim.SGD(lr=η) fed the same gradients."""
    net, x, y = build_case(spec)
    grads = net.backprop(x, y)
    weights, biases = _torch_params(net)
    _set_grads(weights, grads.weights)
    _set_grads(biases, grads.biases)
    torch.optim.SGD([*weights, *biases], lr=eta).step()
    SGD(lr=eta).step([*net.weights, *net.biases], [*grads.weights, *grads.biases])
    for l in range(len(net.weights)):
        assert_gradients_close(net.weights[l], weights[l].detach().numpy(), name=f"W[{l + 1}]")
        assert_gradients_close(net.biases[l], biases[l].detach().numpy(), name=f"b[{l + 1}]")


@given(
    network_specs(max_depth=3, max_width=8),
    st.floats(0.01, 3.0),
    st.floats(0.0, 10.0),
    st.integers(1, 60000),
)
def test_l2_step_matches_torch_weight_decay(spec, eta, lmbda, n_train):
    """REG.l2: w ← (1 − ηλ/N) w − η ∂C₀/∂w equals torch SGD with weight_decay = λ/N
    on a parameter group holding only the weights (biases are not decayed)."""
    net, x, y = build_case(spec)
    grads = net.backprop(x, y)
    weights, biases = _torch_params(net)
    _set_grads(weights, grads.weights)
    _set_grads(biases, grads.biases)
    torch.optim.SGD(
        [{"params": weights, "weight_decay": lmbda / n_train}, {"params": biases}], lr=eta
    ).step()
    # Nielsen's update written out: the (1 − ηλ/N) decay, then the gradient step.
    expected_w = [
        (1 - eta * lmbda / n_train) * W - eta * g
        for W, g in zip(net.weights, grads.weights, strict=True)
    ]
    weight_grads = [g.copy() for g in grads.weights]
    L2(lmbda).add_gradient(net.weights, weight_grads, n_train)
    SGD(lr=eta).step([*net.weights, *net.biases], [*weight_grads, *grads.biases])
    for l in range(len(net.weights)):
        torch_w = weights[l].detach().numpy()
        scale = np.abs(expected_w[l]) + eta * np.abs(grads.weights[l])
        assert_gradients_close(net.weights[l], torch_w, name=f"W[{l + 1}]", scale=scale)
        assert_gradients_close(expected_w[l], torch_w, name=f"Nielsen W[{l + 1}]", scale=scale)
        assert_gradients_close(net.biases[l], biases[l].detach().numpy(), name=f"b[{l + 1}]")


def test_l2_penalty_value():
    """REG.l2: the penalty (λ/2N) Σ w² and its gradient (λ/N) w."""
    weights = [np.arange(6.0).reshape(2, 3), np.array([[2.0, -1.0]])]
    assert L2(4.0).penalty(weights, n_train=10) == pytest.approx(0.2 * (55 + 5))
    grads = [np.zeros((2, 3)), np.zeros((1, 2))]
    L2(4.0).add_gradient(weights, grads, n_train=10)
    np.testing.assert_allclose(grads[1], [[0.8, -0.4]])


@pytest.mark.parametrize("fast", [True, False])
def test_training_loop_equals_manual_minibatch_steps(fast):
    """The loop is seeded shuffling + one SGD.average gradient + one step per mini-batch.

    Both training paths: the fused one (manual_bp/fast.py) and the readable backprop loop.
    """
    net, x, y = _small_case()
    manual = net.copy()
    history = train(
        net, x, y, epochs=2, batch_size=3, eta=0.7, lmbda=0.5, seed=11, monitor=(), fast=fast
    )
    rng = np.random.default_rng(11)
    for _ in range(2):
        order = rng.permutation(len(x))
        for start in range(0, len(x), 3):
            batch = order[start : start + 3]
            grads = manual.backprop(x[batch], y[batch])
            for W, g in zip(manual.weights, grads.weights, strict=True):
                W[...] = (1 - 0.7 * 0.5 / len(x)) * W - 0.7 * g
            for b, g in zip(manual.biases, grads.biases, strict=True):
                b -= 0.7 * g
    np.testing.assert_allclose(net._params, manual._params, rtol=1e-12, atol=1e-14)
    assert history.epochs == 2 and history.training_cost == []


def _small_case():
    rng = np.random.default_rng(0)
    net = Network([4, 5, 3], "sigmoid", "cross-entropy", seed=1)
    return net, rng.standard_normal((10, 4)), rng.integers(0, 3, 10)


def test_training_learns_and_monitors():
    """Per-epoch monitoring of cost and accuracy on training and evaluation data."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 2))
    labels = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    net = Network([2, 8, 2], "sigmoid", "cross-entropy", seed=0)
    log = io.StringIO()
    history = nielsen_sgd(
        net, (x[:200], labels[:200]), 15, 10, 1.0, 0.1, (x[200:], labels[200:]), seed=0, log=log
    )
    assert len(history.training_cost) == len(history.evaluation_accuracy) == 15
    assert history.training_cost[-1] < history.training_cost[0]
    assert history.evaluation_accuracy[-1] > 0.9
    assert "evaluation accuracy" in log.getvalue().splitlines()[-1]
    assert history.best_evaluation_accuracy()[1] == max(history.evaluation_accuracy)


def test_training_rejects_bad_arguments():
    net, x, y = _small_case()
    with pytest.raises(ValueError, match="exactly one of eta"):
        train(net, x, y, epochs=1, batch_size=2)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        train(net, x, y, epochs=1, batch_size=0, eta=0.1)
    with pytest.raises(ValueError, match="unknown monitor"):
        train(net, x, y, epochs=1, batch_size=2, eta=0.1, monitor=("loss",))
    x_bad = x.copy()
    x_bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"x contains a non-finite value nan at index \(3, 1\)"):
        train(net, x_bad, y, epochs=1, batch_size=2, eta=0.1)


def test_divergence_is_reported():
    net = Network([2, 3, 1], "identity", "quadratic", seed=0)
    x = np.random.default_rng(0).standard_normal((20, 2)) * 100
    with (
        np.errstate(over="ignore", invalid="ignore"),
        pytest.raises(FloatingPointError, match="learning rate"),
    ):
        train(net, x, x[:, :1], epochs=50, batch_size=5, eta=10.0, monitor=())


# ====================================================================== divergence, every path
# One shared check (manual_bp.divergence.check_training_state), one exception type
# (DivergenceError, a FloatingPointError), the same hint on the fast path, the readable
# path and a Sequential trained by `train`.
from manual_bp import Dense, Sequential  # noqa: E402
from manual_bp.divergence import DivergenceError  # noqa: E402
from manual_bp.optimizers import OPTIMIZERS  # noqa: E402


def _model(path: str):
    if path == "Sequential":
        return Sequential([Dense(3, 4, seed=0), "relu", Dense(4, 1, seed=1)], "quadratic")
    return Network([3, 4, 1], "relu", "quadratic", output_activation="identity", seed=0)


PATHS = {
    "Network fast": {"fast": True},
    "Network readable": {"fast": False},
    "Sequential": {},
}


def _data(scale=1.0):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 3)) * scale
    x[:, 0] = 0.0  # a dead input: its weights' gradients are exactly 0
    return x, rng.standard_normal((20, 1))


@pytest.mark.parametrize("monitor", [(), ("cost",)])
@pytest.mark.parametrize("path", list(PATHS))
def test_a_too_large_learning_rate_diverges_alike_on_every_path(path, monitor):
    x, y = _data(100.0)
    with (
        np.errstate(over="ignore", invalid="ignore"),
        pytest.raises(DivergenceError, match=r"lower the learning rate \(lr = 1e\+06\)"),
    ):
        train(_model(path), x, y, epochs=5, batch_size=5, eta=1e6, monitor=monitor, **PATHS[path])


@pytest.mark.parametrize(
    "name", [n for n in OPTIMIZERS.names() if "eps" in OPTIMIZERS[n].hyperparameters]
)
@pytest.mark.parametrize("path", list(PATHS))
def test_eps_zero_is_named_as_the_cause_on_every_path(path, name):
    """A coordinate whose gradients are all 0 divides 0 by 0 when eps = 0 (Adam, RMSprop…)."""
    x, y = _data()
    optimizer = OPTIMIZERS[name](eps=0.0)
    with (
        np.errstate(over="ignore", invalid="ignore", divide="ignore"),
        pytest.raises(DivergenceError, match="eps = 0") as caught,
    ):
        train(_model(path), x, y, epochs=2, batch_size=5, optimizer=optimizer, **PATHS[path])
    assert "learning rate" not in str(caught.value)
    assert "\n" not in str(caught.value)  # one line


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("path", list(PATHS))
def test_non_finite_parameters_before_training_are_not_a_learning_rate_problem(path, bad):
    model = _model(path)
    model.parameter_arrays()[0].flat[1] = bad
    x, y = _data()
    with pytest.raises(ValueError, match="before training started; this is not a learning-rate"):
        train(model, x, y, epochs=1, batch_size=5, eta=0.01, **PATHS[path])


@pytest.mark.parametrize("monitor", [(), ("cost",)])
@pytest.mark.parametrize("path", list(PATHS))
def test_an_infinite_cost_with_finite_parameters_is_divergence_on_every_path(path, monitor):
    """The fused path used to finish with an infinite cost and no error: ½‖a − y‖² of
    outputs ~1e200 overflows while every parameter stays finite."""
    model = _model(path)
    for p in model.parameter_arrays():
        p[...] = 1e100
    x, y = _data()
    x = np.abs(x) + 1.0
    with (
        np.errstate(over="ignore", invalid="ignore"),
        pytest.raises(DivergenceError, match="cost became inf"),
    ):
        train(model, x, y, epochs=1, batch_size=5, eta=1e-300, monitor=monitor, **PATHS[path])


@pytest.mark.parametrize("fast", [True, False])
def test_an_overflowing_buffer_stops_training_naming_epoch_and_buffer(fast):
    """Batch norm normalises inputs of any scale, so the cost stays finite while its running
    variance overflows: training stops at the end of that epoch (issue 24, item 7), not when
    the model is saved."""
    from manual_bp.layers import BatchNorm1d

    model = Sequential([Dense(3, 4, seed=0), BatchNorm1d(4), Dense(4, 2, seed=1)], "quadratic")
    x, _ = _data(1e200)
    y = np.random.default_rng(1).standard_normal((20, 2))
    with (
        np.errstate(over="ignore", invalid="ignore"),
        pytest.raises(DivergenceError, match=r"epoch 1: buffer 1\.running_var became inf"),
    ):
        train(model, x, y, epochs=3, batch_size=5, eta=1e-3, fast=fast)


def test_divergence_error_is_a_floating_point_error():
    assert issubclass(DivergenceError, FloatingPointError)


def test_the_divergence_check_takes_one_flat_buffer_as_one_array():
    """A flat parameter buffer is one array (not a sequence of scalars): the index named
    is the entry's, and the check is one vectorised pass."""
    from manual_bp.divergence import check_training_state

    flat = np.array([1.0, 2.0, np.nan, 3.0])
    with pytest.raises(DivergenceError, match=r"parameter array 0 became nan at index \(2,\)"):
        check_training_state(flat, 1.0, epoch=3, optimizer=SGD(lr=0.1))
