"""ConvStep on any number of spatial axes (Conv1d, Conv2d, Conv3d) and its stride-phase
col2im (``convolution_phases``): against the readable layer and torch autograd (float64,
random upstream gradients), every col2im form forced, 1 and 2 threads bit for bit, float32
kept float32, and the phase plan's bookkeeping on its own."""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.layers import convolution_fast
from manual_bp.layers._im2col import Geometry
from manual_bp.layers.convolution import Conv1d, Conv2d, Conv3d
from manual_bp.layers.convolution_fast import ConvStep
from manual_bp.layers.convolution_phases import phase_plan
from tests.fast_step_checks import across_threads, assert_same_bits, run_fast
from tests.fast_step_checks import run_step as _run

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")
CLASSES = {1: Conv1d, 2: Conv2d, 3: Conv3d}
FUNCTIONS = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d,
             3: torch.nn.functional.conv3d}  # fmt: skip
#: The knobs that pick each form: (SMALL_SAMPLE_FLOPS, BATCH_LAST_SIZE, PHASE_GROWTH).
FORMS = {
    "split forward, batch-last col2im": (1 << 30, 1 << 30, 1.5),
    "whole forward, channel-major col2im": (0, 0, 0.0),
    "whole forward, phase col2im": (0, 0, math.inf),
}


