"""The fast forms of batch, layer and group norm (``manual_bp/layers/normalisation_fast.py``).

Each fast step is checked against the readable form AND against torch autograd in float64
(random shapes, random upstream gradients, affine on/off, momentum None, eval mode), gives
the same bits with 1 and 2 threads, and keeps a float32 model in float32.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.layers.normalisation import BatchNorm1d, BatchNorm2d, LayerNorm
from manual_bp.layers.normalisation_fast import BatchNormStep, GroupNormStep, LayerNormStep
from manual_bp.layers.normalisation_group import GroupNorm
from reference.checks_layers import norm_scales
from reference.compare import Comparison
from reference.normalisation_scales import norm_terms
from tests.fast_step_checks import across_threads, assert_same_bits
from tests.fast_step_checks import run_fast as _step

seeds = st.integers(0, 2**31 - 1)


def _clone(layer):
    return copy.deepcopy(layer)


@settings(max_examples=40)
@given(
    seed=seeds,
    spatial=st.sampled_from([(), (1,), (3,), (2, 2), (3, 5)]),
    batch=st.integers(1, 6),
    affine=st.booleans(),
    track=st.booleans(),
    momentum=st.sampled_from([None, 0.1, 1.0]),
    training=st.booleans(),
    bias=st.booleans(),
)
def test_batchnorm_step_matches_readable_and_torch(
    seed, spatial, batch, affine, track, momentum, training, bias
):
    """LAYER.batchnorm / .running / .eval: fast step = readable form = torch, float64."""
    rng = np.random.default_rng(seed)
    channels = int(rng.integers(1, 5))
    if (training or not track) and batch * int(np.prod(spatial)) < 2:
        batch = 2
    cls = BatchNorm2d if len(spatial) == 2 else BatchNorm1d
    options = {"momentum": momentum, "affine": affine, "track_running_stats": track, "bias": bias}
    ours = cls(channels, eps=float(rng.choice([1e-5, 0.1])), **options)
    for array in ours.params.values():  # γ and, unless bias=False, β
        array[...] = rng.standard_normal(channels)
    if track:
        ours.buffers["running_mean"][...] = rng.standard_normal(channels)
        ours.buffers["running_var"][...] = rng.uniform(0.5, 2.0, channels)
        ours.buffers["num_batches_tracked"][...] = int(rng.integers(0, 4))
    ours.train(training)
    readable, before = _clone(ours), _clone(ours)
    x = rng.standard_normal((batch, channels, *spatial)) * 2.0 + rng.standard_normal()
    u = rng.standard_normal(x.shape)

    y, dx, grads = _step(ours, x, u)
    ref_y, cache = readable.forward(x)
    ref_dx, ref_grads = readable.backward(u, cache)
    theirs = (torch.nn.BatchNorm2d if len(spatial) == 2 else torch.nn.BatchNorm1d)(
        channels, eps=ours.eps, dtype=torch.float64, **options
    )
    with torch.no_grad():  # parameters and buffers as they were before the step
        for name, p in theirs.named_parameters():
            p.copy_(torch.from_numpy(before.params[name]))
        for name, b in theirs.named_buffers():
            b.copy_(torch.from_numpy(np.asarray(before.buffers[name])))
    theirs.train(training)
    xt = torch.tensor(x, requires_grad=True)
    out_t = theirs(xt)
    (out_t * torch.from_numpy(u)).sum().backward()

    scales = norm_scales(readable, u, cache)
    eq = "LAYER.batchnorm" if training or not track else "LAYER.batchnorm.eval"
    for ref in (ref_y, out_t.detach().numpy()):
        Comparison(eq, "y", y, ref, np.abs(ref_y) + 1).check()
    for ref in (ref_dx, xt.grad.numpy()):
        Comparison(eq, "∂C/∂x", dx, ref, scales.get("x")).check()
    for name, p in theirs.named_parameters():
        for ref in (ref_grads[name], p.grad.numpy()):
            Comparison(eq, name, grads[name], ref, scales.get(name)).check()
    for name, b in theirs.named_buffers():
        Comparison("LAYER.batchnorm.running", name, ours.buffers[name], b.numpy()).check()
        Comparison(
            "LAYER.batchnorm.running", name, ours.buffers[name], readable.buffers[name]
        ).check()
    if affine:  # the lowest layer: gradients only
        _, none, only = _step(_clone(readable), x, u, need_dx=False)
        assert none is None and set(only) == {"weight", "bias"} - (set() if bias else {"bias"})


@settings(max_examples=40)
@given(
    seed=seeds,
    axes=st.integers(1, 3),
    lead=st.integers(1, 2),
    affine=st.booleans(),
    bias=st.booleans(),
)
def test_layernorm_step_matches_readable_and_torch(seed, axes, lead, affine, bias):
    """LAYER.layernorm: fast step = readable form = torch, float64, 1–3 normalised axes."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in rng.integers(1, 5, lead + axes))
    normalized = shape[lead:]
    ours = LayerNorm(
        normalized, eps=float(rng.choice([1e-5, 0.1])), elementwise_affine=affine, bias=bias
    )
    for array in ours.params.values():  # γ and, unless bias=False, β
        array[...] = rng.standard_normal(normalized)
    x = rng.standard_normal(shape) * 2.0 + rng.standard_normal()
    u = rng.standard_normal(shape)
    y, dx, grads = _step(ours, x, u)
    ref_y, cache = ours.forward(x)
    ref_dx, ref_grads = ours.backward(u, cache)
    theirs = torch.nn.LayerNorm(
        normalized, eps=ours.eps, elementwise_affine=affine, bias=bias, dtype=torch.float64
    )
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            p.copy_(torch.from_numpy(ours.params[name]))
    xt = torch.tensor(x, requires_grad=True)
    out_t = theirs(xt)
    (out_t * torch.from_numpy(u)).sum().backward()
    scales = norm_scales(ours, u, cache)
    for ref in (ref_y, out_t.detach().numpy()):
        Comparison("LAYER.layernorm", "y", y, ref, np.abs(ref_y) + 1).check()
    for ref in (ref_dx, xt.grad.numpy()):
        Comparison("LAYER.layernorm", "∂C/∂x", dx, ref, scales.get("x")).check()
    for name, p in theirs.named_parameters():
        for ref in (ref_grads[name], p.grad.numpy()):
            Comparison("LAYER.layernorm", name, grads[name], ref, scales.get(name)).check()


