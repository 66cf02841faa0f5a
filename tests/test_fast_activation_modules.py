"""PReLUStep and GLUStep (the readable expressions in buffers) against the readable layers
bit for bit (float64 and float32, every option, an odd last mini-batch, ties at x = 0), and
against torch (float64, random upstream gradients); ``train()`` fast = readable."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.layers import GLU, PReLU
from manual_bp.layers.activation_steps import GLUStep, PReLUStep
from tests.fast_step_checks import check_against_readable, check_training, run_step

seeds = st.integers(0, 2**31 - 1)
dtypes = st.sampled_from([np.float64, np.float32])


def _input(rng, shape, dtype, zeros):
    """Random values; with ``zeros`` a third of them exactly 0 (the kink of PReLU)."""
    x = rng.standard_normal(shape)
    if zeros:
        x[rng.random(shape) < 1 / 3] = 0.0
    return x.astype(dtype)


@settings(max_examples=40, deadline=None)
@given(seed=seeds, ndim=st.integers(1, 4), shared=st.booleans(), dtype=dtypes,
       zeros=st.booleans(), batch=st.integers(1, 4))  # fmt: skip
def test_prelu_step_is_the_readable_form(seed, ndim, shared, dtype, zeros, batch):
    """LAYER.prelu: out, ∂C/∂x, ∂C/∂w bit for bit, one shared slope or one per channel."""
    rng = np.random.default_rng(seed)
    rest = tuple(int(v) for v in rng.integers(1, 4, size=ndim - 1))
    channels = rest[0] if rest else 1
    layer = PReLU(1 if shared or not rest else channels, dtype=dtype)
    layer.params["weight"][...] = rng.standard_normal(layer.params["weight"].shape)
    assert isinstance(layer.fast_step(), PReLUStep)
    check_against_readable(
        layer, lambda n: _input(rng, (n, *rest), dtype, zeros), (batch, batch, batch + 1), rng,
        exact=True,
    )  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(seed=seeds, ndim=st.integers(1, 4), dtype=dtypes, batch=st.integers(1, 4),
       data=st.data())  # fmt: skip
def test_glu_step_is_the_readable_form(seed, ndim, dtype, batch, data):
    """LAYER.glu: out and ∂C/∂x bit for bit, ``dim`` any axis but the batch axis (negative
    and positive), large |b| (the sigmoid's saturated tails)."""
    rng = np.random.default_rng(seed)
    shape = [int(v) for v in rng.integers(1, 4, size=ndim)]
    dim = data.draw(st.integers(1, ndim)) if data.draw(st.booleans()) else -data.draw(
        st.integers(1, ndim))  # fmt: skip
    shape[dim - 1 if dim > 0 else dim] *= 2
    layer = GLU(dim)
    assert isinstance(layer.fast_step(), GLUStep)
    scale = data.draw(st.sampled_from([1.0, 30.0]))

    def make(n):
        return (rng.standard_normal((n, *shape)) * scale).astype(dtype)

    check_against_readable(layer, make, (batch, batch, batch + 1), rng, exact=True)


def test_steps_match_torch():
    """Both steps against torch autograd, float64, random upstream gradients."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3, 4))
    x[0, 0, :2] = 0.0
    u = rng.standard_normal(x.shape)
    prelu = PReLU(3)
    prelu.params["weight"][...] = rng.standard_normal(3)
    out, dx, grads = run_step(prelu.fast_step(), x, u)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(prelu.params["weight"],
                                                               requires_grad=True)  # fmt: skip
    yt = torch.nn.functional.prelu(xt, wt)
    yt.backward(torch.from_numpy(u))
    np.testing.assert_allclose(out, yt.detach().numpy(), rtol=1e-15)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-15)
    np.testing.assert_allclose(grads["weight"], wt.grad.numpy(), rtol=1e-12)
    glu = GLU(1)
    x = rng.standard_normal((5, 4, 3)) * 10
    u = rng.standard_normal((5, 2, 3))
    out, dx, _ = run_step(glu.fast_step(), x, u)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.glu(xt, 1)
    yt.backward(torch.from_numpy(u))
    np.testing.assert_allclose(out, yt.detach().numpy(), rtol=1e-14, atol=1e-300)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-13, atol=1e-300)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_activation_models_train_the_same_fast_and_readable(dtype):
    """dense → PReLU → dense(8) → GLU → dense through ``train()`` fast and
    ``train(fast=False)``: the same parameters after two epochs with an odd last batch."""
    spec = [("dense", (6,), {}), ("prelu", (6,), {}), ("dense", (8,), {}), "glu", "dense",
            "softmax"]  # fmt: skip
    check_training(spec, (5,), 3, n=11, batch_size=4, dtype=dtype)


@settings(max_examples=30, deadline=None)
@given(seed=seeds, ndim=st.integers(1, 4), dtype=dtypes, zeros=st.booleans(),
       training=st.booleans(), batch=st.integers(1, 4))  # fmt: skip
def test_rrelu_step_is_the_readable_form(seed, ndim, dtype, zeros, training, batch):
    """LAYER.rrelu: the same slopes from the same MT19937 stream (training) or the
    evaluation slope, out and ∂C/∂x bit for bit, and the generator left in the same state."""
    from manual_bp.layers import RReLU
    from manual_bp.layers.activation_steps import RReLUStep

    rng = np.random.default_rng(seed)
    layer = RReLU(0.1, 0.4, seed=seed)
    layer.train(training)
    assert isinstance(layer.fast_step(), RReLUStep)
    rest = tuple(int(v) for v in rng.integers(1, 4, size=ndim - 1))
    check_against_readable(
        layer, lambda n: _input(rng, (n, *rest), dtype, zeros), (batch, batch, batch + 1), rng,
        exact=True,
    )  # fmt: skip


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_rrelu_model_trains_the_same_fast_and_readable(dtype):
    """dense → RReLU → dense: the same slopes drawn either way, so the same parameters (and
    the same generator state) after two epochs with an odd last batch."""
    spec = [("dense", (6,), {}), "rrelu", "dense", "softmax"]
    check_training(spec, (5,), 3, n=11, batch_size=4, dtype=dtype)
