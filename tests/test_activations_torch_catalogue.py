"""torch's remaining elementwise activation modules (issue 26, ``docs/activations.md``):
CELU, Hardshrink, Hardsigmoid, Hardswish, LogSigmoid, Mish, ReLU6, Softshrink, Softsign,
Tanhshrink, Threshold.

Against torch in float64 with random upstream gradients: forward, VJP, σ'' and the
second-order VJP with options drawn over torch's accepted range (the cases of
``reference/checks_activations_catalogue.py``, shared with ``verify``); each edge exactly and
one ulp either side; central finite differences; the fused in-place forms against the
readable ones; the unit in the middle of a random torch stack; torch's constructors,
validation, save/load, and torch's own module tests.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.activations import (
    ACTIVATIONS,
    CELU,
    HARDSIGMOID_SLOPE,
    Hardshrink,
    Hardsigmoid,
    Hardswish,
    LogSigmoid,
    Mish,
    ReLU6,
    Softshrink,
    Softsign,
    Tanhshrink,
    Threshold,
    get_activation,
)
from manual_bp.layers import ActivationLayer, Dense
from reference.checks_activations_catalogue import (
    CATALOGUE,
    catalogue_activation,
    edge_preactivations,
    second_comparisons,
)
from reference.checks_components import (
    REGIMES,
    activation_comparisons,
    kink_points,
    random_upstream,
)
from reference.components import torch_activation

#: registered name -> torch's class name
TORCH_NAMES = {
    "celu": "CELU",
    "hardshrink": "Hardshrink",
    "hardsigmoid": "Hardsigmoid",
    "hardswish": "Hardswish",
    "log-sigmoid": "LogSigmoid",
    "mish": "Mish",
    "relu6": "ReLU6",
    "softshrink": "Softshrink",
    "softsign": "Softsign",
    "tanhshrink": "Tanhshrink",
    "threshold": "Threshold",
}
SMOOTH = ("log-sigmoid", "mish", "softsign", "tanhshrink")
names = st.sampled_from(CATALOGUE)
seeds = st.integers(0, 2**32 - 1)


def test_the_catalogue_is_registered_under_torchs_class_names():
    """Each name is registered, and its class carries torch's class name."""
    assert set(TORCH_NAMES) == set(CATALOGUE) <= set(ACTIVATIONS.names())
    for name, torch_name in TORCH_NAMES.items():
        cls = ACTIVATIONS.lookup(name)
        assert cls.__name__ == torch_name and hasattr(torch.nn, torch_name)
        assert cls.elementwise and cls.equation == f"ACT.{name}"


@settings(max_examples=40, deadline=None)
@given(name=names, regime=st.sampled_from(REGIMES), batch=st.integers(1, 6),
       n=st.integers(1, 9), seed=seeds)  # fmt: skip
def test_catalogue_forward_and_vjp_match_torch(name, regime, batch, n, seed):
    """σ(z) and J_σ(z)ᵀg against torch, options drawn, every regime plus each edge and its
    neighbours: ACT.celu, ACT.hardshrink, ACT.hardsigmoid, ACT.hardswish, ACT.log-sigmoid,
    ACT.mish, ACT.relu6, ACT.softshrink, ACT.softsign, ACT.tanhshrink, ACT.threshold."""
    rng = np.random.default_rng(seed)
    activation = catalogue_activation(rng, name, regime)
    z = edge_preactivations(rng, activation, (batch, n), regime)
    for comparison in activation_comparisons(activation, z, random_upstream(rng, z.shape)):
        comparison.check()


@settings(max_examples=40, deadline=None)
@given(name=names, regime=st.sampled_from(("moderate", "kinks", "large")), seed=seeds)
def test_catalogue_second_derivatives_match_torch(name, regime, seed):
    """σ'' and Σ g ∇²σ dz against torch's double backward, both sides of and at each edge:
    ACT2.celu, ACT2.hardshrink, ACT2.hardsigmoid, ACT2.hardswish, ACT2.log-sigmoid,
    ACT2.mish, ACT2.relu6, ACT2.softshrink, ACT2.softsign, ACT2.tanhshrink, ACT2.threshold."""
    rng = np.random.default_rng(seed)
    activation = catalogue_activation(rng, name, regime)
    z = edge_preactivations(rng, activation, (3, 7), regime)
    g, dz = random_upstream(rng, z.shape), rng.standard_normal(z.shape)
    for comparison in second_comparisons(activation, z, g, dz):
        comparison.check()


