"""Chapter ``docs/activations.md``: every activation's forward and VJP against torch.

Alone (random upstream gradients, all pre-activation regimes, exact kinks,
saturation at |z| up to 1e4) and inside random networks. Cases come from
``reference/checks_components.py``, shared with the ``verify`` command.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from manual_bp import Network
from manual_bp.activations import (
    ACTIVATIONS,
    ELU,
    GELU,
    SELU,
    HardTanh,
    LeakyReLU,
    Softplus,
    get_activation,
)
from manual_bp.gradcheck import assert_gradients_close
from manual_bp.layers import ActivationLayer
from reference.cases import build_case
from reference.checks_components import (
    REGIMES,
    activation_comparisons,
    random_activation,
    random_preactivations,
    random_upstream,
)
from reference.compare import network_comparisons
from reference.components import torch_activation
from tests.strategies import network_specs

NAMES = ACTIVATIONS.names()
seeds = st.integers(0, 2**32 - 1)
sizes = st.integers(1, 16)


@pytest.mark.parametrize("name", NAMES)
@given(regime=st.sampled_from(REGIMES), batch=sizes, n=sizes, seed=seeds)
def test_activation_backward_matches_torch(name, regime, batch, n, seed):
    """σ(z) and J_σ(z)ᵀg for a random upstream g equal torch's forward and autograd VJP.

    Verifies ACT.identity, ACT.sigmoid, ACT.tanh, ACT.relu, ACT.leaky-relu,
    ACT.elu, ACT.selu, ACT.softplus, ACT.gelu, ACT.silu, ACT.hardtanh,
    ACT.softmax and ACT.log-softmax (hyper-parameters drawn at random and
    passed to torch's op), in every regime of pre-activations.
    """
    rng = np.random.default_rng(seed)
    activation = random_activation(rng, name)
    z = random_preactivations(rng, activation, (batch, n), regime)
    g = random_upstream(rng, z.shape)
    for comparison in activation_comparisons(activation, z, g):
        comparison.check()


#: (activation, breakpoint, torch's derivative there): the documented kink conventions.
KINKS = [
    (get_activation("relu"), 0.0, 0.0),
    (LeakyReLU(alpha=0.2), 0.0, 0.2),
    (ELU(alpha=2.0), 0.0, 2.0),
    (SELU(), 0.0, 1.0507009873554804934193349852946 * 1.6732632423543772848170429916717),
    (HardTanh(), -1.0, 0.0),
    (HardTanh(), 1.0, 0.0),
    (HardTanh(min_val=-0.5, max_val=2.0), 2.0, 0.0),
]


@pytest.mark.parametrize(("activation", "point", "slope"), KINKS, ids=lambda v: repr(v))
def test_kink_convention_matches_torch(activation, point, slope):
    """At an exact breakpoint the derivative is torch's (relu'(0) = 0, leaky'(0) = α, ...)."""
    z = np.array([[point, np.nextafter(point, -np.inf), np.nextafter(point, np.inf)]])
    g = np.array([[1.5, -0.5, 2.0]])
    ours = activation.backward(g, z, activation.forward(z))
    zt = torch.tensor(z, requires_grad=True)
    (theirs,) = torch.autograd.grad(torch_activation(activation)(zt), zt, torch.tensor(g))
    np.testing.assert_array_equal(ours, theirs.numpy())
    assert ours[0, 0] == 1.5 * slope


def test_softplus_threshold_switch_matches_torch():
    """Softplus switches to the identity strictly above βz = threshold, as torch."""
    act = Softplus(beta=2.0, threshold=5.0)
    z = np.array([[2.5, np.nextafter(2.5, 3), np.nextafter(2.5, 0)]])
    zt = torch.tensor(z, requires_grad=True)
    at = torch_activation(act)(zt)
    (gt,) = torch.autograd.grad(at.sum(), zt)
    ours = act.backward(np.ones_like(z), z, act.forward(z))
    assert ours[0, 1] == gt[0, 1] == 1.0  # identity branch above the threshold
    assert ours[0, 0] < 1.0 and gt[0, 0] < 1.0  # log branch at the threshold itself
    assert_gradients_close(act.forward(z), at.detach().numpy(), name="softplus at threshold")
    assert_gradients_close(ours, gt.numpy(), name="softplus' at threshold")


@pytest.mark.parametrize("name", NAMES)
@given(n=sizes, seed=seeds)
def test_saturation_is_finite_and_matches_torch(name, n, seed):
    """|z| up to 1e4: no overflow/invalid warning (they raise here), no NaN, torch's values."""
    rng = np.random.default_rng(seed)
    activation = random_activation(rng, name)
    z = rng.choice([-1e4, -1e3, -750.0, -40.0, 40.0, 750.0, 1e3, 1e4], size=(3, n))
    g = random_upstream(rng, z.shape)
    a = activation.forward(z)
    grad_z = activation.backward(g, z, a)
    assert np.isfinite(a).all() and np.isfinite(grad_z).all()
    for comparison in activation_comparisons(activation, z, g):
        comparison.check()


@pytest.mark.parametrize("name", NAMES)
@given(seed=seeds)
def test_float32_matches_float64(name, seed):
    """Float32 in, float32 out, within c·ε(float32) of the float64 result."""
    rng = np.random.default_rng(seed)
    activation = random_activation(rng, name)
    z = random_preactivations(rng, activation, (4, 5), "moderate").astype(np.float32)
    g = random_upstream(rng, z.shape).astype(np.float32)
    a32 = activation.forward(z)
    grad32 = activation.backward(g, z, a32)
    assert a32.dtype == np.float32 and grad32.dtype == np.float32
    z64, g64 = z.astype(np.float64), g.astype(np.float64)
    a64 = activation.forward(z64)
    grad64 = activation.backward(g64, z64, a64)
    scale = np.abs(g64) * (1 + np.abs(z64))  # float32 rounding of z moves σ by σ'·ε·|z|
    assert_gradients_close(a32, a64, name="σ(z) float32", dtype=np.float32, scale=1 + np.abs(z64))
    assert_gradients_close(grad32, grad64, name="VJP float32", dtype=np.float32, scale=scale)


@given(
    st.sampled_from(NAMES).flatmap(
        lambda name: network_specs(max_depth=4, max_width=8, max_batch=6, activations=(name,))
    )
)
def test_activation_inside_random_networks(spec):
    """Each activation as hidden (and, where valid, output) layer of random networks vs autograd."""
    net, x, y = build_case(spec)
    for comparison in network_comparisons(net, x, y):
        comparison.check()


def test_elementwise_flag_and_coupled_vjp():
    """Softmax/log-softmax are not elementwise: their VJP is not g ⊙ diag(J)."""
    rng = np.random.default_rng(0)
    z, g = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    for name in ("softmax", "log-softmax"):
        act = get_activation(name)
        assert not act.elementwise
        with pytest.raises(NotImplementedError):
            act.derivative(z, act.forward(z))
        jac = np.stack([np.eye(4) for _ in range(3)])  # a wrong (diagonal) Jacobian differs
        assert not np.allclose(act.backward(g, z, act.forward(z)), np.einsum("bij,bi->bj", jac, g))


def test_lookup_by_name_alias_class_and_config():
    """Names are case/underscore-insensitive; classes and config dicts work; configs round-trip."""
    assert isinstance(get_activation("Leaky_ReLU"), LeakyReLU)
    assert isinstance(get_activation("swish"), ACTIVATIONS.lookup("silu"))
    assert isinstance(get_activation(GELU), GELU)
    act = get_activation({"name": "gelu", "approximate": "tanh"})
    assert act.approximate == "tanh"
    for name in NAMES:
        act = random_activation(np.random.default_rng(1), name)
        assert get_activation(act.get_config()) == act
    net = Network([3, 4, 2], activation="gelu", cost="huber")
    assert isinstance(net.activations[0], GELU)
    assert Network([3, 4, 2], activation=ELU(alpha=0.5)).activations[0].alpha == 0.5


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown activation 'gelux'.*leaky-relu.*softmax"):
        get_activation("gelux")
    with pytest.raises(ValueError, match="unknown activation"):
        Network([2, 2], activation="swishy")


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (Softplus, {"beta": 0.0}),
        (Softplus, {"beta": float("nan")}),
        (GELU, {"approximate": "erf"}),
        (HardTanh, {"min_val": 1.0, "max_val": -1.0}),
        (ELU, {"alpha": float("inf")}),
    ],
)
def test_invalid_hyperparameters_are_rejected(cls, kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs)) if cls is not HardTanh else "min_val"):
        cls(**kwargs)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(), (5,), (2, 3, 4)])
