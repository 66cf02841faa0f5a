"""LAYER.groupnorm, LAYER.instancenorm, LAYER.instancenorm.running (and BatchNorm3d under
LAYER.batchnorm): group and instance norm as batch norm over regrouped axes.

Oracles: torch autograd (F.group_norm / F.instance_norm) and torch's own modules in float64
with random upstream gradients, central finite differences, the adjoint identity, the
graph-form backward on the regrouped view; the edges of each option on both sides.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.cli import main
from manual_bp.gradcheck import check_layer
from manual_bp.layers import LAYERS
from manual_bp.layers.normalisation import BatchNorm3d, LayerNorm
from manual_bp.layers.normalisation_group import (
    GroupNorm,
    InstanceNorm1d,
    InstanceNorm2d,
    InstanceNorm3d,
)
from manual_bp.model_spec import parse_layers
from manual_bp.models.sequential import Sequential
from reference.checks_normalisation import (
    batchnorm3d_check,
    groupnorm_check,
    instancenorm_check,
    instancenorm_running_check,
    normalisation_in_stack_check,
)
from reference.compare import Comparison
from reference.normalisation_scales import norm_terms

seeds = st.integers(0, 2**31 - 1)
INSTANCE = {1: InstanceNorm1d, 2: InstanceNorm2d, 3: InstanceNorm3d}


def _check_all(comparisons):
    assert comparisons
    for comparison in comparisons:
        comparison.check()


@given(seeds)
def test_groupnorm_matches_torch(seed):
    """LAYER.groupnorm: random G | C, eps, affine, bias, 0–2 spatial axes vs F.group_norm;
    the graph-form backward on the (N, G, M) view vs the compact one."""
    _check_all(groupnorm_check(np.random.default_rng(seed)))


@given(seeds)
def test_instancenorm_matches_torch(seed):
    """LAYER.instancenorm: InstanceNorm1d/2d/3d, batched or unbatched, every option, a
    training step then an evaluation step (LAYER.instancenorm.running buffers compared)."""
    _check_all(instancenorm_check(np.random.default_rng(seed)))


@settings(max_examples=30)
@given(seeds)
def test_instancenorm_running_statistics_match_torch_module(seed):
    """LAYER.instancenorm.running: k steps against nn.InstanceNorm*d (momentum None too)."""
    _check_all(instancenorm_running_check(np.random.default_rng(seed)))


@settings(max_examples=30)
@given(seeds)
def test_batchnorm3d_matches_torch(seed):
    """LAYER.batchnorm on BatchNorm3d: training then evaluation step vs F.batch_norm."""
    _check_all(batchnorm3d_check(np.random.default_rng(seed)))


@settings(max_examples=30)
@given(seeds)
def test_normalisation_in_random_stacks(seed):
    """Group/instance/RMS/LRN layers in the middle of random stacks, train then eval."""
    _check_all(normalisation_in_stack_check(np.random.default_rng(seed)))


def _module_step(ours, theirs, x, rng, steps=1):
    """``steps`` forward/backward passes of ours and torch's module, compared each time."""
    for name, p in theirs.named_parameters():
        p.data = torch.tensor(rng.standard_normal(tuple(p.shape)))
        ours.params[name][...] = p.detach().numpy()
    for _ in range(steps):
        u = rng.standard_normal(x.shape)
        out, cache = ours.forward(x)
        dx, grads = ours.backward(u, cache)
        xt = torch.tensor(x, requires_grad=True)
        theirs.zero_grad()
        ref = theirs(xt)
        (ref * torch.tensor(u)).sum().backward()
        scales = norm_terms(ours, u, cache)
        eq = ours.equation
        Comparison(eq, "output", out, ref.detach().numpy(), np.abs(out) + 1.0).check()
        Comparison(eq, "∂C/∂x", dx, xt.grad.numpy(), scales.get("x")).check()
        for name, p in theirs.named_parameters():
            Comparison(eq, name, grads[name], p.grad.numpy(), scales.get(name)).check()
        for name, b in theirs.named_buffers():
            Comparison(eq, name, ours.buffers[name], b.numpy()).check()


