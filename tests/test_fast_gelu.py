"""GELU's fast form (``ACT.gelu``): erf once per step, kept by ``forward_into`` in the step's
state buffer for ``backward_inplace``; the same bits as the readable form, torch's values,
any row slicing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from manual_bp import set_num_threads
from manual_bp.activations import get_activation
from manual_bp.layers.activation import ActivationLayer


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
        set_num_threads(threads)
        try:
            step = ActivationLayer("gelu").fast_step()
            a = step.forward(z).copy()
            dz = step.backward(g.copy(), {}, True)
        finally:
            set_num_threads(1)
        results.append((a, dz))
        np.testing.assert_allclose(a, at.detach().numpy(), rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(dz, dt.numpy(), rtol=1e-13, atol=1e-15)
    assert all(np.array_equal(x, y) for x, y in zip(*results, strict=True))
