"""Products on a leading axis of V vectors of Conv1d, Conv2d and ConvTranspose2d
(``PROD.conv1d.*``, ``PROD.conv2d.*``, ``PROD.conv-transpose2d.*``; docs/products.md).

Every constructor option is drawn (kernel, stride, padding — ints, pairs, ``"same"`` —,
dilation, groups, bias, output_padding, the fast or readable implementation) by
:func:`reference.checks_convolution.draw_conv_kwargs` from a hypothesis seed; each product
is compared with ``torch.func`` in float64 together with the identities of
:func:`reference.products.product_comparisons` (adjoints, per-sample shares summing to the
batch, symmetry of the residual, ``V = 1`` equal to ``backward``).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.gradcheck import assert_gradients_close
from manual_bp.layers import Layer
from reference.checks_convolution import build_conv, draw_conv_kwargs
from reference.layer_cases import layer_case
from reference.products import product_comparisons

seeds = st.integers(0, 2**31 - 1)
#: class name -> (spatial axes, transposed)
CLASSES = {"Conv1d": (1, False), "Conv2d": (2, False), "ConvTranspose2d": (2, True)}


@st.composite
def conv_cases(draw, dtype=np.float64) -> tuple[Layer, np.ndarray, int]:
    """A layer of a drawn class with drawn options, its input, and a seed for the vectors."""
    dims, transpose = CLASSES[draw(st.sampled_from(sorted(CLASSES)))]
    seed = draw(seeds)
    rng = np.random.default_rng(seed)
    kwargs = draw_conv_kwargs(rng, dims, transpose)
    implementation = draw(st.sampled_from(["fast", "readable"]))
    layer, size = build_conv(
        kwargs, dims, transpose, seed=seed, implementation=implementation, dtype=dtype
    )
    x = rng.standard_normal((draw(st.integers(1, 3)), layer.in_channels, *size))
    return layer, x.astype(dtype), seed


def _check(layer: Layer, x: np.ndarray, seed: int) -> None:
    for comparison in product_comparisons(layer, x, np.random.default_rng(seed)):
        comparison.check()


@given(case=conv_cases())
@settings(max_examples=30, deadline=None)
def test_conv_products_match_torch_func(case):
    """PROD.conv2d.vjp, PROD.conv2d.jvp, PROD.conv2d.residual, PROD.conv1d.vjp,
    PROD.conv1d.jvp, PROD.conv1d.residual, PROD.conv-transpose2d.vjp,
    PROD.conv-transpose2d.jvp, PROD.conv-transpose2d.residual: every product (input and
    parameter VJPs, summed and per sample, JVPs, residual) of a layer with drawn options
    against torch.func, with the adjoint, per-sample, symmetry and V = 1 identities."""
    _check(*case)


@pytest.mark.parametrize("name", sorted(CLASSES))
@given(seed=seeds)
@settings(max_examples=5, deadline=None)
def test_conv_products_in_the_middle_of_stacks(name, seed):
    """PROD.conv2d.*, PROD.conv1d.*, PROD.conv-transpose2d.* at the input a random stack
    feeds the layer (reference.layer_cases; Conv2d sits in the middle of image stacks)."""
    layer, x = layer_case(name, np.random.default_rng(seed))
    _check(layer, x, seed)


def _vectors(layer: Layer, x: np.ndarray, rng: np.random.Generator, v: int = 3):
    """Random ``M``, ``T``, ``T_θ`` and ``g`` (never all ones) of the layer's dtype."""
    out_shape = (x.shape[0], *layer.output_shape(x.shape[1:]))
    dtype = x.dtype
    M = rng.standard_normal((v, *out_shape)).astype(dtype)
    T = rng.standard_normal((v, *x.shape)).astype(dtype)
    T_params = {
        n: rng.standard_normal((v, *p.shape)).astype(dtype) for n, p in layer.params.items()
    }
    g = rng.standard_normal(out_shape).astype(dtype)
    return M, T, T_params, g


