"""KFC (Kronecker factors of convolutions, ``CURV.kfc``) and Dense on ``(N, T, D)``
(``CURV.kfac-expand``): against torch.func in float64 (:mod:`reference.checks_curvature_kfc`:
``A`` from torch's weight Jacobian, ``B`` from the GGN in the layer's output), against
BackPACK 1.7.1's KFLR (the optional ``peers`` extra), the exact GGN block at ``n = 1`` with
one location/position, KFAC's Monte-Carlo ``B`` against KFLR's within a stated bound,
EKFAC and the damped inverse on conv factors, and every refusal in one line."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp import Sequential
from manual_bp import layers as L
from manual_bp.curvature import flatten
from manual_bp.curvature.conventions import to_backpack_kron
from manual_bp.curvature.kfac import ggn_block, kfac, kflr
from manual_bp.curvature.kfac_inverse import ekfac, kfac_inverse_product
from reference.checks import CHECKS
from reference.checks_curvature_kfc import UNIT, kfc_case, sequence_case, torch_factors_scaled
from reference.curvature_families import build
from reference.curvature_twins import Twin


def _close(actual, expected, scale, what: str, c: float = 64.0) -> None:
    bound = c * np.finfo(np.float64).eps * np.asarray(scale)
    err = np.abs(np.asarray(actual) - expected)
    assert (err <= bound).all(), f"{what}: |Δ| {err.max():.3e} over the bound"


conv_options = st.fixed_dictionaries(
    {
        "dims": st.integers(1, 3),
        "kernel_size": st.integers(1, 2),
        "stride": st.integers(1, 2),
        "padding": st.integers(0, 1),
        "dilation": st.integers(1, 2),
        "bias": st.booleans(),
        "padding_mode": st.sampled_from(["zeros", "reflect", "replicate", "circular"]),
        "n": st.integers(1, 3),
    }
)


@settings(max_examples=8, deadline=None)
@given(options=conv_options, seed=st.integers(0, 2**31 - 1))
def test_kfc_equals_torch_func_and_the_ggn_block(options, seed):
    """CURV.kfc: every option drawn, the conv below a conv and above a dense head; A and B
    of both convolutions against torch.func; the verify check (one location, n = 1: B ⊗ A
    is the exact GGN block)."""
    rng = np.random.default_rng(seed)
    options = dict(options)
    model, x, y = kfc_case(rng, options.pop("dims"), **options)
    for l, ((A, B), (At, Bt, Bs)) in enumerate(
        zip(kflr(model, x, y), torch_factors_scaled(model, x, y), strict=True)
    ):
        _close(A, At, np.abs(At).max(), f"A layer {l}")
        _close(B, Bt, Bs + UNIT, f"B layer {l}")
    for comparison in CHECKS["curvature-kfc"](rng):
        comparison.check()


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_kfc_sums_a_over_locations_and_averages_over_samples(dims):
    """The scaling itself, stated: A's bias corner is the number of output locations L (the
    sum over locations of 1·1, averaged over samples), not 1 (an average over locations)
    nor n·L (a sum over samples too); B is the exact GGN block of the bias at any n, L."""
    rng = np.random.default_rng(dims)
    model, x, y = kfc_case(rng, dims, n=3, bias=True, padding=1, stride=1, kernel_size=2)
    f_first = model.layers[0].forward(x)[0]
    middle = model.layers[2]
    locations = int(np.prod(middle.output_shape(f_first.shape[1:])[1:]))
    assert locations > 1
    A, B = kflr(model, x, y)[1]
    assert A[-1, -1] == locations
    names = [name for name, _ in model.named_parameters()]
    sizes = np.cumsum([0] + [p.size for p in model.parameter_arrays()])
    j = names.index("2.bias")
    twin = Twin(model, x, y)
    G = twin.ggn()
    exact = G[sizes[j] : sizes[j + 1], sizes[j] : sizes[j + 1]]
    _close(B, exact, np.abs(exact).max() + UNIT, "B = GGN_bias")


@settings(max_examples=6, deadline=None)
@given(options=conv_options, seed=st.integers(0, 2**31 - 1))
def test_kfc_equals_backpack_kflr(options, seed):
    """CURV.kfc against BackPACK 1.7.1's KFLR ([B, A] on the weight, [B] on the bias: the
    conversion helper) on the same torch model with cross-entropy."""
    backpack = pytest.importorskip("backpack")
    torch = pytest.importorskip("torch")
    from backpack.extensions import KFLR

    from reference.interop import to_torch

    rng = np.random.default_rng(seed)
    options = dict(options)
    if options["padding_mode"] != "zeros":  # BackPACK unfolds with zero padding only
        options["padding_mode"] = "zeros"
    model, x, y = kfc_case(rng, options.pop("dims"), **options)
    model = Sequential(model.layers[:-1], "categorical-cross-entropy", input_shape=x.shape[1:])
    net = backpack.extend(to_torch(model))
    out = net(torch.tensor(x))
    loss = backpack.extend(torch.nn.CrossEntropyLoss())(out, torch.tensor(y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with backpack.backpack(KFLR()):
            loss.backward()
    ours = to_backpack_kron(model, kflr(model, x, y))
    for p, kron in zip(net.parameters(), ours, strict=True):
        assert len(kron) == len(p.kflr)
        for a, b in zip(kron, p.kflr, strict=True):
            b = b.numpy(force=True)
            # B sums signed terms over locations: c·ε of the largest entry and 1 (unit mass)
            _close(a, b, np.abs(b).max() + UNIT, "vs BackPACK", c=256.0)


def test_kfac_conv_expectation_is_kflr_within_a_stated_bound():
    """CURV.kfc with the sampled factor: E[B_KFAC] = B_KFLR. K = 400 seeded draws; every
    entry of the mean within 5 sample standard errors (+ c·ε): a deterministic (seeded)
    test, with a 5.7e-7 chance per entry of failing for an unbiased estimator."""
    rng = np.random.default_rng(7)
    model, x, y = kfc_case(rng, 2, n=2, padding=1)
    exact = flatten([B for _, B in kflr(model, x, y)])
    draws = np.stack([flatten([B for _, B in kfac(model, x, y, rng=k)]) for k in range(400)])
    mean, error = draws.mean(0), draws.std(0, ddof=1) / np.sqrt(len(draws))
    assert (np.abs(mean - exact) <= 5 * error + 1e-13 * np.abs(exact).max()).all()
    A_mc = flatten([A for A, _ in kfac(model, x, y, rng=0)])
    assert np.array_equal(A_mc, flatten([A for A, _ in kflr(model, x, y)]))


@settings(max_examples=8, deadline=None)
@given(n=st.integers(1, 3), positions=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_expand_equals_torch_func_and_the_ggn_block(n, positions, seed):
    """CURV.kfac-expand: Dense on (n, T, D) with a label per position; A and B against
    torch.func; at n = 1, T = 1 (the verify check) the exact GGN block; A's bias corner is 1
    (an average over the n·T rows)."""
    rng = np.random.default_rng(seed)
    model, x, y = sequence_case(rng, n, positions)
    for l, ((A, B), (At, Bt, Bs)) in enumerate(
        zip(kflr(model, x, y), torch_factors_scaled(model, x, y), strict=True)
    ):
        _close(A, At, np.abs(At).max(), f"A layer {l}")
        _close(B, Bt, Bs + UNIT, f"B layer {l}")
    for comparison in CHECKS["curvature-kfac-expand"](rng):
        comparison.check()


@pytest.mark.parametrize("family", ["Conv1d", "Conv2d", "Conv3d", "Dense on (N, T, D)"])
def test_ekfac_and_damped_inverse_take_conv_and_sequence_factors(family):
    """CURV.ekfac: s is the exact GGN's diagonal in the KFAC eigenbasis (Q_B ⊗ Q_A) for
    convolution and sequence factors too; CURV.kfac-inverse "exact": (B ⊗ A + λI)⁻¹ v by a
    dense solve."""
    model, x, y = build(family, 0)
    G = Twin(model, x, y).ggn()
    factors = kflr(model, x, y)
    v = np.random.default_rng(1).standard_normal(G.shape[0])
    inverse = flatten(kfac_inverse_product(model, factors, v, 0.5, mode="exact"))
    offsets = np.cumsum([0] + [p.size for p in model.parameter_arrays()])
    solved = v.copy()
    for l, ((QA, QB, s), (A, B)) in enumerate(zip(ekfac(model, x, y), factors, strict=True)):
        Q = np.kron(QB, QA)
        block = ggn_block(model, G, l)
        np.testing.assert_allclose(np.diag(Q.T @ block @ Q), s.ravel(), rtol=0, atol=1e-14)
        # the block's rows in flat parameter order: W̃ = [W | b] row-major
        index = [link.index for link in _links(model)][l]
        w = offsets[index["weight"]] + np.arange(model.parameter_arrays()[index["weight"]].size)
        rows = w.reshape(B.shape[0], -1)
        if "bias" in index:
            rows = np.hstack([rows, offsets[index["bias"]] + np.arange(B.shape[0])[:, None]])
        rows = rows.ravel()
        solved[rows] = np.linalg.solve(np.kron(B, A) + 0.5 * np.eye(len(rows)), v[rows])
    np.testing.assert_allclose(inverse, solved, rtol=1e-12, atol=1e-14)


def _links(model):
    from manual_bp.curvature.chain import as_chain

    return [link for link in as_chain(model).links if link.index]


@pytest.mark.parametrize(
    ("layers", "shape", "match"),
    [
        ([L.Conv2d(2, 2, 2, groups=2)], (2, 3, 3), r"not derived for groups = 2"),
        ([L.ConvTranspose2d(2, 2, 2)], (2, 3, 3), r"Kronecker factors are defined here for"),
        (
            [L.Conv1d(2, 2, 2), L.BatchNorm1d(2, affine=False)],
            (2, 4),
            r"separable layers; .*batch statistics",
        ),
    ],
)
def test_layers_without_factors_are_refused_in_one_line(layers, shape, match):
    """groups ≠ 1, a transposed convolution, a batch-coupled chain: one line each."""
    model = Sequential([*layers, L.Flatten(), "tanh"], "quadratic", input_shape=shape, seed=0)
    width = int(np.prod(model.forward(np.zeros((2, *shape)))[0].shape[1:]))
    x, y = np.ones((2, *shape)), np.zeros((2, width))
    for quantity in (kflr, kfac):
        with pytest.raises(TypeError, match=match) as e:
            quantity(model, x, y)
        assert "\n" not in str(e.value)
