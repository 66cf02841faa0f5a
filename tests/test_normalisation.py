"""LAYER.batchnorm, LAYER.batchnorm.running, LAYER.batchnorm.eval, LAYER.layernorm.

Oracles: torch autograd (F.batch_norm / F.layer_norm and torch's own BatchNorm modules),
central finite differences, the adjoint identity, and the readable graph-form backward
against the compact one. Random upstream gradients throughout.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.gradcheck import check_layer
from manual_bp.layers import LAYERS
from manual_bp.layers.normalisation import (
    BatchNorm1d,
    BatchNorm2d,
    LayerNorm,
    normalise_backward,
    normalise_backward_graph,
    normalise_forward,
)
from manual_bp.models.sequential import Sequential
from reference.checks_layers import (
    batchnorm_check,
    batchnorm_running_check,
    layernorm_check,
    layers_in_stack_check,
    norm_scales,
)
from reference.compare import Comparison

seeds = st.integers(0, 2**31 - 1)
momenta = st.one_of(st.none(), st.sampled_from([0.0, 0.1, 0.5, 1.0]), st.floats(0.0, 1.0))


def _check_all(comparisons):
    assert comparisons
    for comparison in comparisons:
        comparison.check()


@given(seeds)
def test_batchnorm_matches_torch(seed):
    """LAYER.batchnorm and LAYER.batchnorm.eval: a random BN layer (1d/2d, every option) in
    training mode then in eval mode, vs F.batch_norm; running stats compared after the step;
    the graph-form backward vs the compact one."""
    _check_all(batchnorm_check(np.random.default_rng(seed)))


@given(seeds)
def test_layernorm_matches_torch(seed):
    """LAYER.layernorm: random normalized_shape (1–3 trailing axes), eps, affine on/off."""
    _check_all(layernorm_check(np.random.default_rng(seed)))


@settings(max_examples=30)
@given(seeds)
def test_running_statistics_match_torch_module(seed):
    """LAYER.batchnorm.running: k training steps vs torch.nn.BatchNorm1d/2d itself."""
    _check_all(batchnorm_running_check(np.random.default_rng(seed)))


@settings(max_examples=30)
@given(seeds)
def test_normalisation_in_random_stacks(seed):
    """LAYER.batchnorm / .eval / .running / LAYER.layernorm / LAYER.dropout in the middle of
    random stacks: a training step then an eval step, vs the torch stack oracle."""
    _check_all(layers_in_stack_check(np.random.default_rng(seed)))


@given(
    eps=st.sampled_from([1e-5, 1e-3, 0.5]),
    momentum=momenta,
    affine=st.booleans(),
    track=st.booleans(),
    batch=st.integers(2, 5),
    spatial=st.sampled_from([(), (3,), (2, 2)]),
    steps=st.integers(1, 3),
    seed=seeds,
)
@settings(max_examples=40)
def test_batchnorm_options_match_torch_module(eps, momentum, affine, track, batch, spatial,
                                              steps, seed):  # fmt: skip
    """LAYER.batchnorm (+ .running, .eval): every option against the torch module, k steps
    of training, then one eval step; outputs, gradients and buffers."""
    rng = np.random.default_rng(seed)
    channels = 3
    options = {"eps": eps, "momentum": momentum, "affine": affine, "track_running_stats": track}
    two_d = len(spatial) == 2
    ours = (BatchNorm2d if two_d else BatchNorm1d)(channels, **options)
    theirs = (torch.nn.BatchNorm2d if two_d else torch.nn.BatchNorm1d)(
        channels, dtype=torch.float64, **options
    )
    if affine:
        for name in ("weight", "bias"):
            ours.params[name][...] = rng.standard_normal(channels)
            getattr(theirs, name).data = torch.tensor(ours.params[name].copy())
    for mode in [True] * steps + [False]:
        ours.train(mode)
        theirs.train(mode)
        x = rng.standard_normal((batch, channels, *spatial)) * 2.0 + 0.5
        u = rng.standard_normal(x.shape)
        out, cache = ours.forward(x)
        dx, grads = ours.backward(u, cache)
        xt = torch.tensor(x, requires_grad=True)
        ref = theirs(xt)
        (ref * torch.tensor(u)).sum().backward()
        scales = norm_scales(ours, u, cache)
        eq = "LAYER.batchnorm" if mode or not track else "LAYER.batchnorm.eval"
        Comparison(eq, "y", out, ref.detach().numpy(), np.abs(out) + 1).check()
        Comparison(eq, "∂C/∂x", dx, xt.grad.numpy(), scales.get("x")).check()
        for name, p in theirs.named_parameters():
            Comparison(eq, name, grads[name], p.grad.numpy(), scales.get(name)).check()
            p.grad = None
        for name, b in theirs.named_buffers():
            Comparison("LAYER.batchnorm.running", name, ours.buffers[name], b.numpy()).check()


@given(seeds, st.sampled_from([1e-5, 0.1]))
def test_readable_backward_equals_compact(seed, eps):
    """LAYER.batchnorm: the graph-form VJP equals the compact one on random groups."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in rng.integers(1, 5, size=int(rng.integers(2, 5))))
    axes = tuple(
        sorted(rng.choice(len(shape), size=int(rng.integers(1, len(shape))), replace=False))
    )
    if np.prod([shape[a] for a in axes]) < 2:
        shape = (2,) * len(shape)
    x = rng.standard_normal(shape) * 3 + 1
    g = rng.standard_normal(shape)
    x_hat, _, _, inv_std = normalise_forward(x, axes, eps)
    compact = normalise_backward(g, x_hat, inv_std, axes)
    graph = normalise_backward_graph(g, x, axes, eps)
    scale = inv_std * (np.abs(g) + np.abs(g).mean(axis=axes, keepdims=True) * (1 + np.abs(x_hat)))
    Comparison("LAYER.batchnorm", "compact vs graph", compact, graph, scale).check()


