"""Chapter ``docs/costs.md``: every cost's value and gradient, and the output shortcuts.

Each cost is compared with the matching torch loss, its reduction mapped to
our convention (mean over the batch of per-sample sums; see
``reference/components.py``). Cases come from ``reference/checks_components.py``,
shared with the ``verify`` command.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from manual_bp import Network
from manual_bp.activations import get_activation
from manual_bp.costs import (
    COSTS,
    CategoricalCrossEntropyCost,
    CrossEntropyCost,
    HuberCost,
    LogLikelihoodCost,
    MultiMarginCost,
    PoissonNLLCost,
    SmoothL1Cost,
    get_cost,
)
from manual_bp.gradcheck import assert_gradients_close
from reference.cases import build_case
from reference.checks_components import (
    cost_case,
    cost_comparisons,
    random_cost,
    shortcut_comparisons,
)
from reference.compare import network_comparisons
from reference.components import torch_cost
from tests.strategies import network_specs

NAMES = COSTS.names()
SHORTCUTS = sorted((cls.name, act) for cls in COSTS.classes() for act in cls.shortcuts)
CLASS_COSTS = ("log-likelihood", "categorical-cross-entropy", "multi-margin")
seeds = st.integers(0, 2**32 - 1)
sizes = st.integers(1, 16)


@pytest.mark.parametrize("name", NAMES)
@given(regime=st.sampled_from(["moderate", "large"]), batch=sizes, n=sizes, seed=seeds)
def test_cost_value_matches_torch(name, regime, batch, n, seed):
    """C = (1/n) Σ_x C_x equals the torch loss with its reduction mapped to ours.

    Verifies COST.quadratic, COST.cross-entropy, COST.bce-logits,
    COST.log-likelihood, COST.categorical-cross-entropy, COST.mae, COST.huber,
    COST.smooth-l1, COST.multi-margin, COST.kl-divergence and COST.poisson-nll
    (hyper-parameters drawn at random and passed to torch).
    """
    rng = np.random.default_rng(seed)
    cost = random_cost(rng, name)
    a, y, _ = cost_case(rng, cost, batch, n, regime)
    value = next(c for c in cost_comparisons(cost, a, y) if c.name == "C")
    assert value.equation == cost.equation_value
    value.check()


@pytest.mark.parametrize("name", NAMES)
@given(regime=st.sampled_from(["moderate", "large"]), batch=sizes, n=sizes, seed=seeds)
def test_cost_gradient_matches_torch(name, regime, batch, n, seed):
    """∂C_x/∂a equals n × autograd's gradient of the mean torch loss.

    Verifies COST.quadratic.grad, COST.cross-entropy.grad, COST.bce-logits.grad,
    COST.log-likelihood.grad, COST.categorical-cross-entropy.grad, COST.mae.grad,
    COST.huber.grad, COST.smooth-l1.grad, COST.multi-margin.grad,
    COST.kl-divergence.grad and COST.poisson-nll.grad.
    """
    rng = np.random.default_rng(seed)
    cost = random_cost(rng, name)
    a, y, _ = cost_case(rng, cost, batch, n, regime)
    grad = next(c for c in cost_comparisons(cost, a, y) if c.name == "∂C_x/∂a")
    assert grad.equation == cost.equation_grad
    grad.check()


@pytest.mark.parametrize("pair", SHORTCUTS, ids="-".join)
@given(z_scale=st.sampled_from([1.0, 5.0, 30.0, 1e4]), batch=sizes, n=sizes, seed=seeds)
def test_shortcut_equals_general_bp1(pair, z_scale, batch, n, seed):
    """Property: the shortcut δᴸ = a − y equals the general BP1 path J_σᵀ∇ₐC, and torch.

    Verifies SHORTCUT.sigmoid-cross-entropy, SHORTCUT.softmax-log-likelihood and
    SHORTCUT.identity-quadratic. The general path is compared where it is finite
    (saturated outputs make ∇ₐC infinite); torch's fused loss everywhere.
    """
    cost_name, activation_name = pair
    rng = np.random.default_rng(seed)
    cost, activation = get_cost(cost_name), get_activation(activation_name)
    z = rng.standard_normal((batch, n)) * z_scale
    _, y, _ = cost_case(rng, cost, batch, n)
    comparisons = shortcut_comparisons(cost, activation, z, y)
    assert {c.equation for c in comparisons} == {cost.shortcuts[activation_name][0]}
    for comparison in comparisons:
        comparison.check()
    # Cost.delta takes the shortcut; it must agree with the general path where that is exact.
    assert cost.shortcut_applies(activation)
    np.testing.assert_array_equal(
        cost.delta(z, activation.forward(z), y, activation),
        cost.shortcuts[activation_name][1](z, activation.forward(z), y),
    )


@given(
    st.sampled_from(NAMES).flatmap(
        lambda name: network_specs(max_depth=3, max_width=8, max_batch=6, costs=(name,))
    )
)
def test_cost_inside_random_networks(spec):
    """Each cost at the output of random networks (valid output activations) vs autograd."""
    net, x, y = build_case(spec)
    for comparison in network_comparisons(net, x, y):
        comparison.check()


# ------------------------------------------------------------------ class labels
@pytest.mark.parametrize("name", CLASS_COSTS)
@given(batch=sizes, n=st.integers(2, 16), seed=seeds)
def test_integer_labels_equal_one_hot_rows(name, batch, n, seed):
    """Class costs give the same value and gradient for labels and their one-hot rows."""
    rng = np.random.default_rng(seed)
    cost = get_cost(name)
    labels = rng.integers(0, n, size=batch)
    rows = np.eye(n)[labels]
    activation = (
        get_activation(cost.valid_output_activations[0])
        if (cost.valid_output_activations)
        else get_activation("identity")
    )
    a = activation.forward(rng.standard_normal((batch, n)))
    assert cost.value(a, labels) == cost.value(a, rows)
    np.testing.assert_array_equal(cost.grad(a, labels), cost.grad(a, rows))
    net = Network([3, n], activation=activation, cost=cost, seed=0)
    x = rng.standard_normal((batch, 3))
    from_labels, from_rows = net.backprop(x, labels), net.backprop(x, rows)
    np.testing.assert_array_equal(from_labels.deltas[-1], from_rows.deltas[-1])


@pytest.mark.parametrize("name", CLASS_COSTS)
@pytest.mark.parametrize("bad", [3, -1, 7])
def test_out_of_range_labels_are_rejected(name, bad):
    cost = get_cost(name)
    a = get_activation("softmax").forward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=rf"label {bad} at index 1 is out of range for 3 classes"):
        cost.value(a, np.array([0, bad]))
    with pytest.raises(ValueError, match="out of range"):
        cost.grad(a, np.array([0, bad]))
    with pytest.raises(ValueError, match="out of range"):
        Network([2, 3], activation=cost.valid_output_activations or "identity", cost=cost).backprop(
            np.zeros((2, 2)), np.array([0, bad])
        )


def test_class_target_rows_are_validated():
    a = np.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"target row 1 .* is not a probability distribution"):
        LogLikelihoodCost().value(a, np.array([[1.0, 0, 0], [0.5, 0.4, 0]]))
    with pytest.raises(ValueError, match=r"target row 0 .* is not one-hot"):
        MultiMarginCost().grad(a, np.array([[0.5, 0.5, 0], [0, 1.0, 0]]))
    with pytest.raises(ValueError, match=r"2 labels for a batch of 3"):
        CategoricalCrossEntropyCost().value(np.zeros((3, 3)), np.array([0, 1]))
    soft = np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])  # soft labels are accepted
    assert np.isfinite(CategoricalCrossEntropyCost().value(np.zeros((2, 3)), soft))


@pytest.mark.parametrize("name", NAMES)
def test_shape_mismatch_is_an_error_not_broadcasting(name):
    cost = get_cost(name)
    a = np.full((4, 3), 0.25)
    with pytest.raises(ValueError, match=r"shape"):
        cost.value(a, np.full((1, 3), 0.25) if name not in CLASS_COSTS else np.eye(3)[:1])


# ------------------------------------------------------------------ extreme inputs
def test_nielsen_cross_entropy_at_exact_probabilities():
    """a ∈ {0, 1}: finite C and ∂C/∂a where a = y (math finite), ±inf where not; torch agrees."""
    a = np.array([[0.0, 1.0, 0.0, 1.0]])
    y = np.array([[0.0, 1.0, 0.5, 0.2]])
    cost = CrossEntropyCost()
    with np.errstate(divide="ignore"):
        per = cost.per_sample(a[:, :2], y[:, :2])
    np.testing.assert_array_equal(per, [0.0])
    np.testing.assert_array_equal(cost.grad(a, y), [[1.0, -1.0, -np.inf, np.inf]])
    # torch's BCELoss clamps the log at −100 (value) and a(1 − a) at 1e-12 (gradient): same
    # value where the math is finite, and its gradient has the sign of ours.
    at = torch.tensor(a[:, :2], requires_grad=True)
    loss = F.binary_cross_entropy(at, torch.tensor(y[:, :2]), reduction="sum")
    assert float(loss) == 0.0


@pytest.mark.parametrize("name", ["bce-logits", "categorical-cross-entropy"])
def test_logit_costs_are_stable_at_1e4(name):
    """Logits of ±1e4: finite value and gradient equal to torch's stable losses.

    Verifies COST.bce-logits / COST.categorical-cross-entropy in saturation.
    """
    a = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 3.0], [1e4, 1e4, -1e4]])
    y = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    cost = get_cost(name)
    comparisons = cost_comparisons(cost, a, y)
    for comparison in comparisons:
        assert np.isfinite(comparison.actual).all()
        comparison.check()
    assert cost.value(a, y) > 1e3  # a confidently wrong logit costs ~1e4, not inf


def test_log_likelihood_underflowed_output():
    """a = 0 for a non-target class: finite C, gradient 0; for the target class: +inf, −inf."""
    cost = LogLikelihoodCost()
    a = np.array([[1.0, 0.0, 0.0]])
    assert cost.value(a, np.array([0])) == 0.0
    np.testing.assert_array_equal(cost.grad(a, np.array([0])), [[-1.0, 0.0, 0.0]])
    assert cost.value(a, np.array([1])) == np.inf
    assert cost.grad(a, np.array([1]))[0, 1] == -np.inf
    # The softmax shortcut stays finite: δ = a − y.
    z = np.array([[1e4, -1e4, 0.0]])
    softmax = get_activation("softmax")
    delta = cost.delta(z, softmax.forward(z), np.array([[0.0, 1.0, 0.0]]), softmax)
    np.testing.assert_array_equal(delta, [[1.0, -1.0, 0.0]])


def test_poisson_extremes():
    """Rate exactly 0 (softplus underflow): finite via torch's ε; log-rate −1e4: finite."""
    y = np.array([[0.0, 3.0]])
    rate = PoissonNLLCost()
    a = get_activation("softplus").forward(np.array([[-1e4, -1e4]]))
    assert np.isfinite(rate.value(a, y)) and np.isfinite(rate.grad(a, y)).all()
    for comparison in cost_comparisons(rate, a, y):
        comparison.check()
    log_rate = PoissonNLLCost(log_input=True)
    a = np.array([[-1e4, -1e4]])
    for comparison in cost_comparisons(log_rate, a, y):
        comparison.check()
    with pytest.raises(ValueError, match="rates must be >= 0"):
        rate.value(np.array([[-1.0, 1.0]]), y)