@settings(max_examples=40)
@given(
    seed=seeds,
    channels_groups=st.sampled_from([(1, 1), (2, 1), (2, 2), (6, 3), (6, 2), (4, 4), (6, 1)]),
    spatial=st.sampled_from([(), (1,), (3,), (2, 2), (1, 1, 2)]),
    batch=st.integers(0, 4),
    eps=st.sampled_from([1e-5, 1e-3, 0.5]),
    affine=st.booleans(),
    bias=st.booleans(),
)
def test_groupnorm_options_match_torch_module(
    seed, channels_groups, spatial, batch, eps, affine, bias
):
    """LAYER.groupnorm vs nn.GroupNorm for every option, the empty batch included; exactly
    one value per group is refused by both."""
    channels, groups = channels_groups
    ours = GroupNorm(groups, channels, eps, affine, bias=bias)
    theirs = torch.nn.GroupNorm(groups, channels, eps, affine, bias=bias, dtype=torch.float64)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, channels, *spatial)) * 3 + 1
    if batch * channels // groups * int(np.prod(spatial)) == 1:
        with pytest.raises(ValueError, match="more than 1 value"):
            ours.forward(x)
        with pytest.raises(ValueError):
            theirs(torch.tensor(x))
        return
    _module_step(ours, theirs, x, rng)


@settings(max_examples=60)
@given(
    seed=seeds,
    dims=st.sampled_from([1, 2, 3]),
    batch=st.one_of(st.none(), st.integers(1, 4)),
    affine=st.booleans(),
    bias=st.booleans(),
    track=st.booleans(),
    momentum=st.one_of(st.none(), st.sampled_from([0.0, 0.3, 1.0])),
    training=st.booleans(),
)
def test_instancenorm_options_match_torch_module(
    seed, dims, batch, affine, bias, track, momentum, training
):
    """LAYER.instancenorm / .running vs nn.InstanceNorm*d over three steps (running
    statistics move), batched and unbatched (``batch=None``), in both modes."""
    rng = np.random.default_rng(seed)
    channels = int(rng.integers(1, 4))
    spatial = tuple(int(s) for s in rng.integers(2, 4, size=dims))
    shape = (channels, *spatial) if batch is None else (batch, channels, *spatial)
    kwargs = {"momentum": momentum, "affine": affine, "track_running_stats": track}
    ours = INSTANCE[dims](channels, 1e-3, bias=bias, **kwargs)
    theirs = getattr(torch.nn, f"InstanceNorm{dims}d")(
        channels, 1e-3, bias=bias, dtype=torch.float64, **kwargs
    )
    ours.train(training), theirs.train(training)
    _module_step(ours, theirs, rng.standard_normal(shape) * 2 - 1, rng, steps=3)


@pytest.mark.parametrize("cls", [InstanceNorm1d, InstanceNorm2d, InstanceNorm3d])
def test_instancenorm_needs_more_than_one_position_when_training(cls):
    """torch's _verify_spatial_size: L = 1 refused with instance statistics, L = 2 fine;
    evaluation with running statistics takes L = 1."""
    one = (2, 3) + (1,) * (cls.batched_ndim - 2)
    two = (2, 3, 2) + (1,) * (cls.batched_ndim - 3)
    layer = cls(3, track_running_stats=True)
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        layer.forward(np.zeros(one))
    layer.forward(np.arange(12.0).reshape(two))
    layer.eval()
    out, _ = layer.forward(np.ones(one))
    assert out.shape == one and np.all(np.isfinite(out))


