"""MaxPool2d, AvgPool2d, GlobalAvgPool2d against torch (float64), random upstream gradients.

Max pooling is checked on small-integer inputs, where ties inside a window are the rule
rather than the exception: the gradient must go to the FIRST maximum in row-major window
order, as torch's CPU kernel does.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.layers.pooling import (
    AvgPool2d,
    GlobalAvgPool2d,
    MaxPool2d,
    pool_output_size,
    window_misses_input,
)
from manual_bp.layers.pooling_adaptive import AdaptiveAvgPool2d, adaptive_windows
from reference.checks_convolution import layer_comparisons
from reference.products import product_comparisons

seeds = st.integers(0, 2**31 - 1)


@st.composite
def pool_geometries(draw, kind: str) -> dict:
    """Valid pooling arguments: kernel ≤ padded input, padding ≤ k/2, no all-padding window."""
    size = (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    ceil_mode = draw(st.booleans())
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 4), st.integers(1, 4))))
    kernel, padding, dilation = [], [], []
    for a in range(2):
        d = 1 if kind == "avg" else draw(st.integers(1, 3))
        p = draw(st.integers(0, 3))
        k_max = (size[a] + 2 * p - 1) // d + 1
        k = draw(st.integers(max(1, 2 * p), max(1, 2 * p, min(k_max, 7))))
        if 2 * p > k or d * (k - 1) + 1 > size[a] + 2 * p:
            p = 0  # the padding drawn does not fit this kernel
            k = min(k, (size[a] - 1) // d + 1)
        s = k if stride is None else stride[a]
        out = pool_output_size(size[a], k, s, p, d, ceil_mode)
        if window_misses_input(size[a], k, s, p, d, out):
            d = 1  # dilation skipping the input entirely: not a valid geometry
        kernel.append(k)
        padding.append(p)
        dilation.append(d)
    kwargs = {"kernel_size": tuple(kernel), "stride": stride, "padding": tuple(padding)}
    kwargs["ceil_mode"] = ceil_mode
    if kind == "max":
        kwargs["dilation"] = tuple(dilation)
        kwargs["implementation"] = draw(st.sampled_from(["fast", "readable"]))
    else:
        kwargs["count_include_pad"] = draw(st.booleans())
        kwargs["divisor_override"] = draw(st.one_of(st.none(), st.integers(1, 9)))
    batch, channels = draw(st.integers(1, 4)), draw(st.integers(1, 6))
    return {"kwargs": kwargs, "shape": (batch, channels, *size)}


@settings(max_examples=80)
@given(pool_geometries("max"), seeds)
def test_maxpool2d_matches_torch(geometry, seed):
    """LAYER.maxpool2d: output and ∂C/∂x against F.max_pool2d on inputs in {−2, …, 2}.

    Ties are everywhere; an exact match (error 0) shows the first-maximum rule is torch's.
    """
    rng = np.random.default_rng(seed)
    layer = MaxPool2d(**geometry["kwargs"])
    x = rng.integers(-2, 3, size=geometry["shape"]).astype(np.float64)
    for comparison in layer_comparisons(layer, x, rng, integer_inputs=True):
        comparison.check()


@settings(max_examples=40)
@given(pool_geometries("max"), seeds)
def test_maxpool_readable_equals_fast(geometry, seed):
    """LAYER.maxpool2d: the readable first-maximum loop equals the argmax + bincount form."""
    x = np.random.default_rng(seed).integers(-1, 2, size=geometry["shape"]).astype(float)
    fast = MaxPool2d(**{**geometry["kwargs"], "implementation": "fast"})
    readable = MaxPool2d(**{**geometry["kwargs"], "implementation": "readable"})
    out, cache = fast.forward(x)
    u = np.random.default_rng(seed + 1).standard_normal(out.shape)
    # equal up to the order in which overlapping windows' δ are summed
    atol = 64 * np.finfo(float).eps * np.abs(u).sum()
    np.testing.assert_allclose(fast.backward(u, cache)[0], readable.backward(u, cache)[0], 0, atol)


def test_maxpool_ties_go_to_the_first_maximum():
    """A window of equal values sends its whole gradient to its top-left element."""
    layer = MaxPool2d(2)
    x = np.ones((1, 1, 2, 4))
    x[0, 0, 1, 3] = 1.0  # the second window is tied too
    _, cache = layer.forward(x)
    dx, _ = layer.backward(np.array([[[[3.0, 5.0]]]]), cache)
    np.testing.assert_array_equal(dx[0, 0], [[3.0, 0, 5.0, 0], [0, 0, 0, 0]])


@settings(max_examples=60)
@given(pool_geometries("avg"), seeds)
def test_avgpool2d_matches_torch(geometry, seed):
    """LAYER.avgpool2d: count_include_pad, ceil_mode, divisor_override against F.avg_pool2d."""
    rng = np.random.default_rng(seed)
    layer = AvgPool2d(**geometry["kwargs"])
    x = rng.standard_normal(geometry["shape"])
    for comparison in layer_comparisons(layer, x, rng):
        comparison.check()


@settings(max_examples=20)
@given(st.integers(1, 4), st.integers(1, 5), st.integers(1, 9), st.integers(1, 9), seeds)
def test_global_avgpool2d_matches_torch(n, c, h, w, seed):
    """LAYER.global-avgpool2d against F.adaptive_avg_pool2d(x, 1)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    for comparison in layer_comparisons(GlobalAvgPool2d(), x, rng):
        comparison.check()


