"""torch's padding layers (``LAYER.pad``, ``PAD.fold``, ``PROD.pad.*``; docs/padding.md).

Oracle: torch's own modules in float64 with random upstream gradients; every option drawn
by hypothesis — the class (15), the padding (int or tuple, negative = cropping) at and
beside torch's limits, the constant, batched / unbatched / empty-batch inputs — plus
central finite differences, the adjoint identity, the fast step against the readable map,
the products against ``torch.func`` and the layer in the middle of random stacks.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp import Sequential
from manual_bp.layers import LAYERS
from manual_bp.layers.padding import SignedPadMap, pad_indices, signed_pad_indices
from manual_bp.layers.padding_fast import PadStep, fold, pad_into
from reference.checks_padding_layers import (
    PAD_CLASSES,
    pad_case,
    pad_comparisons,
    padding_stack_check,
    random_padding,
    torch_module,
)
from reference.products import product_comparisons

NAMES = sorted(PAD_CLASSES)
MODES = ("zeros", "reflect", "replicate", "circular")
seeds = st.integers(0, 2**32 - 1)


@st.composite
def pad_layers(draw):
    """A padding layer and its input, every option drawn by hypothesis."""
    name = draw(st.sampled_from(NAMES))
    cls = PAD_CLASSES[name]
    # sizes and sides from a drawn seed: hypothesis's own draws shrink towards 1 and 0 and
    # would rarely reach a limit; random_padding puts ~1/3 of the sides AT one (crops 30%)
    rng = np.random.default_rng(draw(seeds))
    size = tuple(int(k) for k in rng.integers(1, 6, size=cls.dims))
    pads = random_padding(rng, cls.mode, size)
    padding = tuple(p for a, b in reversed(pads) for p in (a, b))
    if len(set(padding)) == 1 and draw(st.booleans()):
        padding = padding[0]
    value = draw(st.sampled_from([0.0, -1.5, 3.0]))
    layer = cls(padding, value) if name.startswith("Constant") else cls(padding)
    lead = draw(st.sampled_from([(2, 3), (0, 2), (1, 1), (3,)]))  # (3,): unbatched
    if cls.mode == "zeros":
        lead = draw(st.sampled_from([lead, (), (2, 1, 2)]))  # any number of leading axes
    return layer, (*lead, *size)


@settings(max_examples=150)
@given(pad_layers(), seeds)
def test_padding_layers_match_torch(case, seed):
    """LAYER.pad: output and ∂C/∂x of every class against torch's module (random upstream)."""
    layer, shape = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    for comparison in pad_comparisons(layer, x, rng):
        assert comparison.equation in ("LAYER.pad", "PAD.fold")
        comparison.check()
    # central finite differences of C = Σ u ⊙ out along a random direction (exact: linear)
    out, cache = layer.forward(x)
    u, d = rng.standard_normal(out.shape), rng.standard_normal(x.shape)
    h = 1e-3
    fd = (np.sum(u * layer.forward(x + h * d)[0]) - np.sum(u * layer.forward(x - h * d)[0])) / (
        2 * h
    )
    np.testing.assert_allclose(np.sum(layer.backward(u, cache)[0] * d), fd, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_padding_limits_follow_torch(name):
    """LAYER.pad at torch's limits: both sides of each, ours refuses exactly where torch
    does (one line naming the fault), agrees where torch computes."""
    cls = PAD_CLASSES[name]
    H = 4
    x = np.arange(2 * 3 * H**cls.dims, dtype=float).reshape(2, 3, *(H,) * cls.dims)
    edges = {"reflect": (H - 1, H), "circular": (H, H + 1)}.get(cls.mode, (H + 2,))
    crops = (-H + 1, -H, -H - 1)
    for a, b in [(p, 0) for p in edges] + [(0, p) for p in edges] + [(c, 0) for c in crops]:
        padding = (a, b) + (1, 1) * (cls.dims - 1)
        args = (padding, 2.0) if name.startswith("Constant") else (padding,)
        try:
            expected = torch_module(cls(*args))(torch.from_numpy(x)).numpy()
        except (RuntimeError, ValueError, NotImplementedError):
            expected = None
        if expected is None:
            with pytest.raises(ValueError, match=r"padding|size"):
                cls(*args).forward(x)
            continue
        np.testing.assert_array_equal(cls(*args).forward(x)[0], expected)


@pytest.mark.parametrize("name", NAMES)
def test_empty_axes_follow_torch(name):
    """Every input with an empty axis (batched and unbatched, sizes 0–2, padding 0, 1 and a
    one-sided 1): refused where torch refuses (reflect and replicate want every axis but the
    batch non-empty), else equal to torch, the backward included (circular takes an empty
    channel or spatial axis padded by 0; a hostile-input draw found it refused)."""
    cls = PAD_CLASSES[name]
    d = cls.dims
    rng = np.random.default_rng(0)
    for padding in (0, 1, (1, 0) * d):
        args = (padding, 2.0) if name.startswith("Constant") else (padding,)
        for shape in itertools.product((0, 1, 2), repeat=d + 2):
            for s in (shape, shape[1:]):
                if 0 not in s:
                    continue
                x = rng.standard_normal(s)
                xt = torch.from_numpy(x).requires_grad_()
                try:
                    expected = torch_module(cls(*args))(xt)
                except (RuntimeError, ValueError, IndexError):
                    with pytest.raises(ValueError, match=r"x|padding|size"):
                        cls(*args).forward(x)
                    continue
                out, cache = cls(*args).forward(x)
                np.testing.assert_array_equal(out, expected.detach().numpy())
                g = rng.standard_normal(out.shape)
                expected.backward(torch.from_numpy(g))
                dx, _ = cls(*args).backward(g, cache)
                np.testing.assert_array_equal(dx, xt.grad.numpy())


def test_padding_arguments_and_inputs_are_checked():
    """One clear line naming the argument; torch's input ranks."""
    with pytest.raises(ValueError, match="padding must be an int or a tuple of 4"):
        LAYERS.get({"name": "reflectionpad2d", "padding": [1, 2]})
    with pytest.raises(ValueError, match="padding"):
        PAD_CLASSES["ZeroPad1d"](1.5)
    with pytest.raises(ValueError, match="expected 5"):
        PAD_CLASSES["ReflectionPad3d"](1).forward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="only the batch axis may be empty"):
        PAD_CLASSES["ReplicationPad1d"](1).forward(np.zeros((2, 0, 3)))
    with pytest.raises(ValueError, match="value must be a number"):
        PAD_CLASSES["ConstantPad1d"](1, "a")
    assert PAD_CLASSES["ZeroPad2d"](2).padding == (2, 2, 2, 2)
    assert repr(PAD_CLASSES["ConstantPad3d"](1, 2.0)) == repr(torch.nn.ConstantPad3d(1, 2.0))
    assert repr(PAD_CLASSES["ReflectionPad2d"]((1, 2, 3, 4))) == "ReflectionPad2d((1, 2, 3, 4))"


