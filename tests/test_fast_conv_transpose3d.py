"""ConvTranspose3d (and LazyConvTranspose3d) through ConvTransposeStep, now that ConvStep
works on any number of spatial axes: the step against the readable layer (float64 and
float32, every col2im form forced), against torch autograd (float64, random upstream
gradients), ``output_padding ≥ stride`` (x on K's larger grid), ``train()`` fast against
``train(fast=False)``, and 1 and 2 threads giving the same bits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.layers import ConvTranspose2d, ConvTranspose3d, LazyConvTranspose3d, convolution_fast
from manual_bp.layers.convolution_transpose_steps import ConvTransposeStep
from tests.fast_step_checks import (
    across_threads,
    assert_same_bits,
    check_against_readable,
    check_training,
    run_fast,
    run_step,
)
from tests.test_fast_conv_transpose import _layer, transpose_geometries

seeds = st.integers(0, 2**31 - 1)
# ConvStep's three col2im forms: batch-last (small), channel-major, stride phases
FORMS = {"batch_last": (0, 1 << 30), "channel_major": (1 << 30, 0), "phases": (1 << 30, 0)}


@settings(max_examples=25, deadline=None)
@given(st.data(), seeds, st.sampled_from([np.float64, np.float32]),
       st.sampled_from(sorted(FORMS)))  # fmt: skip
def test_step_matches_readable_3d(data, seed, dtype, form):
    """Forward, ∂C/∂x and the parameter gradients of the 3-d step against the readable
    form on drawn geometries (two batches of one size, then an odd last one), with
    ``SMALL_SAMPLE_FLOPS``/``BATCH_LAST_SIZE``/``PHASE_GROWTH`` forced onto each form."""
    geometry = data.draw(transpose_geometries(3))
    layer = _layer(ConvTranspose3d, geometry, seed, dtype)
    if layer is None:
        return
    assert isinstance(layer.fast_step(), ConvTransposeStep)
    rng = np.random.default_rng(seed)
    saved = (convolution_fast.SMALL_SAMPLE_FLOPS, convolution_fast.BATCH_LAST_SIZE,
             convolution_fast.PHASE_GROWTH)  # fmt: skip
    small, batch_last = FORMS[form]
    convolution_fast.SMALL_SAMPLE_FLOPS, convolution_fast.BATCH_LAST_SIZE = small, batch_last
    convolution_fast.PHASE_GROWTH = 1e9 if form == "phases" else 0.0
    try:
        n = geometry["batch"]
        check_against_readable(
            layer,
            lambda b: rng.standard_normal((b, layer.in_channels, *geometry["size"])).astype(dtype),
            (n, n, n - 1 if n % 2 == 0 else n + 1),
            rng,
        )
    finally:
        (convolution_fast.SMALL_SAMPLE_FLOPS, convolution_fast.BATCH_LAST_SIZE,
         convolution_fast.PHASE_GROWTH) = saved  # fmt: skip


@settings(max_examples=15, deadline=None)
@given(st.data(), seeds)
def test_step_matches_torch_3d(data, seed):
    """The 3-d step against torch autograd, float64, random upstream gradients."""
    geometry = data.draw(transpose_geometries(3))
    layer = _layer(ConvTranspose3d, geometry, seed)
    if layer is None:
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((geometry["batch"], layer.in_channels, *geometry["size"]))
    dout = rng.standard_normal((x.shape[0], *layer.output_shape(x.shape[1:])))
    out, dx, grads = run_step(layer.fast_step(), x, dout)
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(layer.params["weight"], requires_grad=True)
    bt = torch.tensor(layer.params["bias"], requires_grad=True) if layer.has_bias else None
    t_out = torch.nn.functional.conv_transpose3d(
        xt, wt, bt, layer.stride, layer.padding, layer.output_padding, layer.groups,
        layer.dilation,
    )  # fmt: skip
    t_out.backward(torch.tensor(dout))
    close = dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out, t_out.detach().numpy(), **close)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **close)
    np.testing.assert_allclose(grads["weight"], wt.grad.numpy(), **close)
    if bt is not None:
        np.testing.assert_allclose(grads["bias"], bt.grad.numpy(), **close)


@pytest.mark.parametrize("output_padding", [0, 1, 2, 3])
def test_output_padding_edges(output_padding):
    """``output_padding`` below, at and above the stride (2; dilation 4 allows up to 3):
    the step on K's larger grid equals the readable form's ``pad_to`` path."""
    rng = np.random.default_rng(output_padding)
    layer = ConvTranspose3d(3, 4, 2, stride=2, dilation=4, output_padding=output_padding,
                            groups=1, seed=output_padding)  # fmt: skip
    make = lambda b: rng.standard_normal((b, 3, 2, 3, 2))  # noqa: E731
    step = check_against_readable(layer, make, (3, 2), rng)
    assert isinstance(step, ConvTransposeStep)
    assert (step.buf["xfull"] is not None) == (output_padding >= 2)


def test_lazy_3d_steps_after_its_first_forward():
    """An uninitialised lazy layer has no weight to step with (GenericStep); after its
    first forward it trains through the step."""
    layer = LazyConvTranspose3d(3, 2, stride=2, seed=0)
    assert not isinstance(layer.fast_step(), ConvTransposeStep)
    layer.forward(np.zeros((1, 2, 2, 3, 2)))
    assert isinstance(layer.fast_step(), ConvTransposeStep)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_3d_decoder_trains_the_same_fast_and_readable(dtype):
    """conv3d → conv-transpose3d (output_padding 1) → dense through ``train()`` fast and
    ``train(fast=False)``: the same parameters after two epochs with an odd last batch."""
    spec = [("conv3d", (3, 3), {"stride": 2, "padding": 1}), "relu",
            ("conv-transpose3d", (2, 3), {"stride": 2, "padding": 1, "output_padding": 1}),
            "tanh", "flatten", "dense", "softmax"]  # fmt: skip
    check_training(spec, (2, 4, 5, 4), 3, n=11, batch_size=4, dtype=dtype)


def test_3d_threads_give_identical_bits():
    """ConvTranspose3d's step (each col2im form) with 1 and 2 threads: the same bits."""
    rng = np.random.default_rng(1)
    cases = [
        (ConvTranspose3d(4, 6, 3, stride=2, padding=1, output_padding=1, seed=0), (8, 4, 3, 4, 3)),
        (ConvTranspose3d(16, 8, 3, stride=2, padding=1, seed=0), (6, 16, 8, 8, 8)),
        (ConvTranspose3d(8, 8, 3, padding=1, groups=2, seed=0), (6, 8, 9, 9, 9)),
        (ConvTranspose3d(4, 4, 2, stride=1, dilation=3, output_padding=2, seed=0), (5, 4, 4, 4, 4)),
    ]
    for layer, shape in cases:
        x = rng.standard_normal(shape)
        dout = rng.standard_normal((shape[0], *layer.output_shape(shape[1:])))
        assert_same_bits(*across_threads(lambda: run_fast(layer, x, dout)), layer)  # noqa: B023


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_2d_strided_large_output_uses_the_phase_forward(dtype):
    """A strided ConvTranspose2d whose output is above ``BATCH_LAST_SIZE`` (39·39·16):
    ConvStep's buffers then hold the stride-phase plan and no channel-major col2im
    buffer, so the forward must take the phase path (it raised a TypeError before)."""
    rng = np.random.default_rng(0)
    layer = ConvTranspose2d(32, 16, 3, stride=2, padding=1, seed=0, dtype=dtype)
    make = lambda n: rng.standard_normal((n, 32, 20, 20)).astype(dtype)  # noqa: E731
    step = check_against_readable(layer, make, (2, 1), rng)
    assert step.buf["plan"] is not None and step.buf["dxp"] is None
