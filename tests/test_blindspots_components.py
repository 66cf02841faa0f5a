"""Blind spots of the activation and cost catalogue (issue 15), closed by construction.

Each test is parametrised over *every* registered component (or every option of
one), so a component added later is covered without a new test:

* defaults of every hyper-parameter equal torch's (read from torch's signatures);
* validation bounds pinned on both sides (``<= 0`` vs ``< 0``, ``min_val < max_val``),
  ``bool`` rejected where a real number is expected;
* float32 in → float32 out for ``forward``, ``derivative``, ``backward``, ``grad``;
* ``derivative()`` of classes that override ``backward()`` is called and checked;
* piecewise functions on both sides of and exactly at each edge, against torch;
* every target form a cost accepts (labels, one-hot, soft rows);
* the KL cost with a target entry exactly 1; the categorical cross-entropy's
  row-wise stability shift with rows of very different maxima.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from manual_bp.activations import ACTIVATIONS, Activation, get_activation
from manual_bp.costs import COSTS, get_cost
from manual_bp.gradcheck import assert_gradients_close
from reference.checks_components import kink_points
from reference.components import torch_activation, torch_cost

#: our (class name, hyper-parameter) -> (torch callable, torch parameter name).
TORCH_DEFAULTS = {
    ("softmax", "dim"): (torch.nn.Softmax, "dim"),
    ("softmin", "dim"): (torch.nn.Softmin, "dim"),
    ("log-softmax", "dim"): (torch.nn.LogSoftmax, "dim"),
    ("leaky-relu", "alpha"): (torch.nn.LeakyReLU, "negative_slope"),
    ("elu", "alpha"): (torch.nn.ELU, "alpha"),
    ("softplus", "beta"): (torch.nn.Softplus, "beta"),
    ("softplus", "threshold"): (torch.nn.Softplus, "threshold"),
    ("gelu", "approximate"): (torch.nn.GELU, "approximate"),
    ("hardtanh", "min_val"): (torch.nn.Hardtanh, "min_val"),
    ("hardtanh", "max_val"): (torch.nn.Hardtanh, "max_val"),
    ("celu", "alpha"): (torch.nn.CELU, "alpha"),
    ("hardshrink", "lambd"): (torch.nn.Hardshrink, "lambd"),
    ("softshrink", "lambd"): (torch.nn.Softshrink, "lambd"),
    ("huber", "threshold"): (torch.nn.HuberLoss, "delta"),
    ("smooth-l1", "beta"): (torch.nn.SmoothL1Loss, "beta"),
    ("multi-margin", "margin"): (torch.nn.MultiMarginLoss, "margin"),
    ("poisson-nll", "eps"): (torch.nn.PoissonNLLLoss, "eps"),
}
#: Deliberate differences from torch's defaults (documented in the class docstring).
DIFFERENT_DEFAULTS = {
    # torch's default log_input=True expects log-rates; ours takes rates λ ≥ 0 by default
    # (a softplus output), docs/costs.md.
    ("poisson-nll", "log_input"),
    # torch's dim=None is its deprecated implicit rule (axis 0 of 0-, 1-, 3-d inputs); the
    # library's default is the last axis (docs/conventions.md, issue 23): mapped below.
    ("softmax", "dim"),
    ("softmin", "dim"),
    ("log-softmax", "dim"),
    # torch's Threshold(threshold, value) has no defaults; ours are 0 and 0 (ReLU), so that
    # the registered name builds an instance (docs/activations.md).
    ("threshold", "threshold"),
    ("threshold", "value"),
}


def _components():
    for registry in (ACTIVATIONS, COSTS):
        for name in registry.names():
            yield registry.lookup(name)


@pytest.mark.parametrize("cls", list(_components()), ids=lambda c: c.name)
def test_every_default_equals_torchs(cls):
    """Every hyper-parameter default equals torch's default for the same parameter."""
    ours = inspect.signature(cls.__init__).parameters
    for hyper in getattr(cls, "hyperparameters", ()):
        key = (cls.name, hyper)
        if key in DIFFERENT_DEFAULTS:
            continue
        assert key in TORCH_DEFAULTS, f"{key}: map it to torch's parameter in TORCH_DEFAULTS"
        torch_cls, torch_name = TORCH_DEFAULTS[key]
        expected = inspect.signature(torch_cls.__init__).parameters[torch_name].default
        assert ours[hyper].default == expected, f"{key}: {ours[hyper].default} != {expected}"
        assert getattr(cls(), hyper) == expected


