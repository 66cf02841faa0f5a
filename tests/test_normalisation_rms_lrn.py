"""LAYER.rmsnorm and LAYER.lrn: RMS norm (layer norm without the mean path) and local
response norm (the VJP through the windowed channel sum).

Oracles: torch autograd (F.rms_norm, F.local_response_norm) and torch's modules in float64
with random upstream gradients, central finite differences, the adjoint identity of the
window sum and of the layers; the window at both ends of the channel axis and wider than it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.gradcheck import check_layer
from manual_bp.layers.normalisation import LayerNorm
from manual_bp.layers.normalisation_lrn import LocalResponseNorm, window_sum
from manual_bp.layers.normalisation_rms import RMSNorm, rms_backward, rms_forward
from reference.checks_normalisation import lrn_check, rmsnorm_check
from reference.compare import Comparison
from reference.normalisation_scales import norm_terms

seeds = st.integers(0, 2**31 - 1)


def _check_all(comparisons):
    assert comparisons
    for comparison in comparisons:
        comparison.check()


@given(seeds)
def test_rmsnorm_matches_torch(seed):
    """LAYER.rmsnorm: random normalized_shape (1–3 trailing axes), eps None or a number,
    affine on/off, batched or unbatched, vs F.rms_norm."""
    _check_all(rmsnorm_check(np.random.default_rng(seed)))


@given(seeds)
def test_lrn_matches_torch(seed):
    """LAYER.lrn: random size (1 … C + 2), alpha, beta, k, 1–3 spatial axes vs
    F.local_response_norm."""
    _check_all(lrn_check(np.random.default_rng(seed)))


@settings(max_examples=40)
@given(
    seed=seeds,
    shape=st.sampled_from([(5,), (2, 3), (1,), (2, 2, 2)]),
    lead=st.sampled_from([(), (0,), (1,), (3,), (2, 2)]),
    eps=st.sampled_from([None, 1e-6, 0.1]),
    affine=st.booleans(),
    dtype=st.sampled_from([np.float64, np.float32]),
)
def test_rmsnorm_options_match_torch_module(seed, shape, lead, eps, affine, dtype):
    """LAYER.rmsnorm vs nn.RMSNorm: every option, empty and unbatched inputs, eps=None as
    the input dtype's machine epsilon (float32 stays float32)."""
    rng = np.random.default_rng(seed)
    ours = RMSNorm(shape, eps, affine, dtype=dtype)
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    theirs = torch.nn.RMSNorm(shape, eps, affine, dtype=tdtype)
    if affine:
        w = rng.standard_normal(shape).astype(dtype)
        ours.params["weight"][...] = w
        theirs.weight.data = torch.tensor(w)
    x = (rng.standard_normal((*lead, *shape)) * 0.1).astype(dtype)
    u = rng.standard_normal(x.shape).astype(dtype)
    out, cache = ours.forward(x)
    dx, grads = ours.backward(u, cache)
    xt = torch.tensor(x, requires_grad=True)
    ref = theirs(xt)
    (ref * torch.tensor(u)).sum().backward()
    assert out.dtype == dx.dtype == dtype
    scales = norm_terms(ours, u, cache)
    Comparison("LAYER.rmsnorm", "output", out, ref.detach().numpy(), np.abs(out) + 1).check(dtype)
    Comparison("LAYER.rmsnorm", "∂C/∂x", dx, xt.grad.numpy(), scales.get("x")).check(dtype)
    if affine:
        expected = theirs.weight.grad.numpy()
        Comparison("LAYER.rmsnorm", "∂C/∂γ", grads["weight"], expected, scales["weight"]).check(
            dtype
        )


