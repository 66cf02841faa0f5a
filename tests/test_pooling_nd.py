"""MaxPool1d/3d, AvgPool1d/3d and LPPool1d/2d/3d against torch (``docs/pooling.md``).

Float64, random upstream gradients, every option drawn (kernel, stride, padding, dilation,
ceil_mode, count_include_pad, divisor_override, return_indices, p), ties on small-integer
inputs (torch's first maximum), unbatched inputs and empty batches, both implementations
of max pooling, the tiled fast steps, and the products against ``torch.func``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.layers import AvgPool3d, LPPool1d, LPPool2d, MaxPool1d, MaxPool3d
from reference.checks_pooling import lppool_case, nd_pool_case
from reference.compare import Comparison
from reference.products import product_comparisons
from reference.stack import torch_layer_forward

seeds = st.integers(0, 2**31 - 1)


def torch_reference(layer, x, upstream):
    """torch's output, input gradient and (max pooling) indices for ``x``."""
    xt = torch.tensor(x, requires_grad=True)
    out = torch_layer_forward(layer, {}, {}, xt, None)
    out.backward(torch.tensor(upstream))
    return out.detach().numpy(), xt.grad.numpy()


def _agree(layer, x, seed, c: float = 64.0) -> None:
    rng = np.random.default_rng(seed)
    out, cache = layer.forward(x)
    upstream = rng.standard_normal(out.shape)
    dx, grads = layer.backward(upstream, cache)
    ref_out, ref_dx = torch_reference(layer, x, upstream)
    assert grads == {}
    Comparison(layer.equation, "output", out, ref_out, scale=np.abs(ref_out) + 1).check(c=c)
    Comparison(layer.equation, "∂C/∂x", dx, ref_dx, scale=np.abs(ref_dx) + 1).check(c=c)


@given(seed=seeds)
@settings(max_examples=40, deadline=None)
def test_maxpool_nd_matches_torch(seed):
    """LAYER.maxpool-nd: F.max_pool1d/3d, drawn geometry, both implementations, ties (the
    first maximum wins), and torch's indices with return_indices."""
    rng = np.random.default_rng(seed)
    layer, x = nd_pool_case(rng, "max")
    _agree(layer, x, seed)
    if layer.return_indices:
        function = {1: torch.nn.functional.max_pool1d, 3: torch.nn.functional.max_pool3d}
        _, indices = function[layer.dims](
            torch.tensor(x),
            layer.kernel,
            layer.strides,
            layer.pads,
            layer.dilation_pair,
            layer.ceil_mode,
            return_indices=True,
        )
        np.testing.assert_array_equal(layer(x)[1], indices.numpy())


@given(seed=seeds)
@settings(max_examples=40, deadline=None)
def test_avgpool_nd_matches_torch(seed):
    """LAYER.avgpool-nd: F.avg_pool1d/3d with count_include_pad, ceil_mode and
    divisor_override drawn."""
    layer, x = nd_pool_case(np.random.default_rng(seed), "avg")
    _agree(layer, x, seed)


@given(seed=seeds, kind=st.sampled_from(["max", "avg"]), dims=st.sampled_from([1, 3]))
@settings(max_examples=30, deadline=None)
def test_nd_pool_products_match_torch_func(seed, kind, dims):
    """PROD.maxpool-nd.vjp, PROD.maxpool-nd.jvp, PROD.maxpool-nd.residual, PROD.avgpool-nd.vjp,
    PROD.avgpool-nd.jvp, PROD.avgpool-nd.residual against torch.func, with the identities."""
    rng = np.random.default_rng(seed)
    layer, x = nd_pool_case(rng, kind, dims)
    for comparison in product_comparisons(layer, x, rng):
        comparison.check(c=64.0)


@pytest.mark.parametrize("cls", [MaxPool1d, MaxPool3d, AvgPool3d, LPPool1d, LPPool2d])
@pytest.mark.parametrize("batch", [None, 0, 2])
def test_unbatched_and_empty_batches_follow_torch(cls, batch):
    """Unbatched (C, *S) inputs and empty batches: torch's shapes and values."""
    rng = np.random.default_rng(7)
    dims = cls.dims
    layer = cls(2.0, 2) if cls in (LPPool1d, LPPool2d) else cls(2, stride=1)
    sample = (2, *(4,) * dims)
    x = rng.standard_normal(sample if batch is None else (batch, *sample))
    x = np.abs(x) + 0.1
    out, cache = layer.forward(x)
    ref_out, _ = (out, None) if x.size == 0 else torch_reference(layer, x, np.ones(out.shape))
    assert out.shape == ref_out.shape
    np.testing.assert_allclose(out, ref_out, rtol=1e-13)
    dx, _ = layer.backward(np.ones_like(out), cache)
    assert dx.shape == x.shape


