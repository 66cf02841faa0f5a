"""Blind spots of the layers (``manual_bp/layers/``) found by mutation testing (issue 15,
docs/mutation.md): behaviour a user sees — spec forms, error lines, reprs, forward modes —
that no other test pinned. The mutants each test kills are listed in docs/mutation.md.
"""

from __future__ import annotations

import numpy as np
import pytest

from manual_bp import Sequential
from manual_bp.activations import ACTIVATIONS
from manual_bp.layers import LAYERS, Cache, Dense, Identity, Layer, MaxPool2d, Reshape


def test_unknown_layer_name_lists_every_layer_and_activation():
    """An unknown name in a spec: one line listing the valid names, comma-separated."""
    with pytest.raises(ValueError) as info:
        Sequential.from_spec(["no-such-layer"], (3,), 2, cost="quadratic")
    message = str(info.value)
    assert f"layers: {', '.join(LAYERS.names())};" in message
    assert message.endswith(f"activations: {', '.join(ACTIVATIONS.names())}")


def test_a_layer_without_forward_mode_names_itself():
    """``jvp`` of a layer that has none: ``NotImplementedError`` naming the class (every
    registered layer has one now; a user's own layer may not)."""

    class Square(Layer):
        def forward(self, x):
            return x * x, Cache(x)

    layer = Square()
    _, cache = layer.forward(np.zeros((1, 2)))
    with pytest.raises(NotImplementedError, match=r"^Square has no input_jvp"):
        layer.jvp(cache, np.zeros((1, 2)))


def test_extra_state_of_a_stateless_layer_is_refused_naming_the_keys():
    """Loading extra state into a layer that keeps none: a ``ValueError`` naming the keys."""
    with pytest.raises(ValueError, match=r"Dense has no extra state, got \['b', 'z'\]"):
        Dense(2, 3).set_extra_state({"z": 1, "b": 2})
    Dense(2, 3).set_extra_state({})  # nothing to restore: accepted


def test_identity_and_reshape_forward_modes():
    """``jvp`` with no input tangent (``dx=None``: only parameters move, and these layers
    have none) is zero; with a tangent, it is the layer applied to the tangent."""
    rng = np.random.default_rng(0)
    x, dx = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    _, cache = Identity().forward(x)
    zero = Identity().jvp(cache, None)
    assert zero.shape == x.shape and zero.dtype == x.dtype and not zero.any()
    np.testing.assert_array_equal(Identity().jvp(cache, dx), dx)
    layer = Reshape(4, -1)
    out, cache = layer.forward(x)
    np.testing.assert_array_equal(layer.jvp(cache, dx), dx.reshape(2, 4, 3))
    assert out.shape == (2, 4, 3)


def test_reshape_takes_its_shape_as_arguments_or_as_one_sequence():
    """``Reshape(4, -1)``, ``Reshape((4, -1))`` and ``Reshape([4, -1])`` are the same layer."""
    x = np.arange(24.0).reshape(2, 3, 4)
    expected = Reshape(4, -1).forward(x)[0]
    for layer in (Reshape((4, -1)), Reshape([4, -1])):
        assert layer.shape == (4, -1)
        np.testing.assert_array_equal(layer.forward(x)[0], expected)


def test_residual_spec_takes_only_its_layers():
    """``residual(..., width=3)``: one line naming the unexpected option."""
    with pytest.raises(
        ValueError, match=r"layer 'residual' has no option\(s\) \['width'\]; options: layers$"
    ):
        Sequential.from_spec([("residual", (["dense"],), {"width": 3})], (3,), 2)


def test_dense_repr_shows_a_missing_bias_and_spec_gives_out_features_once():
    """``repr`` round-trips the constructor call; ``dense(30, out_features=30)`` is one
    clear error, not Python's "multiple values" from inside the constructor."""
    assert repr(Dense(3, 4)) == "Dense(3, 4)"
    assert repr(Dense(3, 4, bias=False)) == "Dense(3, 4, bias=False)"
    with pytest.raises(ValueError, match="dense: give out_features once"):
        Sequential.from_spec([("dense", (5,), {"out_features": 5})], (3,), 2)