@settings(max_examples=40)
@given(
    seed=seeds,
    channels_groups=st.sampled_from([(1, 1), (4, 2), (6, 3), (6, 1), (4, 4)]),
    spatial=st.sampled_from([(), (1,), (3,), (2, 2), (3, 5)]),
    batch=st.integers(0, 5),
    affine=st.booleans(),
    bias=st.booleans(),
    need_dx=st.booleans(),
)
def test_groupnorm_step_matches_readable_and_torch(
    seed, channels_groups, spatial, batch, affine, bias, need_dx
):
    """LAYER.groupnorm: the fused step (rows of the (N, G, M) view) = readable form = torch
    (F.group_norm), float64, the empty batch included."""
    rng = np.random.default_rng(seed)
    channels, groups = channels_groups
    shape = (batch, channels, *spatial)
    if batch and batch * channels // groups * int(np.prod(spatial)) < 2:
        shape = (2, *shape[1:])
    layer = GroupNorm(groups, channels, 1e-3, affine, bias=bias)
    for array in layer.params.values():
        array[...] = rng.standard_normal(array.shape)
    x = rng.standard_normal(shape) * 3 + 1
    u = rng.standard_normal(shape)
    y, dx, grads = _step(_clone(layer), x, u, need_dx)
    ref_y, cache = layer.forward(x)
    ref_dx, ref_grads = layer.backward(u, cache)
    scales = norm_terms(layer, u, cache)
    xt = torch.tensor(x, requires_grad=True)
    params = {n: torch.tensor(p, requires_grad=True) for n, p in layer.params.items()}
    out = torch.nn.functional.group_norm(xt, groups, params.get("weight"), params.get("bias"), 1e-3)
    (out * torch.tensor(u)).sum().backward()
    eq = "LAYER.groupnorm"
    for oracle, want_y, want_dx, want_g in (
        ("readable", ref_y, ref_dx, ref_grads),
        (
            "torch",
            out.detach().numpy(),
            xt.grad.numpy(),
            {n: p.grad.numpy() for n, p in params.items()},
        ),
    ):
        Comparison(eq, "y", y, want_y, np.abs(y) + scales["output"], oracle=oracle).check()
        if need_dx:
            Comparison(eq, "dx", dx, want_dx, scales.get("x"), oracle=oracle).check()
        else:
            assert dx is None
        for name in layer.params:
            Comparison(eq, name, grads[name], want_g[name], scales[name], oracle=oracle).check()