#: (name, keyword, values rejected, values accepted): the bound exactly at its edge.
BOUNDS = [
    ("softplus", "beta", [0.0, -1.0], [1e-300, 2.0]),
    ("huber", "threshold", [0.0, -1e-300], [1e-300]),
    ("smooth-l1", "beta", [0.0, -0.5], [1e-300]),
    ("poisson-nll", "eps", [0.0, -1e-8], [1e-300]),
]


@pytest.mark.parametrize(("name", "key", "rejected", "accepted"), BOUNDS)
def test_validation_bounds_at_their_edge(name, key, rejected, accepted):
    """``> 0`` bounds: exactly 0 is rejected (a ValueError naming it), the next float is not."""
    cls = ACTIVATIONS.lookup(name) if name in ACTIVATIONS.names() else COSTS.lookup(name)
    for value in rejected:
        with pytest.raises(ValueError, match=rf"{key}.* must be > 0.*got {value!r}"):
            cls(**{key: value})
    for value in accepted:
        assert getattr(cls(**{key: value}), key) == value


def test_hardtanh_needs_strictly_ordered_bounds():
    """min_val == max_val is rejected (a zero-width interval has no derivative anywhere)."""
    hardtanh = ACTIVATIONS.lookup("hardtanh")
    for low, high in [(1.0, 1.0), (2.0, 1.0)]:
        with pytest.raises(ValueError, match="min_val < max_val"):
            hardtanh(min_val=low, max_val=high)
    tight = hardtanh(min_val=1.0, max_val=float(np.nextafter(1.0, 2.0)))
    assert tight.min_val < tight.max_val


def _float_hyperparameters():
    for cls in _components():
        for hyper in getattr(cls, "hyperparameters", ()):
            default = inspect.signature(cls.__init__).parameters[hyper].default
            if isinstance(default, float):
                yield cls, hyper


@pytest.mark.parametrize(
    ("cls", "hyper"), list(_float_hyperparameters()), ids=lambda v: getattr(v, "name", v)
)
def test_bool_nan_and_inf_are_rejected_as_real_hyperparameters(cls, hyper):
    """``True`` is not a number here (TypeError naming the parameter first); NaN and ±inf
    are ValueErrors."""
    with pytest.raises(TypeError, match=rf"^{hyper} must be a real number"):
        cls(**{hyper: True})
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises((ValueError, TypeError)):
            cls(**{hyper: bad})


def test_poisson_log_input_must_be_a_bool():
    """``log_input=1`` is a TypeError, not silently truthy."""
    with pytest.raises(TypeError, match="log_input"):
        get_cost({"name": "poisson-nll", "log_input": 1})