def test_activation_layer_defaults_to_the_identity():
    """``ActivationLayer()`` with no argument is the identity map (its backward too)."""
    from manual_bp.layers import ActivationLayer

    x = np.random.default_rng(1).standard_normal((3, 4))
    layer = ActivationLayer()
    out, cache = layer.forward(x)
    np.testing.assert_array_equal(out, x)
    np.testing.assert_array_equal(layer.backward(2 * x, cache)[0], 2 * x)


@pytest.mark.parametrize("kind", ["dense", "conv2d", "conv-transpose2d"])
def test_default_biases_follow_torch_bound_from_the_weight_fan_in(kind):
    """torch's default bias ``U(−1/√fan_in, 1/√fan_in)``, ``fan_in`` of the *weight*
    (``in_features``; ``C_in/G·kH·kW``; ``C_out/G·kH·kW`` for a transposed convolution):
    every bias inside the bound and the largest near it (2000 draws)."""
    from manual_bp.layers import Conv2d, ConvTranspose2d

    if kind == "dense":
        layer, fan_in = Dense(3, 2000, seed=0), 3
    elif kind == "conv2d":  # weight (C_out, C_in/G, kH, kW)
        layer, fan_in = Conv2d(2, 2000, 2, seed=0), 2 * 2 * 2
    else:  # weight (C_in, C_out/G, kH, kW): torch's fan_in is C_out/G · kH · kW
        layer, fan_in = ConvTranspose2d(2, 2000, 1, groups=2, seed=0), 1000
    bias, bound = layer.params["bias"], 1 / np.sqrt(fan_in)
    assert np.abs(bias).max() <= bound
    assert np.abs(bias).max() > 0.98 * bound


@pytest.mark.parametrize("kind", ["dense", "conv2d"])
def test_nielsen_biases_are_standard_normal(kind):
    """``bias_init="nielsen"``: Nielsen's biases are N(0, 1), whatever the fan-in."""
    from manual_bp.layers import Conv2d

    if kind == "dense":
        layer = Dense(50, 4000, bias_init="nielsen", seed=1)
    else:
        layer = Conv2d(16, 4000, 3, bias_init="nielsen", seed=1)
    std = layer.params["bias"].std()
    assert abs(std - 1.0) < 0.05  # sample std of 4000 normals: ±0.011 (1σ)


def test_convolution_specs_name_the_input_shape_they_need():
    """``conv2d`` on features, ``conv1d`` on images: one line saying what shape it needs."""
    with pytest.raises(ValueError, match=r"conv2d needs per-sample inputs \(C, H, W\), got \(3,\)"):
        Sequential.from_spec([("conv2d", (4, 3), {})], (3,), 2)
    with pytest.raises(ValueError, match=r"conv1d needs per-sample inputs \(C, L\), got \(3,\)"):
        Sequential.from_spec([("conv1d", (4, 3), {})], (3,), 2)


def test_transposed_convolution_out_channels_is_one_integer():
    """``out_channels`` is a single count: a pair is refused with the parameter's name."""
    from manual_bp.layers import ConvTranspose2d

    with pytest.raises(ValueError, match="out_channels"):
        ConvTranspose2d(2, (3, 3), 2)


# ---------------------------------------------------------------------------- pooling
def test_avgpool_stride_is_honoured_and_float32_stays_float32():
    """``AvgPool2d(2, stride=1)`` against ``F.avg_pool2d`` (overlapping windows), and a
    float32 input gives a float32 output (no silent promotion)."""
    import torch
    import torch.nn.functional as F

    from manual_bp.layers import AvgPool2d

    x = np.random.default_rng(2).standard_normal((2, 3, 4, 5))
    out, _ = AvgPool2d(2, stride=1).forward(x)
    expected = F.avg_pool2d(torch.tensor(x), 2, stride=1).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-14, atol=1e-15)
    assert AvgPool2d(2).forward(x.astype(np.float32))[0].dtype == np.float32


