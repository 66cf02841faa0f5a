"""Conv2d, Conv1d, ConvTranspose2d: against torch (float64), each other, finite differences.

Geometries are drawn VALID by construction (``conv_geometries``): the kernel is drawn
up to what the padded input allows, so no example is filtered away; stride not dividing
the span, padding 0, 1×1 kernels, kernel = padded input (output size 1), "same" padding
with even kernels, dilation and groups (depthwise included) all occur.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.gradcheck import assert_gradients_close, finite_difference_gradient
from manual_bp.layers import _im2col as conv
from manual_bp.layers.convolution import Conv1d, Conv2d
from manual_bp.layers.convolution_transpose import ConvTranspose2d
from manual_bp.model_spec import parse_layers
from manual_bp.models.sequential import Sequential
from reference.checks_convolution import layer_comparisons
from reference.stack import random_stack, stack_comparisons

seeds = st.integers(0, 2**31 - 1)
# torch warns that 'same' with an even kernel pads a copy of the input; irrelevant here.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")


@st.composite
def conv_geometries(draw, dims: int = 2, transpose: bool = False) -> dict:
    """Keyword arguments of a valid layer plus ``size`` (spatial) and ``batch``."""
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    depthwise = draw(st.booleans()) and groups > 1
    c_in = groups * (1 if depthwise else draw(st.integers(1, max(1, 6 // groups))))
    c_out = groups * draw(st.integers(1, max(1, 6 // groups)))
    size = [draw(st.integers(1, 12)) for _ in range(dims)]
    same = not transpose and draw(st.integers(0, 4)) == 0
    stride = [1] * dims if same else [draw(st.integers(1, 4)) for _ in range(dims)]
    dilation = [draw(st.integers(1, 3)) for _ in range(dims)]
    padding = [draw(st.integers(0, 3)) for _ in range(dims)]
    kernel = []
    for a in range(dims):
        padded = 12 if transpose else size[a] + (0 if same else 2 * padding[a])
        k_max = (padded - 1) // dilation[a] + 1  # the dilated kernel fits the padded input
        kernel.append(draw(st.one_of(st.just(k_max), st.integers(1, min(k_max, 6)))))
    kwargs = {
        "in_channels": c_in,
        "out_channels": c_out,
        "kernel_size": tuple(kernel) if dims == 2 else kernel[0],
        "stride": tuple(stride) if dims == 2 else stride[0],
        "padding": "same" if same else (tuple(padding) if dims == 2 else padding[0]),
        "dilation": tuple(dilation) if dims == 2 else dilation[0],
        "groups": groups,
        "bias": draw(st.booleans()),
    }
    if transpose:
        pads, out_pads = [], []
        for a in range(dims):
            out_pad = draw(st.integers(0, max(stride[a], dilation[a]) - 1))
            full = (size[a] - 1) * stride[a] + dilation[a] * (kernel[a] - 1) + out_pad + 1
            pads.append(min(padding[a], (full - 1) // 2))  # output size ≥ 1
            out_pads.append(out_pad)
        kwargs["padding"], kwargs["output_padding"] = tuple(pads), tuple(out_pads)
    kwargs["implementation"] = draw(st.sampled_from(["fast", "readable"]))
    return {"kwargs": kwargs, "size": tuple(size), "batch": draw(st.integers(1, 4))}


def _both_forms(geometry: dict, cls, seed: int):
    """The layer in its fast AND its readable form (same parameters, same data)."""
    for implementation in ("fast", "readable"):
        yield _layer(geometry, cls, seed, implementation=implementation)


def _layer(geometry: dict, cls, seed: int, **extra):
    layer = cls(**{**geometry["kwargs"], **extra}, seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((geometry["batch"], layer.in_channels, *geometry["size"]))
    return layer, x, rng


def _check_all(comparisons) -> None:
    for comparison in comparisons:
        comparison.check()


@settings(max_examples=60)
@given(conv_geometries(), seeds)
def test_conv2d_layer_matches_torch(geometry, seed):
    """CONV.forward and LAYER.conv2d: output, ∂C/∂x, ∂C/∂W, ∂C/∂b against F.conv2d.

    C = Σ u ⊙ out with a random upstream gradient u (never all ones).
    """
    for layer, x, rng in _both_forms(geometry, Conv2d, seed):
        _check_all(layer_comparisons(layer, x, rng))


@settings(max_examples=30)
@given(conv_geometries(dims=1), seeds)
def test_conv1d_layer_matches_torch(geometry, seed):
    """LAYER.conv1d: everything against F.conv1d on (N, C, L) inputs."""
    for layer, x, rng in _both_forms(geometry, Conv1d, seed):
        assert layer.params["weight"].ndim == 3
        _check_all(layer_comparisons(layer, x, rng))


@settings(max_examples=40)
@given(conv_geometries(transpose=True), seeds)
def test_conv_transpose2d_matches_torch(geometry, seed):
    """LAYER.conv-transpose2d: output, ∂C/∂x, ∂C/∂W, ∂C/∂b against F.conv_transpose2d."""
    for layer, x, rng in _both_forms(geometry, ConvTranspose2d, seed):
        _check_all(layer_comparisons(layer, x, rng))


@settings(max_examples=40)
@given(conv_geometries(), seeds)
def test_readable_equals_fast(geometry, seed):
    """CONV.fast: im2col + GEMM equals the readable sums (forward, ∂C/∂W, ∂C/∂x), float64."""
    layer, x, rng = _layer(geometry, Conv2d, seed, implementation="fast")
    readable = Conv2d(**{**geometry["kwargs"], "implementation": "readable"})
    readable.params["weight"][...] = layer.params["weight"]
    if layer.has_bias:
        readable.params["bias"][...] = layer.params["bias"]
    out, cache = layer.forward(x)
    out_r, cache_r = readable.forward(x)
    u = rng.standard_normal(out.shape)
    dx, grads = layer.backward(u, cache)
    dx_r, grads_r = readable.backward(u, cache_r)
    scale_x = np.abs(x).max() * np.abs(layer.params["weight"]).sum() + 1
    assert_gradients_close(out, out_r, name="forward", scale=np.full(out.shape, scale_x))
    scale_u = np.abs(u).sum() * max(np.abs(x).max(), np.abs(layer.params["weight"]).max())
    assert_gradients_close(dx, dx_r, name="∂C/∂x", scale=np.full(dx.shape, scale_u))
    for name in grads:
        assert_gradients_close(
            grads[name], grads_r[name], name=name, scale=np.full(grads[name].shape, scale_u)
        )


@settings(max_examples=40)
@given(conv_geometries(), seeds)
def test_adjoint_identity(geometry, seed):
    """CONV.input: ⟨u, K v⟩ = ⟨Kᵀ u, v⟩ for the input map and the weight map, and the
    transposed convolution's forward IS the convolution's input-gradient map."""
    layer, v, rng = _layer(geometry, Conv2d, seed)
    layer.has_bias and layer.params["bias"].fill(0.0)
    out, cache = layer.forward(v)
    u = rng.standard_normal(out.shape)
    dv, grads = layer.backward(u, cache)
    lhs, rhs = float(np.sum(u * out)), float(np.sum(dv * v))
    bound = 64 * np.finfo(float).eps * (np.abs(u).sum() * np.abs(out).max() + 1) * 10
    assert abs(lhs - rhs) <= bound, (lhs, rhs)
    # the weight map: ⟨u, K_x W⟩ = ⟨∂C/∂W, W⟩ (linear in W at fixed x)
    assert abs(lhs - float(np.sum(grads["weight"] * layer.params["weight"]))) <= bound
    kw = geometry["kwargs"]
    if kw["padding"] == "same":
        return  # ConvTranspose2d has no 'same'
    stride, dilation, kernel = (
        np.broadcast_to(kw[k], 2) for k in ("stride", "dilation", "kernel_size")
    )
    size, out_size = geometry["size"], out.shape[2:]
    out_pad = tuple(
        int(size[a] + 2 * np.broadcast_to(kw["padding"], 2)[a] - dilation[a] * (kernel[a] - 1) - 1)
        % int(stride[a])
        for a in range(2)
    )
    transpose = ConvTranspose2d(
        layer.out_channels,
        layer.in_channels,
        kw["kernel_size"],
        kw["stride"],
        kw["padding"],
        out_pad,
        kw["groups"],
        False,
        kw["dilation"],
        implementation=kw["implementation"],
    )
    if any(p >= max(s, d) for p, s, d in zip(out_pad, stride, dilation, strict=True)):
        return  # this input size is not reachable by torch's output_padding rule
    transpose.params["weight"][...] = layer.params["weight"]
    y, _ = transpose.forward(u)
    assert y.shape == v.shape and out_size == u.shape[2:]
    assert_gradients_close(
        y, dv, name="ConvTranspose2d forward vs Conv2d ∂C/∂x", scale=np.full(y.shape, bound)
    )


@settings(max_examples=15)
@given(conv_geometries(), seeds)
def test_conv_gradients_match_finite_differences(geometry, seed):
    """CONV.weight (and CONV.input, the bias) against central finite differences (no torch).

    C = Σ u ⊙ tanh(conv(x)): smooth, so the difference quotient converges.
    """
    layer, x, rng = _layer(geometry, Conv2d, seed)
    out, cache = layer.forward(x)
    u = rng.standard_normal(out.shape)

    def cost() -> float:
        return float(np.sum(u * np.tanh(layer.forward(x)[0])))

    dx, grads = layer.backward(u * (1 - np.tanh(out) ** 2), cache)
    for name, actual, array in [
        ("∂C/∂x", dx, x),
        *((f"∂C/∂{k}", grads[k], layer.params[k]) for k in grads),
    ]:
        expected, error = finite_difference_gradient(cost, array, return_error=True)
        atol = 1e-7 * (1 + np.abs(expected).max()) + 4 * error
        assert_gradients_close(actual, expected, name=name, atol=atol, rtol=0.0)


@settings(max_examples=30)
@given(seeds)
def test_conv_layers_in_random_cnn_stacks(seed):
    """LAYER.conv2d, LAYER.maxpool2d, LAYER.avgpool2d mid-stack: conv → BN → act → pool → …
    → flatten → dense → softmax, log-likelihood, against the torch stack (every image block,
    batch norm and dropout2d included; a conv bias in front of batch norm sums to ~0 and is
    bounded by the oracle's Σ|terms| scale)."""
    model, x, y = random_stack(np.random.default_rng(seed), "images", max_blocks=4)
    _check_all(stack_comparisons(model, x, y))


def test_lenet_spec_infers_channels_and_trains_one_step():
    """The LeNet-5 spec of docs/results.md, as the CLI parses it: ``conv2d(6, 5, padding=2)``
    infers in_channels from (C, H, W); the shapes of LeNet-5."""
    spec = parse_layers(
        "reshape(1,28,28), conv2d(6,5,padding=2), relu, maxpool2d(2), conv2d(16,5), relu, "
        "maxpool2d(2), flatten, dense(120), relu, dense(84), relu, dense(10), softmax"
    )
    model = Sequential.from_spec(spec, (784,), 10, cost="log-likelihood", seed=0)
    conv2 = model.layers[4]
    assert isinstance(conv2, Conv2d) and conv2.params["weight"].shape == (16, 6, 5, 5)
    assert model.layers[6].output_shape((16, 10, 10)) == (16, 5, 5)
    grads = model.backprop(np.random.default_rng(0).random((3, 784)), np.array([1, 2, 3]))
    assert np.isfinite(grads.cost)


def test_default_initialisation_is_torchs():
    """U(±1/√fan_in) for weight and bias, fan_in = C_in/groups · kH · kW (as nn.Conv2d)."""
    layer = Conv2d(6, 32, (3, 5), groups=2, seed=0)
    bound = 1 / math.sqrt(3 * 3 * 5)
    for name in ("weight", "bias"):
        values = layer.params[name]
        assert np.abs(values).max() <= bound and np.abs(values).max() > 0.8 * bound
    t = ConvTranspose2d(4, 6, 3, groups=2, seed=0)
    assert t.params["weight"].shape == (4, 3, 3, 3)
    assert np.abs(t.params["bias"]).max() <= 1 / math.sqrt(27)


def test_float32_is_preserved():
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 7)).astype(np.float32)
    for layer in (
        Conv2d(3, 4, 3, 2, 1, dtype="float32"),
        ConvTranspose2d(3, 4, 3, 2, dtype="float32"),
    ):
        out, cache = layer.forward(x)
        dx, grads = layer.backward(np.ones_like(out), cache)
        assert out.dtype == dx.dtype == grads["weight"].dtype == np.float32


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"padding_mode": "mirror"}, "padding_mode must be one of"),
        ({"device": "cuda"}, "device='cuda' has no meaning"),
        ({"dtype": "float16"}, "dtype must be float32 or float64"),
        ({"groups": 4}, "groups=4 must divide"),
        ({"padding": "same", "stride": 2}, "padding='same' needs stride 1"),
        ({"padding": "full"}, "padding must be an int"),
        ({"kernel_size": 0}, "kernel_size must be an integer"),
        ({"stride": (1, 2, 3)}, "stride must be an integer"),
        ({"bias": 1}, "bias must be True or False"),
        ({"implementation": "cuda"}, "implementation must be"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, message):
    args = {"in_channels": 6, "out_channels": 6, "kernel_size": 3, **kwargs}
    with pytest.raises((ValueError, TypeError), match=message):
        Conv2d(**args)


