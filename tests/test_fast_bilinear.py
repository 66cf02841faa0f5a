"""BilinearStep (the quadratic form of a stack as GEMMs) against the readable layer (the
conventions' magnitude bound, float64 and float32, leading axes of any number, an odd last
mini-batch), against torch (float64, random upstream gradients), and ``train()`` fast =
readable."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.layers import Bilinear
from manual_bp.layers.bilinear_steps import BilinearStep
from tests.fast_step_checks import check_against_readable, check_training, run_step

seeds = st.integers(0, 2**31 - 1)


@settings(max_examples=40, deadline=None)
@given(seed=seeds, features=st.integers(1, 5), out=st.integers(1, 4), bias=st.booleans(),
       lead=st.sampled_from([(), (3,), (2, 2)]), dtype=st.sampled_from([np.float64, np.float32]),
       batch=st.integers(1, 4))  # fmt: skip
def test_bilinear_step_matches_readable(seed, features, out, bias, lead, dtype, batch):
    """LAYER.bilinear (one input): y, ∂C/∂x (both sides), ∂C/∂A, ∂C/∂b."""
    rng = np.random.default_rng(seed)
    layer = Bilinear(features, features, out, bias=bias, seed=seed, dtype=dtype)
    assert isinstance(layer.fast_step(), BilinearStep)

    def make(n):
        return rng.standard_normal((n, *lead, features)).astype(dtype)

    check_against_readable(layer, make, (batch, batch, batch + 1), rng)


def test_bilinear_step_matches_torch():
    rng = np.random.default_rng(0)
    layer = Bilinear(4, 4, 3, seed=1)
    x = rng.standard_normal((5, 2, 4))
    u = rng.standard_normal((5, 2, 3))
    out, dx, grads = run_step(layer.fast_step(), x, u)
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(layer.params["weight"], requires_grad=True)
    bt = torch.tensor(layer.params["bias"], requires_grad=True)
    yt = torch.nn.functional.bilinear(xt, xt, wt, bt)
    yt.backward(torch.from_numpy(u))
    np.testing.assert_allclose(out, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grads["weight"], wt.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grads["bias"], bt.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_bilinear_model_trains_the_same_fast_and_readable(dtype):
    """dense → tanh → bilinear → dense through ``train()`` fast and ``train(fast=False)``."""
    spec = [("dense", (4,), {}), "tanh", ("bilinear", (5,), {}), "dense", "softmax"]
    check_training(spec, (6,), 3, n=11, batch_size=4, dtype=dtype)
