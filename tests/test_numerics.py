"""Numerics at the edges (issue 14): saturated outputs, huge inputs, partial saturation.

Three classes of behaviour, each over every component or entry point it concerns:

* a cost whose output activation saturates at a *finite* logit is finite, equal to
  torch's logit form (``binary_cross_entropy_with_logits``, ``cross_entropy``), on every
  path that evaluates it (backprop, total_cost, monitoring, the fused trainer);
* no RuntimeWarning (overflow, invalid, divide) escapes any backward pass, also where
  the result is mathematically infinite or a factor saturates (warnings are errors);
* tanh′ = (1 − a)(1 + a): within a few ulps of torch in partial saturation, where
  1 − a² loses up to ~4e-9 relative.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from manual_bp import Network, train
from manual_bp.activations import ACTIVATIONS, get_activation
from manual_bp.costs import COSTS
from manual_bp.training import FusedTrainer

EPS = float(np.finfo(np.float64).eps)


# ---------------------------------------------------------------------- saturated outputs
def _saturated_net(cost: str, output: str, logit: float) -> tuple[Network, np.ndarray, np.ndarray]:
    """A one-layer network whose logits are ``±logit``, targets on the wrong side."""
    net = Network([2, 3], "identity", cost, output_activation=output, seed=0)
    net.weights[0] = np.array([[logit, 0.0], [-logit, 0.0], [0.0, logit]])
    net.biases[0] = np.zeros(3)
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = np.array([1, 0, 0]) if cost == "log-likelihood" else np.array([[0.0, 1.0, 0.0]] * 3)
    return net, x, y


def _torch_cost(cost: str, net: Network, x: np.ndarray, y: np.ndarray) -> float:
    z = torch.tensor(net.forward(x)[0][-1])
    if cost == "cross-entropy":  # C = (1/n) Σ_x Σ_j bce, from the logits
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            z, torch.tensor(y), reduction="sum"
        )
        return float(loss) / z.shape[0]
    return float(torch.nn.functional.cross_entropy(z, torch.tensor(y)))


COST_ENTRY_POINTS = {
    "backprop": lambda net, x, y: net.backprop(x, y).cost,
    "backprop_single": lambda net, x, y: np.mean(
        [net.backprop_single(xi, yi).cost for xi, yi in zip(x, y, strict=True)]
    ),
    "total_cost": lambda net, x, y: net.total_cost(x, y),
    "cost_and_outputs": lambda net, x, y: net.cost_and_outputs(x, y)[0],
    "train monitoring (fast)": lambda net, x, y: train(
        net, x, y, epochs=1, batch_size=3, eta=1e-300, fast=True
    ).training_cost[0],
    "train monitoring (readable)": lambda net, x, y: train(
        net, x, y, epochs=1, batch_size=3, eta=1e-300, fast=False
    ).training_cost[0],
}


@pytest.mark.parametrize("logit", [40.0, 800.0, 1e5])
@pytest.mark.parametrize("entry", list(COST_ENTRY_POINTS))
@pytest.mark.parametrize(
    "cost, output", [("cross-entropy", "sigmoid"), ("log-likelihood", "softmax")]
)
def test_cost_is_finite_where_the_output_saturates_at_a_finite_logit(cost, output, entry, logit):
    """Class: saturated outputs. σ(40) rounds to 1 and softmax of a logit gap of 800
    underflows to 0, so ln(1 − a) and ln a are −inf; from zᴸ the cost is finite and equals
    torch's logit form to rounding."""
    net, x, y = _saturated_net(cost, output, logit)
    expected = _torch_cost(cost, net, x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = COST_ENTRY_POINTS[entry](net, x, y)
    assert np.isfinite(value) and value > logit / 3
    assert value == pytest.approx(expected, rel=8 * EPS)


@pytest.mark.parametrize(
    "cost, output", [("cross-entropy", "sigmoid"), ("log-likelihood", "softmax")]
)
def test_fused_trainer_last_batch_cost_is_from_the_logits(cost, output):
    net, x, y = _saturated_net(cost, output, 800.0)
    trainer = FusedTrainer(net, None, None, 3)
    from manual_bp.optimizers import SGD

    trainer.optimizer = SGD(lr=1e-300)
    last = trainer.run_epoch(x, net.prepare_targets(y, 3), [np.arange(3)])
    assert last == pytest.approx(_torch_cost(cost, net, x, y), rel=8 * EPS)


def test_the_logit_form_equals_the_plain_value_where_nothing_saturates():
    """Where σ does not saturate, value_from_logits and value agree to rounding."""
    rng = np.random.default_rng(0)
    for name, act in (("cross-entropy", "sigmoid"), ("log-likelihood", "softmax")):
        cost, activation = COSTS[name](), get_activation(act)
        z = rng.standard_normal((6, 4))
        a = activation.forward(z)
        y = np.eye(4)[rng.integers(0, 4, 6)]
        assert cost.value_from_logits(z, a, y, activation) == pytest.approx(
            cost.value(a, y), rel=64 * EPS
        )


# ---------------------------------------------------------------------- no warnings escape
FINITE_EXTREMES = np.array(
    [[-1e300, -1e4, -800.0, -40.0, -1e-300, 0.0, 1e-300, 40.0, 800.0, 1e4, 1e300]]
)


def _activations():
    out = []
    for cls in ACTIVATIONS.classes():
        out.append(cls())
        if cls.name == "gelu":
            out.append(cls(approximate="tanh"))
        if cls.name in ("leaky-relu", "elu"):
            out.append(cls(alpha=0.3))
        if cls.name == "softplus":
            out.append(cls(beta=3.0, threshold=5.0))
    return out


ACTIVATION_METHODS = {
    "backward": lambda act, g, z, a: act.backward(g, z, a),
    "jvp": lambda act, g, z, a: act.jvp(g, z, a),
    "derivative": lambda act, g, z, a: act.derivative(z, a),
    "second_derivative": lambda act, g, z, a: act.second_derivative(z, a),
    "second_vjp": lambda act, g, z, a: act.second_vjp(g, g, z, a),
}


@pytest.mark.parametrize("method", list(ACTIVATION_METHODS))
@pytest.mark.parametrize("act", _activations(), ids=repr)
def test_no_runtime_warning_escapes_an_activations_backward_pass(act, method):
    """Class: warnings. Every activation × every backward method at finite extremes of z
    (±1e300, ±1e4, ±800, ±40, ±tiny): no overflow/invalid/divide warning, and the result
    is finite wherever the derivative is finite (it is for every activation here)."""
    z = FINITE_EXTREMES
    g = np.random.default_rng(0).standard_normal(z.shape)
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        a = act.forward(z)
        try:
            result = ACTIVATION_METHODS[method](act, g, z, a)
        except NotImplementedError:
            pytest.skip(f"{act.name} has no {method}")
    assert np.isfinite(result).all(), (act, method, result)


def _edge_outputs(cost):
    """Outputs at the edge of the cost's domain, where a gradient can be infinite."""
    output = (cost.valid_output_activations or ("identity",))[0]
    if output in ("sigmoid", "softmax"):
        return np.array([[0.0, 1.0, 0.0], [1e-310, 1.0 - EPS / 2, 0.0], [0.5, 0.5, 0.0]])
    if output == "log-softmax":
        return np.log(np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.25, 0.25, 0.5]]) + 0.0)
    if cost.name == "poisson-nll" and not cost.log_input:
        return np.array([[0.0, 1e-310, 1e300], [5.0, 0.0, 1.0], [1e-8, 2.0, 0.0]])
    return np.array([[-1e300, 1e300, 800.0], [-800.0, 1e4, -1e4], [0.0, 1e-300, -1e-300]])