def test_bad_inputs_are_rejected():
    layer = Conv2d(3, 4, 5)
    with pytest.raises(ValueError, match="C = 3"):
        layer.forward(np.zeros((2, 2, 8, 8)))
    with pytest.raises(ValueError, match="smaller than the dilated kernel"):
        layer.forward(np.zeros((2, 3, 4, 8)))
    with pytest.raises(ValueError, match="expected 4 axes"):
        layer.forward(np.zeros((8, 8)))  # (C, H, W) is one sample, as torch; (H, W) is not
    _, cache = layer.forward(np.zeros((2, 3, 8, 8)))
    with pytest.raises(ValueError, match="upstream gradient"):
        layer.backward(np.zeros((2, 4, 3, 3)), cache)
    with pytest.raises(ValueError, match="output_padding"):
        ConvTranspose2d(2, 2, 3, stride=2, output_padding=2)


def test_padding_is_never_an_empty_slice():
    """p = 0 on one side (a [p:-p] slice would be empty) and asymmetric 'same' padding."""
    x = np.arange(2 * 5 * 4, dtype=float).reshape(1, 2, 5, 4)
    assert conv.pad(x, ((0, 0), (0, 0))).shape == x.shape
    assert np.array_equal(conv.unpad(conv.pad(x, ((0, 1), (2, 0))), ((0, 1), (2, 0)), (5, 4)), x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer = Conv2d(2, 1, (2, 4), padding="same")
    assert layer.geometry.padding == ((0, 1), (1, 2))


@settings(max_examples=20)
@given(conv_geometries(), seeds, st.sampled_from([Conv2d, Conv1d]))
def test_conv_jvp_is_the_bilinear_increment(geometry, seed, cls):
    """jvp: the convolution is bilinear in (x, W), so J·(dx, dW, db) equals
    conv(x + dx, W + dW) − conv(x, W) − conv(dx, dW) exactly (up to rounding)."""
    if cls is Conv1d:
        kw = geometry["kwargs"]
        geometry = {
            **geometry,
            "size": geometry["size"][1:],
            "kwargs": {
                **kw,
                **{k: kw[k][1] for k in ("kernel_size", "stride", "dilation") if kw[k]},
                "padding": kw["padding"] if kw["padding"] == "same" else kw["padding"][1],
            },
        }
    layer, x, rng = _layer(geometry, cls, seed)
    out, cache = layer.forward(x)
    dx = rng.standard_normal(x.shape)
    dparams = {k: rng.standard_normal(v.shape) for k, v in layer.params.items()}
    jvp = layer.jvp(cache, dx, dparams)

    def run(inputs, params):
        saved = {k: v.copy() for k, v in layer.params.items()}
        for k, v in params.items():
            layer.params[k][...] = v
        result = layer.forward(inputs)[0]
        for k, v in saved.items():
            layer.params[k][...] = v
        return result

    plus = run(x + dx, {k: layer.params[k] + dparams[k] for k in dparams})
    zero_bias = {"bias": 0 * dparams["bias"]} if layer.has_bias else {}
    cross = run(dx, {"weight": dparams["weight"], **zero_bias})
    expected = plus - out - cross
    scale = np.full(
        jvp.shape, (np.abs(x) + np.abs(dx)).max() * 4 * np.abs(dparams["weight"]).sum() + 4
    )
    assert_gradients_close(jvp, expected, name="jvp", scale=scale)


@settings(max_examples=30)
@given(conv_geometries(), seeds, st.integers(1, 9))
def test_panelled_gemms_match_torch(geometry, seed, panel):
    """CONV.fast cuts a small-matrix × long-panel GEMM into column panels (and accumulates
    the weight gradient's long reduction panel by panel). With a panel of 1–9 columns every
    drawn geometry takes that path, remainders included: output, ∂C/∂x, ∂C/∂W against torch."""
    geometry["kwargs"]["implementation"] = "fast"
    layer, x, rng = _layer(geometry, Conv2d, seed)
    saved = conv.PANEL, conv.SMALL_GEMM
    conv.PANEL, conv.SMALL_GEMM = panel, 10**9
    try:
        _check_all(layer_comparisons(layer, x, rng))
    finally:
        conv.PANEL, conv.SMALL_GEMM = saved


def test_lenet_first_layer_geometry_matches_torch():
    """The geometry the panels were tuned on (batch 64, 1 → 6 channels, 5×5, 28×28 padded)."""
    layer = Conv2d(1, 6, 5, padding=2, seed=3)
    rng = np.random.default_rng(3)
    _check_all(layer_comparisons(layer, rng.standard_normal((64, 1, 28, 28)), rng))


# ------------------------------------------------------------------ torch's options (issue 23)
@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(["zeros", "reflect", "replicate", "circular"]),
    st.integers(1, 7),
    st.integers(1, 7),
    st.integers(0, 6),
    st.integers(0, 6),
    seeds,
)
def test_padding_modes_match_torch(mode, h, w, before, after, seed):
    """PAD.map: the index map's gather and its scatter-back VJP against F.pad's autograd,
    for every mode on both axes (asymmetric pads; torch's size rules), and Conv1d/Conv2d
    with the mode (integer and 'same' padding) against the module's F.pad + conv."""
    from manual_bp.layers.padding import PadMap

    rng = np.random.default_rng(seed)
    pads = ((before, after), (after, before))
    pad_map = PadMap(pads, mode)
    x = rng.standard_normal((2, 3, h, w))
    allowed = {
        "reflect": max(before, after) < min(h, w),
        "circular": max(before, after) <= min(h, w),
    }
    if not allowed.get(mode, True):
        with pytest.raises(ValueError, match=f"padding_mode='{mode}'"):
            pad_map.forward(x)
        return
    xt = torch.tensor(x, requires_grad=True)
    mode_t = "constant" if mode == "zeros" else mode
    padded = torch.nn.functional.pad(xt, [after, before, before, after], mode=mode_t)
    upstream = rng.standard_normal(tuple(padded.shape))
    padded.backward(torch.tensor(upstream))
    assert np.array_equal(pad_map.forward(x), padded.detach().numpy())
    np.testing.assert_allclose(
        pad_map.vjp(upstream, (h, w)), xt.grad.numpy(), rtol=1e-13, atol=1e-13
    )
    # the layers: a padding mode with integer padding, then with 'same'
    for cls, shape in ((Conv2d, (2, 3, h, w)), (Conv1d, (2, 3, w))):
        for padding, kernel in ((min(before, h - 1, w - 1), 3), ("same", 2)):
            if mode in ("reflect",) and kernel - 1 >= min(h, w):
                continue
            layer = cls(3, 4, kernel, padding=padding, padding_mode=mode, seed=seed)
            if min(layer._padded_size(shape[2:] if cls is Conv2d else (1, w))) < kernel:
                continue
            for comparison in layer_comparisons(layer, rng.standard_normal(shape), rng):
                comparison.check()