def test_pooling_rejects_bad_arguments():
    with pytest.raises(ValueError, match="at most half the kernel"):
        MaxPool2d(2, padding=2)
    with pytest.raises(ValueError, match="kernel_size"):
        AvgPool2d(0)
    with pytest.raises(ValueError, match="only padding"):
        MaxPool2d(2, stride=2, padding=1, dilation=3).forward(np.zeros((1, 1, 2, 2)))
    with pytest.raises(ValueError, match="smaller than the window"):
        MaxPool2d(5).forward(np.zeros((1, 1, 4, 4)))
    with pytest.raises(ValueError, match="upstream gradient"):
        layer = AvgPool2d(2)
        layer.backward(np.zeros((1, 1, 3, 3)), layer.forward(np.zeros((1, 1, 4, 4)))[1])


@settings(max_examples=40)
@given(pool_geometries("max"), seeds, st.sampled_from(["nan", "inf", "-inf", "zeros"]))
def test_maxpool_non_finite_and_tied_inputs_and_upstream_follow_torch(geometry, seed, special):
    """The fast forward takes pairwise maxima and then the first tap equal to the maximum;
    NaN inputs take torch's own rule (``val > max || isnan(val)``: the last NaN wins) and a
    non-finite δ must reach only its window's winner (NaN·0 may not leak). Inputs with NaN,
    ±inf or many tied zeros (ReLU outputs), upstream with NaN/inf: forward values, the
    winners and ∂C/∂x equal torch's, NaN positions included."""
    import torch

    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, size=geometry["shape"]).astype(float)
    value = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "zeros": 0.0}[special]
    x[rng.random(x.shape) < rng.choice([0.3, 0.7, 1.0])] = value  # 1.0: every tap special
    layer = MaxPool2d(**geometry["kwargs"])
    out, cache = layer.forward(x)
    dout = rng.normal(size=out.shape)
    dout[rng.random(out.shape) < 0.2] = rng.choice([np.nan, np.inf, -np.inf])
    kwargs = dict(geometry["kwargs"])
    kwargs.pop("implementation")
    xt = torch.tensor(x, requires_grad=True)
    ref = torch.nn.functional.max_pool2d(xt, **kwargs)
    ref.backward(torch.tensor(dout))
    np.testing.assert_array_equal(out, ref.detach().numpy())
    # overlapping windows add their δ in another order than torch: rounding of a few ulps
    # of Σ|δ| (≤ 36 windows share an input here); NaN and ±inf positions must agree exactly
    finite = np.abs(dout[np.isfinite(dout)])
    atol = 64 * np.finfo(float).eps * (finite.max() if finite.size else 0.0)
    np.testing.assert_allclose(layer.backward(dout, cache)[0], xt.grad.numpy(), 0, atol)


@pytest.mark.parametrize("implementation", ["fast", "readable"])
@pytest.mark.parametrize("value", [-np.inf, np.nan, "-inf and one NaN"])
def test_maxpool_padding_never_wins_even_against_minus_infinity(implementation, value):
    """torch visits only taps inside the input: a window whose input taps are all −∞ (or
    NaN) sends δ to its first input tap (last NaN), never to the padding (lost gradient)."""
    import torch

    x = np.full((1, 1, 3, 3), -np.inf if isinstance(value, str) else value)
    x[0, 0, 2, 2] = 1.0
    if isinstance(value, str):
        x[0, 0, 0, 0] = np.nan  # the NaN rule runs; other windows hold only −∞
    layer = MaxPool2d(2, stride=1, padding=1, implementation=implementation)
    out, cache = layer.forward(x)
    dout = np.arange(1.0, 1.0 + out.size).reshape(out.shape)
    xt = torch.tensor(x, requires_grad=True)
    ref = torch.nn.functional.max_pool2d(xt, 2, stride=1, padding=1)
    ref.backward(torch.tensor(dout))
    np.testing.assert_array_equal(out, ref.detach().numpy())
    np.testing.assert_array_equal(layer.backward(dout, cache)[0], xt.grad.numpy())


# ------------------------------------------------------------------ torch's options (issue 23)
@settings(max_examples=60, deadline=None)
@given(pool_geometries("max"), seeds, st.booleans())
def test_maxpool2d_return_indices_match_torch(geometry, seed, batched):
    """MaxPool2d(return_indices=True): layer(x) is (out, indices) with torch's flat
    per-plane indices (ties on small integers: the first maximum), batched or not."""
    rng = np.random.default_rng(seed)
    kwargs = {k: v for k, v in geometry["kwargs"].items() if k != "implementation"}
    shape = geometry["shape"] if batched else geometry["shape"][1:]
    x = rng.integers(-2, 3, size=shape).astype(np.float64)
    out_t, indices_t = torch.nn.MaxPool2d(**kwargs, return_indices=True)(torch.tensor(x))
    layer = MaxPool2d(**geometry["kwargs"], return_indices=True)
    out, indices = layer(x)
    assert indices.dtype == np.int64
    np.testing.assert_array_equal(out, out_t.numpy())
    np.testing.assert_array_equal(indices, indices_t.numpy())
    _, cache = layer.forward(x)
    np.testing.assert_array_equal(layer.indices(cache), indices)
    assert isinstance(MaxPool2d(**geometry["kwargs"])(x), np.ndarray)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["max", "avg", "global", "adaptive"]), seeds)
