"""Products on a V axis of BatchNorm3d, GroupNorm, InstanceNorm1d/2d/3d, RMSNorm and
LocalResponseNorm (``docs/layers.md``, ``PROD.batchnorm3d.*`` … ``PROD.localresponsenorm.*``).

Every product against ``torch.func`` (float64, random vectors, :mod:`reference.products`)
with the identities that tie them, for hypothesis-drawn options in both modes, alone and in
the middle of random stacks (:func:`reference.layer_cases.layer_case`). Per-sample parameter
products exist for the per-sample statistics of group and instance norm and are refused
(``BatchCouplingError``) for BatchNorm3d with batch statistics.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.layers import BatchCouplingError
from manual_bp.layers.normalisation import BatchNorm3d
from reference.checks_normalisation import (
    INSTANCE,
    _offset_input,
    _randomise,
    random_groupnorm,
    random_instancenorm,
    random_lrn,
    random_rmsnorm,
)
from reference.layer_cases import layer_case
from tests.test_products_normalisation import _check

seeds = st.integers(0, 2**31 - 1)


def _stacked_or_alone(seed: int, name: str, alone):
    """Half the cases: the layer where a random stack puts it; else built alone."""
    rng = np.random.default_rng(seed)
    if rng.integers(2):
        layer, x = layer_case(name, rng)
    else:
        layer, x = alone(rng)
        layer.train(bool(rng.integers(2)))
    _check(layer, x, seed)
    return layer, x


@settings(max_examples=30)
@given(seeds, st.booleans(), st.booleans(), st.sampled_from([None, 0.1]))
def test_batchnorm3d_products_match_torch_func(seed, training, track, momentum):
    """PROD.batchnorm3d.vjp, PROD.batchnorm3d.jvp, PROD.batchnorm3d.residual; per-sample
    shares refused with batch statistics (BatchCouplingError)."""
    rng = np.random.default_rng(seed)
    layer = BatchNorm3d(int(rng.integers(1, 4)), 1e-3, momentum, True, track).train(training)
    _randomise(layer, rng)
    x = _offset_input(rng, (int(rng.integers(2, 4)), layer.num_features, 2, 1, 2))
    _check(layer, x, seed)
    _, cache = layer.forward(x)
    if training or not track:
        with pytest.raises(BatchCouplingError, match="batch statistics"):
            layer.param_vjp(cache, rng.standard_normal((2, *x.shape)), sum_batch=False)
    else:
        assert layer.param_vjp(cache, rng.standard_normal((2, *x.shape)), False)["weight"].shape


@settings(max_examples=40)
@given(seeds)
def test_groupnorm_products_match_torch_func(seed):
    """PROD.groupnorm.vjp, PROD.groupnorm.jvp, PROD.groupnorm.residual: the batch-norm
    products on the (N, G, M) view; per-sample shares defined (statistics per sample)."""

    def alone(rng):
        channels = int(rng.integers(1, 7))
        layer = random_groupnorm(rng, channels)
        _randomise(layer, rng)
        shape = (int(rng.integers(1, 4)), channels, *rng.integers(1, 4, int(rng.integers(0, 3))))
        if np.prod(shape) // layer.num_groups < 2:
            shape = (2, *shape[1:])
        return layer, _offset_input(rng, shape)

    layer, x = _stacked_or_alone(seed, "GroupNorm", alone)
    _, cache = layer.forward(x)
    M = np.random.default_rng(seed).standard_normal((2, *x.shape))
    per_sample = layer.param_vjp(cache, M, sum_batch=False)
    for name, grads in per_sample.items():  # the shares add up to the batch's gradient
        np.testing.assert_allclose(grads.sum(axis=1), layer.param_vjp(cache, M)[name], 1e-10)


@settings(max_examples=40)
@given(seeds, st.sampled_from([1, 2, 3]), st.booleans())
def test_instancenorm_products_match_torch_func(seed, dims, unbatched):
    """PROD.instancenorm.vjp, PROD.instancenorm.jvp, PROD.instancenorm.residual: instance
    statistics or running ones, batched or one unbatched sample."""

    def alone(rng):
        channels = int(rng.integers(1, 4))
        layer = random_instancenorm(rng, dims, channels)
        _randomise(layer, rng)
        spatial = tuple(int(s) for s in rng.integers(2, 4, size=dims))
        return layer, _offset_input(rng, (int(rng.integers(1, 4)), channels, *spatial))

    layer, x = _stacked_or_alone(seed, INSTANCE[dims].__name__, alone)
    if unbatched:  # one sample without its batch axis: the batch of one, the axis dropped
        _unbatched_products_equal_batch_of_one(layer, x[0], np.random.default_rng(seed))


def _unbatched_products_equal_batch_of_one(layer, x, rng) -> None:
    twin = copy.deepcopy(layer)
    (_, cache), (_, cache1) = layer.forward(x), twin.forward(x[None])
    M, T = rng.standard_normal((2, 2, *x.shape))
    T_p = {n: rng.standard_normal((2, *p.shape)) for n, p in layer.params.items()}
    pairs = [
        (layer.input_vjp(cache, M), twin.input_vjp(cache1, M[:, None])[:, 0]),
        (layer.input_jvp(cache, T), twin.input_jvp(cache1, T[:, None])[:, 0]),
        (
            layer.residual(cache, M[0], T, T_p)[0],
            twin.residual(cache1, M[0][None], T[:, None], T_p)[0][:, 0],
        ),
    ]
    for name, value in layer.param_vjp(cache, M, sum_batch=False).items():
        pairs.append((value, twin.param_vjp(cache1, M[:, None], sum_batch=False)[name][:, 0]))
    if T_p:
        pairs.append((layer.param_jvp(cache, T_p), twin.param_jvp(cache1, T_p)[:, 0]))
    for ours, batched in pairs:
        np.testing.assert_array_equal(ours, batched)


@settings(max_examples=40)
@given(seeds)
def test_rmsnorm_products_match_torch_func(seed):
    """PROD.rmsnorm.vjp, PROD.rmsnorm.jvp, PROD.rmsnorm.residual: layer norm's products
    without the mean path (eps None or a number, affine on/off, 1–3 trailing axes)."""

    def alone(rng):
        per_sample = tuple(int(s) for s in rng.integers(1, 4, size=int(rng.integers(1, 4))))
        layer = random_rmsnorm(rng, per_sample)
        _randomise(layer, rng)
        return layer, _offset_input(rng, (int(rng.integers(1, 4)), *per_sample))

    _stacked_or_alone(seed, "RMSNorm", alone)


@settings(max_examples=40)
@given(seeds)
def test_localresponsenorm_products_match_torch_func(seed):
    """PROD.localresponsenorm.vjp, PROD.localresponsenorm.jvp,
    PROD.localresponsenorm.residual: windows narrower and wider than C."""

    def alone(rng):
        channels = int(rng.integers(1, 6))
        layer = random_lrn(rng, channels)
        shape = (int(rng.integers(1, 4)), channels, *rng.integers(1, 4, int(rng.integers(1, 3))))
        return layer, 2.0 * rng.standard_normal(shape)

    _stacked_or_alone(seed, "LocalResponseNorm", alone)