def test_pooling_repr_and_bad_dilation_message():
    """``repr`` shows the geometry; a bad ``dilation`` is named in its error line."""
    assert repr(MaxPool2d(3, stride=1, padding=1)) == "MaxPool2d(3, stride=1, padding=1)"
    with pytest.raises(ValueError, match=r"^dilation must be an integer ≥ 1"):
        MaxPool2d(2, dilation=0)


# ---------------------------------------------------------------------------- dropout
def test_dropout_names_its_input_in_shape_errors():
    from manual_bp.layers import Dropout

    with pytest.raises(ValueError, match=r": x has shape \(\)"):
        Dropout(0.5).forward(np.array(1.0))


# ---------------------------------------------------------------------------- normalisation
def test_normalisation_arguments_and_errors_are_one_clear_line():
    """Type errors name the parameter; a wrong upstream gradient or input is refused."""
    from manual_bp.layers import BatchNorm1d, LayerNorm

    with pytest.raises(TypeError, match=r"^eps must be a number, got 'a'"):
        LayerNorm(3, eps="a")
    layer = LayerNorm(3)
    _, cache = layer.forward(np.random.default_rng(3).standard_normal((4, 3)))
    with pytest.raises(ValueError, match=r"dout has shape \(4, 2\), expected \(4, 3\)"):
        layer.backward(np.ones((4, 2)), cache)
    with pytest.raises(ValueError, match=r"per-sample input \(2,\) does not end in"):
        layer.output_shape((2,))
    # a spec may give num_features explicitly; float32 stays float32
    model = Sequential.from_spec([{"name": "batchnorm1d", "num_features": 3}], (3,), 3)
    assert model.layers[0].num_features == 3
    bn = BatchNorm1d(3, dtype=np.float32)
    out, _ = bn.forward(np.random.default_rng(4).standard_normal((5, 3)).astype(np.float32))
    assert out.dtype == np.float32 and bn.params["weight"].dtype == np.float32


def test_layernorm_refuses_an_upstream_gradient_of_another_shape():
    """Even one that would broadcast: ``dout`` must have the output's shape."""
    from manual_bp.layers import LayerNorm

    layer = LayerNorm(3)
    _, cache = layer.forward(np.random.default_rng(5).standard_normal((4, 3)))
    with pytest.raises(ValueError, match=r"dout has shape \(1, 3\), expected \(4, 3\)"):
        layer.backward(np.ones((1, 3)), cache)


# ---------------------------------------------------------------------------- second pass
def test_spec_triples_and_their_positional_arguments():
    """``("dense", (5, False), {})``: a (name, args, kwargs) triple, every positional
    argument passed on (here ``bias=False``)."""
    model = Sequential.from_spec([("dense", (5, False), {}), ("dense", (2,), {})], (3,), 2)
    first, second = model.layers
    assert (first.in_features, first.out_features, first.has_bias) == (3, 5, False)
    assert (second.in_features, second.out_features, second.has_bias) == (5, 2, True)


def test_layers_refuse_inputs_without_a_batch_axis_or_with_too_many_axes():
    """A single sample (no batch axis) is one clear error for ``Reshape`` (its shape is per
    sample), while ``Dense`` takes an unbatched ``(n_in,)`` vector as ``nn.Linear`` does;
    ``Dense`` and ``Reshape`` take at most 32 axes (NumPy 1.x's limit, kept under NumPy 2)."""
    with pytest.raises(ValueError, match=r"x has shape \(6,\) \(1 axes\); expected 2 or"):
        Reshape(3, -1).forward(np.ones(6))
    assert Dense(3, 2).forward(np.ones(3))[0].shape == (2,)
    with pytest.raises(ValueError, match=r"\(33 axes\)"):
        Dense(3, 2).forward(np.zeros((1,) * 32 + (3,)))


