"""AdaptivePoolStep: an adaptive pool whose output size divides the input size is the tiled
plain pool's step — against the readable layers (max: the same bits, ties and all; average:
the conventions' magnitude bound) in float64 and float32 with an odd last mini-batch,
overlapping windows through the readable form, and ``train()`` fast = readable."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.layers import pooling_adaptive as adaptive
from manual_bp.layers.steps import GenericStep
from tests.fast_step_checks import check_against_readable, check_training

seeds = st.integers(0, 2**31 - 1)


@settings(max_examples=50, deadline=None)
@given(seed=seeds, dims=st.sampled_from([1, 2, 3]), kind=st.sampled_from(["Max", "Avg"]),
       tiling=st.booleans(), ties=st.booleans(), dtype=st.sampled_from([np.float64, np.float32]),
       batch=st.integers(1, 4))  # fmt: skip
def test_adaptive_step_matches_readable(seed, dims, kind, tiling, ties, dtype, batch):
    """LAYER.adaptive-maxpool, LAYER.adaptive-avgpool2d/-nd: tiling sizes (``S = k·O``, the
    reshape) and overlapping ones (the readable form), ``None`` axes, ties (integer
    values: the first maximum wins)."""
    rng = np.random.default_rng(seed)
    out = [int(v) for v in rng.integers(1, 4, size=dims)]
    size = [o * int(rng.integers(1, 4)) for o in out]
    if not tiling:  # windows of different sizes that overlap
        size = [s + 1 if s % o == 0 and o > 1 else s for s, o in zip(size, out, strict=True)]
    sizes = [None if rng.random() < 0.2 else o for o in out]
    layer = getattr(adaptive, f"Adaptive{kind}Pool{dims}d")(tuple(sizes) if dims > 1 else sizes[0])
    channels = int(rng.integers(1, 4))

    def make(n):
        x = rng.standard_normal((n, channels, *size))
        return (np.round(x * 2) if ties else x).astype(dtype)

    step = check_against_readable(layer, make, (batch, batch, batch + 1), rng,
                                  exact=kind == "Max")  # fmt: skip
    divides = all(s % o == 0 for s, o in zip(size, layer._out(tuple(size)), strict=True))
    assert (step.current is step.generic) == (not divides)


def test_nan_window_and_fallback():
    """A NaN in a tiled max window: the readable rule (NaN wins, its index); a non-dividing
    size: GenericStep."""
    layer = adaptive.AdaptiveMaxPool2d(2)
    x = np.arange(2 * 16, dtype=float).reshape(1, 2, 4, 4)
    x[0, 1, 1, 0] = np.nan
    step = layer.fast_step()
    out = step.forward(x).copy()
    ref, cache = layer.forward(x)
    np.testing.assert_array_equal(out, ref)
    dout = np.arange(8.0).reshape(1, 2, 2, 2) + 1
    grads: dict = {}
    np.testing.assert_array_equal(step.backward(dout.copy(), grads, True),
                                  layer.backward(dout, cache)[0])  # fmt: skip
    step.forward(np.ones((1, 2, 5, 5)))
    assert isinstance(step.current, GenericStep)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_adaptive_models_train_the_same_fast_and_readable(dtype):
    """conv → adaptive max (tiling) → conv → adaptive average (tiling) → dense, and one
    with overlapping windows, and conv → LPPool2d, through ``train()`` fast and
    ``train(fast=False)``."""
    spec = [("conv2d", (3, 3), {"padding": 1}), "relu", ("adaptive-maxpool2d", (3,), {}),
            ("conv2d", (4, 1), {}), ("adaptive-avgpool2d", ((1, 3),), {}), "flatten", "dense",
            "softmax"]  # fmt: skip
    check_training(spec, (2, 6, 6), 3, n=11, batch_size=4, dtype=dtype)
    spec = [("conv1d", (3, 2), {}), "tanh", ("adaptive-avgpool1d", (3,), {}), "flatten",
            "dense", "softmax"]  # fmt: skip
    check_training(spec, (2, 6), 3, n=9, batch_size=4, dtype=dtype)
    spec = [("conv2d", (3, 3), {"padding": 1}), ("lppool2d", (2.0, 2), {}), "flatten", "dense",
            "softmax"]  # fmt: skip
    check_training(spec, (2, 4, 4), 3, n=9, batch_size=4, dtype=dtype)


@settings(max_examples=40, deadline=None)
@given(seed=seeds, dims=st.sampled_from([1, 2, 3]), p=st.sampled_from([1.0, 2.0, 3.0, 1.5]),
       tiling=st.booleans(), zeros=st.booleans(), ceil=st.booleans(),
       dtype=st.sampled_from([np.float64, np.float32]), batch=st.integers(1, 3))  # fmt: skip
def test_lppool_step_matches_readable(seed, dims, p, tiling, zeros, ceil, dtype, batch):
    """LAYER.lppool: tiling windows (the average's reshape step) and strided/overlapping or
    clipped ones (``ceil_mode``; the average's readable form), zero windows (they send 0),
    positive inputs for a fractional p (negative ones give NaN, as torch)."""
    from manual_bp.layers import pooling_lp

    rng = np.random.default_rng(seed)
    kernel = [int(v) for v in rng.integers(1, 3, size=dims)]
    stride = kernel if tiling else [int(v) for v in rng.integers(1, 3, size=dims)]
    size = [k * int(rng.integers(1, 3)) + (0 if tiling else int(rng.integers(0, 2)))
            for k in kernel]  # fmt: skip
    cls = getattr(pooling_lp, f"LPPool{dims}d")
    layer = cls(p, tuple(kernel) if dims > 1 else kernel[0],
                tuple(stride) if dims > 1 else stride[0], ceil_mode=ceil)  # fmt: skip
    try:
        layer.output_shape((1, *size))
    except ValueError:
        return
    channels = int(rng.integers(1, 3))

    def make(n):
        x = rng.standard_normal((n, channels, *size))
        x = x if p == 2.0 else np.abs(x) + 0.1  # an odd or fractional p: NaN below 0
        if zeros:
            x[:, 0] = 0.0  # whole zero windows
        return x.astype(dtype)

    def magnitudes(layer, x, dout):  # relative accuracy: |ref| (powers scale errors by p)
        out, cache = layer.forward(x)
        return np.abs(out), np.abs(layer.backward(dout, cache)[0]), {}

    check_against_readable(layer, make, (batch, batch, batch + 1), rng, magnitudes=magnitudes)