#: (activation, edge, torch's σ' there, torch's σ' one ulp below, one ulp above)
KINKS = [
    (ReLU6(), 0.0, 0.0, 0.0, 1.0),
    (ReLU6(), 6.0, 0.0, 1.0, 0.0),
    (Hardsigmoid(), -3.0, 0.0, 0.0, HARDSIGMOID_SLOPE),
    (Hardsigmoid(), 3.0, 0.0, HARDSIGMOID_SLOPE, 0.0),
    (Hardswish(), -3.0, 0.0, 0.0, -0.5),
    (Hardswish(), 3.0, 1.0, 1.5, 1.0),
    (Hardshrink(), -0.5, 0.0, 1.0, 0.0),
    (Hardshrink(), 0.5, 0.0, 0.0, 1.0),
    (Hardshrink(lambd=2.0), 2.0, 0.0, 0.0, 1.0),
    (Softshrink(), -0.5, 0.0, 1.0, 0.0),
    (Softshrink(), 0.5, 0.0, 0.0, 1.0),
    (Softshrink(lambd=0.0), 0.0, 0.0, 1.0, 1.0),
    (Threshold(0.1, 20.0), 0.1, 0.0, 0.0, 1.0),
    (Threshold(-2.0, 1.0), -2.0, 0.0, 0.0, 1.0),
    (CELU(), 0.0, 1.0, 1.0, 1.0),
    (CELU(alpha=2.0), 0.0, 1.0, 1.0, 1.0),
]


@pytest.mark.parametrize(("act", "edge", "at", "below", "above"), KINKS, ids=repr)
def test_each_edge_takes_torchs_derivative_at_and_either_side(act, edge, at, below, above):
    """σ, σ' and g·σ' at an edge and one ulp either side: the documented table, and torch."""
    z = np.array([[np.nextafter(edge, -np.inf), edge, np.nextafter(edge, np.inf)]])
    a = act.forward(z)
    slopes = act.derivative(z, a)[0]
    np.testing.assert_allclose(slopes, [below, at, above], rtol=1e-15, atol=1e-15)
    zt = torch.tensor(z, requires_grad=True)
    at_ = torch_activation(act)(zt)
    g = np.array([[0.7, -1.3, 2.1]])
    (expected,) = torch.autograd.grad(at_, zt, torch.tensor(g))
    np.testing.assert_array_equal(a, at_.detach().numpy())
    np.testing.assert_allclose(act.backward(g, z, a), expected.numpy(), rtol=1e-15, atol=0)


def test_hardsigmoid_slope_is_torchs_float32_sixth():
    """torch's kernel multiplies by float32(1/6) in float64 too; the forward divides by 6."""
    z = np.array([[0.25]])
    zt = torch.tensor(z, requires_grad=True)
    (slope,) = torch.autograd.grad(torch.nn.functional.hardsigmoid(zt).sum(), zt)
    assert float(slope) == HARDSIGMOID_SLOPE == float(np.float32(1) / np.float32(6)) != 1 / 6
    assert Hardsigmoid().forward(z)[0, 0] == (0.25 + 3.0) / 6.0


@pytest.mark.parametrize("alpha", [1.0, 2.0, 0.3, -0.7, 1.7])
def test_celu_gradient_follows_torchs_float32_input_scale(alpha):
    """torch's celu backward scales by 1/float32(α): equal to the exact σ' for float32 α,
    off by the measured ~1e-8 otherwise; ours equals torch's to rounding in both cases."""
    z = np.array([[-10.0, -1.0, -1e-3, 0.0, 2.0]])
    act = CELU(alpha=alpha)
    zt = torch.tensor(z, requires_grad=True)
    (expected,) = torch.autograd.grad(torch.nn.functional.celu(zt, alpha).sum(), zt)
    derivative = act.derivative(z, act.forward(z))
    np.testing.assert_allclose(derivative, expected.numpy(), rtol=4e-16, atol=0)
    exact = np.where(z > 0, 1.0, np.exp(np.minimum(z, 0) / alpha))
    off = np.abs(derivative - exact) / exact
    if float(np.float32(alpha)) == alpha:
        np.testing.assert_allclose(derivative, exact, rtol=2e-16, atol=0)
    else:
        assert np.all(off <= (1.0 + np.abs(z / alpha)) * 1e-7) and off[0, 1] > 1e-9