def test_padding_mode_rules_follow_torch():
    """reflect needs padding < size, circular ≤ size (torch's messages' rule); ConvTranspose2d
    takes zeros only; an unknown mode is named."""
    with pytest.raises(ValueError, match="smaller than the input size 3"):
        Conv2d(1, 1, 3, padding=3, padding_mode="reflect").forward(np.zeros((1, 1, 3, 8)))
    with pytest.raises(ValueError, match="at most the input size 2"):
        Conv1d(1, 1, 1, padding=3, padding_mode="circular").forward(np.zeros((1, 1, 2)))
    Conv1d(1, 1, 1, padding=2, padding_mode="circular").forward(np.zeros((1, 1, 2)))
    Conv2d(1, 1, 1, padding=5, padding_mode="replicate").forward(np.zeros((1, 1, 1, 1)))
    with pytest.raises(ValueError, match="padding_mode must be one of \\('zeros',\\)"):
        ConvTranspose2d(1, 1, 3, padding_mode="reflect")


@pytest.mark.parametrize("implementation", ["fast", "readable"])
def test_unbatched_inputs_match_torch(implementation):
    """torch's unbatched (C, L) / (C, H, W) inputs: Conv1d, Conv2d (a padding mode, 'same')
    and ConvTranspose2d (output_size) against the torch modules; products against the
    batch of one."""
    rng = np.random.default_rng(0)
    cases = [
        (Conv1d, dict(in_channels=4, out_channels=5, kernel_size=3, padding="same"), (4, 7), {}),
        (
            Conv2d,
            dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, groups=2,
                 padding_mode="reflect"),
            (4, 6, 5),
            {},
        ),
        (
            ConvTranspose2d,
            dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, groups=2),
            (4, 3, 4),
            {"output_size": (6, 8)},
        ),
    ]  # fmt: skip
    for cls, kwargs, shape, call in cases:
        module = getattr(torch.nn, cls.__name__)(**kwargs).double()
        layer = cls(**kwargs, implementation=implementation)
        for name, tensor in module.named_parameters():
            layer.params[name][...] = tensor.detach().numpy()
        x = rng.standard_normal(shape)
        xt = torch.tensor(x, requires_grad=True)
        out_t = module(xt, **call)
        upstream = rng.standard_normal(tuple(out_t.shape))
        out_t.backward(torch.tensor(upstream))
        out, cache = layer.forward(x, **call)
        dx, grads = layer.backward(upstream, cache)
        assert cache.input is x and out.shape == tuple(out_t.shape)
        np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)
        for name, tensor in module.named_parameters():
            np.testing.assert_allclose(grads[name], tensor.grad.numpy(), rtol=1e-12, atol=1e-12)
        _, batched = layer.forward(x[None], **call)
        M = rng.standard_normal((2, *out.shape))
        T = rng.standard_normal((2, *x.shape))
        T_p = {n: rng.standard_normal((2, *p.shape)) for n, p in layer.params.items()}
        pairs = [
            (layer.input_vjp(cache, M), layer.input_vjp(batched, M[:, None])[:, 0]),
            (layer.input_jvp(cache, T), layer.input_jvp(batched, T[:, None])[:, 0]),
            (layer.param_jvp(cache, T_p), layer.param_jvp(batched, T_p)[:, 0]),
            (layer.residual(cache, upstream, T, T_p)[0],
             layer.residual(batched, upstream[None], T[:, None], T_p)[0][:, 0]),
        ]  # fmt: skip
        per_sample = layer.param_vjp(batched, M[:, None], sum_batch=False)
        for name, value in layer.param_vjp(cache, M, sum_batch=False).items():
            pairs.append((value, per_sample[name][:, 0]))
        for ours, reference in pairs:
            np.testing.assert_array_equal(ours, reference)