def test_pooling_unbatched_and_empty_batches_follow_torch(kind, seed):
    """Unbatched (C, H, W) inputs against torch's modules (output and ∂C/∂x; products equal
    the batch of one's); an empty batch gives an empty output and gradient."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((int(rng.integers(1, 4)), int(rng.integers(3, 8)), 6))
    kwargs: dict = {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}
    if kind == "global":
        layer, module = GlobalAvgPool2d(), torch.nn.AdaptiveAvgPool2d(1)
    elif kind == "adaptive":
        layer, module = AdaptiveAvgPool2d((4, None)), torch.nn.AdaptiveAvgPool2d((4, None))
    else:
        cls = MaxPool2d if kind == "max" else AvgPool2d
        layer, module = cls(**kwargs), getattr(torch.nn, cls.__name__)(**kwargs)
    xt = torch.tensor(x, requires_grad=True)
    out_t = module(xt)
    upstream = rng.standard_normal(tuple(out_t.shape))
    out_t.backward(torch.tensor(upstream))
    out, cache = layer.forward(x)
    dx, _ = layer.backward(upstream, cache)
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-13, atol=1e-13)
    _, batched = layer.forward(x[None])
    M, T = rng.standard_normal((2, *out.shape)), rng.standard_normal((2, *x.shape))
    np.testing.assert_array_equal(
        layer.input_vjp(cache, M), layer.input_vjp(batched, M[:, None])[:, 0]
    )
    np.testing.assert_array_equal(
        layer.input_jvp(cache, T), layer.input_jvp(batched, T[:, None])[:, 0]
    )
    empty = np.zeros((0, *x.shape))
    out, cache = layer.forward(empty)
    assert out.shape == tuple(module(torch.zeros(empty.shape)).shape)
    assert layer.backward(out, cache)[0].shape == empty.shape


def test_adaptive_windows_are_torchs_floor_ceil_rule():
    """Row y of H_o covers [⌊yH/H_o⌋, ⌈(y+1)H/H_o⌉): overlapping, unequal windows."""
    windows = adaptive_windows(5, 3)
    assert [tuple(np.flatnonzero(row)) for row in windows] == [(0, 1), (1, 2, 3), (3, 4)]
    assert adaptive_windows(4, 6).sum(axis=1).tolist() == [1.0, 2.0, 1.0, 1.0, 2.0, 1.0]
    assert adaptive_windows(7, 1).tolist() == [[1.0] * 7]


@st.composite
def adaptive_cases(draw) -> tuple[AdaptiveAvgPool2d, tuple[int, ...]]:
    size = (draw(st.integers(1, 10)), draw(st.integers(1, 10)))
    out = draw(
        st.one_of(
            st.integers(1, 8),
            st.tuples(
                st.one_of(st.none(), st.integers(1, 8)), st.one_of(st.none(), st.integers(1, 8))
            ),
        )
    )
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)), *size)
    return AdaptiveAvgPool2d(out), shape


@settings(max_examples=60, deadline=None)
@given(adaptive_cases(), seeds)
def test_adaptive_avgpool2d_matches_torch(case, seed):
    """LAYER.adaptive-avgpool2d: output sizes (ints, pairs, None entries; larger than the
    input too) against F.adaptive_avg_pool2d; the config round trip keeps output_size."""
    from manual_bp.layers import LAYERS

    layer, shape = case
    rng = np.random.default_rng(seed)
    for comparison in layer_comparisons(layer, rng.standard_normal(shape), rng):
        comparison.check()
    assert LAYERS.get(layer.get_config()).sizes == layer.sizes


@settings(max_examples=20, deadline=None)
@given(adaptive_cases(), seeds)
def test_adaptive_avgpool2d_products_match_torch_func(case, seed):
    """PROD.adaptive-avgpool2d.vjp, PROD.adaptive-avgpool2d.jvp,
    PROD.adaptive-avgpool2d.residual against torch.func, with the identities."""
    layer, shape = case
    rng = np.random.default_rng(seed)
    for comparison in product_comparisons(layer, rng.standard_normal(shape), rng):
        comparison.check()


def test_adaptive_avgpool2d_rejects_bad_output_sizes():
    for bad in (-1, (2, 3, 4), 1.5, (True, 2)):
        with pytest.raises(ValueError, match="output_size must be"):
            AdaptiveAvgPool2d(bad)
    with pytest.raises(TypeError, match="return_indices must be True or False"):
        MaxPool2d(2, return_indices=1)