def test_instancenorm_channel_count():
    """Without affine or running statistics torch only warns on another channel count."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out, _ = InstanceNorm1d(3).forward(np.arange(20.0).reshape(2, 2, 5))
    assert out.shape == (2, 2, 5) and caught
    with pytest.raises(ValueError, match="channels"):
        InstanceNorm1d(3, affine=True).forward(np.zeros((2, 2, 5)))


def test_empty_batches():
    """An empty batch: empty output, zero parameter gradients, running statistics kept."""
    for layer, shape in (
        (GroupNorm(2, 4), (0, 4, 3)),
        (InstanceNorm2d(3, affine=True, track_running_stats=True), (0, 3, 2, 2)),
        (BatchNorm3d(2), (0, 2, 2, 2, 2)),
    ):
        before = {k: v.copy() for k, v in layer.buffers.items() if k != "num_batches_tracked"}
        out, cache = layer.forward(np.zeros(shape))
        dx, grads = layer.backward(np.zeros(shape), cache)
        assert out.shape == dx.shape == shape
        assert all(np.all(g == 0) for g in grads.values())
        for k, v in before.items():
            assert np.array_equal(layer.buffers[k], v)


@given(seeds)
@settings(max_examples=20)
def test_groupnorm_regrouping_identities(seed):
    """G = C is instance norm, G = 1 is layer norm over (C, *S) (γ = 1, β = 0): the same
    outputs and input gradients — group norm really is the one VJP on regrouped axes."""
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 4)), int(rng.integers(1, 4)), int(rng.integers(2, 4)), 2)
    x, u = rng.standard_normal(shape), rng.standard_normal(shape)
    c = shape[1]
    pairs = (
        (GroupNorm(c, c, affine=False), InstanceNorm2d(c)),
        (GroupNorm(1, c, affine=False), LayerNorm(shape[1:], elementwise_affine=False)),
    )
    for gn, other in pairs:
        (y1, c1), (y2, c2) = gn.forward(x), other.forward(x)
        np.testing.assert_allclose(y1, y2, rtol=0, atol=1e-12)
        np.testing.assert_allclose(gn.backward(u, c1)[0], other.backward(u, c2)[0], atol=1e-11)


@given(seeds, st.sampled_from(["groupnorm", "instancenorm", "batchnorm3d"]), st.booleans())
@settings(max_examples=15)
def test_finite_differences(seed, kind, affine):
    """Second oracle: central differences of C = Σ upstream ⊙ y (smooth for ε > 0)."""
    rng = np.random.default_rng(seed)
    if kind == "groupnorm":
        layer, shape = GroupNorm(2, 4, eps=0.1, affine=affine), (2, 4, 3)
    elif kind == "instancenorm":
        layer, shape = InstanceNorm2d(2, eps=0.1, affine=affine), (2, 2, 2, 2)
    else:
        layer, shape = BatchNorm3d(2, eps=0.1, affine=affine), (2, 2, 2, 1, 2)
    for array in layer.params.values():
        array[...] = rng.standard_normal(array.shape)
    check_layer(layer, rng.standard_normal(shape), seed=rng)


@given(seeds, st.sampled_from(["groupnorm", "instancenorm", "instancenorm-unbatched"]))
@settings(max_examples=30)
def test_adjoint_identity(seed, kind):
    """⟨u, J v⟩ = ⟨Jᵀu, v⟩ with J v by torch.func.jvp (LAYER.groupnorm, LAYER.instancenorm)."""
    rng = np.random.default_rng(seed)
    if kind == "groupnorm":
        layer, shape = GroupNorm(3, 6), (3, 6, 2)
        f = lambda t: torch.nn.functional.group_norm(t, 3, eps=layer.eps)  # noqa: E731
    else:
        layer = InstanceNorm1d(3)
        shape = (3, 4) if kind.endswith("unbatched") else (2, 3, 4)
        f = lambda t: torch.nn.functional.instance_norm(  # noqa: E731
            t[None] if t.ndim == 2 else t
        ).reshape(t.shape)
    x, u, v = (rng.standard_normal(shape) for _ in range(3))
    _, cache = layer.forward(x)
    vjp, _ = layer.backward(u, cache)
    _, jv = torch.func.jvp(f, (torch.tensor(x),), (torch.tensor(v),))
    lhs, rhs = float(np.sum(u * jv.numpy())), float(np.sum(vjp * v))
    bound = 1e-12 * (np.abs(u).sum() * np.abs(jv.numpy()).max() + np.abs(vjp * v).sum() + 1)
    assert abs(lhs - rhs) <= bound


def test_constructor_arguments_and_bad_inputs():
    """torch's signatures and defaults; one clear line per bad argument."""
    layer = InstanceNorm2d(3)
    assert not layer.affine and not layer.track_running_stats and layer.momentum == 0.1
    assert not layer.params and not layer.buffers
    gn = GroupNorm(2, 4)
    assert gn.params["weight"].shape == gn.params["bias"].shape == (4,)
    assert "bias" not in GroupNorm(2, 4, bias=False).params
    with pytest.raises(ValueError, match="divisible"):
        GroupNorm(3, 4)
    with pytest.raises(ValueError, match="num_groups"):
        GroupNorm(0, 4)
    with pytest.raises(ValueError, match="channels"):
        GroupNorm(2, 4).forward(np.zeros((2, 6, 3)))
    with pytest.raises(ValueError, match="axes"):
        GroupNorm(2, 4).forward(np.zeros(4))
    with pytest.raises(ValueError, match="axes"):
        InstanceNorm2d(3).forward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="momentum"):
        InstanceNorm1d(3, momentum=2.0)


