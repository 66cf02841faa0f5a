"""GELU's fast form (``ACT.gelu``): erf once per step, kept by ``forward_into`` in the step's
state buffer for ``backward_inplace``; the same bits as the readable form, torch's values,
any row slicing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from manual_bp.activations import get_activation
from manual_bp.layers.activation import ActivationLayer
from tests.fast_step_checks import thread_count


def _data(dtype, shape=(64, 48), seed=0):
    rng = np.random.default_rng(seed)
    z = (3 * rng.standard_normal(shape)).astype(dtype)
    z.flat[:8] = [-1e4, 1e4, 0.0, -0.0, -40.0, 9.0, -5.6, 1e-30]
    return z, rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_gelu_equals_readable_bit_for_bit(dtype):
    z, g = _data(dtype)
    gelu = get_activation("gelu")
    a = gelu.forward(z)
    dz = gelu.backward(g, z, a)
    out, scratch, g2 = np.empty_like(z), np.empty_like(z), g.copy()
    state = np.empty((gelu.fast_state, *z.shape), dtype)
    a2 = gelu.forward_into(z, out, state=state)
    dz2 = gelu.backward_inplace(g2, z, a2, scratch, state=state)
    assert a2.dtype == dtype and dz2.dtype == dtype
    assert np.array_equal(a, a2) and np.array_equal(dz, dz2)
    # without a state (plain calls): w recomputed, the same bits
    assert np.array_equal(gelu.forward_into(z, np.empty_like(z)), a)
    g3 = g.copy()
    assert np.array_equal(gelu.backward_inplace(g3, z, a2, scratch), dz)


def test_fast_gelu_row_slices_use_their_rows_of_the_state():
    z, g = _data(np.float32, (100, 40))
    gelu = get_activation("gelu")
    a = gelu.forward(z)
    dz = gelu.backward(g, z, a)
    out, scratch, g2 = np.empty_like(z), np.empty_like(z), g.copy()
    state = np.empty((gelu.fast_state, *z.shape), z.dtype)
    parts = (slice(0, 37), slice(37, 100))
    for rows in parts:
        gelu.forward_into(z[rows], out[rows], state=state[:, rows])
    for rows in parts[::-1]:
        gelu.backward_inplace(g2[rows], z[rows], out[rows], scratch[rows], state=state[:, rows])
    assert np.array_equal(out, a) and np.array_equal(g2, dz)


def test_the_step_keeps_the_state_between_forward_and_backward():
    """The erf of the forward pass serves the backward pass (evaluated once per step): a
    state holding garbage w changes the gradient, so the backward reads it."""
    z, g = _data(np.float64, (16, 8))
    step = ActivationLayer("gelu").fast_step()
    step.forward(z)
    step.state[0] += 1.0  # a different w than forward_into left
    gelu = get_activation("gelu")
    expected = gelu.backward(g, z, gelu.forward(z))
    assert not np.array_equal(step.backward(g.copy(), {}, True), expected)


def test_fast_gelu_step_matches_torch_float64_and_threads():
    z, g = _data(np.float64, (96, 700), seed=3)
    z.flat[:8] = np.linspace(-3, 3, 8)  # torch's σ' at ±1e4 is nan-free too, but keep it plain
    zt = torch.from_numpy(z).requires_grad_()
    at = torch.nn.functional.gelu(zt)
    (dt,) = torch.autograd.grad(at, zt, torch.from_numpy(g))
    results = []
    for threads in (1, 2):
        with thread_count(threads):
            step = ActivationLayer("gelu").fast_step()
            a = step.forward(z).copy()
            dz = step.backward(g.copy(), {}, True)
        results.append((a, dz))
        np.testing.assert_allclose(a, at.detach().numpy(), rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(dz, dt.numpy(), rtol=1e-13, atol=1e-15)
    assert all(np.array_equal(x, y) for x, y in zip(*results, strict=True))


# ---------------------------------------------------------------------- float32 erf
def _erf32(x: np.ndarray) -> np.ndarray:
    from manual_bp.activations.erf32 import erf_float32

    out, t1, t2 = (np.empty_like(x) for _ in range(3))
    return erf_float32(x, 1.0, out, t1, t2)


def test_erf_float32_within_one_ulp_of_the_correctly_rounded_erf():
    """ACT.gelu's float32 erf: ≤ 1 ulp from SciPy's float32 erf (math.erf rounded, pinned in
    test_special_functions.py) across both branches, their seam at |w| = 1 and the tails."""
    from scipy import special

    x = np.concatenate(
        [
            np.linspace(-4.5, 4.5, 2_000_001),
            np.geomspace(1e-38, 6, 20_000),
            np.nextafter(np.float32(1), np.float32([0, 2])).astype(np.float64),
        ]
    ).astype(np.float32)
    x = np.concatenate([x, -x])
    got, ref = _erf32(x), special.erf(x)
    ulps = np.abs(got.view(np.int32).astype(np.int64) - ref.view(np.int32).astype(np.int64))
    assert ulps.max() <= 1, x[ulps.argmax()]
    assert np.array_equal(_erf32(-x).view(np.int32), (-got).view(np.int32))  # odd, bit for bit


def test_erf_float32_edges():
    """erf(±0) = ±0, ±1 exactly from 3.92 on and at ±∞, NaN stays NaN, tiny w: 2w/√π."""
    x = np.array([0.0, -0.0, 3.92, -3.92, 5.0, 1e30, -1e30, np.inf, -np.inf, np.nan, 1e-30])
    got = _erf32(x.astype(np.float32))
    assert got.dtype == np.float32
    assert got[0] == 0 and not np.signbit(got[0]) and got[1] == 0 and np.signbit(got[1])
    np.testing.assert_array_equal(got[2:9], [1, -1, 1, 1, -1, 1, -1])
    assert np.isnan(got[9])
    assert abs(got[10] / np.float32(1.1283791670955126e-30) - 1) < 1.2e-7


def test_fast_gelu_float32_steps_are_bit_identical_on_one_and_two_threads():
    """The float32 erf's passes are elementwise: split rows give the readable form's bits."""
    z, g = _data(np.float32, (64, 4096), seed=5)
    gelu = get_activation("gelu")
    a_ref = gelu.forward(z)
    dz_ref = gelu.backward(g, z, a_ref)
    for threads in (1, 2):
        with thread_count(threads):
            step = ActivationLayer("gelu").fast_step()
            a = step.forward(z).copy()
            dz = step.backward(g.copy(), {}, True)
            assert step.rows_split == (threads == 2)
        assert np.array_equal(a, a_ref) and np.array_equal(dz, dz_ref)


def test_float32_gelu_matches_torch_float32_on_a_grid():
    """σ and σ' in float32 within a few ε·(1 + |z|) of torch's float32 GELU on [−8, 8]."""
    z = np.linspace(-8, 8, 20_001, dtype=np.float32)
    zt = torch.from_numpy(z).requires_grad_()
    at = torch.nn.functional.gelu(zt)
    (dt,) = torch.autograd.grad(at.sum(), zt)
    gelu = get_activation("gelu")
    a = gelu.forward(z)
    d = gelu.derivative(z, a)
    bound = 4 * np.finfo(np.float32).eps * (1 + np.abs(z))
    assert np.all(np.abs(a - at.detach().numpy()) <= bound)
    assert np.all(np.abs(d - dt.numpy()) <= bound)


def test_erf_float32_bit_select_equals_np_where_of_its_branches():
    """The int32 mask select gives exactly ``where(|w| < 1, w + wP(w²), ±(1 − e^{−w²}R(1/|w|)))``
    (no bit of the other branch leaks in), the sign bit included."""
    from manual_bp.activations import erf32

    rng = np.random.default_rng(7)
    w = np.concatenate([rng.uniform(-5, 5, 200_000), [1.0, -1.0, 0.0, -0.0]]).astype(np.float32)
    x = np.abs(w)
    with np.errstate(all="ignore"):
        near = erf32._horner(erf32._P, w * w, np.empty_like(w)) * w + w
        far = 1 - erf32._horner(erf32._R, 1 / x, np.empty_like(w)) * np.exp(-(w * w))
    expected = np.where(x < 1, near, np.copysign(far, w))
    assert np.array_equal(_erf32(w).view(np.int32), expected.view(np.int32))


def test_fast_gelu_float32_blocks_and_strided_arrays_give_the_readable_bits():
    """The float32 fast forward runs contiguous arrays in blocks of _GELU_BLOCK elements and
    strided ones whole: both give the readable form's bits."""
    from manual_bp.activations import smooth

    z, _ = _data(np.float32, (3, smooth._GELU_BLOCK + 7))
    gelu = get_activation("gelu")
    for arg in (z, z.T):  # contiguous over 4 blocks; a transposed (strided) view
        state = np.empty((gelu.fast_state, *arg.shape), np.float32)
        out = gelu.forward_into(arg, np.empty_like(arg), state=state)
        assert np.array_equal(out, gelu.forward(arg))
        assert np.array_equal(state[0], gelu._one_plus_erf(arg))
