"""KFRA (``CURV.kfra``, Botev, Ritter & Barber 2017): against the recursion written in torch
(:func:`reference.checks_curvature_kfc.torch_kfra`), the exact GGN block at n = 1 and for deep
linear networks, BackPACK 1.7.1's ``KFRA`` (the optional ``peers`` extra), and its refusals."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp import Dense, Network, Sequential
from manual_bp import layers as L
from manual_bp.curvature.conventions import to_backpack_kron
from manual_bp.curvature.kfac import ggn_block, kflr
from manual_bp.curvature.kfra import kfra
from manual_bp.layers.activation import ActivationLayer
from reference.checks import CHECKS
from reference.checks_curvature_kfc import kfra_case, torch_kfra
from reference.curvature_twins import Twin

EPS = np.finfo(np.float64).eps


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_kfra_equals_the_torch_recursion_and_the_ggn_block(seed):
    """CURV.kfra on random MLPs (depth, widths, biases, activations, cost drawn): A and B
    against torch's recursion; the verify check (n = 1: B ⊗ A is the exact GGN block, B is
    KFLR's)."""
    rng = np.random.default_rng(seed)
    model, x, y = kfra_case(rng)
    for (A, B), (At, Bt) in zip(kfra(model, x, y), torch_kfra(model, x, y), strict=True):
        np.testing.assert_allclose(A, At, rtol=0, atol=64 * EPS * np.abs(At).max())
        np.testing.assert_allclose(B, Bt, rtol=0, atol=64 * EPS * (np.abs(Bt).max() + 1))
    for comparison in CHECKS["curvature-kfra"](rng):
        comparison.check()
    model, x, y = kfra_case(rng, n=1)
    for (A, B), (Ak, Bk) in zip(kfra(model, x, y), kflr(model, x, y), strict=True):
        np.testing.assert_array_equal(A, Ak)
        np.testing.assert_allclose(B, Bk, rtol=0, atol=64 * EPS * (np.abs(Bk).max() + 1))


@pytest.mark.parametrize("n", [1, 2, 5])
def test_kfra_is_exact_for_deep_linear_networks(n):
    """No activation: every Jacobian is the same for all samples, so KFRA's B is the exact
    batch-averaged GGN at each layer and B ⊗ A is the exact block (quadratic cost)."""
    rng = np.random.default_rng(n)
    net = Network([3, 4, 2, 3], "identity", "quadratic", seed=n)
    x, y = rng.standard_normal((n, 3)), rng.standard_normal((n, 3))
    G = Twin(net, x, y).ggn()
    for l, (A, B) in enumerate(kfra(net, x, y)):
        block = ggn_block(net, G, l)
        np.testing.assert_allclose(np.kron(B, A), block, rtol=0, atol=1e-13 * np.abs(block).max())


@settings(max_examples=6, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    acts=st.lists(st.sampled_from(["relu", "sigmoid", "tanh"]), min_size=0, max_size=3),
    bias=st.booleans(),
    n=st.integers(1, 6),
)
def test_kfra_equals_backpack(seed, acts, bias, n):
    """CURV.kfra against BackPACK 1.7.1's KFRA (Linear, ReLU, Sigmoid, Tanh, CrossEntropyLoss)
    through ``to_backpack_kron``."""
    backpack = pytest.importorskip("backpack")
    torch = pytest.importorskip("torch")
    from backpack.extensions import KFRA

    from reference.interop import to_torch

    rng = np.random.default_rng(seed)
    sizes = [int(s) for s in rng.integers(1, 5, len(acts) + 2)]
    sizes[-1] = max(sizes[-1], 2)
    layers = []
    for k, act in enumerate([*acts, None]):
        layers.append(Dense(sizes[k], sizes[k + 1], bias=bias or k == 0))
        if act is not None:
            layers.append(ActivationLayer(act))
    model = Sequential(layers, "categorical-cross-entropy")
    model.load_state_dict(
        {k: rng.standard_normal(np.shape(v)) for k, v in model.state_dict().items()}
    )
    x, y = rng.standard_normal((n, sizes[0])), rng.integers(0, sizes[-1], n)
    net = backpack.extend(to_torch(model))
    loss = backpack.extend(torch.nn.CrossEntropyLoss())(net(torch.tensor(x)), torch.tensor(y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with backpack.backpack(KFRA()):
            loss.backward()
    ours = to_backpack_kron(model, kfra(model, x, y))
    for p, kron in zip(net.parameters(), ours, strict=True):
        assert len(kron) == len(p.kfra)
        for a, b in zip(kron, p.kfra, strict=True):
            b = b.numpy(force=True)
            np.testing.assert_allclose(a, b, rtol=0, atol=64 * EPS * (np.abs(b).max() + 1))


@pytest.mark.parametrize(
    ("layers", "shape", "match"),
    [
        ([L.Conv1d(1, 2, 2), L.Flatten(), L.Dense(8, 2)], (1, 5), r"kfra: .*Conv1d"),
        ([L.Dense(2, 3), L.LayerNorm(3), L.Dense(3, 2)], (2,), r"kfra: .*LayerNorm"),
        ([L.Dense(2, 3), "softmax", L.Dense(3, 2)], (2,), r"kfra: .*Softmax"),
        ([L.Dense(2, 3), "tanh", L.Dense(3, 2)], (4, 2), r"kfra: .*\(batch, features\)"),
    ],
)
def test_kfra_refuses_what_it_is_not_defined_for_in_one_line(layers, shape, match):
    """A convolution, a normalisation, a non-elementwise activation, Dense on (N, T, D)."""
    model = Sequential(layers, "quadratic", input_shape=shape, seed=0)
    x = np.ones((2, *shape))
    y = np.zeros(model.forward(x)[0].shape)
    with pytest.raises(TypeError, match=match) as e:
        kfra(model, x, y)
    assert "\n" not in str(e.value)