@settings(max_examples=60)
@given(st.sampled_from(MODES), st.integers(1, 5), seeds)
def test_signed_pad_indices_extend_pad_indices(mode, size, seed):
    """PAD.map: non-negative padding gives the convolutions' map unchanged."""
    rng = np.random.default_rng(seed)
    ((a, b),) = random_padding(rng, mode, (size,), crop=False)
    np.testing.assert_array_equal(
        signed_pad_indices(size, a, b, mode), pad_indices(size, a, b, mode)
    )


@settings(max_examples=100)
@given(pad_layers(), seeds)
def test_fast_pad_and_fold_match_the_map(case, seed):
    """PAD.fold: the in-place pad and its fold equal the readable gather / scatter-add
    (the fold overwrites its input), and the step reuses its buffer."""
    layer, shape = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    out, cache = layer.forward(x)
    g = rng.standard_normal(out.shape)
    step = PadStep(layer)
    np.testing.assert_allclose(step.forward(x), out, rtol=0, atol=0)
    np.testing.assert_allclose(step.backward(g.copy(), {}, True), layer.backward(g, cache)[0],
                               rtol=1e-14, atol=1e-14)  # fmt: skip
    assert step.backward(g.copy(), {}, False) is None
    pad_map = layer.pad_map(x)
    if step.fast:  # same shape again: the buffer is reused
        first = step.forward(x)
        assert step.forward(x) is first
        k = layer.dims
        buffer = np.empty_like(out)
        pad_into(x, pad_map.pads, layer.mode, layer.value, buffer)
        np.testing.assert_array_equal(buffer, out)
        folded = fold(g.copy(), pad_map.pads, layer.mode, x.shape[-k:])
        np.testing.assert_allclose(folded, pad_map.vjp(g, x.shape[-k:]), rtol=1e-14, atol=1e-14)


