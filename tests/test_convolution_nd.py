"""Conv3d, ConvTranspose1d, ConvTranspose3d and the lazy convolutions: against torch
(float64, random upstream gradients), their readable and fast forms, central finite
differences, the V-axis products (adjoint identities included) alone and in the middle of
random stacks, and the edges of every option (``output_size``, ``output_padding``,
``'same'``, padding modes, unbatched inputs, empty batches).

Every constructor option is drawn by :func:`reference.checks_convolution.draw_conv_kwargs`
from a hypothesis seed (kernel, stride, padding — ints, tuples, ``"same"`` —, dilation,
groups, bias, ``padding_mode``, ``output_padding``).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.gradcheck import assert_gradients_close, finite_difference_gradient
from manual_bp.layers import LAYERS
from manual_bp.layers.convolution import Conv2d, Conv3d
from manual_bp.layers.convolution_lazy import (
    LazyConv1d,
    LazyConv2d,
    LazyConv3d,
    LazyConvTranspose1d,
    LazyConvTranspose2d,
    LazyConvTranspose3d,
)
from manual_bp.layers.convolution_transpose import ConvTranspose1d, ConvTranspose3d
from reference.checks_convolution import build_conv, draw_conv_kwargs, layer_comparisons
from reference.layer_cases import layer_case
from reference.products import product_comparisons

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")
seeds = st.integers(0, 2**31 - 1)
#: class name -> (spatial axes, transposed)
CLASSES = {"Conv3d": (3, False), "ConvTranspose1d": (1, True), "ConvTranspose3d": (3, True)}


def _case(name: str, seed: int, implementation: str = "fast", batch: int | None = None):
    dims, transpose = CLASSES[name]
    rng = np.random.default_rng(seed)
    kwargs = draw_conv_kwargs(rng, dims, transpose)
    layer, size = build_conv(kwargs, dims, transpose, seed=seed, implementation=implementation)
    n = int(rng.integers(1, 4)) if batch is None else batch
    return layer, rng.standard_normal((n, layer.in_channels, *size)), rng


def _check_all(comparisons) -> None:
    for comparison in comparisons:
        comparison.check()


@settings(max_examples=25, deadline=None)
@given(seed=seeds, implementation=st.sampled_from(["fast", "readable"]))
def test_conv3d_matches_torch(seed, implementation):
    """LAYER.conv3d (CONV.forward, CONV.input, CONV.weight on three axes): output, ∂C/∂x,
    ∂C/∂W, ∂C/∂b against F.conv3d (padding modes through F.pad, as torch's module) with a
    random upstream gradient; both implementations."""
    layer, x, rng = _case("Conv3d", seed, implementation)
    assert layer.params["weight"].ndim == 5
    _check_all(layer_comparisons(layer, x, rng))


@settings(max_examples=30, deadline=None)
@given(
    seed=seeds,
    name=st.sampled_from(["ConvTranspose1d", "ConvTranspose3d"]),
    implementation=st.sampled_from(["fast", "readable"]),
)
def test_conv_transpose_nd_matches_torch(seed, name, implementation):
    """LAYER.conv-transpose1d, LAYER.conv-transpose3d: output, ∂C/∂x, ∂C/∂W, ∂C/∂b against
    F.conv_transpose1d / F.conv_transpose3d (output_padding up to max(stride, dilation)−1)."""
    layer, x, rng = _case(name, seed, implementation)
    _check_all(layer_comparisons(layer, x, rng))


@settings(max_examples=20, deadline=None)
@given(seed=seeds, name=st.sampled_from(sorted(CLASSES)))
def test_nd_readable_equals_fast(seed, name):
    """CONV.fast on any number of axes: the readable form (loop over kernel offsets) and the
    fast one (im2col + GEMM) give the same output and gradients."""
    fast, x, rng = _case(name, seed, "fast")
    readable = copy.deepcopy(fast)
    readable.implementation = "readable"
    out, cache = fast.forward(x)
    out_r, cache_r = readable.forward(x)
    u = rng.standard_normal(out.shape)
    dx, grads = fast.backward(u, cache)
    dx_r, grads_r = readable.backward(u, cache_r)
    for key, a, b in [("out", out, out_r), ("dx", dx, dx_r)] + [
        (k, grads[k], grads_r[k]) for k in grads
    ]:
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10, err_msg=key)


@settings(max_examples=6, deadline=None)
@given(seed=seeds, name=st.sampled_from(sorted(CLASSES)))
def test_nd_gradients_match_finite_differences(seed, name):
    """LAYER.conv3d, LAYER.conv-transpose1d, LAYER.conv-transpose3d against central finite
    differences (no torch): C = Σ u ⊙ tanh(layer(x))."""
    layer, x, rng = _case(name, seed, batch=1)
    out, cache = layer.forward(x)
    u = rng.standard_normal(out.shape)

    def cost() -> float:
        return float(np.sum(u * np.tanh(layer.forward(x)[0])))

    dx, grads = layer.backward(u * (1 - np.tanh(out) ** 2), cache)
    for label, actual, array in [
        ("∂C/∂x", dx, x),
        *((f"∂C/∂{k}", grads[k], layer.params[k]) for k in grads),
    ]:
        expected, error = finite_difference_gradient(cost, array, return_error=True)
        atol = 1e-7 * (1 + np.abs(expected).max()) + 4 * error
        assert_gradients_close(actual, expected, name=label, atol=atol, rtol=0.0)


@settings(max_examples=20, deadline=None)
@given(
    seed=seeds,
    name=st.sampled_from(sorted(CLASSES)),
    implementation=st.sampled_from(["fast", "readable"]),
)
def test_nd_products_match_torch_func(seed, name, implementation):
    """PROD.conv3d.vjp, PROD.conv3d.jvp, PROD.conv3d.residual, PROD.conv-transpose1d.vjp,
    PROD.conv-transpose1d.jvp, PROD.conv-transpose1d.residual, PROD.conv-transpose3d.vjp,
    PROD.conv-transpose3d.jvp, PROD.conv-transpose3d.residual: every product (input and
    parameter VJPs, summed and per sample, JVPs, residual) against torch.func, with the
    adjoint, per-sample, symmetry and V = 1 identities."""
    layer, x, _ = _case(name, seed, implementation)
    _check_all(product_comparisons(layer, x, np.random.default_rng(seed)))


@pytest.mark.parametrize("name", sorted(CLASSES))
@settings(max_examples=4, deadline=None)
@given(seed=seeds)
def test_nd_layers_in_the_middle_of_stacks(name, seed):
    """PROD.conv3d.*, PROD.conv-transpose1d.*, PROD.conv-transpose3d.* at the input a random
    image stack feeds the layer (reshaped into a volume or a sequence and back)."""
    layer, x = layer_case(name, np.random.default_rng(seed))
    assert type(layer).__name__ == name
    _check_all(product_comparisons(layer, x, np.random.default_rng(seed)))


def _torch_twin(layer):
    module = getattr(torch.nn, type(layer).__name__)
    names = ["in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation"]
    names += ["groups", "bias", "padding_mode"]
    if "output_padding" in layer.hyperparameters:
        names.append("output_padding")
    twin = module(**{n: layer.hyperparameter(n) for n in names}).double()
    with torch.no_grad():
        for n, p in twin.named_parameters():
            p.copy_(torch.from_numpy(layer.params[n]))
    return twin


@pytest.mark.parametrize("implementation", ["fast", "readable"])
def test_unbatched_and_empty_inputs_follow_torch(implementation):
    """Unbatched (C, D, H, W) / (C, L) samples are the batch of one; empty batches give empty
    outputs and zero parameter gradients, as torch."""
    rng = np.random.default_rng(3)
    layers = [
        Conv3d(2, 4, (2, 3, 1), padding=1, padding_mode="reflect", groups=2),
        ConvTranspose1d(2, 3, 3, stride=2, output_padding=1),
        ConvTranspose3d(2, 2, 2, stride=(1, 2, 3), groups=2, dilation=2),
    ]
    for layer in layers:
        layer.implementation = implementation
        twin = _torch_twin(layer)
        size = (3, 4, 5)[: layer.dims]
        x = rng.standard_normal((2, *size))
        out, cache = layer.forward(x)
        xt = torch.tensor(x, requires_grad=True)
        expected = twin(xt)
        u = rng.standard_normal(out.shape)
        expected.backward(torch.tensor(u))
        np.testing.assert_allclose(out, expected.detach().numpy(), rtol=1e-12, atol=1e-12)
        dx, grads = layer.backward(u, cache)
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)
        for n, p in twin.named_parameters():
            np.testing.assert_allclose(grads[n], p.grad.numpy(), rtol=1e-12, atol=1e-12)
        empty = np.zeros((0, 2, *size))
        out, cache = layer.forward(empty)
        assert out.shape == tuple(twin(torch.zeros(empty.shape, dtype=torch.float64)).shape)
        dx, grads = layer.backward(out, cache)
        assert dx.shape == empty.shape
        assert all(not g.any() and g.shape == layer.params[n].shape for n, g in grads.items())


def test_transposed_output_size_edges_follow_torch():
    """forward(x, output_size): both ends of torch's range [L_min, L_min + s − 1] give torch's
    output (and gradients), one past either end is refused in one line; output_padding just
    below max(stride, dilation) is accepted, at it refused."""
    rng = np.random.default_rng(5)
    for layer, size in [
        (ConvTranspose1d(2, 3, 3, stride=3, padding=1), (4,)),
        (ConvTranspose3d(2, 3, (2, 1, 3), stride=(2, 3, 1), padding=(0, 1, 1)), (2, 3, 4)),
    ]:
        twin = _torch_twin(layer)
        x = rng.standard_normal((2, 2, *size))
        lowest = layer.forward(x)[0].shape[2:]
        strides = layer.geometry.stride[-len(size) :]
        highest = tuple(s + t - 1 for s, t in zip(lowest, strides, strict=True))
        for wanted in (lowest, highest, (2, 3, *highest)):
            xt = torch.tensor(x, requires_grad=True)
            expected = twin(xt, output_size=list(wanted))
            out, cache = layer.forward(x, output_size=wanted)
            np.testing.assert_allclose(out, expected.detach().numpy(), rtol=1e-12, atol=1e-12)
            u = rng.standard_normal(out.shape)
            expected.backward(torch.tensor(u))
            dx, grads = layer.backward(u, cache)
            np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(grads["weight"], twin.weight.grad.numpy(), atol=1e-12)
            twin.zero_grad()
        for outside in (
            tuple(s - 1 for s in lowest),
            tuple(s + 1 for s in highest),
        ):
            with pytest.raises(ValueError, match="must lie in"):
                layer.forward(x, output_size=outside)
    ConvTranspose3d(1, 1, 2, stride=(2, 1, 1), dilation=(1, 3, 1), output_padding=(1, 2, 0))
    with pytest.raises(ValueError, match="output_padding"):
        ConvTranspose3d(1, 1, 2, stride=(2, 1, 1), dilation=(1, 3, 1), output_padding=(2, 0, 0))
    with pytest.raises(ValueError, match="output_padding"):
        ConvTranspose1d(1, 1, 2, stride=2, output_padding=2)


def test_conv3d_option_edges_follow_torch():
    """'same' needs stride 1 (refused otherwise), 'valid' is 0; reflect padding must be
    smaller than the size (size − 1 accepted, size refused), circular at most the size; a
    kernel exactly the padded input gives an output of 1, one larger is refused."""
    rng = np.random.default_rng(7)
    with pytest.raises(ValueError, match="stride 1"):
        Conv3d(1, 1, 3, stride=(1, 2, 1), padding="same")
    x = rng.standard_normal((1, 1, 3, 4, 5))
    for layer in [
        Conv3d(1, 2, (2, 3, 4), padding="same", dilation=(1, 2, 1)),
        Conv3d(1, 2, 2, padding="valid"),
        Conv3d(1, 2, 1, padding=(2, 3, 4), padding_mode="reflect"),
        Conv3d(1, 2, 1, padding=(3, 4, 5), padding_mode="circular"),
        Conv3d(1, 2, (5, 6, 7), padding=1),
    ]:
        out, _ = layer.forward(x)
        np.testing.assert_allclose(
            out, _torch_twin(layer)(torch.tensor(x)).detach().numpy(), rtol=1e-12, atol=1e-12
        )
    for layer in [
        Conv3d(1, 2, 1, padding=(3, 1, 1), padding_mode="reflect"),
        Conv3d(1, 2, 1, padding=(4, 1, 1), padding_mode="circular"),
        Conv3d(1, 2, (6, 1, 1), padding=1),
    ]:
        with pytest.raises(ValueError):
            layer.forward(x)
    with pytest.raises(ValueError, match="kernel_size must be an integer ≥ 1 or 3"):
        Conv3d(1, 1, (2, 2))
    with pytest.raises(ValueError, match="groups=2 must divide"):
        Conv3d(3, 2, 1, groups=2)


LAZY = [
    (LazyConv1d, (4, 3), {"padding": 1}, (2, 3, 7)),
    (LazyConv2d, (4, 3), {"groups": 2, "padding_mode": "circular", "padding": 1}, (2, 4, 5, 6)),
    (LazyConv3d, (2, (1, 2, 3)), {"stride": 2}, (2, 3, 3, 4, 5)),
    (LazyConvTranspose1d, (3, 2), {"stride": 2, "output_padding": 1}, (2, 2, 5)),
    (LazyConvTranspose2d, (3, 2), {"groups": 3, "dilation": 2}, (2, 3, 4, 4)),
    (LazyConvTranspose3d, (2, 2), {"stride": (1, 2, 1)}, (2, 3, 3, 2, 2)),
]


@pytest.mark.parametrize("cls, args, kwargs, shape", LAZY, ids=lambda v: getattr(v, "__name__", ""))
def test_lazy_convolutions_match_torch(cls, args, kwargs, shape):
    """Lazy convolutions: no parameters before the first input (torch: uninitialised ones);
    the first input sets in_channels (batched or unbatched) and initialises the parameters as
    the eager class with the same seed; then output and every gradient agree with torch's
    lazy module (LAYER.conv2d & co.: the eager arithmetic); the configuration round trip
    rebuilds it uninitialised before and materialised after."""
    layer = cls(*args, **kwargs, seed=11)
    assert layer.has_uninitialized_params() and layer.in_channels == 0
    assert layer.named_parameters() == [] and layer.params == {}
    saved = LAYERS.get(layer.get_config())  # the configuration round trip, still lazy
    assert type(saved) is cls and saved.has_uninitialized_params()
    assert copy.deepcopy(layer).get_config() == layer.get_config()
    eager = cls.cls_to_become
    x = np.random.default_rng(2).standard_normal(shape)
    expected_shape = layer.output_shape(shape[1:])
    assert layer.params == {}  # output_shape materialises nothing
    layer.eval()
    out, cache = layer.forward(x)
    assert isinstance(layer, eager) and layer.in_channels == shape[1] and not layer.training
    assert out.shape[1:] == expected_shape and not layer.has_uninitialized_params()
    reference = eager(shape[1], *args, **kwargs, seed=11)
    for n, p in reference.params.items():
        np.testing.assert_array_equal(layer.params[n], p)
    rebuilt = LAYERS.get(layer.get_config())
    assert type(rebuilt) is cls and rebuilt.in_channels == shape[1]
    assert {n: p.shape for n, p in rebuilt.params.items()} == {
        n: p.shape for n, p in layer.params.items()
    }
    module = getattr(torch.nn, cls.__name__)(*args, **kwargs).double()
    xt = torch.tensor(x, requires_grad=True)
    module(xt)  # torch's materialisation
    with torch.no_grad():
        for n, p in module.named_parameters():
            p.copy_(torch.from_numpy(layer.params[n]))
    expected = module(xt)
    u = np.random.default_rng(4).standard_normal(out.shape)
    expected.backward(torch.tensor(u))
    dx, grads = layer.backward(u, cache)
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    for n, p in module.named_parameters():
        np.testing.assert_allclose(grads[n], p.grad.numpy(), rtol=1e-12, atol=1e-12)
    unbatched = cls(*args, **kwargs, seed=11)
    out1, _ = unbatched.forward(x[0])  # an unbatched sample sets in_channels too
    np.testing.assert_allclose(out1, out[0], rtol=1e-12, atol=1e-12)


def test_lazy_convolutions_refuse_bad_inputs_and_build_from_specs():
    """A channel count groups does not divide, or an input of the wrong rank, is refused in
    one line; from_shape (specs) materialises at once; the dtype is kept."""
    with pytest.raises(ValueError, match="multiple of groups=2"):
        LazyConv2d(4, 3, groups=2).forward(np.zeros((1, 3, 5, 5)))
    with pytest.raises(ValueError, match="infers in_channels"):
        LazyConv3d(4, 3).forward(np.zeros((1, 3, 5)))
    with pytest.raises(ValueError, match="groups=3 must divide"):
        LazyConv2d(4, 3, groups=3)
    with pytest.raises(ValueError, match="multiple of groups=2"):
        LazyConv2d(4, 3, groups=2, in_channels=3)
    built = LAYERS.lookup("lazy-conv2d").from_shape((3, 8, 8), 5, 3, padding=1)
    assert isinstance(built, Conv2d) and built.in_channels == 3
    assert built.params["weight"].shape == (5, 3, 3, 3)
    layer = LazyConvTranspose1d(2, 3, dtype="float32")
    out, _ = layer.forward(np.zeros((1, 4, 5), np.float32))
    assert out.dtype == np.float32 and layer.params["weight"].dtype == np.float32