def _products(layer: Layer, x, M, T, T_params, g) -> dict[str, np.ndarray]:
    _, cache = layer.forward(x)
    found = {"input_vjp": layer.input_vjp(cache, M), "input_jvp": layer.input_jvp(cache, T)}
    found["param_jvp"] = layer.param_jvp(cache, T_params)
    for n, value in layer.param_vjp(cache, M).items():
        found[f"param_vjp[{n}]"] = value
    for n, value in layer.param_vjp(cache, M, sum_batch=False).items():
        found[f"param_vjp_per_sample[{n}]"] = value
    r_x, r_p = layer.residual(cache, g, T, T_params)
    found["residual_x"] = r_x
    found.update({f"residual[{n}]": value for n, value in r_p.items()})
    return found


def _as_float64(layer: Layer, absolute: bool = False) -> Layer:
    twin = copy.deepcopy(layer)
    for name, value in layer.params.items():
        twin.params[name] = (np.abs(value) if absolute else value).astype(np.float64)
    return twin


@given(case=conv_cases(np.float32))
@settings(max_examples=12, deadline=None)
def test_conv_products_keep_float32(case):
    """PROD.conv2d.*, PROD.conv1d.*, PROD.conv-transpose2d.* of a float32 layer on float32
    vectors are float32 (no float64 temporaries leak out) and agree with the float64
    products to float32 rounding: ``c·ε₃₂`` of ``Σ|terms|``, the same bilinear products
    on absolute values."""
    layer, x, seed = case
    vectors = _vectors(layer, x, np.random.default_rng(seed))
    ours = _products(layer, x, *vectors)
    wide = [v.astype(np.float64) if isinstance(v, np.ndarray) else v for v in vectors]
    wide[2] = {n: t.astype(np.float64) for n, t in vectors[2].items()}
    exact = _products(_as_float64(layer), x.astype(np.float64), *wide)
    absolute = [np.abs(v) if isinstance(v, np.ndarray) else v for v in wide]
    absolute[2] = {n: np.abs(t) for n, t in wide[2].items()}
    scale = _products(_as_float64(layer, True), np.abs(x).astype(np.float64), *absolute)
    for key, value in ours.items():
        assert value.dtype == np.float32, f"{key} is {value.dtype}"
        assert_gradients_close(value, exact[key], name=key, dtype=np.float32, scale=scale[key])


@given(case=conv_cases())
@settings(max_examples=10, deadline=None)
def test_conv_products_with_partial_tangents(case):
    """PROD.conv2d.jvp, PROD.conv2d.residual (and the conv1d and conv-transpose2d ones): a
    missing tangent is a zero one — param_jvp with the weight or the bias alone, the
    residual with only T (its input part is then 0) or only T_θ (its weight part is 0)."""
    layer, x, seed = case
    _, T, T_params, g = _vectors(layer, x, np.random.default_rng(seed))
    _, cache = layer.forward(x)
    zeros = {n: np.zeros_like(t) for n, t in T_params.items()}
    both = layer.param_jvp(cache, T_params)
    parts = [layer.param_jvp(cache, {n: t}) for n, t in T_params.items()]
    assert_gradients_close(sum(parts), both, name="param_jvp by parts", scale=np.abs(both) + 1)
    r_x, r_p = layer.residual(cache, g, T, None)
    z_x, z_p = layer.residual(cache, g, T, zeros)
    assert not r_x.any() and r_x.shape == T.shape
    assert {n: v.shape for n, v in r_p.items()} == {n: v.shape for n, v in z_p.items()}
    for n in r_p:
        np.testing.assert_allclose(r_p[n], z_p[n], rtol=1e-12, atol=1e-12)
    r_x, r_p = layer.residual(cache, g, None, T_params)
    z_x, _ = layer.residual(cache, g, np.zeros_like(T), T_params)
    np.testing.assert_allclose(r_x, z_x, rtol=1e-12, atol=1e-12)
    assert all(not v.any() for v in r_p.values())