def _edge_targets(cost):
    kind = cost.target_domain()
    if kind in ("labels", "one-hot", "distribution"):
        return np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    if kind == "probability":
        return np.array([[1.0, 0.0, 0.5], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    if kind == "count":
        return np.array([[0.0, 3.0, 1.0], [2.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    return np.array([[0.0, 1.0, -1.0], [2.0, 0.0, 0.0], [1e300, -1e300, 0.5]])


ALL_COSTS = [cls() for cls in COSTS.classes()] + [COSTS["poisson-nll"](log_input=True)]
COST_METHODS = ("per_sample", "grad", "hessian_diagonal", "hessian", "hessian_factor", "delta")


@pytest.mark.parametrize("method", COST_METHODS)
@pytest.mark.parametrize("cost", ALL_COSTS, ids=repr)
def test_no_runtime_warning_escapes_a_costs_gradient_at_its_edges(cost, method):
    """Class: warnings. Every cost × every derivative at the edges of its domain (a = 0 or 1
    exactly, a = −inf log-probabilities, rates 0, huge residuals): results may be ±inf where
    the derivative is infinite, but never a warning and never NaN."""
    with np.errstate(divide="ignore"):
        a = _edge_outputs(cost)
    y = _edge_targets(cost)
    valid = cost.valid_output_activations
    activation = get_activation(valid[0] if valid else "identity")
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        try:
            if method == "delta":
                result = cost.delta(a, a, y, activation)
            else:
                result = getattr(cost, method)(a, y)
        except NotImplementedError:
            pytest.skip(f"{cost.name} has no {method}")
    assert not np.isnan(result).any(), (cost, method, result)


HIDDEN = [n for n in ACTIVATIONS.names() if n not in ("softmax", "log-softmax")]


@pytest.mark.parametrize("scale", [30.0, 1e3])
@pytest.mark.parametrize("cost", ALL_COSTS, ids=repr)
def test_no_runtime_warning_escapes_a_networks_backward_pass(cost, scale):
    """Class: warnings. Saturated networks (weights and inputs × scale) of every cost with
    each valid output activation and every hidden activation: backprop, the fused
    gradients and total_cost run with warnings as errors."""
    if getattr(cost, "log_input", False):
        pytest.skip(
            "e^{zᴸ} of a log-rate zᴸ > 709 is a true overflow (a finite value that float64 "
            "cannot hold), not a mathematically infinite one: it is reported, not silenced"
        )
    rng = np.random.default_rng(0)
    outputs = cost.valid_output_activations or ("identity", "sigmoid", "tanh")
    y = _edge_targets(cost)[:, :3]
    if cost.target_domain() == "real":
        y = rng.standard_normal((3, 3))
    for output in outputs:
        for hidden in HIDDEN:
            net = Network([3, 4, 3], hidden, cost, output_activation=output, seed=1)
            for W in net.weights:
                W *= scale
            x = rng.standard_normal((3, 3)) * scale
            with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise"):
                warnings.simplefilter("error")
                net.backprop(x, y)
                FusedTrainer(net).gradients(x, y)
                net.total_cost(x, y)


# ---------------------------------------------------------------------- tanh′ = (1 − a)(1 + a)
def _torch_tanh_grads(z: np.ndarray, upstream: np.ndarray):
    zt = torch.tensor(z, requires_grad=True)
    a = torch.tanh(zt)
    (first,) = torch.autograd.grad(a, zt, torch.tensor(upstream), create_graph=True)
    (second,) = torch.autograd.grad(first, zt, torch.ones_like(first))
    return a.detach().numpy(), first.detach().numpy(), second.numpy() / upstream


PARTIAL_SATURATION = np.linspace(0.5, 19.0, 20001).reshape(1, -1)


def _max_relative(actual, expected):
    return float(np.max(np.abs(actual - expected) / np.abs(expected)))


def test_tanh_derivative_matches_torch_in_partial_saturation():
    """ACT.tanh: within 4 ε relative of torch's tanh_backward for 0.5 ≤ z ≤ 19, where
    tanh' falls to 1e-16; 1 − a² would be off by up to ~4e-9 there (checked below, so
    the bound is known to tell the two formulas apart)."""
    z = np.concatenate([PARTIAL_SATURATION, -PARTIAL_SATURATION], axis=1)
    g = np.random.default_rng(0).standard_normal(z.shape)
    a, expected, _ = _torch_tanh_grads(z, g)
    tanh = get_activation("tanh")
    assert _max_relative(tanh.backward(g, z, a), expected) <= 4 * EPS
    assert _max_relative(g * (1.0 - a * a), expected) > 1e-10  # the old formula fails


def test_tanh_second_derivative_matches_torch_in_partial_saturation():
    """ACT2.tanh: −2a(1 − a)(1 + a) within 8 ε relative of torch's double backward."""
    z = PARTIAL_SATURATION
    g = np.ones_like(z)
    a, _, expected = _torch_tanh_grads(z, g)
    actual = get_activation("tanh").second_derivative(z, a)
    assert _max_relative(actual, expected) <= 8 * EPS
    assert _max_relative(-2.0 * a * (1.0 - a * a), expected) > 1e-10


def test_fused_tanh_derivative_equals_the_activations():
    """The fused path computes tanh′ with the same (1 − a)(1 + a): with one tanh unit whose
    logit is in partial saturation (3 ≤ z ≤ 15), every gradient equals the readable path's
    to 4 ε *relative* (1 − a² would be off by up to ~1e-8 there)."""
    net = Network([1, 1], "tanh", "quadratic", seed=0)
    net.weights[0] = np.array([[1.0]])
    net.biases[0] = np.zeros(1)
    trainer = FusedTrainer(net)
    for z in np.linspace(3.0, 15.0, 49):
        x, y = np.array([[z]]), np.array([[-0.5]])
        grads = trainer.gradients(x, y)  # [W¹, b¹, …]: torch's order
        fast_w, fast_b = grads[0::2], grads[1::2]
        readable = net.backprop(x, y)
        np.testing.assert_allclose(fast_b[0], readable.biases[0], rtol=4 * EPS, atol=0)
        np.testing.assert_allclose(fast_w[0], readable.weights[0], rtol=4 * EPS, atol=0)


def test_gelu_tanh_form_derivative_matches_torch_in_partial_saturation():
    """ACT.gelu (tanh form): its 1 − t² is also (1 − t)(1 + t)."""
    z = np.linspace(-6.0, 6.0, 4001).reshape(1, -1)
    zt = torch.tensor(z, requires_grad=True)
    out = torch.nn.functional.gelu(zt, approximate="tanh")
    (expected,) = torch.autograd.grad(out.sum(), zt)
    gelu = get_activation({"name": "gelu", "approximate": "tanh"})
    actual = gelu.derivative(z, gelu.forward(z))
    scale = np.maximum(np.abs(expected.numpy()), 1.0)
    assert float(np.max(np.abs(actual - expected.numpy()) / scale)) <= 16 * EPS
