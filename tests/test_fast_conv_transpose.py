"""ConvTransposeStep (ConvTranspose1d/2d's fast training step: ConvStep run backwards)
against the readable layer (float64 and float32, within the conventions' magnitude bound),
against torch autograd (float64, random upstream gradients), each col2im form, and
``train()`` fast against ``train(fast=False)``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.layers import convolution_fast
from manual_bp.layers.convolution_transpose import ConvTranspose1d, ConvTranspose2d
from manual_bp.layers.convolution_transpose_steps import ConvTransposeStep
from manual_bp.layers.steps import GenericStep
from tests.fast_step_checks import (
    across_threads,
    assert_same_bits,
    check_against_readable,
    check_training,
    run_fast,
    run_step,
)

seeds = st.integers(0, 2**31 - 1)


@st.composite
def transpose_geometries(draw, dims: int) -> dict:
    """Every option of the layer: groups, kernel, stride, padding, dilation, and an
    ``output_padding`` from 0 to ``max(stride, dilation) − 1`` (≥ stride: the readable
    form trains), bias on/off, batch and spatial size."""
    groups = draw(st.integers(1, 3))
    axes = st.integers(1, 3)
    kernel = tuple(draw(axes) for _ in range(dims))
    stride = tuple(draw(axes) for _ in range(dims))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    pairs = list(zip(kernel, stride, dilation, strict=True))
    padding = tuple(draw(st.integers(0, d * (k - 1))) for k, _, d in pairs)
    extra = tuple(draw(st.integers(0, max(s, d) - 1)) for _, s, d in pairs)
    size = tuple(draw(st.integers(1, 5)) for _ in range(dims))
    kwargs = dict(
        in_channels=groups * draw(st.integers(1, 3)),
        out_channels=groups * draw(st.integers(1, 3)),
        kernel_size=kernel if dims > 1 else kernel[0],
        stride=stride if dims > 1 else stride[0],
        padding=padding if dims > 1 else padding[0],
        output_padding=extra if dims > 1 else extra[0],
        dilation=dilation if dims > 1 else dilation[0],
        groups=groups,
        bias=draw(st.booleans()),
    )
    return {"kwargs": kwargs, "size": size, "batch": draw(st.integers(2, 5))}


def _layer(cls, geometry, seed, dtype=np.float64):
    layer = cls(**geometry["kwargs"], seed=seed, dtype=dtype)
    try:
        layer.output_shape((layer.in_channels, *geometry["size"]))
    except ValueError:  # an empty output: no such layer to train
        return None
    return layer


def _torch(layer, x, dout):
    F = torch.nn.functional
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(layer.params["weight"], requires_grad=True)
    bt = torch.tensor(layer.params["bias"], requires_grad=True) if layer.has_bias else None
    f = F.conv_transpose2d if layer.dims == 2 else F.conv_transpose1d
    out = f(xt, wt, bt, layer.stride, layer.padding, layer.output_padding, layer.groups,
            layer.dilation)  # fmt: skip
    out.backward(torch.tensor(dout))
    grads = {"weight": wt.grad.numpy()}
    if bt is not None:
        grads["bias"] = bt.grad.numpy()
    return out.detach().numpy(), xt.grad.numpy(), grads


@settings(max_examples=40, deadline=None)
@given(st.data(), st.sampled_from([ConvTranspose2d, ConvTranspose1d]), seeds,
       st.sampled_from([np.float64, np.float32]), st.sampled_from([0, 1 << 30]))  # fmt: skip
def test_step_matches_readable(data, cls, seed, dtype, small):
    """Forward, ∂C/∂x and every parameter gradient of the step against the readable form
    (two batches of one size — buffer reuse — then an odd last one), in float64 and
    float32; both forms of the forward's col2im and of ∂C/∂x's forward (ConvStep's
    ``BATCH_LAST_SIZE``, ``SMALL_SAMPLE_FLOPS`` forced); ``output_padding ≥ stride``
    trains through the step too (x on K's larger grid)."""
    geometry = data.draw(transpose_geometries(1 if cls is ConvTranspose1d else 2))
    layer = _layer(cls, geometry, seed, dtype)
    if layer is None:
        return
    assert isinstance(layer.fast_step(), ConvTransposeStep)
    rng = np.random.default_rng(seed)
    saved = convolution_fast.SMALL_SAMPLE_FLOPS, convolution_fast.BATCH_LAST_SIZE
    convolution_fast.SMALL_SAMPLE_FLOPS = convolution_fast.BATCH_LAST_SIZE = small
    try:
        n = geometry["batch"]
        check_against_readable(
            layer,
            lambda b: rng.standard_normal((b, layer.in_channels, *geometry["size"])).astype(dtype),
            (n, n, n - 1 if n % 2 == 0 else n + 1),
            rng,
        )
    finally:
        convolution_fast.SMALL_SAMPLE_FLOPS, convolution_fast.BATCH_LAST_SIZE = saved


@settings(max_examples=20, deadline=None)
@given(st.data(), st.sampled_from([ConvTranspose2d, ConvTranspose1d]), seeds)
def test_step_matches_torch(data, cls, seed):
    """The step against torch autograd, float64, random upstream gradients."""
    geometry = data.draw(transpose_geometries(1 if cls is ConvTranspose1d else 2))
    layer = _layer(cls, geometry, seed)
    if layer is None:
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((geometry["batch"], layer.in_channels, *geometry["size"]))
    step = layer.fast_step()
    dout = rng.standard_normal((x.shape[0], *layer.output_shape(x.shape[1:])))
    out, dx, grads = run_step(step, x, dout)
    t_out, t_dx, t_grads = _torch(layer, x, dout)
    np.testing.assert_allclose(out, t_out, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dx, t_dx, rtol=1e-10, atol=1e-10)
    for name in t_grads:
        np.testing.assert_allclose(grads[name], t_grads[name], rtol=1e-10, atol=1e-10)


def test_fallbacks_and_empty_batch():
    """The readable implementation and an uninitialised lazy layer train through
    GenericStep (ConvTranspose3d through the step); an empty batch gives the readable
    form's empty output and zero gradients."""
    from manual_bp.layers import ConvTranspose3d, LazyConvTranspose2d

    assert isinstance(ConvTranspose3d(2, 3, 2).fast_step(), ConvTransposeStep)
    assert isinstance(ConvTranspose2d(2, 3, 2, implementation="readable").fast_step(),
                      GenericStep)  # fmt: skip
    assert isinstance(LazyConvTranspose2d(3, 2).fast_step(), GenericStep)
    layer = LazyConvTranspose2d(3, 2, stride=2, seed=0)
    layer.forward(np.zeros((1, 4, 3, 3)))
    assert isinstance(layer.fast_step(), ConvTransposeStep)
    step = ConvTranspose2d(2, 3, 2, seed=0).fast_step()
    out, dx, grads = run_step(step, np.zeros((0, 2, 4, 4)), np.zeros((0, 3, 5, 5)))
    assert out.shape == (0, 3, 5, 5) and dx.shape == (0, 2, 4, 4)
    assert all(not g.any() for g in grads.values())


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_decoder_trains_the_same_fast_and_readable(dtype):
    """A small decoder (conv → transposed convs → dense) through ``train()`` fast and
    ``train(fast=False)``: the same parameters after two epochs with an odd last batch."""
    spec = [("conv2d", (4, 3), {"stride": 2, "padding": 1}), "relu",
            ("conv-transpose2d", (3, 3), {"stride": 2, "padding": 1, "output_padding": 1}),
            "relu", "flatten", "dense", "softmax"]  # fmt: skip
    check_training(spec, (2, 6, 6), 3, n=11, batch_size=4, dtype=dtype)
    spec1 = [("conv-transpose1d", (3, 3), {"stride": 2, "groups": 1}), "tanh", "flatten",
             "dense", "softmax"]  # fmt: skip
    check_training(spec1, (2, 5), 3, n=9, batch_size=4, dtype=dtype)


def test_threads_give_identical_bits():
    """ConvTranspose2d/1d (each col2im form), InstanceNorm2d and RMSNorm steps with 1 and 2
    threads: outputs and gradients bit for bit (per-sample work split, reductions whole)."""
    from manual_bp.layers import InstanceNorm2d, RMSNorm

    rng = np.random.default_rng(1)
    cases = [
        (ConvTranspose2d(8, 6, 4, stride=2, padding=1, seed=0), (16, 8, 6, 6)),
        (ConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=1, seed=0), (9, 32, 9, 9)),
        (ConvTranspose1d(6, 4, 3, stride=2, groups=2, seed=0), (16, 6, 20)),
        (InstanceNorm2d(5, affine=True), (16, 5, 6, 6)),
        (RMSNorm(12), (16, 3, 12)),
    ]
    for layer, shape in cases:
        x = rng.standard_normal(shape)
        dout = rng.standard_normal((shape[0], *layer.output_shape(shape[1:])))
        assert_same_bits(*across_threads(lambda: run_fast(layer, x, dout)), layer)  # noqa: B023