def test_ties_go_to_the_first_maximum_in_3d():
    """LAYER.maxpool-nd: a window of equal values sends δ to its first tap (row-major)."""
    layer = MaxPool3d(2)
    x = np.zeros((1, 1, 2, 2, 2))
    out, cache = layer.forward(x)
    dx, _ = layer.backward(np.full(out.shape, 3.0), cache)
    expected = np.zeros_like(x)
    expected[0, 0, 0, 0, 0] = 3.0
    np.testing.assert_array_equal(dx, expected)


@pytest.mark.parametrize("cls", [MaxPool1d, MaxPool3d])
def test_readable_and_fast_max_pool_agree_bit_for_bit(cls):
    """The readable backward (a scan per tap) and the scatter of the cached winners."""
    rng = np.random.default_rng(3)
    x = rng.integers(-2, 3, size=(2, 3, *(5,) * cls.dims)).astype(float)
    results = []
    for implementation in ("fast", "readable"):
        layer = cls(3, 2, 1, dilation=1, ceil_mode=True, implementation=implementation)
        out, cache = layer.forward(x)
        results.append(layer.backward(np.arange(out.size, dtype=float).reshape(out.shape), cache))
    np.testing.assert_array_equal(results[0][0], results[1][0])


@given(seed=seeds)
@settings(max_examples=40, deadline=None)
def test_lppool_matches_torch(seed):
    """LAYER.lppool: F.lp_pool1d/2d/3d with p, kernel, stride and ceil_mode drawn, on
    positive inputs and signed ones (p = 2), windows of zeros included."""
    rng = np.random.default_rng(seed)
    layer, x = lppool_case(rng, positive=bool(rng.integers(2)))
    _agree(layer, x, seed)


@pytest.mark.parametrize("p", [1.0, 1.5, 2.0, 3.0])
def test_lppool_gradient_at_a_zero_window_is_torchs_zero(p):
    """LAYER.lppool at its edge: a window of zeros sends 0 (torch's relu backward selects 0),
    not 0·∞ = NaN — also for p = 1, where the window's sum is 0 with non-zero entries."""
    layer = LPPool1d(p, 2)
    x = np.array([[[0.0, 0.0, 1.0, 2.0]]]) if p != 1.0 else np.array([[[1.0, -1.0, 1.0, 2.0]]])
    _, cache = layer.forward(x)
    upstream = np.array([[[2.0, -3.0]]])
    dx, _ = layer.backward(upstream, cache)
    _, ref_dx = torch_reference(layer, x, upstream)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-14, atol=0)
    assert np.all(dx[..., :2] == 0)


@given(seed=seeds)
@settings(max_examples=30, deadline=None)
def test_lppool_products_match_torch_func(seed):
    """PROD.lppool.vjp, PROD.lppool.jvp, PROD.lppool.residual against torch.func (windows of
    two elements or more, no zero window) and the adjoint/symmetry identities."""
    rng = np.random.default_rng(seed)
    layer, x = lppool_case(rng, positive=bool(rng.integers(2)), several=True)
    for comparison in product_comparisons(layer, np.where(x == 0, 0.5, x), rng):
        comparison.check(c=64.0)


def test_lppool_residual_is_exactly_zero_on_one_element_windows():
    """PROD.lppool.residual: a one-element window is (K/c)^{1/p}·|x|, linear on each side of
    zero — its Hessian is 0 exactly (not the rounding of two cancelling terms)."""
    layer = LPPool2d(1.5, 1)
    x = np.abs(np.random.default_rng(0).standard_normal((2, 1, 3, 3))) + 0.1
    _, cache = layer.forward(x)
    T = np.random.default_rng(1).standard_normal((3, *x.shape))
    r_x, r_p = layer.residual(cache, np.ones_like(x), T)
    assert r_p == {} and np.all(r_x == 0)


def test_bad_arguments_name_the_argument():
    for build, word in (
        (lambda: MaxPool3d((2, 2)), "kernel_size"),
        (lambda: MaxPool1d(2, padding=2), "padding"),
        (lambda: LPPool1d(0, 2), "norm_type"),
        (lambda: AvgPool3d(3, padding=1).forward(np.zeros((1, 1, 2, 4, 4))), "than the kernel"),
    ):
        with pytest.raises((ValueError, TypeError), match=word):
            build()


@pytest.mark.parametrize("norm_type", [1, 2, 3.5])
@pytest.mark.parametrize("dims", [1, 2])
def test_lppool_residual_without_a_tangent_is_refused_in_one_line(norm_type, dims):
    """A parameterless layer's residual with no input tangent names what is missing, as
    every other layer's does (LPPool read ``T.dtype`` of None: an AttributeError, found by
    the hostile-argument catalogue)."""
    layer = (LPPool1d if dims == 1 else LPPool2d)(norm_type, 2)
    x = np.random.default_rng(0).standard_normal((2, 3, *(4,) * dims))
    out, cache = layer.forward(x)
    for T_params in (None, {}):
        with pytest.raises(ValueError, match="at least one tangent") as error:
            layer.residual(cache, 0.3 * np.ones_like(out), None, T_params)
        assert "\n" not in str(error.value)