def test_layer_error_lines_and_reprs():
    from manual_bp.layers import ActivationLayer, Flatten

    assert repr(Flatten()) == "Flatten()"
    with pytest.raises(ValueError, match=r"^reshape needs positive sizes \(one may be -1\)"):
        Reshape(0, 3)
    layer = ActivationLayer("tanh")
    _, cache = layer.forward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"upstream gradient has shape \(2, 4\), expected"):
        layer.backward(np.zeros((2, 4)), cache)


def test_a_float32_dense_layer_has_float32_parameters():
    layer = Dense(3, 4, dtype=np.float32)
    assert layer.params["weight"].dtype == np.float32
    assert layer.params["bias"].dtype == np.float32


@pytest.mark.parametrize("name", sorted(cls.__name__ for cls in LAYERS.classes()))
def test_layer_defaults_are_torchs(name):
    """Every keyword default a layer shares with its ``torch.nn`` twin has torch's value
    (``dtype`` excepted: float64 here, torch's default float32); recurrent layers have
    ``num_layers=1, bias=True, bidirectional=False`` as torch's."""
    import inspect

    import torch

    def defaults(function) -> dict:
        parameters = inspect.signature(function).parameters.items()
        return {k: p.default for k, p in parameters if p.default is not inspect.Parameter.empty}

    cls = next(c for c in LAYERS.classes() if c.__name__ == name)
    ours = defaults(cls.__init__)
    ours.pop("dtype", None)
    ours.pop("device", None)  # None in both; the library refuses any but the CPU
    if name in ("RNN", "LSTM", "GRU"):  # torch's signature is (*args, **kwargs)
        from manual_bp.layers.recurrent import RecurrentLayer

        base = defaults(RecurrentLayer.__init__)
        assert (base["num_layers"], base["bias"], base["bidirectional"]) == (1, True, False)
        return
    twin = getattr(torch.nn, {"Dense": "Linear"}.get(name, name), None)
    if twin is None:
        return  # ActivationLayer, GlobalAvgPool2d, Reshape, Residual: no torch twin
    theirs = defaults(twin.__init__)
    for key in ours.keys() & theirs.keys():
        if callable(theirs[key]) and isinstance(ours[key], str):  # torch's F.relu: "relu"
            assert ours[key] == theirs[key].__name__, (name, key, ours[key], theirs[key])
            continue
        assert ours[key] == theirs[key], (name, key, ours[key], theirs[key])
    if name not in REQUIRED:
        return
    # The same on built layers (what the constructor did with the defaults), attribute by
    # attribute: an int stands for torch's tuple of it; a pooling stride None is the kernel.
    layer, module = cls(*REQUIRED[name]), twin(*REQUIRED[name])
    for key in ours.keys() & theirs.keys() - {"bias"}:
        mine, its = getattr(layer, key), getattr(module, key)
        if isinstance(its, tuple) and not isinstance(mine, tuple):
            mine = (mine,) * len(its)
        if key == "stride" and mine is None:
            mine = module.kernel_size
        assert mine == its, (name, key, mine, its)


#: positional arguments that build each layer and its torch twin alike
REQUIRED = {
    "AvgPool2d": (2,), "BatchNorm1d": (3,), "BatchNorm2d": (3,), "Conv1d": (2, 2, 3),
    "Conv2d": (2, 2, 3), "ConvTranspose2d": (2, 2, 3), "Dense": (3, 2), "Dropout": (),
    "Dropout2d": (), "Embedding": (5, 2), "LayerNorm": (3,), "MaxPool2d": (2,),
}  # fmt: skip


