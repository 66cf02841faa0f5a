"""AdaptiveAvgPool1d/3d, AdaptiveMaxPool1d/2d/3d and FractionalMaxPool2d/3d against torch
(``docs/pooling.md``): float64, random upstream gradients, output sizes above, at and
below the input's (overlapping windows), ``None`` entries, ties, ``return_indices``,
unbatched inputs and empty batches, torch's explicit samples and the layer's own seeded
generator (saved as extra state), and the products against ``torch.func``.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.layers import (
    AdaptiveAvgPool3d,
    AdaptiveMaxPool1d,
    AdaptiveMaxPool2d,
    AdaptiveMaxPool3d,
    FractionalMaxPool2d,
    FractionalMaxPool3d,
)
from manual_bp.layers.pooling_adaptive import adaptive_bounds
from manual_bp.layers.pooling_fractional import fractional_starts
from reference.checks_pooling import adaptive_case, fractional_case
from reference.products import product_comparisons
from tests.test_pooling_nd import _agree

seeds = st.integers(0, 2**31 - 1)


@given(seed=seeds)
@settings(max_examples=40, deadline=None)
def test_adaptive_avgpool_nd_matches_torch(seed):
    """LAYER.adaptive-avgpool-nd: F.adaptive_avg_pool1d/3d, drawn output sizes."""
    layer, x = adaptive_case(np.random.default_rng(seed), "avg")
    _agree(layer, x, seed)


@given(seed=seeds)
@settings(max_examples=40, deadline=None)
def test_adaptive_maxpool_matches_torch(seed):
    """LAYER.adaptive-maxpool: F.adaptive_max_pool1d/2d/3d (ties: the first maximum) and
    torch's indices."""
    rng = np.random.default_rng(seed)
    layer, x = adaptive_case(rng, "max")
    _agree(layer, x, seed)
    function = {1: F.adaptive_max_pool1d, 2: F.adaptive_max_pool2d, 3: F.adaptive_max_pool3d}
    _, indices = function[layer.dims](torch.tensor(x), layer.output_size, return_indices=True)
    _, cache = layer.forward(x)
    np.testing.assert_array_equal(layer.indices(cache), indices.numpy())


def test_adaptive_windows_at_the_edges():
    """LAYER.adaptive-maxpool / LAYER.adaptive-avgpool-nd windows: ⌊yS/O⌋ … ⌈(y+1)S/O⌉ —
    O = S (one each), O > S (repeats), O < S with overlap (S = 5, O = 3: [0,2), [1,4), [3,5))."""
    for size, out, expected in (
        (4, 4, ([0, 1, 2, 3], [1, 2, 3, 4])),
        (2, 3, ([0, 0, 1], [1, 2, 2])),
        (5, 3, ([0, 1, 3], [2, 4, 5])),
    ):
        start, end = adaptive_bounds(size, out)
        assert (start.tolist(), end.tolist()) == expected


@given(seed=seeds, kind=st.sampled_from(["avg", "max"]))
@settings(max_examples=30, deadline=None)
def test_adaptive_pool_products_match_torch_func(seed, kind):
    """PROD.adaptive-avgpool-nd.vjp, PROD.adaptive-avgpool-nd.jvp,
    PROD.adaptive-avgpool-nd.residual, PROD.adaptive-maxpool.vjp, PROD.adaptive-maxpool.jvp,
    PROD.adaptive-maxpool.residual against torch.func, with the identities."""
    rng = np.random.default_rng(seed)
    layer, x = adaptive_case(rng, kind)
    for comparison in product_comparisons(layer, x, rng):
        comparison.check(c=64.0)


@given(seed=seeds)
@settings(max_examples=40, deadline=None)
def test_fractional_maxpool_matches_torch(seed):
    """LAYER.fractional-maxpool: F.fractional_max_pool2d/3d with the samples the layer used
    (torch's explicit _random_samples, or drawn from the layer's generator), and its indices."""
    rng = np.random.default_rng(seed)
    layer, x = fractional_case(rng)
    out, cache = layer.forward(x)
    samples = torch.tensor(cache.samples[0])
    function = {2: F.fractional_max_pool2d, 3: F.fractional_max_pool3d}[layer.dims]
    ref, indices = function(
        torch.tensor(x),
        layer.kernel,
        output_size=layer.sizes,
        output_ratio=layer.ratios,
        return_indices=True,
        _random_samples=samples,
    )
    np.testing.assert_array_equal(out, ref.numpy())
    np.testing.assert_array_equal(layer.indices(cache), indices.numpy())
    upstream = rng.standard_normal(out.shape)
    xt = torch.tensor(x, requires_grad=True)
    function(
        xt,
        layer.kernel,
        output_size=layer.sizes,
        output_ratio=layer.ratios,
        _random_samples=samples,
    ).backward(torch.tensor(upstream))
    np.testing.assert_allclose(layer.backward(upstream, cache)[0], xt.grad.numpy(), rtol=1e-14)