@given(seeds)
@settings(max_examples=30)
def test_rmsnorm_is_layernorm_on_centred_input(seed):
    """Without the mean path: on inputs of zero mean per group RMS norm equals layer norm,
    forward, and backward for upstream gradients of zero mean (the mean path's share)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, 5))
    x -= x.mean(axis=1, keepdims=True)
    g = rng.standard_normal((3, 5))
    g -= g.mean(axis=1, keepdims=True)
    x_hat, inv = rms_forward(x, (1,), 1e-5)
    ln = LayerNorm(5, elementwise_affine=False)
    y, cache = ln.forward(x)
    np.testing.assert_allclose(x_hat, y, atol=1e-12)
    np.testing.assert_allclose(rms_backward(g, x_hat, inv, (1,)), ln.backward(g, cache)[0], 1e-10)


@settings(max_examples=40)
@given(
    seed=seeds,
    channels=st.integers(1, 6),
    size=st.integers(1, 8),
    spatial=st.sampled_from([(3,), (2, 2), (1, 2, 2)]),
    batch=st.integers(0, 3),
    alpha=st.sampled_from([1e-4, 0.5, 2.0]),
    beta=st.sampled_from([0.75, 0.5, 1.5]),
    k=st.sampled_from([1.0, 2.0, 0.5]),
)
def test_lrn_options_match_torch_module(seed, channels, size, spatial, batch, alpha, beta, k):
    """LAYER.lrn vs nn.LocalResponseNorm: windows narrower than, as wide as and wider than
    C (both ends padded), even and odd sizes, the empty batch."""
    rng = np.random.default_rng(seed)
    x, u = (2 * rng.standard_normal((batch, channels, *spatial)) for _ in range(2))
    layer = LocalResponseNorm(size, alpha, beta, k)
    out, cache = layer.forward(x)
    dx, _ = layer.backward(u, cache)
    xt = torch.tensor(x, requires_grad=True)
    ref = torch.nn.LocalResponseNorm(size, alpha, beta, k)(xt)
    (ref * torch.tensor(u)).sum().backward()
    scale = norm_terms(layer, u, cache)["x"]
    Comparison("LAYER.lrn", "output", out, ref.detach().numpy(), np.abs(out) + 1).check()
    Comparison("LAYER.lrn", "∂C/∂x", dx, xt.grad.numpy(), scale).check()


@given(seeds, st.integers(1, 7), st.integers(0, 4), st.integers(0, 4))
def test_window_sum_adjoint_swaps_the_reaches(seed, channels, before, after):
    """⟨v, S u⟩ = ⟨Sᵀ v, u⟩ with Sᵀ the window sum with its reaches swapped, and S equal to
    the explicit clipped sum at both ends of the axis."""
    rng = np.random.default_rng(seed)
    u, v = rng.standard_normal((2, channels, 3)), rng.standard_normal((2, channels, 3))
    su = window_sum(u, 1, before, after)
    explicit = np.stack(
        [u[:, max(c - before, 0) : c + after + 1].sum(axis=1) for c in range(channels)], axis=1
    )
    np.testing.assert_allclose(su, explicit, atol=1e-12)
    lhs, rhs = np.sum(v * su), np.sum(window_sum(v, 1, after, before) * u)
    assert abs(lhs - rhs) <= 1e-12 * (np.abs(v).sum() * np.abs(u).sum() + 1)


@given(seeds, st.sampled_from(["rmsnorm", "lrn"]), st.booleans())
@settings(max_examples=15)
def test_finite_differences(seed, kind, option):
    """Second oracle: central differences of C = Σ upstream ⊙ y."""
    rng = np.random.default_rng(seed)
    if kind == "rmsnorm":
        layer, shape = RMSNorm((2, 3), 0.1, option), (2, 2, 3)
        for array in layer.params.values():
            array[...] = rng.standard_normal(array.shape)
    else:
        layer, shape = LocalResponseNorm(3 if option else 2, 0.5, 0.75, 1.0), (2, 4, 3)
    check_layer(layer, rng.standard_normal(shape), seed=rng)


@given(seeds, st.sampled_from(["rmsnorm", "lrn"]))
@settings(max_examples=30)
def test_adjoint_identity(seed, kind):
    """⟨u, J v⟩ = ⟨Jᵀu, v⟩, J v by torch.func.jvp (LAYER.rmsnorm, LAYER.lrn)."""
    rng = np.random.default_rng(seed)
    if kind == "rmsnorm":
        layer, shape = RMSNorm(4, 1e-3, False), (3, 4)
        f = lambda t: torch.nn.functional.rms_norm(t, (4,), eps=1e-3)  # noqa: E731
    else:
        layer, shape = LocalResponseNorm(3, 0.5, 0.75, 1.0), (2, 5, 3)
        f = lambda t: torch.nn.functional.local_response_norm(t, 3, 0.5, 0.75, 1.0)  # noqa: E731
    x, u, v = (rng.standard_normal(shape) for _ in range(3))
    _, cache = layer.forward(x)
    vjp, _ = layer.backward(u, cache)
    _, jv = torch.func.jvp(f, (torch.tensor(x),), (torch.tensor(v),))
    lhs, rhs = float(np.sum(u * jv.numpy())), float(np.sum(vjp * v))
    bound = 1e-12 * (np.abs(u).sum() * np.abs(jv.numpy()).max() + np.abs(vjp * v).sum() + 1)
    assert abs(lhs - rhs) <= bound


def test_constructor_arguments_and_bad_inputs():
    """torch's signatures and defaults; one clear line per bad argument."""
    layer = RMSNorm(4)
    assert layer.eps is None and layer.params["weight"].shape == (4,) and "bias" not in layer.params
    assert not RMSNorm([2, 3], elementwise_affine=False).params
    lrn = LocalResponseNorm(3)
    assert (lrn.alpha, lrn.beta, lrn.k) == (1e-4, 0.75, 1.0)
    with pytest.raises(ValueError, match="normalized_shape"):
        RMSNorm((2, 0))
    with pytest.raises(ValueError, match="eps"):
        RMSNorm(3, eps=0.0)
    with pytest.raises(ValueError, match="last axes"):
        RMSNorm(3).forward(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="size"):
        LocalResponseNorm(0)
    with pytest.raises(ValueError, match="axes"):
        LocalResponseNorm(2).forward(np.zeros((2, 3)))