def test_fast_reflection_hands_a_deep_crop_to_the_map():
    """PAD.fold: reflect (-3, 4) on 5 entries mirrors the cropped-away part (torch's
    result) — the step uses the readable map there and still agrees."""
    layer = PAD_CLASSES["ReflectionPad1d"]((-3, 4))
    x = np.arange(5.0).reshape(1, 1, 5)
    step = PadStep(layer)
    np.testing.assert_array_equal(step.forward(x), [[[3, 4, 3, 2, 1, 0]]])
    assert not step.fast
    g = np.arange(6.0).reshape(1, 1, 6)
    np.testing.assert_array_equal(
        step.backward(g, {}, True), layer.backward(g, layer.forward(x)[1])[0]
    )


@settings(max_examples=40)
@given(pad_layers(), seeds)
def test_padding_products_match_torch_func(case, seed):
    """PROD.pad.vjp / PROD.pad.jvp / PROD.pad.residual against torch.func, with the adjoint
    identity and the per-sample VJPs (reference.products)."""
    layer, shape = case
    if len(shape) < layer.dims + 1 or shape[0] == 0:
        shape = (2, *shape[-layer.dims - 1 :]) if len(shape) > layer.dims else (2, *shape)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    comparisons = product_comparisons(layer, x, rng)
    assert {c.equation for c in comparisons} >= {"PROD.pad.vjp", "PROD.pad.jvp"}
    for comparison in comparisons:
        comparison.check()
    # the adjoint identity directly: ⟨M, J T⟩ = ⟨Jᵀ M, T⟩
    out, cache = layer.forward(x)
    M, T = rng.standard_normal((3, *out.shape)), rng.standard_normal((3, *x.shape))
    lhs = np.sum(M * layer.input_jvp(cache, T), axis=tuple(range(1, M.ndim)))
    rhs = np.sum(layer.input_vjp(cache, M) * T, axis=tuple(range(1, T.ndim)))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12, atol=1e-12)


@settings(max_examples=15)
@given(seeds)
def test_padding_layers_in_random_stacks_match_torch(seed):
    """LAYER.pad in the middle of random stacks (conv/pool/pad blocks → dense → softmax)."""
    for comparison in padding_stack_check(np.random.default_rng(seed)):
        comparison.check()


def test_padding_layers_build_from_specs_save_and_train(tmp_path):
    """``--layers`` names, get_config round trip, a training step with the fast form."""
    from manual_bp import load, save
    from manual_bp.model_spec import parse_layers

    spec = parse_layers(
        "reflectionpad2d(1), circularpad2d((1, 0, 0, 1)), constantpad2d((1, -1, 0, 2), 0.5), "
        "flatten, dense, softmax"
    )
    model = Sequential.from_spec(spec, input_shape=(1, 3, 3), n_outputs=3, cost="log-likelihood")
    save(model, tmp_path / "m.json")
    copy = load(tmp_path / "m.json")
    x = np.random.default_rng(0).standard_normal((4, 1, 3, 3))
    np.testing.assert_array_equal(copy.predict(x), model.predict(x))
    for layer in model.layers[:3]:
        assert LAYERS.get(layer.get_config()).get_config() == layer.get_config()
    from manual_bp import train

    before = model.layers[4].params["weight"].copy()  # the fused trainer runs PadStep
    train(model, x, np.arange(4) % 3, epochs=1, batch_size=2, eta=0.1)
    assert not np.array_equal(before, model.layers[4].params["weight"])


def test_case_drawing_covers_every_class():
    """The verify check's case drawing reaches every class (reference/checks_padding_layers)."""
    rng = np.random.default_rng(0)
    seen = {type(pad_case(rng)[0]).__name__ for _ in range(300)}
    assert seen == set(NAMES)
    assert isinstance(SignedPadMap(((1, 1),), "zeros", 2.0).forward(np.zeros(1)), np.ndarray)
