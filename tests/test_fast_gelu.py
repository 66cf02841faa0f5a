"""GELU's fast form (``ACT.gelu``): erf once per step, kept from ``forward_into`` for
``backward_inplace``; the same bits as the readable form, torch's values, any row slicing."""

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
    a2 = gelu.forward_into(z, out)
    dz2 = gelu.backward_inplace(g2, z, a2, scratch)
    assert a2.dtype == dtype and dz2.dtype == dtype
    assert np.array_equal(a, a2) and np.array_equal(dz, dz2)
    # without a kept w (backward alone, or a second time): recomputed, same bits
    g3 = g.copy()
    assert np.array_equal(gelu.backward_inplace(g3, z, a2, scratch), dz)
    g4 = g.copy()
    assert np.array_equal(get_activation("gelu").backward_inplace(g4, z, a, scratch), dz)


def test_fast_gelu_row_slices_find_their_own_kept_buffer():
    z, g = _data(np.float32, (100, 40))
    gelu = get_activation("gelu")
    a = gelu.forward(z)
    dz = gelu.backward(g, z, a)
    out, scratch, g2 = np.empty_like(z), np.empty_like(z), g.copy()
    parts = (slice(0, 37), slice(37, 100))
    for rows in parts:
        gelu.forward_into(z[rows], out[rows])
    for rows in parts[::-1]:
        gelu.backward_inplace(g2[rows], z[rows], out[rows], scratch[rows])
    assert np.array_equal(out, a) and np.array_equal(g2, dz)


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


def test_fast_gelu_kept_buffer_never_serves_other_arrays():
    """A forward_into without its backward, its arrays dropped, then new arrays of the same
    shape (NumPy's allocator would hand back the same memory): the gradient is recomputed."""
    gelu = get_activation("gelu")
    for seed in range(5):
        z, g = _data(np.float32, (32, 16), seed=seed)
        gelu.forward_into(-z, np.empty_like(z))  # its out is dropped at once
        z2 = z.copy()
        a = np.empty_like(z)
        a[...] = gelu.forward(z2)
        expected = gelu.backward(g, z2, a)
        assert np.array_equal(gelu.backward_inplace(g.copy(), z2, a, np.empty_like(z)), expected)