@settings(max_examples=25, deadline=None)
@given(name=names, seed=seeds)
def test_central_finite_differences_of_sigma_and_its_derivative(name, seed):
    """σ' = (σ(z+h) − σ(z−h))/2h and σ'' = (σ'(z+h) − σ'(z−h))/2h away from every edge."""
    rng = np.random.default_rng(seed)
    activation = catalogue_activation(rng, name, "moderate")
    if name == "celu":  # a float32 α: σ' is then the exact derivative (torch's α₃₂, above)
        activation = CELU(alpha=float(np.float32(activation.alpha)))
    z = rng.uniform(-5.0, 5.0, (1, 64))
    edges = np.array(kink_points(activation) or [np.inf])
    z = z[:, np.min(np.abs(z[0][:, None] - edges[None, :]), axis=1) > 1e-3]
    h = 1e-5
    f, d = activation.forward, activation.derivative
    fd1 = (f(z + h) - f(z - h)) / (2 * h)
    fd2 = (d(z + h, f(z + h)) - d(z - h, f(z - h))) / (2 * h)
    scale = 1.0 + np.abs(z) + np.abs(f(z)) + np.abs(d(z, f(z)))
    assert np.all(np.abs(fd1 - d(z, f(z))) <= 1e-7 * scale)
    assert np.all(np.abs(fd2 - activation.second_derivative(z, f(z))) <= 1e-6 * scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", [*CATALOGUE, "hardtanh"])
def test_fast_forms_equal_the_readable_forms_bit_for_bit(name, dtype):
    """forward_into and backward_inplace (what the fused step calls) give the readable
    forms' bits, in place, in the input's dtype, at the edges too."""
    rng = np.random.default_rng(3)
    activation = catalogue_activation(rng, name, "kinks")
    z = edge_preactivations(rng, activation, (4, 6), "kinks").astype(dtype)
    a = activation.forward(z)
    out = np.empty_like(z)
    fast_a = activation.forward_into(z, out)
    assert fast_a.dtype == dtype and a.dtype == dtype and fast_a.tobytes() == a.tobytes()
    g = rng.standard_normal(z.shape).astype(dtype)
    readable = activation.backward(g, z, a)
    grad = g.copy()
    fast = activation.backward_inplace(grad, z, a, np.empty_like(z))
    assert fast.dtype == readable.dtype == dtype and np.array_equal(fast, readable)
    assert activation.derivative(z, a).dtype == activation.second_derivative(z, a).dtype == dtype


#: torch module of each registered name, with the options of an instance
def _torch_module(activation) -> torch.nn.Module:
    cls = getattr(torch.nn, TORCH_NAMES[activation.name])
    return cls(**{k: getattr(activation, k) for k in activation.hyperparameters})


@settings(max_examples=20, deadline=None)
@given(name=names, seed=seeds, batch=st.integers(1, 5))
def test_each_unit_in_the_middle_of_a_random_torch_stack(name, seed, batch):
    """Dense → σ → Dense → σ₂ against torch.nn (σ built from torch's module class and our
    options): output, input gradient and every parameter gradient, random upstream."""
    rng = np.random.default_rng(seed)
    act = catalogue_activation(rng, name, "moderate")
    other = get_activation(str(rng.choice(CATALOGUE)))
    sizes = [int(k) for k in rng.integers(1, 6, size=3)]
    ours = [Dense(sizes[0], sizes[1], seed=rng), ActivationLayer(act),
            Dense(sizes[1], sizes[2], seed=rng), ActivationLayer(other)]  # fmt: skip
    theirs = torch.nn.Sequential(
        torch.nn.Linear(sizes[0], sizes[1]), _torch_module(act),
        torch.nn.Linear(sizes[1], sizes[2]), _torch_module(other),
    ).double()  # fmt: skip
    with torch.no_grad():
        for i in (0, 2):
            theirs[i].weight.copy_(torch.tensor(ours[i].params["weight"]))
            theirs[i].bias.copy_(torch.tensor(ours[i].params["bias"]))
    x = rng.standard_normal((batch, sizes[0])) * 2.0
    caches, out = [], x
    for layer in ours:
        out, cache = layer.forward(out)
        caches.append(cache)
    upstream = random_upstream(rng, out.shape)
    grads, dout = {}, upstream
    for i in reversed(range(4)):
        dout, param_grads = ours[i].backward(dout, caches[i])
        grads.update({f"{i}.{k}": v for k, v in param_grads.items()})
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    wrt = [xt, *theirs.parameters()]
    expected = torch.autograd.grad(yt, wrt, torch.tensor(upstream))
    np.testing.assert_allclose(out, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    scale = 1.0 + max(float(np.abs(e.numpy()).max()) for e in expected)
    np.testing.assert_allclose(dout, expected[0].numpy(), rtol=0, atol=1e-12 * scale)
    for (pname, _), e in zip(theirs.named_parameters(), expected[1:], strict=True):
        np.testing.assert_allclose(grads[pname], e.numpy(), rtol=0, atol=1e-12 * scale)


def test_constructors_are_torchs():
    """Parameter names, order and defaults of torch's constructors (Threshold: torch has no
    defaults, ours are 0 and 0, the documented exception)."""
    for name, torch_name in TORCH_NAMES.items():
        ours = inspect.signature(ACTIVATIONS.lookup(name).__init__).parameters
        theirs = inspect.signature(getattr(torch.nn, torch_name).__init__).parameters
        ours, theirs = (
            {k: v for k, v in p.items() if v.kind is v.POSITIONAL_OR_KEYWORD and k != "self"}
            for p in (ours, theirs)
        )
        assert list(ours) == list(theirs), name
        for key, parameter in theirs.items():
            if name == "threshold" and key in ("threshold", "value"):
                assert parameter.default is inspect.Parameter.empty
                assert ours[key].default == 0.0
            else:
                assert ours[key].default == parameter.default, (name, key)
    assert Threshold().forward(np.array([-1.0, 0.0, 2.0])).tolist() == [0.0, 0.0, 2.0]


@pytest.mark.parametrize(
    ("cls", "kwargs", "error", "match"),
    [
        (CELU, {"alpha": 0.0}, ValueError, "alpha must be nonzero"),
        (CELU, {"alpha": float("nan")}, ValueError, "alpha must be finite"),
        (CELU, {"alpha": "1"}, TypeError, "alpha must be a real number"),
        (CELU, {"alpha": 1e39}, ValueError, "alpha must be within float32's range"),
        (CELU, {"alpha": -1e-46}, ValueError, "alpha must be within float32's range"),
        (Softshrink, {"lambd": -1e-300}, ValueError, "lambd must be >= 0"),
        (Softshrink, {"lambd": -0.5}, ValueError, "lambd must be >= 0"),
        (Hardshrink, {"lambd": float("inf")}, ValueError, "lambd must be finite"),
        (Threshold, {"threshold": None}, TypeError, "threshold must be a real number"),
        (Threshold, {"value": float("nan")}, ValueError, "value must be finite"),
        (Mish, {"inplace": 1}, TypeError, "inplace must be True or False"),
        (ReLU6, {"inplace": "yes"}, TypeError, "inplace must be True or False"),
    ],
)
def test_bad_options_are_refused_in_one_line_naming_them(cls, kwargs, error, match):
    with pytest.raises(error, match=match) as info:
        cls(**kwargs)
    assert "\n" not in str(info.value)


def test_options_at_their_edges_are_accepted():
    """Exactly at each bound: λ = 0 for softshrink, the smallest |α| for CELU, a negative
    α and λ (torch accepts both), inplace=True (the same result)."""
    z = np.linspace(-4, 4, 17)[None, :]
    assert np.array_equal(Softshrink(lambd=0.0).forward(z), z)
    assert np.array_equal(Hardshrink(lambd=-0.5).forward(z), z)
    for alpha in (float(np.finfo(np.float32).max), 1.5e-45, float(np.finfo(np.float32).tiny)):
        celu = CELU(alpha=alpha)
        assert np.isfinite(celu.forward(z)).all() and np.isfinite(celu.derivative(z, z)).all()
    expected = torch.nn.functional.celu(torch.tensor(z), -1.0).numpy()
    np.testing.assert_allclose(CELU(alpha=-1.0).forward(z), expected, rtol=4e-16, atol=0)
    for cls in (CELU, Hardsigmoid, Hardswish, Mish, ReLU6, Threshold):
        assert np.array_equal(cls(inplace=True).forward(z), cls().forward(z))


@pytest.mark.parametrize("name", CATALOGUE)
def test_saturation_is_finite_silent_and_torchs(name):
    """|z| up to 1e300: finite σ, σ', σ'' without a warning, σ and g·σ' equal to torch's."""
    z = np.array([[-1e300, -1e4, -800.0, -40.0, -1e-300, 0.0, 1e-300, 40.0, 800.0, 1e4, 1e300]])
    activation = get_activation(name)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        a = activation.forward(z)
        values = [a, activation.derivative(z, a), activation.second_derivative(z, a)]
    assert all(np.isfinite(v).all() for v in values)
    g = np.linspace(-2, 2, z.size)[None, :]
    for comparison in activation_comparisons(activation, z, g):  # torch, at its rounding
        comparison.check()


@pytest.mark.parametrize("name", CATALOGUE)
def test_config_round_trip_and_layer_spec(name):
    """get_config → get_activation gives an equal instance; the name builds a layer."""
    rng = np.random.default_rng(5)
    activation = catalogue_activation(rng, name, "moderate")
    again = get_activation(activation.get_config())
    assert again == activation and again.get_config() == activation.get_config()
    layer = ActivationLayer(name)
    z = np.array([[0.5, -0.5]])
    assert np.array_equal(layer.forward(z)[0], get_activation(name).forward(z))


def test_torchs_own_module_tests_agree(torch_module_outcomes):
    """``reference.torch_modules`` over the module_db/common_nn configurations of the 11
    classes: every one agrees in float64 (values and input gradients). Read off the
    session's one walk (``outcomes()`` keyed ``source/torch name/…``)."""
    names = set(TORCH_NAMES.values())
    found = {k: o for k, o in torch_module_outcomes.items() if k.split("/")[1] in names}
    assert len(found) >= 43
    bad = {key: (o.status, o.detail) for key, o in found.items() if o.status != "agree"}
    assert not bad, bad


def test_smooth_units_have_no_kink_and_the_rest_list_theirs():
    """The table of edges the checks visit (``kink_points``) covers every piecewise unit."""
    for name in CATALOGUE:
        edges = kink_points(get_activation(name))
        assert (not edges) == (name in SMOOTH), name


def test_log_sigmoid_mish_and_softsign_derivatives_are_accurate_where_torch_cancels():
    """The closed forms against mpmath-free exact references: σ' of softsign at 1e4 is
    1/(1 + 1e4)² to 1 ulp (torch's quotient rule is 1e-12 off), log-sigmoid' = sigmoid(−z),
    and mish' → 1 for large z."""
    z = np.array([[1e4, -1e4]])
    assert Softsign().derivative(z, None)[0, 0] == pytest.approx(1 / 10001**2, rel=2e-16)
    z = np.array([[-30.0, 0.0, 30.0]])
    np.testing.assert_allclose(LogSigmoid().derivative(z, None), 1 / (1 + np.exp(z)), rtol=2e-16)
    assert Mish().derivative(np.array([[40.0]]), None)[0, 0] == 1.0
    t = np.tanh(1e-8)
    assert Tanhshrink().derivative(np.array([[1e-8]]), None)[0, 0] == t * t
