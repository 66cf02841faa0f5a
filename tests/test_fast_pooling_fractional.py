"""FractionalMaxPoolStep (FractionalMaxPool2d/3d's fast training step: every plane's
windows at once) against the readable layer bit for bit (maxima, winners, ∂C/∂x, the
generator's state after the draw; the explicit ``_random_samples`` form too) on
hypothesis-drawn geometries with ties and NaNs, float32/float64, an odd last batch,
``need_dx`` false; against torch (float64, random upstream gradients); ``train()`` fast
against ``train(fast=False)``; 1 and 2 threads giving the same bits."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.layers import FractionalMaxPool2d, FractionalMaxPool3d
from manual_bp.layers.pooling_steps import FractionalMaxPoolStep
from tests.fast_step_checks import across_threads, check_against_readable, check_training, run_step

seeds = st.integers(0, 2**31 - 1)
CLASSES = {2: FractionalMaxPool2d, 3: FractionalMaxPool3d}


@st.composite
def fractional_geometries(draw, dims: int) -> dict:
    """Kernel, input size and an output from 1 up to torch's bound (``O + k − 1 ≤ S`` in
    2-d, ``< S`` in 3-d: exactly at it included), given as ``output_size`` or as an
    ``output_ratio`` that lands inside; a seed or explicit samples."""
    slack = 0 if dims == 2 else 1
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    out = tuple(draw(st.integers(1, 4)) for _ in range(dims))
    extra = tuple(draw(st.integers(0, 3)) for _ in range(dims))  # 0: exactly at the bound
    size = tuple(o + k - 1 + slack + e for o, k, e in zip(out, kernel, extra, strict=True))
    kwargs: dict = {"kernel_size": kernel}
    if draw(st.booleans()) or any(o >= s for o, s in zip(out, size, strict=True)):
        kwargs["output_size"] = out
    else:  # a ratio giving int(S·r) = O (a ratio is below 1: O < S)
        kwargs["output_ratio"] = tuple((o + 0.5) / s for o, s in zip(out, size, strict=True))
    return {"kwargs": kwargs, "size": size, "channels": draw(st.integers(1, 3)),
            "batch": draw(st.integers(2, 5)), "explicit": draw(st.booleans())}  # fmt: skip


def _layer(dims: int, geometry: dict, seed: int) -> FractionalMaxPool2d:
    kwargs = dict(geometry["kwargs"])
    if geometry["explicit"]:  # torch's tests' form: rows for the largest batch drawn
        rows = geometry["batch"] + 1
        kwargs["_random_samples"] = np.random.default_rng(seed).random(
            (rows, geometry["channels"], dims)
        )
    return CLASSES[dims](**kwargs, seed=seed)


def _inputs(rng, shape, dtype, ties: bool, nans: bool):
    def make(n: int) -> np.ndarray:
        x = rng.standard_normal((n, *shape))
        if ties:  # few distinct values: many windows with tied maxima
            x = np.round(x)
        if nans:
            x.reshape(-1)[rng.integers(0, x.size, 2)] = np.nan
        return x.astype(dtype)

    return make


@settings(max_examples=40, deadline=None)
@given(st.data(), st.sampled_from([2, 3]), seeds, st.sampled_from([np.float64, np.float32]),
       st.booleans(), st.booleans())  # fmt: skip
def test_step_matches_readable_bit_for_bit(data, dims, seed, dtype, ties, nans):
    """Forward, ∂C/∂x and the generator's state after each draw equal the readable form's
    bit for bit (two batches of one size, then an odd last one; ``need_dx`` false gives
    None)."""
    geometry = data.draw(fractional_geometries(dims))
    layer = _layer(dims, geometry, seed)
    assert isinstance(layer.fast_step(), FractionalMaxPoolStep)
    rng = np.random.default_rng(seed)
    shape = (geometry["channels"], *geometry["size"])
    n = geometry["batch"]
    batches = (n, n, n - 1 if n % 2 == 0 else n + 1)
    make = _inputs(rng, shape, dtype, ties, nans)
    check_against_readable(layer, make, batches, rng, exact=True)


@settings(max_examples=15, deadline=None)
@given(st.data(), st.sampled_from([2, 3]), seeds)
def test_step_matches_torch(data, dims, seed):
    """With torch's explicit samples, the step's output, winners and ∂C/∂x against torch
    autograd (float64, random upstream gradients)."""
    geometry = data.draw(fractional_geometries(dims))
    geometry["explicit"] = True
    layer = _layer(dims, geometry, seed)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((geometry["batch"], geometry["channels"], *geometry["size"]))
    dout = rng.standard_normal((x.shape[0], *layer.output_shape(x.shape[1:])))
    out, dx, _ = run_step(layer.fast_step(), x, dout)
    module = getattr(torch.nn, f"FractionalMaxPool{dims}d")(
        **{k: v for k, v in geometry["kwargs"].items()},
        _random_samples=torch.tensor(layer._random_samples[: x.shape[0]]),
    )
    xt = torch.tensor(x, requires_grad=True)
    t_out = module(xt)
    t_out.backward(torch.tensor(dout))
    np.testing.assert_array_equal(out, t_out.detach().numpy())
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dims", [2, 3])
def test_empty_batch_and_single_window(dims):
    """An empty batch (the generator still draws its empty sample, as the readable form)
    and an output of one window per axis (only the last start, ``S − k``)."""
    cls = CLASSES[dims]
    rng = np.random.default_rng(0)
    size = (5,) * dims
    for layer, batches in [(cls(2, output_size=2, seed=1), (0, 3)),
                           (cls(2, output_size=1, seed=2), (3, 2))]:  # fmt: skip
        check_against_readable(layer, lambda n: rng.standard_normal((n, 2, *size)), batches,
                               rng, exact=True)  # fmt: skip


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_trains_the_same_fast_and_readable(dtype):
    """conv → fractional pool (drawn windows) → dense and a 3-d one through ``train()``
    fast and ``train(fast=False)``: the same parameters (the same windows drawn: the same
    generator states) after two epochs with an odd last batch."""
    spec = [("conv2d", (4, 3), {"padding": 1}), "relu",
            ("fractional-maxpool2d", (2,), {"output_ratio": 0.6}), "flatten", "dense",
            "softmax"]  # fmt: skip
    check_training(spec, (2, 9, 9), 3, n=11, batch_size=4, dtype=dtype)
    spec3 = [("fractional-maxpool3d", (2,), {"output_size": 2}), "flatten", "dense", "softmax"]
    check_training(spec3, (2, 5, 5, 5), 3, n=9, batch_size=4, dtype=dtype)


def test_generator_state_after_training_fast_and_readable():
    """The pool's generator after ``train()`` fast equals its state after
    ``train(fast=False)``: the fast step draws exactly what the readable form draws."""
    from manual_bp.models.sequential import Sequential
    from manual_bp.training import train

    spec = [("fractional-maxpool2d", (2,), {"output_size": 3}), "flatten", "dense", "softmax"]
    models = [Sequential.from_spec(spec, (2, 7, 7), 3, cost="log-likelihood", seed=3)
              for _ in range(2)]  # fmt: skip
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((10, 2, 7, 7)), rng.integers(0, 3, 10)
    for model, fast in zip(models, (True, False), strict=True):
        train(model, x, y, epochs=2, batch_size=3, eta=0.1, monitor=(), seed=0, fast=fast)
    states = [m.layers[0].get_extra_state() for m in models]
    assert repr(states[0]) == repr(states[1])
    fresh = copy.deepcopy(models[0].layers[0])
    fresh.reset_parameters(np.random.default_rng(3))
    assert repr(fresh.get_extra_state()) != repr(states[0])  # the draws did advance it


def test_threads_give_identical_bits():
    """FractionalMaxPool2d/3d steps with 1 and 2 threads: outputs and ∂C/∂x bit for bit
    (the gathers split over planes, the scatter whole)."""
    rng = np.random.default_rng(1)
    cases = [
        (FractionalMaxPool2d(3, output_ratio=0.5, seed=0), (32, 16, 24, 24)),
        (FractionalMaxPool3d(2, output_size=(4, 5, 6), seed=0), (16, 8, 9, 10, 11)),
    ]
    for layer, shape in cases:
        x = rng.standard_normal(shape)
        dout = rng.standard_normal((shape[0], *layer.output_shape(shape[1:])))
        first, second = across_threads(
            lambda: run_step(copy.deepcopy(layer).fast_step(), x, dout)  # noqa: B023
        )
        (out1, dx1, _), (out2, dx2, _) = first, second
        assert np.array_equal(out1, out2) and np.array_equal(dx1, dx2), layer


def _edge_samples(dtype, size: int, out: int, kernel: int) -> np.ndarray:
    """Samples α in ``dtype`` at, and three ulps either side of, every ``α`` where
    ``(y + α)·step`` crosses an integer (``step = (S − k)/(O − 1)``): where the truncation
    flips, float32 arithmetic and float64 arithmetic on a float32 α disagree."""
    step = dtype(size - kernel) / dtype(out - 1)
    found = []
    for m in range(1, size):
        for y in range(out - 1):
            centre = dtype(m / float(step) - y)
            for shift in range(-3, 4):
                a = centre
                for _ in range(abs(shift)):
                    a = np.nextafter(a, dtype(2 if shift > 0 else -1))
                if 0 <= a < 1:
                    found.append(a)
    return np.array(found, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dims", [2, 3])
def test_starts_at_rounding_edges_match_torch(dtype, dims):
    """Window starts from samples on both sides of and exactly at each truncation edge:
    torch computes ``(i + α)·step`` in the input's precision (``scalar_t``), so must the
    readable form and the step. Winners (torch's indices), outputs and ∂C/∂x against
    torch in the same dtype; the step against the readable form bit for bit."""
    size, out, kernel = (13, 7, 2) if dims == 2 else (12, 6, 2)
    edge = _edge_samples(dtype, size, out, kernel)
    n = len(edge)
    rng = np.random.default_rng(0)
    samples = np.stack([np.roll(edge, a) for a in range(dims)], -1)[:, None, :]  # (N, 1, D)
    x = rng.standard_normal((n, 1, *(size,) * dims)).astype(dtype)
    layer = CLASSES[dims](kernel, output_size=out, return_indices=True, _random_samples=samples)
    out_r, cache = layer.forward(x)
    module = getattr(torch.nn, f"FractionalMaxPool{dims}d")(
        kernel, output_size=out, return_indices=True, _random_samples=torch.tensor(samples)
    )
    xt = torch.tensor(x, requires_grad=True)
    t_out, t_idx = module(xt)
    dout = rng.standard_normal(t_out.shape).astype(dtype)
    t_out.backward(torch.tensor(dout))
    np.testing.assert_array_equal(layer.indices(cache), t_idx.numpy())
    np.testing.assert_array_equal(out_r, t_out.detach().numpy())
    out_s, dx_s, _ = run_step(layer.fast_step(), x, dout)
    np.testing.assert_array_equal(out_s, out_r)
    np.testing.assert_array_equal(dx_s, layer.backward(dout, cache)[0])
    np.testing.assert_allclose(dx_s, xt.grad.numpy(), rtol=1e-6, atol=0)
