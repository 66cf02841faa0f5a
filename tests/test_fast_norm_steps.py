"""InstanceNormStep (group norm's step, one group per channel) and RMSNormStep against the
readable layers (float64 and float32, within the conventions' magnitude bound) and torch
(float64, random upstream gradients): every option, an odd last mini-batch, and ``train()``
fast against ``train(fast=False)``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.layers import InstanceNorm1d, InstanceNorm2d, InstanceNorm3d, RMSNorm
from manual_bp.layers.normalisation_steps import InstanceNormStep, RMSNormStep
from tests.fast_step_checks import check_against_readable, check_training, run_step

seeds = st.integers(0, 2**31 - 1)
INSTANCE = {1: InstanceNorm1d, 2: InstanceNorm2d, 3: InstanceNorm3d}


def _norm_magnitudes(axes):
    """``S`` of a normalisation ``x̂ = (x − μ)s`` (μ = 0 for RMS norm) over ``axes``: the
    readable sums on absolute values, with ``|x − μ|`` bounded by ``|x| + |μ|`` (the
    cancellation of the centring is where rounding enters)."""

    def magnitudes(layer, x, dout):
        out, cache = layer.forward(x)
        ax = axes(x)
        s = np.broadcast_to(cache.inv_std, x.shape)
        mean = 0.0 if isinstance(layer, RMSNorm) else np.abs(x.mean(axis=ax, keepdims=True))
        big = (np.abs(x) + mean) * s  # |x̂| with the centring's magnitude
        w = layer.params.get("weight")
        gamma = 1.0 if w is None else np.abs(w.reshape(layer_shape(layer, x)))
        s_out = gamma * big + np.abs(out)
        g = np.abs(dout) * gamma
        mean_g = g.mean(axis=ax, keepdims=True)
        s_dx = s * (g + mean_g + big * (g * big).mean(axis=ax, keepdims=True))
        rms = isinstance(layer, RMSNorm)
        lead = tuple(i for i in range(x.ndim) if (i not in ax if rms else i != 1))
        grads = {}
        if "weight" in layer.params:
            grads["weight"] = (np.abs(dout) * big).sum(axis=lead)
        if "bias" in layer.params:
            grads["bias"] = np.abs(dout).sum(axis=lead)
        return s_out, s_dx, grads

    return magnitudes


def layer_shape(layer, x):
    if isinstance(layer, RMSNorm):
        return layer.normalized_shape
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


@settings(max_examples=40, deadline=None)
@given(seed=seeds, dims=st.sampled_from([1, 2, 3]), affine=st.booleans(), bias=st.booleans(),
       track=st.booleans(), momentum=st.sampled_from([None, 0.1, 1.0]), training=st.booleans(),
       dtype=st.sampled_from([np.float64, np.float32]), batch=st.integers(1, 4))  # fmt: skip
def test_instance_norm_step_matches_readable(
    seed, dims, affine, bias, track, momentum, training, dtype, batch
):
    """LAYER.instancenorm (and .running, eval with running statistics): the step against
    the readable form on batches ``b, b, b ± 1`` (the running statistics updated alike)."""
    rng = np.random.default_rng(seed)
    channels = int(rng.integers(1, 4))
    size = tuple(int(v) for v in rng.integers(1, 5, size=dims))
    if np.prod(size) == 1:
        size = (2, *size[1:])
    options = dict(momentum=momentum, affine=affine, track_running_stats=track, bias=bias)
    layer = INSTANCE[dims](channels, eps=float(rng.choice([1e-5, 0.1])), **options, dtype=dtype)
    for array in layer.params.values():
        array[...] = rng.standard_normal(channels)
    if track:
        layer.buffers["running_mean"][...] = rng.standard_normal(channels)
        layer.buffers["running_var"][...] = rng.uniform(0.5, 2.0, channels)
    layer.train(training)
    assert isinstance(layer.fast_step(), InstanceNormStep)
    offset = rng.standard_normal()

    def make(n):
        return (rng.standard_normal((n, channels, *size)) * 2.0 + offset).astype(dtype)

    check_against_readable(
        layer, make, (batch, batch, batch + 1), rng,
        magnitudes=_norm_magnitudes(lambda x: tuple(range(2, x.ndim))),
    )  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(
    seed=seeds,
    shape=st.sampled_from([(3,), (2, 3), (1,), (4, 1)]),
    lead=st.sampled_from([(), (2,), (3, 2)]),
    affine=st.booleans(),
    eps=st.sampled_from([None, 1e-6, 0.5]),
    dtype=st.sampled_from([np.float64, np.float32]),
)
def test_rms_norm_step_matches_readable(seed, shape, lead, affine, eps, dtype):
    """LAYER.rmsnorm: the step against the readable form, leading axes of any number,
    ``eps=None`` (the dtype's ε), batches ``b, b, b + 1``."""
    rng = np.random.default_rng(seed)
    layer = RMSNorm(shape, eps=eps, elementwise_affine=affine, dtype=dtype)
    for array in layer.params.values():
        array[...] = rng.standard_normal(array.shape)
    assert isinstance(layer.fast_step(), RMSNormStep)

    def make(n):
        return rng.standard_normal((n, *lead, *shape)).astype(dtype)

    k = len(shape)
    check_against_readable(
        layer, make, (3, 3, 2), rng,
        magnitudes=_norm_magnitudes(lambda x: tuple(range(x.ndim - k, x.ndim))),
    )  # fmt: skip


@settings(max_examples=15, deadline=None)
@given(seed=seeds, affine=st.booleans(), dims=st.sampled_from([1, 2]))
def test_steps_match_torch(seed, affine, dims):
    """Both steps against torch autograd, float64, random upstream gradients."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, 2, *(4,) * dims)) + 1.0
    u = rng.standard_normal(x.shape)
    for ours, theirs in (
        (INSTANCE[dims](2, affine=affine), torch.nn.__dict__[f"InstanceNorm{dims}d"](
            2, affine=affine, dtype=torch.float64)),
        (RMSNorm(x.shape[-1], elementwise_affine=affine),
         torch.nn.RMSNorm(x.shape[-1], elementwise_affine=affine, dtype=torch.float64)),
    ):  # fmt: skip
        for array in ours.params.values():
            array[...] = rng.standard_normal(array.shape)
        with torch.no_grad():
            for name, array in ours.params.items():
                getattr(theirs, name).copy_(torch.from_numpy(array))
        out, dx, grads = run_step(ours.fast_step(), x, u)
        xt = torch.tensor(x, requires_grad=True)
        yt = theirs(xt)
        yt.backward(torch.from_numpy(u))
        np.testing.assert_allclose(out, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-10)
        for name in grads:
            np.testing.assert_allclose(grads[name], getattr(theirs, name).grad.numpy(),
                                       rtol=1e-10, atol=1e-10)  # fmt: skip


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_norm_models_train_the_same_fast_and_readable(dtype):
    """conv → InstanceNorm2d (affine, running statistics) → ReLU → dense, dense → RMSNorm →
    tanh → dense and conv → LocalResponseNorm → ReLU → dense through ``train()`` fast and
    ``train(fast=False)``: the same parameters after two epochs with an odd last batch."""
    spec = [("conv2d", (3, 3), {"padding": 1}),
            ("instancenorm2d", (), {"affine": True, "track_running_stats": True}), "relu",
            "flatten", "dense", "softmax"]  # fmt: skip
    check_training(spec, (2, 5, 5), 3, n=11, batch_size=4, dtype=dtype)
    spec = [("dense", (6,), {}), "rmsnorm", "tanh", "dense", "softmax"]
    check_training(spec, (5,), 3, n=9, batch_size=4, dtype=dtype)
    spec = [("conv1d", (4, 2), {}), ("localresponsenorm", (3,), {"alpha": 0.5}), "relu",
            "flatten", "dense", "softmax"]  # fmt: skip
    check_training(spec, (2, 5), 3, n=9, batch_size=4, dtype=dtype)


@settings(max_examples=40, deadline=None)
@given(seed=seeds, size=st.integers(1, 6), channels=st.integers(1, 5),
       spatial=st.sampled_from([(1,), (3,), (2, 2), (2, 1, 2)]),
       k=st.sampled_from([1.0, 2.0, 0.5]), beta=st.sampled_from([0.75, 0.5, 1.5]),
       dtype=st.sampled_from([np.float64, np.float32]), batch=st.integers(1, 4))  # fmt: skip
def test_lrn_step_is_the_readable_form(seed, size, channels, spatial, k, beta, dtype, batch):
    """LAYER.lrn: out and ∂C/∂x bit for bit, windows wider and narrower than the channels
    (both reaches clipped at the ends), odd and even sizes."""
    from manual_bp.layers import LocalResponseNorm
    from manual_bp.layers.normalisation_steps import LRNStep

    rng = np.random.default_rng(seed)
    layer = LocalResponseNorm(size, alpha=float(rng.choice([1e-4, 0.5])), beta=beta, k=k)
    assert isinstance(layer.fast_step(), LRNStep)

    def make(n):
        return rng.standard_normal((n, channels, *spatial)).astype(dtype)

    check_against_readable(layer, make, (batch, batch, batch + 1), rng, exact=True)
