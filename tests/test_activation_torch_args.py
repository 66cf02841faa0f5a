"""torch's constructor arguments of the activation modules (issue 23): softmax's ``dim``
(and torch's legacy ``dim=None`` rule), ``inplace=``, Hardtanh's deprecated spellings.

Every form is checked against torch's module built from the same arguments, and the V-axis
products and the fused form against the readable one.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from manual_bp.activations import (
    ELU,
    SELU,
    HardTanh,
    LeakyReLU,
    LogSoftmax,
    ReLU,
    SiLU,
    Softmax,
    get_activation,
)
from manual_bp.layers import ActivationLayer

SHAPES_DIMS = [((), 0), ((), -1), ((5,), 0), ((4, 5), 0), ((4, 5), -1), ((3, 4, 5), 1),
               ((2, 3, 4, 5), 2), ((2, 3, 4, 5), -3)]  # fmt: skip


@pytest.mark.parametrize("ours, theirs", [(Softmax, torch.nn.Softmax),
                                          (LogSoftmax, torch.nn.LogSoftmax)])  # fmt: skip
@pytest.mark.parametrize("shape, dim", SHAPES_DIMS)
def test_softmax_dim_matches_torch(ours, theirs, shape, dim):
    rng = np.random.default_rng(len(shape) + dim + 4)
    z, g = np.asarray(rng.standard_normal(shape)), np.asarray(rng.standard_normal(shape))
    layer = ActivationLayer(ours(dim))
    a, cache = layer.forward(z)
    dz, _ = layer.backward(g, cache)
    zt = torch.tensor(z, requires_grad=True)
    at = theirs(dim)(zt)
    (gt,) = torch.autograd.grad(at, zt, torch.tensor(g))
    np.testing.assert_allclose(a, at.detach().numpy(), rtol=0, atol=1e-14)
    np.testing.assert_allclose(dz, gt.numpy(), rtol=0, atol=1e-14)


@pytest.mark.parametrize("cls", [Softmax, LogSoftmax])
@pytest.mark.parametrize("shape, dim", SHAPES_DIMS)
def test_softmax_products_and_fast_form_follow_dim(cls, shape, dim):
    """The V-stacked products are the per-direction VJP/JVP/second VJP stacked, and the
    fused forward gives the readable forward's bits, along any ``dim``."""
    rng = np.random.default_rng(7)
    z = np.asarray(rng.standard_normal(shape))
    layer = ActivationLayer(cls(dim))
    a, cache = layer.forward(z)
    M, T = rng.standard_normal((3, *shape)), rng.standard_normal((3, *shape))
    vjp, jvp = layer.input_vjp(cache, M), layer.input_jvp(cache, T)
    res, _ = layer.residual(cache, M[0], T)
    for v in range(3):
        dz = layer.backward(np.asarray(M[v]), cache)[0]
        np.testing.assert_allclose(vjp[v], dz, rtol=0, atol=1e-15)
        np.testing.assert_allclose(jvp[v], cls(dim).jvp(T[v], z, a), rtol=0, atol=1e-15)
        np.testing.assert_allclose(
            res[v], cls(dim).second_vjp(M[0], T[v], z, a), rtol=0, atol=1e-15
        )
    step = layer.fast_step()
    out = step.forward(z.copy())
    np.testing.assert_array_equal(out, a)
    g = rng.standard_normal(shape)
    np.testing.assert_array_equal(step.backward(np.array(g), {}, True), layer.backward(g, cache)[0])


def test_softmax_dim_is_checked_and_in_the_config():
    with pytest.raises(ValueError, match="dim=2 is out of range for a 2-d input"):
        Softmax(2).forward(np.zeros((3, 4)))
    with pytest.raises(TypeError, match="dim must be an integer or None"):
        LogSoftmax(1.5)
    assert get_activation({"name": "softmax", "dim": 0}) == Softmax(0)
    assert get_activation("softmax").dim == -1  # the library's default: the last axis
    assert Softmax(1).get_config() == {"name": "softmax", "dim": 1}


@pytest.mark.parametrize("shape, axis", [((5,), 0), ((4, 5), 1), ((3, 4, 5), 0),
                                         ((2, 3, 4, 5), 1)])  # fmt: skip
def test_softmax_dim_none_is_torchs_legacy_rule_with_its_warning(shape, axis):
    z = np.random.default_rng(0).standard_normal(shape)
    with pytest.warns(UserWarning, match="Implicit dimension choice for softmax"):
        ours = Softmax(None).forward(z)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = torch.nn.Softmax()(torch.tensor(z)).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(ours, Softmax(axis).forward(z))


@pytest.mark.parametrize(
    "ours, theirs, kwargs",
    [(ReLU, torch.nn.ReLU, {"inplace": True}), (SELU, torch.nn.SELU, {"inplace": True}),
     (SiLU, torch.nn.SiLU, {"inplace": True}), (ELU, torch.nn.ELU, {"alpha": 0.5, "inplace": True}),
     (LeakyReLU, torch.nn.LeakyReLU, {"negative_slope": 0.2, "inplace": True}),
     (HardTanh, torch.nn.Hardtanh, {"min_value": -0.5, "max_value": 2.0, "inplace": True})],
)  # fmt: skip
def test_inplace_and_deprecated_spellings_give_torchs_result(ours, theirs, kwargs):
    """``inplace=True`` is accepted and changes nothing; the input survives."""
    z = np.random.default_rng(1).standard_normal((4, 5)) * 2
    kept = z.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns on Hardtanh's deprecated spellings
        expected = theirs(**kwargs)(torch.tensor(z)).numpy()
    np.testing.assert_allclose(ours(**kwargs).forward(z), expected, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(z, kept)
    with pytest.raises(TypeError, match="inplace must be True or False"):
        ours(inplace="yes")


@pytest.mark.parametrize("cls", [Softmax, LogSoftmax])
@pytest.mark.parametrize("shape, dim", [((0, 5), 0), ((0, 5), 1), ((3, 0), -1), ((2, 0, 4), 1)])
def test_softmax_of_an_empty_input_is_empty_as_torch(cls, shape, dim):
    """An empty batch, or an empty axis to normalise along: an empty output and gradient."""
    layer = ActivationLayer(cls(dim))
    with np.errstate(all="raise"):
        a, cache = layer.forward(np.zeros(shape))
        dz, _ = layer.backward(np.zeros(shape), cache)
        fast = layer.fast_step()
        assert fast.forward(np.zeros(shape)).shape == shape
    assert a.shape == dz.shape == shape