# ----------------------------------------------------------------------- float32
def _z(dtype, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((4, 5)) * 3
    z[0, :3] = [0.0, -1.0, 1.0]  # kinks of every default activation
    return z.astype(dtype)


@pytest.mark.parametrize("name", ACTIVATIONS.names())
def test_activation_float32_stays_float32(name):
    """forward, derivative (elementwise) and backward keep float32 (no silent float64)."""
    activation = get_activation(name)
    z = _z(np.float32)
    a = activation.forward(z)
    g = np.ones_like(z) * np.float32(0.5)
    assert a.dtype == np.float32, "forward"
    assert activation.backward(g, z, a).dtype == np.float32, "backward"
    if activation.elementwise:
        assert activation.derivative(z, a).dtype == np.float32, "derivative"


def _cost_inputs(cost, dtype, seed=0):
    """Outputs ``a`` inside the cost's domain and targets of its kind, as ``dtype``."""
    rng = np.random.default_rng(seed)
    n, k = 4, 3
    logits = rng.standard_normal((n, k))
    kind = cost.target_kind
    if kind == "probability":
        a, y = 1 / (1 + np.exp(-logits)), rng.uniform(0, 1, (n, k))
    elif kind == "labels":
        a, y = logits, np.eye(k)[rng.integers(0, k, n)]
        if cost.name == "log-likelihood":
            a = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    elif kind == "distribution":
        a = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        y = np.exp(rng.standard_normal((n, k)))
        y /= y.sum(axis=1, keepdims=True)
    elif kind == "count":
        a, y = np.exp(logits), rng.poisson(2.0, (n, k)).astype(float)
    else:
        a, y = logits, rng.standard_normal((n, k))
    return a.astype(dtype), y.astype(dtype)


@pytest.mark.parametrize("name", COSTS.names())
def test_cost_float32_stays_float32(name):
    """grad, per_sample and the BP1 delta keep float32."""
    cost = get_cost(name)
    a, y = _cost_inputs(cost, np.float32)
    assert cost.grad(a, y).dtype == np.float32, "grad"
    assert cost.per_sample(a, y).dtype == np.float32, "per_sample"


# ------------------------------------------------- derivative() beside backward()
OVERRIDES_BACKWARD = [
    name
    for name in ACTIVATIONS.names()
    if ACTIVATIONS.lookup(name).elementwise
    and ACTIVATIONS.lookup(name).backward is not Activation.backward
]


def _edge_points(activation) -> np.ndarray:
    """Every edge, the floats either side of it, and points ±1e-3 and ±1 away."""
    points = [0.0, 1.0, -1.0, 3.0, -3.0]
    for edge in kink_points(activation):
        points += [edge, float(np.nextafter(edge, np.inf)), float(np.nextafter(edge, -np.inf))]
        points += [edge + 1e-3, edge - 1e-3]
    return np.array(sorted(set(points)))


def _hyper_variants(name):
    if name == "leaky-relu":
        return [{}, {"alpha": 0.2}]
    if name == "elu":
        return [{}, {"alpha": 2.5}]
    if name == "softplus":
        return [{}, {"beta": 2.0, "threshold": 3.0}]
    if name == "hardtanh":
        return [{}, {"min_val": -0.5, "max_val": 2.0}]
    if name == "gelu":
        return [{"approximate": "none"}, {"approximate": "tanh"}]
    return [{}]


def _torch_slopes(activation, z: np.ndarray) -> np.ndarray:
    zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    torch_activation(activation)(zt[None, :]).sum().backward()
    return zt.grad.numpy()


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [(n, kw) for n in ACTIVATIONS.names() for kw in _hyper_variants(n)],
)
def test_piecewise_edges_both_sides_and_at_the_edge(name, kwargs):
    """σ, σ' (derivative) and the VJP (backward) equal torch at, just below and just above
    each edge, for default and non-default hyper-parameters; ``derivative`` is checked
    also for classes whose network path is an overridden ``backward``.
    """
    activation = get_activation({"name": name, **kwargs})
    if not activation.elementwise:
        pytest.skip("coupled activations have no edge (smooth)")
    z = _edge_points(activation)
    a = activation.forward(z[None, :])
    expected_a = torch_activation(activation)(torch.tensor(z[None, :])).numpy()
    assert_gradients_close(a, expected_a, name=f"{name} σ at edges")
    slopes = _torch_slopes(activation, z)
    derivative = activation.derivative(z[None, :], a)[0]
    assert_gradients_close(derivative, slopes, name=f"{name} derivative at edges")
    g = np.random.default_rng(1).standard_normal(z.shape)[None, :] + 0.5
    vjp = activation.backward(g, z[None, :], a)[0]
    assert_gradients_close(vjp, g[0] * slopes, name=f"{name} backward at edges")


def test_backward_overriders_are_listed():
    """The classes whose ``derivative`` is off the network path are the ones checked above."""
    assert {"relu", "leaky-relu", "hardtanh", "identity"} <= set(OVERRIDES_BACKWARD)


# ---------------------------------------------------------------- costs at edges
def _torch_value_and_grad(cost, a, y):
    at = torch.tensor(a, requires_grad=True)
    value = torch_cost(cost)(at, torch.tensor(y))
    value.backward()
    return float(value), at.grad.numpy() * a.shape[0]