def test_multi_margin_matches_torch_reduction_and_exact_hinge():
    """torch divides by the number of classes; a hinge exactly at 0 passes no gradient."""
    a = np.array([[1.0, 0.0, 0.5], [2.0, 2.0, 0.0]])
    labels = np.array([0, 2])
    cost = MultiMarginCost()
    # sample 0: hinges 1 − 1 + 0 = 0 (inactive) and 1 − 1 + 0.5 = 0.5; sample 1: 3 and 3.
    np.testing.assert_array_equal(cost.per_sample(a, labels), [0.5, 6.0])
    np.testing.assert_array_equal(cost.grad(a, labels), [[-1.0, 0.0, 1.0], [1.0, 1.0, -2.0]])
    torch_mean = F.multi_margin_loss(torch.tensor(a), torch.tensor(labels), reduction="mean")
    assert float(torch_mean) == pytest.approx(cost.value(a, labels) / a.shape[1])


# ------------------------------------------------------------------ lookup and config
def test_lookup_by_name_class_and_config():
    assert isinstance(get_cost("Huber"), HuberCost)
    assert isinstance(get_cost(SmoothL1Cost), SmoothL1Cost)
    assert get_cost({"name": "huber", "threshold": 2.0}).threshold == 2.0
    for name in NAMES:
        cost = random_cost(np.random.default_rng(3), name)
        assert get_cost(cost.get_config()) == cost
    net = Network([3, 4, 2], activation="gelu", cost="huber")
    assert isinstance(net.cost, HuberCost)
    net = Network([3, 4, 2], cost=CategoricalCrossEntropyCost, output_activation="identity")
    assert net.cost.name == "categorical-cross-entropy"


def test_unknown_cost_and_invalid_pairing():
    with pytest.raises(ValueError, match=r"unknown cost 'hubber'; valid names: .*huber"):
        get_cost("hubber")
    with pytest.raises(ValueError, match=r"needs an output activation in \['log-softmax'\]"):
        Network([2, 3], activation="softmax", cost="kl-divergence")
    with pytest.raises(ValueError, match="threshold"):
        HuberCost(threshold=-1.0)
    with pytest.raises(ValueError, match="beta"):
        SmoothL1Cost(beta=0.0)


def test_oracle_is_not_vacuous():
    """A cost with a dropped ½ fails its torch comparison (the tolerance is not loose)."""
    rng = np.random.default_rng(0)
    cost = get_cost("quadratic")
    a, y, _ = cost_case(rng, cost, 4, 3)
    value = torch_cost(cost)(torch.tensor(a), torch.tensor(y))
    with pytest.raises(AssertionError):
        assert_gradients_close(np.array(2 * cost.value(a, y)), value.numpy(), name="C")