@given(seeds, st.sampled_from(["batchnorm1d", "batchnorm2d", "layernorm"]))
@settings(max_examples=30)
def test_adjoint_identity(seed, kind):
    """⟨u, J v⟩ = ⟨Jᵀu, v⟩ (LAYER.batchnorm, LAYER.layernorm), J v by torch.func.jvp."""
    rng = np.random.default_rng(seed)
    if kind == "layernorm":
        layer, shape = LayerNorm((3, 2)), (4, 5, 3, 2)
        f = lambda t: torch.nn.functional.layer_norm(t, (3, 2), eps=layer.eps)  # noqa: E731
    else:
        layer = BatchNorm1d(3, track_running_stats=False) if kind == "batchnorm1d" else (
            BatchNorm2d(3, track_running_stats=False))  # fmt: skip
        shape = (4, 3) if kind == "batchnorm1d" else (2, 3, 2, 2)
        f = lambda t: torch.nn.functional.batch_norm(t, None, None, training=True)  # noqa: E731
    layer.params["weight"][...] = 1.0
    x, u, v = (rng.standard_normal(shape) for _ in range(3))
    _, cache = layer.forward(x)
    vjp, _ = layer.backward(u, cache)
    _, jv = torch.func.jvp(f, (torch.tensor(x),), (torch.tensor(v),))
    lhs, rhs = float(np.sum(u * jv.numpy())), float(np.sum(vjp * v))
    bound = 1e-12 * (np.abs(u).sum() * np.abs(jv.numpy()).max() + np.abs(vjp * v).sum() + 1)
    assert abs(lhs - rhs) <= bound


@given(seeds, st.sampled_from(["batchnorm1d", "batchnorm2d", "layernorm"]), st.booleans())
@settings(max_examples=15)
def test_finite_differences(seed, kind, affine):
    """Second oracle: central differences of C = Σ upstream ⊙ y (smooth for ε > 0)."""
    rng = np.random.default_rng(seed)
    if kind == "layernorm":
        layer, shape = LayerNorm(4, eps=0.1, elementwise_affine=affine), (3, 4)
    elif kind == "batchnorm1d":
        layer, shape = BatchNorm1d(2, eps=0.1, affine=affine), (3, 2, 2)
    else:
        layer, shape = BatchNorm2d(2, eps=0.1, affine=affine), (2, 2, 2, 2)
    for array in layer.params.values():
        array[...] = rng.standard_normal(array.shape)
    check_layer(layer, rng.standard_normal(shape), seed=rng)


@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1), (1, 3, 1, 1)])
def test_batch_of_one_value_per_channel_raises(shape):
    """As torch: training needs more than one value per channel; eval does not."""
    layer = (BatchNorm2d if len(shape) == 4 else BatchNorm1d)(3)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        layer.forward(np.zeros(shape))
    layer.eval()
    out, _ = layer.forward(np.ones(shape))
    assert np.allclose(out, 1 / np.sqrt(1 + 1e-5))


def test_eval_mode_uses_running_statistics():
    """LAYER.batchnorm.eval: a constant map of x — batch composition does not matter."""
    layer = BatchNorm1d(2)
    layer.buffers["running_mean"][...] = [1.0, -1.0]
    layer.buffers["running_var"][...] = [4.0, 0.25]
    layer.eval()
    x = np.array([[3.0, 0.0], [1.0, -1.0]])
    out, _ = layer.forward(x)
    assert np.allclose(out[0], [2 / np.sqrt(4 + 1e-5), 1 / np.sqrt(0.25 + 1e-5)])
    assert np.allclose(layer.forward(x[:1].repeat(2, axis=0))[0][0], out[0])


def test_specs_infer_sizes_and_registry():
    assert {"batchnorm1d", "batchnorm2d", "layernorm"} <= set(LAYERS.names())
    model = Sequential.from_spec(["batchnorm1d", "layernorm", "dense"], (5,), n_outputs=2)
    assert model.layers[0].num_features == 5 and model.layers[1].normalized_shape == (5,)
    images = Sequential.from_spec(["batchnorm2d", "flatten", "dense"], (3, 4, 4), n_outputs=2)
    assert images.layers[0].num_features == 3
    names = dict(model.named_buffers())
    assert names["0.num_batches_tracked"].dtype == np.int64


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="channels"):
        BatchNorm1d(3).forward(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="axes"):
        BatchNorm2d(3).forward(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="momentum"):
        BatchNorm1d(3, momentum=1.5)
    with pytest.raises(ValueError, match="eps"):
        BatchNorm1d(3, eps=0.0)
    with pytest.raises(ValueError, match="normalized_shape"):
        LayerNorm((2, 0))
    with pytest.raises(ValueError):
        LayerNorm(3).forward(np.zeros((2, 4)))