#: cost config -> (a, y) rows putting |a − y| exactly at the edge and either side of it.
def _edge_pairs(threshold: float) -> tuple[np.ndarray, np.ndarray]:
    d = np.array(
        [
            threshold,
            -threshold,
            np.nextafter(threshold, 0),
            np.nextafter(threshold, 9),
            -np.nextafter(threshold, 0),
            -np.nextafter(threshold, 9),
            0.0,
            threshold * 3,
        ]
    )
    y = np.linspace(-1, 1, d.size)
    # a − y == d exactly: y dyadic (multiples of 2⁻³) keeps the subtraction exact.
    y = np.round(y * 8) / 8
    return (y + d)[None, :], y[None, :]


@pytest.mark.parametrize(
    "config",
    [
        {"name": "huber"},
        {"name": "huber", "threshold": 0.25},
        {"name": "smooth-l1"},
        {"name": "smooth-l1", "beta": 0.5},
        {"name": "mae"},
    ],
)
def test_regression_costs_at_and_either_side_of_their_edge(config):
    """Huber/smooth-L1/MAE value and gradient at |a − y| = δ (β, 0) exactly and either side."""
    cost = get_cost(config)
    edge = getattr(cost, "threshold", getattr(cost, "beta", 0.0)) or 0.0
    a, y = _edge_pairs(edge if edge else 0.5)
    if cost.name == "mae":
        a = np.concatenate([a, y + np.array([[0.0, 1e-300, -1e-300, 0, 0, 0, 0, 0]])], axis=0)
        y = np.concatenate([y, y], axis=0)
    value, grad = _torch_value_and_grad(cost, a, y)
    assert_gradients_close(np.array(cost.value(a, y)), np.array(value), name="value")
    assert_gradients_close(cost.grad(a, y), grad, name="grad")


def test_multi_margin_hinge_exactly_at_zero_and_either_side():
    """A hinge m − a_y + a_j exactly 0 contributes 0 (torch's strict >); ±1 ulp does not."""
    for margin in (1.0, 0.5):
        cost = get_cost({"name": "multi-margin", "margin": margin})
        a = np.array(
            [
                [1.0, 1.0 - margin, -5.0],  # hinge of class 1 exactly 0 (target 0)
                [1.0, np.nextafter(1.0 - margin, 9), -5.0],
                [1.0, np.nextafter(1.0 - margin, -9), -5.0],
            ]
        )
        y = np.array([0, 0, 0])
        value, grad = _torch_value_and_grad(cost, a, np.eye(3)[y])
        assert_gradients_close(np.array(cost.value(a, y)), np.array(value), name="value")
        assert_gradients_close(cost.grad(a, y), grad, name="grad")
        assert cost.grad(a, y)[0, 1] == 0.0 and cost.grad(a, y)[1, 1] == 1.0


# ------------------------------------------------------------ every target form
CLASS_COSTS = [n for n in COSTS.names() if COSTS.lookup(n).target_kind == "labels"]


def _class_outputs(name, rng, n, k):
    logits = rng.standard_normal((n, k)) * 3
    if name == "log-likelihood":
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return logits


@pytest.mark.parametrize("name", CLASS_COSTS)
def test_class_costs_accept_labels_one_hot_and_soft_rows(name):
    """Labels and their one-hot rows give identical results; soft rows (where accepted)
    equal torch's probability-target loss; a soft row is refused by one-hot-only costs."""
    cost = get_cost(name)
    rng = np.random.default_rng(7)
    n, k = 6, 4
    a = _class_outputs(name, rng, n, k)
    labels = rng.integers(0, k, n)
    one_hot = np.eye(k)[labels]
    assert cost.value(a, labels) == cost.value(a, one_hot)
    np.testing.assert_array_equal(cost.grad(a, labels), cost.grad(a, one_hot))
    value, grad = _torch_value_and_grad(cost, a, one_hot)
    assert_gradients_close(cost.grad(a, labels), grad, name=f"{name} grad (labels)")
    soft = rng.exponential(size=(n, k))
    soft /= soft.sum(axis=1, keepdims=True)
    if getattr(cost, "one_hot_only", False):
        with pytest.raises(ValueError, match="one-hot"):
            cost.grad(a, soft)
        return
    value, grad = _torch_value_and_grad(cost, a, soft)
    assert_gradients_close(np.array(cost.value(a, soft)), np.array(value), name="soft value")
    assert_gradients_close(cost.grad(a, soft), grad, name=f"{name} grad (soft rows)")


