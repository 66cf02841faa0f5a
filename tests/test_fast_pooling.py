"""The pooling layers' fast steps (``manual_bp/layers/pooling_fast.py``).

The tiled fast case (kernel == stride, no padding, sizes multiples of the kernel) and the
readable fallback, against the readable forms and torch in float64 with random upstream
gradients; max pooling with ties (torch's first-maximum rule), −∞ and NaN; 1 vs 2 threads
bit-identical; float32 kept.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.layers.pooling import AvgPool2d, GlobalAvgPool2d, MaxPool2d
from manual_bp.layers.pooling_fast import AvgPoolStep, GlobalAvgPoolStep, MaxPoolStep
from tests.fast_step_checks import across_threads

seeds = st.integers(0, 2**31 - 1)
kernels = st.sampled_from([1, 2, 3, (2, 3), (3, 1)])


def _pair(k):
    return (k, k) if isinstance(k, int) else k


def _fast(layer, x, u):
    step = layer.fast_step()
    y = step.forward(x).copy()
    return y, step.backward(u.copy(), {}, True).copy(), step


def _input(rng, shape, ties):
    if ties:  # small integers and ReLU zeros: many tied maxima
        x = np.maximum(rng.integers(-3, 4, shape), 0).astype(np.float64)
        x.reshape(-1)[::11] = -np.inf
        return x
    return rng.standard_normal(shape)


@settings(max_examples=40)
@given(seed=seeds, kernel=kernels, ties=st.booleans(), nan=st.booleans())
def test_max_pool_step_matches_readable_and_torch(seed, kernel, ties, nan):
    """LAYER.maxpool2d, tiled windows: the same bits as the readable form and torch."""
    rng = np.random.default_rng(seed)
    kh, kw = _pair(kernel)
    shape = (int(rng.integers(1, 4)), int(rng.integers(1, 4)),
             kh * int(rng.integers(1, 5)), kw * int(rng.integers(1, 5)))  # fmt: skip
    x = _input(rng, shape, ties)
    if nan:
        x.reshape(-1)[rng.integers(0, x.size, 2)] = np.nan
    u = rng.standard_normal((shape[0], shape[1], shape[2] // kh, shape[3] // kw))
    layer = MaxPool2d(kernel)
    y, dx, step = _fast(layer, x, u)
    assert step.shape == x.shape  # the tiled case ran
    ref_y, cache = layer.forward(x)
    ref_dx, _ = layer.backward(u, cache)
    assert np.array_equal(y, ref_y, equal_nan=True)
    assert np.array_equal(dx, ref_dx)
    xt = torch.tensor(x, requires_grad=True)
    out = F.max_pool2d(xt, kernel)
    out.backward(torch.from_numpy(u))
    assert np.array_equal(y, out.detach().numpy(), equal_nan=True)
    assert np.array_equal(dx, xt.grad.numpy())


@settings(max_examples=40)
@given(seed=seeds, kernel=kernels, override=st.sampled_from([None, 1, 5]))
def test_avg_pool_step_matches_readable_and_torch(seed, kernel, override):
    """LAYER.avgpool2d, tiled windows (divisor kH·kW or divisor_override)."""
    rng = np.random.default_rng(seed)
    kh, kw = _pair(kernel)
    shape = (int(rng.integers(1, 4)), int(rng.integers(1, 4)),
             kh * int(rng.integers(1, 5)), kw * int(rng.integers(1, 5)))  # fmt: skip
    x = rng.standard_normal(shape)
    u = rng.standard_normal((shape[0], shape[1], shape[2] // kh, shape[3] // kw))
    layer = AvgPool2d(kernel, divisor_override=override)
    y, dx, step = _fast(layer, x, u)
    assert step.shape == x.shape
    ref_y, cache = layer.forward(x)
    ref_dx, _ = layer.backward(u, cache)
    xt = torch.tensor(x, requires_grad=True)
    out = F.avg_pool2d(xt, kernel, divisor_override=override)
    out.backward(torch.from_numpy(u))
    for ref in (ref_y, out.detach().numpy()):
        np.testing.assert_allclose(y, ref, rtol=1e-14, atol=1e-15)
    for ref in (ref_dx, xt.grad.numpy()):
        np.testing.assert_allclose(dx, ref, rtol=1e-14, atol=1e-15)


@settings(max_examples=25)
@given(seed=seeds)
def test_global_avg_pool_step_matches_readable_and_torch(seed):
    """LAYER.global-avgpool2d."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in rng.integers(1, 6, 4))
    x, u = rng.standard_normal(shape), rng.standard_normal((*shape[:2], 1, 1))
    layer = GlobalAvgPool2d()
    y, dx, _ = _fast(layer, x, u)
    ref_y, cache = layer.forward(x)
    ref_dx, _ = layer.backward(u, cache)
    xt = torch.tensor(x, requires_grad=True)
    out = F.adaptive_avg_pool2d(xt, 1)
    out.backward(torch.from_numpy(u))
    for ref in (ref_y, out.detach().numpy()):
        np.testing.assert_allclose(y, ref, rtol=1e-13, atol=1e-15)
    for ref in (ref_dx, xt.grad.numpy()):
        np.testing.assert_allclose(dx, ref, rtol=1e-14, atol=1e-16)