def test_the_activation_layer_takes_the_shapes_torch_takes(name, shape):
    """torch's activation modules take a scalar and an unbatched vector (its module_db's
    ``scalar`` and ``no_batch_dim`` configurations); so does the layer, in every dtype, with
    its gradient shaped like its input. A coupled σ (softmax) takes a scalar as torch does,
    a one-element axis (softmax 1, log-softmax 0)."""
    layer = ActivationLayer(name)
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        x = np.asarray(rng.standard_normal(shape), dtype=dtype)
        a, cache = layer.forward(x)
        upstream = np.asarray(rng.standard_normal(shape), dtype=dtype)
        dx, grads = layer.backward(upstream, cache)
        assert np.shape(a) == shape and np.shape(dx) == shape and not grads
        assert np.asarray(a).dtype == dtype and np.asarray(dx).dtype == dtype
        # the same numbers as the batched call with that input as one row
        a_row, cache_row = layer.forward(x.reshape(1, *shape) if shape else x.reshape(1, 1))
        dx_row, _ = layer.backward(upstream.reshape(a_row.shape), cache_row)
        np.testing.assert_array_equal(np.asarray(a).reshape(-1), a_row.reshape(-1))
        np.testing.assert_array_equal(np.asarray(dx).reshape(-1), dx_row.reshape(-1))


@pytest.mark.parametrize("bad", [[0.5, 1.0], 0.5, None])
def test_the_activation_layer_refuses_what_is_not_an_array(bad):
    with pytest.raises(TypeError, match="must be a NumPy array"):  # a wrong kind: TypeError
        ActivationLayer("relu").forward(bad)


@pytest.mark.parametrize("name", NAMES)
def test_hessian_is_zero_flags_exactly_the_piecewise_linear(name):
    """``Activation.hessian_is_zero`` (the R-operator skips the residual of such a layer) is
    True exactly where torch's double backward gives ``σ'' = 0`` on every point drawn —
    broad values, and each point where a piecewise σ changes piece; an ``ActivationLayer``
    reads it from its activation, its class stays False (most σ have a residual)."""
    activation = ACTIVATIONS.get(name)
    if not activation.elementwise:
        assert not activation.hessian_is_zero
        return
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.standard_normal(200) * 4, [-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0, 6.0]])
    zt = torch.from_numpy(z).requires_grad_()
    (first,) = torch.autograd.grad(torch_activation(activation)(zt).sum(), zt, create_graph=True)
    if first.requires_grad:
        (second,) = torch.autograd.grad(first.sum(), zt, allow_unused=True)
    else:
        second = None
    zero = second is None or not second.abs().max().item()
    assert activation.hessian_is_zero == zero, name
    assert ActivationLayer(activation).hessian_is_zero == zero
    assert ActivationLayer.hessian_is_zero is False
