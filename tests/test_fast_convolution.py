"""ConvStep (the convolutions' fast training step) against the readable Conv2d/Conv1d
forward/backward and against torch autograd (float64, random upstream gradients), with 1 and
2 threads bit for bit, and in float32 (every buffer and returned array float32)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.layers.convolution import Conv1d, Conv2d
from manual_bp.layers.convolution_fast import ConvStep
from tests.fast_step_checks import across_threads, assert_same_bits, run_fast
from tests.fast_step_checks import run_step as _run
from tests.test_convolution import conv_geometries

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")
seeds = st.integers(0, 2**31 - 1)


def _layer(geometry: dict, cls, seed: int, dtype=np.float64):
    kwargs = dict(geometry["kwargs"], implementation="fast")
    return cls(**kwargs, seed=seed, dtype=dtype)


def _torch(layer, x, dout):
    F = torch.nn.functional
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(layer.params["weight"], requires_grad=True)
    bt = torch.tensor(layer.params["bias"], requires_grad=True) if layer.has_bias else None
    conv = F.conv2d if isinstance(layer, Conv2d) else F.conv1d
    out = conv(xt, wt, bt, layer.stride, layer.padding, layer.dilation, layer.groups)
    out.backward(torch.tensor(dout))
    grads = {"weight": wt.grad.numpy()}
    if bt is not None:
        grads["bias"] = bt.grad.numpy()
    return out.detach().numpy(), xt.grad.numpy(), grads


@settings(max_examples=60, deadline=None)
@given(st.data(), st.sampled_from([Conv2d, Conv1d]), seeds)
def test_step_matches_readable_and_torch(data, cls, seed):
    """Forward, ∂C/∂x, ∂C/∂W, ∂C/∂b of the step against the readable layer and torch, for
    two steps of one batch shape (buffer reuse) and one of another batch size; each form of
    the forward and of col2im (``SMALL_SAMPLE_FLOPS``, ``BATCH_LAST_SIZE`` forced)."""
    from manual_bp.layers import convolution_fast

    saved = convolution_fast.SMALL_SAMPLE_FLOPS, convolution_fast.BATCH_LAST_SIZE
    small = data.draw(st.sampled_from([0, 1 << 30]))
    convolution_fast.SMALL_SAMPLE_FLOPS = convolution_fast.BATCH_LAST_SIZE = small
    try:
        _check_step(data, cls, seed)
    finally:
        convolution_fast.SMALL_SAMPLE_FLOPS, convolution_fast.BATCH_LAST_SIZE = saved


def _check_step(data, cls, seed):
    geometry = data.draw(conv_geometries(dims=2 if cls is Conv2d else 1))
    layer = _layer(geometry, cls, seed)
    step = layer.fast_step()
    assert isinstance(step, ConvStep)
    rng = np.random.default_rng(seed)
    for batch in (geometry["batch"], geometry["batch"], 1):
        x = rng.standard_normal((batch, layer.in_channels, *geometry["size"]))
        dout = rng.standard_normal((batch, *layer.output_shape(x.shape[1:])))
        out, dx, grads = _run(step, x, dout)
        layer.implementation = "readable"
        ref_out, cache = layer.forward(x)
        ref_dx, ref_grads = layer.backward(dout, cache)
        layer.implementation = "fast"
        t_out, t_dx, t_grads = _torch(layer, x, dout)
        for ref in ((ref_out, ref_dx, ref_grads), (t_out, t_dx, t_grads)):
            np.testing.assert_allclose(out, ref[0], rtol=1e-10, atol=1e-10)
            np.testing.assert_allclose(dx, ref[1], rtol=1e-10, atol=1e-10)
            assert grads.keys() == ref[2].keys()
            for name in grads:
                np.testing.assert_allclose(grads[name], ref[2][name], rtol=1e-10, atol=1e-10)
        # the bottom layer: the same parameter gradients, no ∂C/∂x
        _, none, grads_only = _run(step, x, dout, need_dx=False)
        assert none is None
        for name in grads:
            np.testing.assert_array_equal(grads_only[name], grads[name])


@pytest.mark.parametrize(
    "kwargs, size",
    [
        (dict(in_channels=1, out_channels=6, kernel_size=5, padding=2), (28, 28)),  # LeNet 1
        (dict(in_channels=6, out_channels=16, kernel_size=5), (14, 14)),  # LeNet 2
        (dict(in_channels=3, out_channels=32, kernel_size=3, padding=1), (32, 32)),  # cnn-bn 1
        (dict(in_channels=32, out_channels=64, kernel_size=3, stride=2), (32, 32)),  # cnn-bn 2
        (dict(in_channels=8, out_channels=6, kernel_size=1, groups=2), (9, 7)),  # pointwise
    ],
)
def test_threads_give_identical_bits(kwargs, size):
    """The workloads' layers with 1 and 2 threads: outputs and gradients bit for bit
    (the per-sample work is split, the reductions over the batch are not)."""
    layer = Conv2d(**kwargs, seed=0)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, kwargs["in_channels"], *size))
    dout = rng.standard_normal((64, *layer.output_shape(x.shape[1:])))
    assert_same_bits(*across_threads(lambda: run_fast(layer, x, dout)))


@pytest.mark.parametrize("cls", [Conv2d, Conv1d])
def test_float32_stays_float32(cls):
    """A float32 layer: every buffer of the step and every returned array is float32, and
    the results agree with the float64 step to float32 precision."""
    size = (10, 9) if cls is Conv2d else (11,)
    kw = dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, groups=2)
    layer32 = cls(**kw, seed=3, dtype=np.float32)
    layer64 = cls(**kw, seed=3, dtype=np.float64)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 4, *size))
    dout = rng.standard_normal((5, *layer64.output_shape(x.shape[1:])))
    step = layer32.fast_step()
    out, dx, grads = _run(step, x.astype(np.float32), dout.astype(np.float32))
    assert out.dtype == dx.dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads.values())
    for buffers in step._buffers.values():
        for value in buffers.values():
            if isinstance(value, np.ndarray):
                assert value.dtype == np.float32
    ref = _run(layer64.fast_step(), x, dout)
    np.testing.assert_allclose(out, ref[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dx, ref[1], rtol=1e-4, atol=1e-5)
    for name in grads:
        np.testing.assert_allclose(grads[name], ref[2][name], rtol=1e-4, atol=1e-4)


def test_readable_implementation_keeps_generic_step():
    from manual_bp.layers.steps import GenericStep

    assert isinstance(Conv2d(2, 3, 3, implementation="readable").fast_step(), GenericStep)


@pytest.mark.parametrize("small", [0, 1 << 30])
def test_both_forms(monkeypatch, small):
    """The forward's products whole for BLAS's threads or per slice of samples with im2col
    over ours, col2im channel-major or batch-last (``SMALL_SAMPLE_FLOPS``,
    ``BATCH_LAST_SIZE`` force each form) against torch, float64, with and without ∂C/∂x:
    cnn-bn's second layer and a grouped, padded, strided one."""
    from manual_bp.layers import convolution_fast

    monkeypatch.setattr(convolution_fast, "SMALL_SAMPLE_FLOPS", small)
    monkeypatch.setattr(convolution_fast, "BATCH_LAST_SIZE", small)
    rng = np.random.default_rng(4)
    for kwargs, size, batch in [
        (dict(in_channels=32, out_channels=64, kernel_size=3, stride=2), (12, 12), 9),
        (dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, groups=2),
         (9, 8), 7),
    ]:  # fmt: skip
        layer = Conv2d(**kwargs, seed=5)
        x = rng.standard_normal((batch, kwargs["in_channels"], *size))
        dout = rng.standard_normal((batch, *layer.output_shape(x.shape[1:])))
        out_t, dx_t, grads_t = _torch(layer, x, dout)
        for need_dx in (True, False):
            out, dx, grads = _run(layer.fast_step(), x, dout, need_dx)
            np.testing.assert_allclose(out, out_t, rtol=1e-10, atol=1e-10)
            if need_dx:
                np.testing.assert_allclose(dx, dx_t, rtol=1e-10, atol=1e-10)
            for name in grads_t:
                np.testing.assert_allclose(grads[name], grads_t[name], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("need_dx", [True, False])
def test_padding_modes_train_with_the_generic_step(mode, need_dx):
    """A padding mode other than zeros trains with the layer's own forward/backward (the
    fused zeros path stays as it is): the step's out, dx and gradients equal torch's."""
    from manual_bp.layers.steps import GenericStep
    from reference.checks_convolution import _conv

    rng = np.random.default_rng(3)
    for layer, x in (
        (Conv2d(3, 4, 3, stride=2, padding=(1, 2), padding_mode=mode, seed=1), (2, 3, 7, 6)),
        (Conv1d(2, 4, 4, padding="same", padding_mode=mode, seed=2), (3, 2, 9)),
    ):
        step = layer.fast_step()
        assert isinstance(step, GenericStep)
        x = rng.standard_normal(x)
        dout = rng.standard_normal((x.shape[0], *layer.output_shape(x.shape[1:])))
        out, dx, grads = _run(step, x, dout, need_dx)
        xt = torch.tensor(x, requires_grad=True)
        params = {k: torch.tensor(v, requires_grad=True) for k, v in layer.params.items()}
        out_t = _conv(layer, params, {}, xt, None)
        out_t.backward(torch.tensor(dout))
        np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-12, atol=1e-12)
        if need_dx:
            np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)
        for name, tensor in params.items():
            np.testing.assert_allclose(grads[name], tensor.grad.numpy(), rtol=1e-12, atol=1e-12)