def _layers(dtype):
    rng = np.random.default_rng(7)
    bn = BatchNorm2d(32, dtype=dtype)
    bn.params["weight"][...] = rng.standard_normal(32)
    bn.params["bias"][...] = rng.standard_normal(32)
    ln = LayerNorm(128, dtype=dtype)
    ln.params["weight"][...] = rng.standard_normal(128)
    ln.params["bias"][...] = rng.standard_normal(128)
    gn = GroupNorm(8, 32, dtype=dtype)
    gn.params["weight"][...] = rng.standard_normal(32)
    gn.params["bias"][...] = rng.standard_normal(32)
    return [(bn, (16, 32, 16, 16)), (ln, (16, 64, 128)), (gn, (16, 32, 8, 8))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False])
def test_one_and_two_threads_give_the_same_bits(dtype, training):
    """Every pass split over rows (elementwise or per-row), every Σ over rows unsplit."""
    for layer, shape in _layers(dtype):
        layer.train(training)
        rng = np.random.default_rng(1)
        x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
        u = rng.standard_normal(shape).astype(dtype)
        assert_same_bits(*across_threads(lambda: _step(copy.deepcopy(layer), x, u)), layer)  # noqa: B023


def test_float32_stays_float32_and_matches_float64():
    """A float32 model keeps float32 buffers, outputs and gradients (no hidden dtype change),
    within float32 rounding of the float64 step."""
    pairs = zip(_layers(np.float32), _layers(np.float64), strict=True)
    for (layer32, shape), (layer64, _) in pairs:
        rng = np.random.default_rng(3)
        x = rng.standard_normal(shape) * 3 + 1
        u = rng.standard_normal(shape)
        y32, dx32, g32 = _step(layer32, x.astype(np.float32), u.astype(np.float32))
        y64, dx64, g64 = _step(layer64, x, u)
        step = copy.deepcopy(layer32).fast_step()
        step.forward(x.astype(np.float32))
        assert all(b.dtype == np.float32 for b in next(iter(step._buffers.values())))
        assert y32.dtype == dx32.dtype == np.float32
        np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(dx32, dx64, rtol=1e-3, atol=1e-3 * np.abs(dx64).max())
        for name in g32:
            assert g32[name].dtype == np.float32
            np.testing.assert_allclose(
                g32[name], g64[name], rtol=1e-3, atol=1e-4 * np.abs(g64[name]).max() * 10
            )
        if isinstance(layer32, BatchNorm2d):
            for name in ("running_mean", "running_var"):
                assert layer32.buffers[name].dtype == np.float32
                np.testing.assert_allclose(
                    layer32.buffers[name], layer64.buffers[name], rtol=1e-5, atol=1e-6
                )


def test_steps_are_the_layers_fast_forms():
    assert isinstance(BatchNorm1d(3).fast_step(), BatchNormStep)
    assert isinstance(BatchNorm2d(3).fast_step(), BatchNormStep)
    assert isinstance(LayerNorm(3).fast_step(), LayerNormStep)
    assert isinstance(GroupNorm(1, 3).fast_step(), GroupNormStep)