def test_conv_transpose2d_output_size_and_empty_batches_follow_torch():
    """ConvTranspose2d.forward(x, output_size): torch's output_padding per call (its range
    checked); empty batches of every convolution give empty outputs and zero gradients."""
    layer = ConvTranspose2d(2, 3, 3, stride=3, padding=1)
    module = torch.nn.ConvTranspose2d(2, 3, 3, stride=3, padding=1).double()
    x = np.random.default_rng(1).standard_normal((2, 2, 3, 4))
    for size in [(7, 10), (9, 12), (8, 11), (2, 3, 9, 10)]:
        expected = module(torch.tensor(x), output_size=size).shape
        out, cache = layer.forward(x, output_size=size)
        assert out.shape == tuple(expected)
        dx, _ = layer.backward(np.ones_like(out), cache)
        assert dx.shape == x.shape
    with pytest.raises(ValueError, match=r"must lie in \[7, 9\]"):
        layer.forward(x, output_size=(10, 10))
    for empty, conv_layer in [
        (np.zeros((0, 2, 3, 4)), ConvTranspose2d(2, 3, 3, stride=2)),
        (np.zeros((0, 2, 5, 4)), Conv2d(2, 3, 3, padding=1, padding_mode="circular")),
        (np.zeros((0, 2, 5)), Conv1d(2, 3, 3)),
    ]:
        module = getattr(torch.nn, type(conv_layer).__name__)(
            **{k: conv_layer.hyperparameter(k) for k in ("in_channels", "out_channels")},
            kernel_size=conv_layer.kernel_size,
            stride=conv_layer.stride,
            padding=conv_layer.padding,
        )
        out, cache = conv_layer.forward(empty)
        assert out.shape == tuple(module(torch.zeros(empty.shape)).shape)
        dx, grads = conv_layer.backward(out, cache)
        assert dx.shape == empty.shape
        assert all(not g.any() and g.shape == conv_layer.params[n].shape for n, g in grads.items())


def test_new_options_survive_the_config_round_trip():
    """padding_mode and the other torch options in get_config / LAYERS.get."""
    from manual_bp.layers import LAYERS

    for layer in (
        Conv2d(2, 3, 3, padding="same", padding_mode="replicate"),
        Conv1d(2, 2, 2, padding=1, padding_mode="circular", groups=2),
        ConvTranspose2d(2, 4, 3, stride=2, output_padding=1, groups=2, dilation=2),
    ):
        copy = LAYERS.get(layer.get_config())
        assert copy.get_config() == layer.get_config()
        assert copy.pad_map == layer.pad_map if hasattr(layer, "pad_map") else True