def test_specs_infer_sizes_and_registry():
    names = {"batchnorm3d", "groupnorm", "instancenorm1d", "instancenorm2d", "instancenorm3d"}
    assert names <= set(LAYERS.names())
    spec = parse_layers("groupnorm(2), instancenorm2d, flatten, dense")
    model = Sequential.from_spec(spec, (4, 3, 3), n_outputs=2)
    assert model.layers[0].num_channels == 4 and model.layers[1].num_features == 4


def test_lenet_with_groupnorm_trains_from_the_cli(capsys):
    """A LeNet-style CNN with GroupNorm trains from the CLI on the embedded digits (the fast
    GroupNorm step in the loop): far above chance (10%) after two epochs."""
    spec = (
        "reshape(1, 8, 8), conv2d(6, 3, padding=1), groupnorm(2), relu, maxpool2d(2), "
        "conv2d(8, 3, padding=1), groupnorm(4), relu, maxpool2d(2), flatten, dense(32), relu, "
        "dense, softmax"
    )
    args = ["train", "--quiet", "--epochs", "2", "--seed", "3", "--cost", "log-likelihood"]
    args += ["--optimizer", "adam", "--lr", "0.01", "--layers", spec]
    assert main(args) == 0, capsys.readouterr().err
    out, _ = capsys.readouterr()
    assert float(re.search(r"test accuracy ([\d.]+)%", out).group(1)) > 70.0


def test_lenet_with_groupnorm_matches_the_same_torch_model():
    """LAYER.groupnorm in the LeNet-style CNN the CLI trains: one training step of the
    whole model on digits against the same stack in torch (output, every gradient)."""
    from manual_bp.data import load_digits
    from reference.stack import stack_comparisons

    spec = parse_layers(
        "reshape(1, 8, 8), conv2d(6, 3, padding=1), groupnorm(2), relu, maxpool2d(2), "
        "conv2d(8, 3, padding=1), groupnorm(4), relu, maxpool2d(2), flatten, dense(32), relu, "
        "dense, softmax"
    )
    model = Sequential.from_spec(spec, (64,), n_outputs=10, cost="log-likelihood", seed=3)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, GroupNorm):
            for array in layer.params.values():
                array[...] = rng.standard_normal(array.shape)
    data = load_digits()
    x, y = data.x_train[:16], data.y_train[:16]
    comparisons = stack_comparisons(model, x, y)
    assert any(c.name.endswith(("2.weight", "6.bias")) for c in comparisons)
    _check_all(comparisons)
