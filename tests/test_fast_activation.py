"""The activation layer's fast step (``ActivationStep``) and ReLU's fast forms.

Checked against the readable forward/backward and torch in float64, with random upstream
gradients; large arrays are split over the batch, which must give the same bits with 1 and
2 threads; float32 stays float32.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import manual_bp
from manual_bp.activations import get_activation
from manual_bp.layers.activation import ActivationLayer

NAMES = ["relu", "identity", "sigmoid", "tanh", "leaky-relu", "elu", "gelu", "softmax"]
# small (one call) and large (split over the batch with two threads) shapes; odd sizes
SHAPES = [(3, 5), (64, 2, 33, 31), (257, 300), (16, 64, 129)]
TORCH = {
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "gelu": torch.nn.functional.gelu,
    "softmax": lambda t: torch.softmax(t, dim=-1),
}


def _fast(layer, z, g):
    step = layer.fast_step()
    a = step.forward(z).copy()
    return a, step.backward(g.copy(), {}, True).copy()


def _data(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal(shape) * 2).astype(dtype)
    z.reshape(-1)[::97] = 0.0  # on the kink
    return z, rng.standard_normal(shape).astype(dtype)


@pytest.fixture
def threads():
    before = manual_bp.get_num_threads()
    yield manual_bp.set_num_threads
    manual_bp.set_num_threads(before)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", SHAPES)
def test_fast_step_matches_readable_and_torch(name, shape, threads):
    layer = ActivationLayer(name)
    z, g = _data(shape, np.float64)
    for count in (1, 2):
        threads(count)
        a, dz = _fast(layer, z, g)
        ref_a, cache = layer.forward(z)
        ref_dz, _ = layer.backward(g, cache)
        np.testing.assert_allclose(a, ref_a, rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(dz, ref_dz, rtol=1e-13, atol=1e-15)
    if name in TORCH:
        zt = torch.tensor(z, requires_grad=True)
        out = TORCH[name](zt)
        out.backward(torch.from_numpy(g))
        np.testing.assert_allclose(a, out.detach().numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(dz, zt.grad.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_and_two_threads_give_the_same_bits(name, dtype, threads):
    layer = ActivationLayer(name)
    z, g = _data((128, 8, 31, 17), dtype, seed=1)
    results = []
    for count in (1, 2):
        threads(count)
        results.append(_fast(layer, z, g))
    (a1, d1), (a2, d2) = results
    assert a1.dtype == d1.dtype == dtype
    assert np.array_equal(a1, a2, equal_nan=True) and np.array_equal(d1, d2, equal_nan=True)


def test_relu_fast_forms_keep_special_values():
    """NaN propagates, −∞ → 0, −0 as ``maximum(z, 0)``; ``relu'(0) = 0``; tails of any size."""
    relu = get_activation("relu")
    for size in (1, 7, 8192, 8193, 20000):
        for dtype in (np.float32, np.float64):
            z, g = _data((size,), dtype, seed=size)
            z[:6] = [np.nan, -np.inf, np.inf, -0.0, 0.0, 1.0][:size]
            out, scratch = np.empty_like(z), np.empty_like(z)
            a = relu.forward_into(z, out)
            ref = np.maximum(z, 0)
            assert a.dtype == dtype
            assert np.array_equal(a, ref, equal_nan=True)
            assert np.array_equal(np.signbit(a), np.signbit(ref))
            dz = relu.backward_inplace(g.copy(), z, a, scratch)
            assert np.array_equal(dz, np.where(z > 0, g, 0))
    # non-contiguous arrays take the plain ufuncs
    z, g = _data((6, 10), np.float64)
    a = relu.forward_into(z[:, ::2], np.empty((6, 5)))
    assert np.array_equal(a, np.maximum(z[:, ::2], 0))
    dz = relu.backward_inplace(g[:, ::2].copy(), z[:, ::2], a, np.empty((6, 10))[:, ::2])
    assert np.array_equal(dz, np.where(z[:, ::2] > 0, g[:, ::2], 0))


def test_split_step_keeps_results_returned_in_fresh_arrays(threads):
    """``forward_into``/``backward_inplace`` may return a new array instead of filling the
    buffer (the interface allows it): the split step copies each slice's result in place."""

    class Fresh(type(get_activation("tanh"))):
        def forward_into(self, z, out):
            return np.tanh(z)

        def backward_inplace(self, grad_a, z, a, scratch):
            return grad_a * (1 - a) * (1 + a)

    threads(2)
    layer = ActivationLayer(Fresh())
    z, g = _data((256, 600), np.float64)
    a, dz = _fast(layer, z, g)
    ref_a, cache = layer.forward(z)
    np.testing.assert_allclose(a, ref_a, rtol=1e-15)
    np.testing.assert_allclose(dz, layer.backward(g, cache)[0], rtol=1e-14, atol=1e-300)


def test_coupled_activation_is_called_whole(threads):
    """Softmax may split its own rows with parallel_rows; a second split around it would
    call parallel_rows from a pool worker, which waits on itself: the step calls it whole."""
    seen = []

    class Recording(type(get_activation("softmax"))):
        def forward_into(self, z, out):
            seen.append(z.shape)
            return super().forward_into(z, out)

        def backward_inplace(self, grad_a, z, a, scratch):
            seen.append(z.shape)
            return super().backward_inplace(grad_a, z, a, scratch)

    threads(2)
    z, g = _data((256, 600), np.float64)
    _fast(ActivationLayer(Recording()), z, g)
    assert seen == [z.shape, z.shape]