def test_kl_divergence_with_a_target_entry_exactly_one():
    """y = one-hot (entries exactly 1 and 0): C = −a_y, ∂C/∂a = −y, as torch's kl_div."""
    cost = get_cost("kl-divergence")
    logits = np.random.default_rng(3).standard_normal((3, 4))
    a = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    y = np.eye(4)[[0, 3, 1]]
    value, grad = _torch_value_and_grad(cost, a, y)
    assert_gradients_close(np.array(cost.value(a, y)), np.array(value), name="KL value")
    assert cost.value(a, y) == pytest.approx(-a[[0, 1, 2], [0, 3, 1]].mean(), rel=1e-15)
    assert_gradients_close(cost.grad(a, y), grad, name="KL grad")


def test_kl_divergence_terms_with_zero_target_are_zero_even_at_minus_infinity():
    """``yⱼ = 0`` contributes 0 to C, also where ``aⱼ = −inf`` (0·(−inf) would be NaN)."""
    cost = get_cost("kl-divergence")
    a = np.array([[-np.inf, np.log(0.25), np.log(0.75)]])
    y = np.array([[0.0, 0.5, 0.5]])
    expected = 0.5 * (np.log(0.5) - np.log(0.25)) + 0.5 * (np.log(0.5) - np.log(0.75))
    assert cost.value(a, y) == pytest.approx(expected, rel=1e-15)


def test_poisson_log_input_zero_count_at_zero_rate():
    """log_input=True, a = ln λ = −inf (λ = 0) with y = 0: the term is e^a − 0 = 0, no NaN;
    e^a overflowing (a > 709) is the true rounded value +inf, without an error."""
    cost = get_cost({"name": "poisson-nll", "log_input": True})
    a = np.array([[-np.inf, 0.5]])
    y = np.array([[0.0, 2.0]])
    assert cost.value(a, y) == pytest.approx(np.exp(0.5) - 2.0 * 0.5, rel=1e-15)
    assert cost.value(np.array([[800.0]]), np.array([[1.0]])) == np.inf


def test_cross_entropy_at_outputs_exactly_zero_and_one():
    """a ∈ {0, 1} with the matching target: finite value (0·ln 0 = 0), no invalid-value error."""
    cost = get_cost("cross-entropy")
    a, y = np.array([[0.0, 1.0, 0.5]]), np.array([[0.0, 1.0, 0.5]])
    assert cost.value(a, y) == pytest.approx(np.log(2.0), rel=1e-15)


@pytest.mark.parametrize("name", COSTS.names())
def test_shape_mismatch_error_names_the_cost(name):
    """A target shape that differs from the output's: ValueError starting with the cost's name."""
    cost = get_cost(name)
    a, y = _cost_inputs(cost, np.float64)
    for method in (cost.grad, cost.per_sample):
        with pytest.raises(ValueError, match=rf"^{name}: "):
            method(a, y[:, :-1])


def test_categorical_cross_entropy_shifts_each_row_by_its_own_maximum():
    """Rows whose maxima differ by 2000 (a global shift underflows one row to 0/0)."""
    cost = get_cost("categorical-cross-entropy")
    rng = np.random.default_rng(5)
    a = rng.standard_normal((3, 4)) + np.array([[1000.0], [-1000.0], [0.0]])
    y = np.array([1, 2, 3])
    value, grad = _torch_value_and_grad(cost, a, np.eye(4)[y])
    assert_gradients_close(np.array(cost.value(a, y)), np.array(value), name="CCE value")
    assert_gradients_close(cost.grad(a, y), grad, name="CCE grad")
    ref = F.log_softmax(torch.tensor(a), dim=1).numpy()
    assert_gradients_close(cost.per_sample(a, y), -ref[[0, 1, 2], y], name="per-sample")