@pytest.mark.parametrize(
    "layer",
    [MaxPool2d(2, padding=1), MaxPool2d(3, stride=2), MaxPool2d(2, dilation=2),
     MaxPool2d(2, ceil_mode=True), AvgPool2d(3, stride=1), AvgPool2d(2, padding=1)],
    ids=repr,
)  # fmt: skip
def test_other_geometries_take_the_readable_form(layer):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 9))
    ref_y, cache = layer.forward(x)
    u = rng.standard_normal(ref_y.shape)
    y, dx, step = _fast(layer, x, u)
    assert step.shape is None
    assert np.array_equal(y, ref_y) and np.array_equal(dx, layer.backward(u, cache)[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layer", [MaxPool2d(2), AvgPool2d(2), GlobalAvgPool2d()], ids=repr)
def test_one_and_two_threads_give_the_same_bits(layer, dtype):
    rng = np.random.default_rng(2)
    x = np.maximum(rng.standard_normal((64, 16, 28, 28)), 0).astype(dtype)  # ties at 0
    u = rng.standard_normal(layer.fast_step().forward(x).shape).astype(dtype)
    (y1, dx1, _), (y2, dx2, _) = across_threads(lambda: _fast(layer, x, u))
    assert y1.dtype == dx1.dtype == dtype
    assert np.array_equal(y1, y2) and np.array_equal(dx1, dx2)
    ref_y, _ = layer.forward(x)
    np.testing.assert_allclose(y1, ref_y, rtol=1e-6 if dtype == np.float32 else 1e-14)


def test_steps_are_the_layers_fast_forms():
    assert isinstance(MaxPool2d(2).fast_step(), MaxPoolStep)
    assert isinstance(AvgPool2d(2).fast_step(), AvgPoolStep)
    assert isinstance(GlobalAvgPool2d().fast_step(), GlobalAvgPoolStep)


def test_need_dx_false_and_bad_upstream_shape():
    step = MaxPool2d(2).fast_step()
    step.forward(np.zeros((2, 3, 4, 4)))
    assert step.backward(np.zeros((2, 3, 2, 2)), {}, False) is None
    with pytest.raises(ValueError, match="upstream gradient"):
        step.backward(np.zeros((2, 3, 4, 4)), {}, True)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fused_cnn_with_batch_norm_and_pooling_matches_the_readable_step(dtype):
    """conv → BN → ReLU → max-pool → conv → ReLU → avg-pool → GAP → dense: the fused
    gradients (every fast step of this branch) equal the readable step's, and both
    update the running statistics alike."""
    from manual_bp.models.sequential import Sequential
    from manual_bp.training import FusedTrainer

    spec = [("conv2d", (4, 3), {"padding": 1}), "batchnorm2d", "relu", ("maxpool2d", (2,), {}),
            ("conv2d", (6, 3), {"padding": 1}), "relu", ("avgpool2d", (2,), {}),
            "global-avgpool2d", "flatten", "dense", "softmax"]  # fmt: skip
    model, fused_model = (
        Sequential.from_spec(spec, (3, 8, 8), 5, cost="log-likelihood", seed=0, dtype=dtype)
        for _ in range(2)
    )
    rng = np.random.default_rng(0)
    x = model.prepare_inputs(rng.standard_normal((6, 3, 8, 8)).astype(dtype))
    y = model.prepare_targets(rng.integers(0, 5, 6), 6)
    fused = FusedTrainer(fused_model).gradients(x, y)
    _, readable = model.loss_and_gradients(x, y)
    tol = 1e-12 if dtype == "float64" else 1e-4
    # the first conv's bias gradient is 0 up to rounding (batch norm removes the mean):
    # absolute errors are measured against the largest gradient
    scale = max(np.abs(g).max() for g in readable)
    for got, want in zip(fused, readable, strict=True):
        assert got.dtype == want.dtype == np.dtype(dtype)
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale)
    for (name, got), (_, want) in zip(
        fused_model.named_buffers(), model.named_buffers(), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=name)


@settings(max_examples=30, deadline=None)
@given(
    seed=seeds,
    dims=st.sampled_from([1, 3]),
    kind=st.sampled_from(["max", "avg"]),
    ties=st.booleans(),
)
def test_nd_pool_steps_match_readable_and_torch(seed, dims, kind, ties):
    """LAYER.maxpool-nd and LAYER.avgpool-nd, tiled windows in 1-d and 3-d: the fast step
    gives the same bits as the readable form, and torch's values."""
    from manual_bp.layers import AvgPool1d, AvgPool3d, MaxPool1d, MaxPool3d

    rng = np.random.default_rng(seed)
    kernel = tuple(int(k) for k in rng.integers(1, 4 if dims == 1 else 3, size=dims))
    shape = (int(rng.integers(1, 4)), int(rng.integers(1, 3)),
             *(k * int(rng.integers(1, 4)) for k in kernel))  # fmt: skip
    x = _input(rng, shape, ties and kind == "max")
    classes = {("max", 1): MaxPool1d, ("max", 3): MaxPool3d,
               ("avg", 1): AvgPool1d, ("avg", 3): AvgPool3d}  # fmt: skip
    layer = classes[kind, dims](kernel)
    out_shape = (*shape[:2], *(s // k for s, k in zip(shape[2:], kernel, strict=True)))
    u = rng.standard_normal(out_shape)
    y, dx, step = _fast(layer, x, u)
    assert step.shape == x.shape  # the tiled case ran
    ref_y, cache = layer.forward(x)
    ref_dx, _ = layer.backward(u, cache)
    # max: a selection; average: both forms add a window's taps in row-major order
    assert np.array_equal(y, ref_y) and np.array_equal(dx, ref_dx)
    xt = torch.tensor(x, requires_grad=True)
    function = getattr(F, f"{kind}_pool{dims}d")
    out = function(xt, kernel)
    out.backward(torch.from_numpy(u))
    np.testing.assert_allclose(y, out.detach().numpy(), rtol=1e-15)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-15)