def test_fractional_sequence_is_torchs_generate_intervals():
    """LAYER.fractional-maxpool's sequence: ⌊(y+α)·step⌋ − ⌊α·step⌋, the last window flush
    with the end; an integer step makes it independent of α."""
    assert fractional_starts(np.float64(0.5), 10, 4, 2).tolist() == [0, 3, 5, 8]
    for alpha in (0.0, 0.3, 0.999):
        assert fractional_starts(np.float64(alpha), 7, 4, 1).tolist() == [0, 2, 4, 6]


@given(seed=seeds)
@settings(max_examples=20, deadline=None)
def test_fractional_maxpool_products_match_torch_func(seed):
    """PROD.fractional-maxpool.vjp, PROD.fractional-maxpool.jvp,
    PROD.fractional-maxpool.residual against torch.func, with the identities."""
    rng = np.random.default_rng(seed)
    layer, x = fractional_case(rng)
    for comparison in product_comparisons(layer, x, rng):
        comparison.check(c=64.0)


def test_fractional_generator_is_seeded_and_saved_as_extra_state():
    """Seeded layers draw the same windows; the generator state round-trips through the
    extra state (a reload draws what the original would have drawn next)."""
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 9))
    a, b = (
        FractionalMaxPool2d(2, output_ratio=0.5, seed=4),
        FractionalMaxPool2d(2, output_ratio=0.5, seed=4),
    )
    np.testing.assert_array_equal(a.forward(x)[0], b.forward(x)[0])
    state = copy.deepcopy(a.get_extra_state())
    c = FractionalMaxPool2d(2, output_ratio=0.5, seed=99)
    c.set_extra_state(state)
    np.testing.assert_array_equal(a.forward(x)[0], c.forward(x)[0])


@pytest.mark.parametrize(
    "layer",
    [
        AdaptiveMaxPool1d(3),
        AdaptiveMaxPool2d((2, None)),
        AdaptiveMaxPool3d(2, return_indices=True),
        AdaptiveAvgPool3d((1, None, 2)),
        FractionalMaxPool2d(2, output_size=3, _random_samples=np.full((4, 2, 2), 0.25)),
        FractionalMaxPool3d(2, output_size=2, _random_samples=np.full((4, 2, 3), 0.75)),
    ],
)
@pytest.mark.parametrize("batch", [None, 0, 3])
def test_unbatched_and_empty_batches_follow_torch(layer, batch):
    """Unbatched (C, *S) inputs are a batch of one; an empty batch gives an empty output."""
    sample = (2, *(5,) * layer.dims)
    x = np.random.default_rng(1).standard_normal(sample if batch is None else (batch, *sample))
    out, cache = layer.forward(x)
    dx, _ = layer.backward(np.ones_like(out), cache)
    assert dx.shape == x.shape
    if batch is None:
        batched, _ = layer.forward(x[None])
        np.testing.assert_array_equal(out, batched[0])
    elif batch == 0:
        assert out.shape[0] == 0


def test_fractional_rejects_what_torch_rejects():
    with pytest.raises(ValueError, match="output_size and output_ratio"):
        FractionalMaxPool2d(2)
    with pytest.raises(ValueError, match="output_ratio"):
        FractionalMaxPool2d(2, output_ratio=1.5)
    with pytest.raises(ValueError, match="kernel"):
        FractionalMaxPool3d(2, output_size=4).forward(np.zeros((1, 1, 5, 5, 5)))
    with pytest.raises(ValueError, match="_random_samples"):
        FractionalMaxPool2d(2, output_size=2, _random_samples=np.zeros((1, 2, 2))).forward(
            np.zeros((2, 2, 5, 5))
        )