@st.composite
def geometries(draw, dims: int) -> dict:
    """Keyword arguments of a valid ``Conv{dims}d`` (every option per axis), its spatial
    size and a batch size. Sizes stay small: a 3-D case is a few thousand numbers."""
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    c_in = groups * draw(st.integers(1, max(1, 4 // groups)))
    c_out = groups * draw(st.integers(1, max(1, 4 // groups)))
    top = {1: 12, 2: 9, 3: 6}[dims]
    size = [draw(st.integers(1, top)) for _ in range(dims)]
    same = draw(st.integers(0, 5)) == 0
    stride = [1] * dims if same else [draw(st.integers(1, 4)) for _ in range(dims)]
    dilation = [draw(st.integers(1, 3)) for _ in range(dims)]
    padding = [draw(st.integers(0, 3)) for _ in range(dims)]
    kernel = []
    for a in range(dims):
        k_max = (size[a] + (0 if same else 2 * padding[a]) - 1) // dilation[a] + 1
        kernel.append(draw(st.one_of(st.just(k_max), st.integers(1, min(k_max, 4)))))
    kwargs = dict(in_channels=c_in, out_channels=c_out, kernel_size=tuple(kernel),
                  stride=tuple(stride), padding="same" if same else tuple(padding),
                  dilation=tuple(dilation), groups=groups, bias=draw(st.booleans()))  # fmt: skip
    return {"kwargs": kwargs, "size": tuple(size), "batch": draw(st.integers(1, 3))}


def _torch(layer, x: np.ndarray, dout: np.ndarray):
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(layer.params["weight"], requires_grad=True)
    bt = torch.tensor(layer.params["bias"], requires_grad=True) if layer.has_bias else None
    out = FUNCTIONS[layer.dims](
        xt, wt, bt, layer.stride, layer.padding, layer.dilation, layer.groups
    )
    out.backward(torch.tensor(dout))
    grads = {"weight": wt.grad.numpy()}
    if bt is not None:
        grads["bias"] = bt.grad.numpy()
    return out.detach().numpy(), xt.grad.numpy(), grads


def _close(a, b) -> None:
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


@settings(max_examples=40, deadline=None)
@given(st.data(), st.sampled_from([1, 2, 3]), st.sampled_from(sorted(FORMS)),
       st.integers(0, 2**31 - 1))  # fmt: skip
def test_step_matches_readable_and_torch(data, dims, form, seed):
    """Forward, ∂C/∂x, ∂C/∂W, ∂C/∂b of the step (each form forced) against the readable
    layer and torch, two steps of one batch shape (buffer reuse) and one of batch 1; the
    bottom layer (no ∂C/∂x) gives the same parameter gradients."""
    with forms(FORMS[form]):
        _check_step(data, dims, seed)


@contextmanager
def forms(values: tuple):
    """(SMALL_SAMPLE_FLOPS, BATCH_LAST_SIZE, PHASE_GROWTH) set for the block, then restored."""
    names = ("SMALL_SAMPLE_FLOPS", "BATCH_LAST_SIZE", "PHASE_GROWTH")
    saved = [getattr(convolution_fast, name) for name in names]
    for name, value in zip(names, values, strict=True):
        setattr(convolution_fast, name, value)
    try:
        yield
    finally:
        for name, value in zip(names, saved, strict=True):
            setattr(convolution_fast, name, value)


def _check_step(data, dims: int, seed: int) -> None:
    geometry = data.draw(geometries(dims))
    layer = CLASSES[dims](**geometry["kwargs"], seed=seed)
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
        for ref in ((ref_out, ref_dx, ref_grads), _torch(layer, x, dout)):
            _close(out, ref[0])
            _close(dx, ref[1])
            assert grads.keys() == ref[2].keys()
            for name in grads:
                _close(grads[name], ref[2][name])
        _, none, grads_only = _run(step, x, dout, need_dx=False)
        assert none is None
        for name in grads:
            np.testing.assert_array_equal(grads_only[name], grads[name])


@pytest.mark.parametrize(
    "cls, kwargs, size",
    [
        (Conv2d, dict(in_channels=32, out_channels=64, kernel_size=3, stride=2), (32, 32)),
        (
            Conv2d,
            dict(
                in_channels=4,
                out_channels=6,
                kernel_size=(3, 2),
                stride=(2, 3),
                padding=(1, 2),
                dilation=(2, 1),
                groups=2,
            ),
            (20, 19),
        ),
        (Conv3d, dict(in_channels=1, out_channels=8, kernel_size=3, padding=1), (16, 16, 16)),
        (
            Conv3d,
            dict(in_channels=8, out_channels=16, kernel_size=3, stride=2, padding=1),
            (16, 16, 16),
        ),
    ],
)
def test_threads_give_identical_bits(cls, kwargs, size):
    """cnn-bn's strided layer (the phase col2im), a grouped dilated strided one and
    bench_conv3d's two layers: 1 and 2 threads give the same bits."""
    layer = cls(**kwargs, seed=0)
    rng = np.random.default_rng(1)
    batch = 16 if cls is Conv2d else 8
    x = rng.standard_normal((batch, kwargs["in_channels"], *size))
    dout = rng.standard_normal((batch, *layer.output_shape(x.shape[1:])))
    assert_same_bits(*across_threads(lambda: run_fast(layer, x, dout)))


def test_the_phase_path_is_taken_up_to_its_growth_limit(monkeypatch):
    """cnn-bn's strided layer grows dU by 16·16/15·15: phased at and above that limit,
    channel-major just below it; stride 1 never phased; the result is the same."""
    layer = Conv2d(3, 4, 3, stride=2, seed=1)
    x = np.random.default_rng(2).standard_normal((2, 3, 32, 32))
    dout = np.random.default_rng(3).standard_normal((2, 4, 15, 15))
    growth = 256 / 225
    results = []
    for limit, phased in ((growth, True), (np.nextafter(growth, 0), False), (1.5, True)):
        monkeypatch.setattr(convolution_fast, "PHASE_GROWTH", limit)
        monkeypatch.setattr(convolution_fast, "BATCH_LAST_SIZE", 0)
        step = layer.fast_step()
        results.append(_run(step, x, dout))
        assert (step.buf["plan"] is not None) == phased
    _close(results[0][1], results[1][1])
    monkeypatch.setattr(convolution_fast, "PHASE_GROWTH", math.inf)
    step = Conv2d(3, 4, 3, padding=1, seed=1).fast_step()
    step.forward(x)
    assert step.buf["plan"] is None


@settings(max_examples=60, deadline=None)
@given(st.data(), st.sampled_from([1, 2, 3]))
def test_phase_plan_covers_every_input_position_once(data, dims):
    """Each input position is written by exactly one phase copy; each kernel offset's run
    lands where col2im puts it (its phase, shifted by ``q``) and stays inside the grid."""
    g = data.draw(geometries(dims))["kwargs"]
    size = tuple(data.draw(st.integers(1, 9)) for _ in range(dims))
    padding = tuple((data.draw(st.integers(0, 3)), data.draw(st.integers(0, 3)))
                    for _ in range(dims))  # fmt: skip
    geometry = Geometry(g["kernel_size"], g["stride"], padding, g["dilation"])
    out_size = geometry.output_size(size)
    if 0 in out_size:
        return
    plan = phase_plan(geometry, size, out_size)
    hits = np.zeros(size, int)
    for _, dst, src in plan.copies:
        hits[dst] += 1
        assert all(s.stop <= a for s, a in zip(src, plan.span, strict=True))
    assert (hits == 1).all()
    span, strides = plan.span, geometry.stride
    for offset, (phase, shift) in zip(geometry.offsets(), plan.taps, strict=True):
        dilated = (i * d for i, d in zip(offset, geometry.dilation, strict=True))
        pairs = [divmod(i, s) for i, s in zip(dilated, strides, strict=True)]
        q, r = [p[0] for p in pairs], [p[1] for p in pairs]
        assert phase == np.ravel_multi_index(r, strides)
        assert shift == np.ravel_multi_index(q, span)
        assert all(o - 1 + qa < a for o, qa, a in zip(out_size, q, span, strict=True))


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_float32_stays_float32(dims):
    """Every buffer of the step (the phase path's too) and every returned array is
    float32; the results agree with the float64 step to float32 precision."""
    kw = dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, groups=2)
    size = {1: (11,), 2: (10, 9), 3: (7, 6, 5)}[dims]
    cls = CLASSES[dims]
    layer32, layer64 = (cls(**kw, seed=3, dtype=dt) for dt in (np.float32, np.float64))
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


def test_conv3d_trains_with_conv_step_and_readable_keeps_generic():
    from manual_bp.layers.steps import GenericStep

    assert isinstance(Conv3d(2, 3, 3).fast_step(), ConvStep)
    assert isinstance(Conv3d(2, 3, 3, implementation="readable").fast_step(), GenericStep)
    assert isinstance(Conv3d(2, 3, 3, padding=1, padding_mode="reflect").fast_step(), GenericStep)