def test_convolution_and_pooling_reprs_messages_and_spec_triples():
    from manual_bp.layers import AvgPool2d, Conv1d, Conv2d

    assert repr(Conv2d(2, 3, 3)) == "Conv2d(2, 3, 3)"
    assert repr(Conv2d(2, 3, 3, stride=2, dilation=2)) == "Conv2d(2, 3, 3, stride=2, dilation=2)"
    with pytest.raises(ValueError, match=r"^in_channels must be an integer ≥ 1"):
        Conv2d(0, 3, 2)
    with pytest.raises(ValueError, match=r"^kernel_size must be an integer ≥ 1"):
        MaxPool2d(0)
    with pytest.raises(ValueError, match=r"needs per-sample inputs \(C, H, W\) with C = 2"):
        Conv2d(2, 3, 3).output_shape((3,))
    with pytest.raises(ValueError, match=r"needs per-sample inputs \(C, L\) with C = 2"):
        Conv1d(2, 3, 3).output_shape((3,))
    with pytest.raises(
        ValueError,
        match=r"^AvgPool2d\(2, .*: x has shape \(4, 4\) \(2 axes\); expected 4 axes "
        r"\(batch first\) or 3 \(one unbatched sample\)$",
    ):
        AvgPool2d(2).forward(np.zeros((4, 4)))
    assert AvgPool2d(2).forward(np.zeros((1, 4, 4)))[0].shape == (1, 2, 2)  # unbatched, as torch
    model = Sequential.from_spec(
        [("conv-transpose2d", (4, 2), {}), ("maxpool2d", (2,), {}), ("avgpool2d", (1,), {})],
        (1, 3, 3), 2,
    )  # fmt: skip
    assert [type(layer).__name__ for layer in model.layers] == [
        "ConvTranspose2d", "MaxPool2d", "AvgPool2d",
    ]  # fmt: skip
    assert model.layers[0].out_channels == 4 and model.layers[1].kernel_size == 2


@pytest.mark.parametrize("implementation", ["fast", "readable"])
def test_maxpool_gradients_of_float32_stay_float32(implementation):
    layer = MaxPool2d(2, padding=1, implementation=implementation)
    x = np.random.default_rng(7).standard_normal((1, 2, 3, 3)).astype(np.float32)
    out, cache = layer.forward(x)
    dx, _ = layer.backward(np.ones_like(out), cache)
    assert out.dtype == np.float32 and dx.dtype == np.float32


def test_normalisation_construction_and_errors():
    """torch's initial γ = 1, β = 0; bool or fractional sizes refused; errors name the
    parameter or the shapes at fault."""
    from manual_bp.layers import BatchNorm1d, LayerNorm

    bn = BatchNorm1d(3)
    for _ in range(2):  # as built, and after reset_parameters (what a model's seed calls)
        np.testing.assert_array_equal(bn.params["weight"], np.ones(3))
        np.testing.assert_array_equal(bn.params["bias"], np.zeros(3))
        bn.params["weight"][...], bn.params["bias"][...] = 2.0, 3.0
        bn.reset_parameters(np.random.default_rng(0))
    for bad in (True, 2.5, (3, True)):
        with pytest.raises(ValueError, match="normalized_shape must be positive integers"):
            LayerNorm(bad)
    with pytest.raises(TypeError, match=r"^affine must be True or False, got 'yes'"):
        BatchNorm1d(3, affine="yes")
    _, cache = bn.forward(np.random.default_rng(8).standard_normal((4, 3)))
    with pytest.raises(ValueError, match=r"dout has shape \(4, 2\), expected \(4, 3\)"):
        bn.backward(np.ones((4, 2)), cache)
    with pytest.raises(ValueError, match=r"^layernorm needs an input with a feature axis$"):
        LayerNorm.from_shape(())


def test_conv_weight_gradient_keeps_float64_when_the_upstream_gradient_is_float32():
    """A float64 convolution given a float32 ``dout``: the weight gradient of the long
    reduction (``Ho·Wo·N`` > 4096, accumulated in panels) is computed in float64, equal
    to the one from the same ``dout`` cast to float64."""
    from manual_bp.layers import Conv2d

    layer = Conv2d(1, 2, 3, padding=1, seed=0)
    x = np.random.default_rng(9).standard_normal((2, 1, 48, 48))  # p = 48·48·2 = 4608
    out, cache = layer.forward(x)
    dout = np.random.default_rng(10).standard_normal(out.shape).astype(np.float32)
    ours = layer.backward(dout, cache)[1]["weight"]
    expected = layer.backward(dout.astype(np.float64), cache)[1]["weight"]
    assert ours.dtype == np.float64
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-12)
