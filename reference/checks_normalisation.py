"""Torch oracles, random-stack blocks and checks of the normalisation layers beyond batch and
layer norm: BatchNorm3d, GroupNorm, InstanceNorm1d/2d/3d, RMSNorm, LocalResponseNorm.

IDs: ``LAYER.groupnorm``, ``LAYER.instancenorm``, ``LAYER.instancenorm.running``,
``LAYER.rmsnorm``, ``LAYER.lrn`` (and ``LAYER.batchnorm`` for BatchNorm3d). Every layer is
checked alone against torch autograd in float64 with a random upstream gradient (never all
ones), its readable graph-form backward against the compact one where it has one, and in
the middle of random stacks; the products (``PROD.*``) are checked per class by
``reference/checks_products.py`` through the blocks registered here.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from manual_bp.layers import ConvTranspose2d, Reshape
from manual_bp.layers.normalisation import BatchNorm3d, normalise_backward
from manual_bp.layers.normalisation_graph import normalise_backward_graph
from manual_bp.layers.normalisation_group import (
    GroupNorm,
    InstanceNorm1d,
    InstanceNorm2d,
    InstanceNorm3d,
    _InstanceNorm,
)
from manual_bp.layers.normalisation_lrn import LocalResponseNorm
from manual_bp.layers.normalisation_rms import RMSNorm
from reference.checks import register_check
from reference.compare import Comparison
from reference.normalisation_scales import norm_terms, one_step
from reference.products import register_plain_twin
from reference.stack import (
    random_stack,
    register_block,
    register_torch,
    stack_comparisons,
)


def _plain_normalise(x, axes, eps):
    from reference.checks_layers import _plain_normalise  # (checks_* import each other late)

    return _plain_normalise(x, axes, eps)


def random_batchnorm_options(rng: np.random.Generator) -> dict:
    from reference.checks_layers import random_batchnorm_options

    return random_batchnorm_options(rng)


INSTANCE = {1: InstanceNorm1d, 2: InstanceNorm2d, 3: InstanceNorm3d}
OURS = (
    "LAYER.groupnorm",
    "LAYER.instancenorm",
    "LAYER.instancenorm.running",
    "LAYER.rmsnorm",
    "LAYER.lrn",
)


# ---------------------------------------------------------------------- torch oracles
@register_torch(GroupNorm)
def torch_groupnorm(layer, params, buffers, x, cache):
    return F.group_norm(x, layer.num_groups, params.get("weight"), params.get("bias"), layer.eps)


@register_torch(_InstanceNorm)
def torch_instancenorm(layer, params, buffers, x, cache):
    """``F.instance_norm`` as ``nn.InstanceNorm*d`` calls it (momentum None is 0.0)."""
    unbatched = x.ndim == layer.batched_ndim - 1
    out = F.instance_norm(
        x[None] if unbatched else x,
        buffers.get("running_mean"),
        buffers.get("running_var"),
        params.get("weight"),
        params.get("bias"),
        layer.training or not layer.track_running_stats,
        0.0 if layer.momentum is None else layer.momentum,
        layer.eps,
    )
    return out[0] if unbatched else out


@register_torch(RMSNorm)
def torch_rmsnorm(layer, params, buffers, x, cache):
    return F.rms_norm(x, layer.normalized_shape, params.get("weight"), layer.eps)


@register_torch(LocalResponseNorm)
def torch_lrn(layer, params, buffers, x, cache):
    return F.local_response_norm(x, layer.size, layer.alpha, layer.beta, layer.k)


def _affine(out, params, shape):
    if "weight" in params:
        out = out * params["weight"].reshape(shape)
    if "bias" in params:
        out = out + params["bias"].reshape(shape)
    return out


@register_plain_twin(GroupNorm)
def plain_groupnorm(layer, params, buffers, x, cache):
    """Group norm from plain ops on the ``(N, G, M)`` view (the products' oracle)."""
    grouped = x.reshape(x.shape[0], layer.num_groups, -1)
    out = _plain_normalise(grouped, (2,), layer.eps).reshape(x.shape)
    return _affine(out, params, (1, x.shape[1]) + (1,) * (x.ndim - 2))


@register_plain_twin(_InstanceNorm)
def plain_instancenorm(layer, params, buffers, x, cache):
    """Instance norm from plain ops (leaves the running statistics alone)."""
    unbatched = x.ndim == layer.batched_ndim - 1
    x = x[None] if unbatched else x
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    if layer.training or not layer.track_running_stats:
        out = _plain_normalise(x, tuple(range(2, x.ndim)), layer.eps)
    else:
        mean, var = buffers["running_mean"], buffers["running_var"]
        out = (x - mean.reshape(shape)) * torch.rsqrt(var.reshape(shape) + layer.eps)
    out = _affine(out, params, shape)
    return out[0] if unbatched else out


# ---------------------------------------------------------------------- random layers
def _randomise(layer, rng: np.random.Generator) -> None:
    """γ, β away from (1, 0); running statistics away from (0, 1)."""
    for array in layer.params.values():
        array[...] = rng.standard_normal(array.shape)
    for name in ("running_mean", "running_var"):
        if name in layer.buffers:
            layer.buffers[name][...] = rng.uniform(0.2, 2.0, layer.buffers[name].shape)


def _offset_input(rng: np.random.Generator, shape) -> np.ndarray:
    scale = float(rng.choice([0.1, 1.0, 10.0]))
    return rng.standard_normal(shape) * scale + rng.standard_normal()


def random_groupnorm(rng: np.random.Generator, channels: int) -> GroupNorm:
    groups = int(rng.choice([g for g in range(1, channels + 1) if channels % g == 0]))
    return GroupNorm(
        groups,
        channels,
        float(rng.choice([1e-5, 1e-3, 0.1])),
        affine=bool(rng.random() < 0.75),
        bias=bool(rng.random() < 0.8),
    )


def random_instancenorm(rng: np.random.Generator, dims: int, channels: int) -> _InstanceNorm:
    options = random_batchnorm_options(rng)
    options["affine"] = bool(rng.random() < 0.5)  # torch's default is False
    options["track_running_stats"] = bool(rng.random() < 0.5)
    return INSTANCE[dims](channels, bias=bool(rng.random() < 0.8), **options)


def random_rmsnorm(rng: np.random.Generator, per_sample: tuple[int, ...]) -> RMSNorm:
    k = int(rng.integers(1, len(per_sample) + 1))
    eps = None if rng.random() < 0.4 else float(rng.choice([1e-5, 1e-3, 0.1]))
    return RMSNorm(per_sample[-k:], eps, bool(rng.random() < 0.75))


def random_lrn(rng: np.random.Generator, channels: int) -> LocalResponseNorm:
    return LocalResponseNorm(
        int(rng.integers(1, channels + 3)),
        float(rng.choice([1e-4, 0.1, 1.0, 3.0])),
        float(rng.choice([0.75, 0.5, 1.0, 2.0])),
        float(rng.choice([1.0, 2.0, 0.5])),
    )


# ---------------------------------------------------------------------- stack blocks
def _grow(rng, shape):
    """A 1×1 image gets a ConvTranspose2d to 2×2 first (instance norm needs > 1 position)."""
    if shape[1] * shape[2] > 1:
        return [], shape
    return [ConvTranspose2d(shape[0], shape[0], 2)], (shape[0], shape[1] + 1, shape[2] + 1)


@register_block("images", "groupnorm")
def _gn_block(rng, shape):
    return [random_groupnorm(rng, shape[0])], shape


@register_block("images", "instancenorm")
def _in_block(rng, shape):
    """InstanceNorm2d on the image, or 1d/3d on a reshaped view of it (and back)."""
    grow, shape = _grow(rng, shape)
    c, h, w = shape
    dims = int(rng.integers(1, 4))
    view = {1: (c, h * w), 2: shape, 3: (c, 1, h, w)}[dims]
    norm = random_instancenorm(rng, dims, c)
    if dims == 2:
        return [*grow, norm], shape
    return [*grow, Reshape(*view), norm, Reshape(*shape)], shape


@register_block("images", "batchnorm3d")
def _bn3d_block(rng, shape):
    c, h, w = shape
    norm = BatchNorm3d(c, **random_batchnorm_options(rng))
    return [Reshape(c, 1, h, w), norm, Reshape(*shape)], shape


@register_block("images", "lrn")
def _lrn_block(rng, shape):
    return [random_lrn(rng, shape[0])], shape


@register_block("features", "rmsnorm")
def _rms_block(rng, shape):
    return [random_rmsnorm(rng, tuple(shape))], shape


# ---------------------------------------------------------------------- checks
def _spatial(rng, count: int) -> tuple[int, ...]:
    return tuple(int(s) for s in rng.integers(1, 4, size=count))


@register_check("layers-groupnorm")
def groupnorm_check(rng: np.random.Generator) -> list[Comparison]:
    """LAYER.groupnorm: a random GroupNorm alone vs F.group_norm, and the graph-form
    backward on the regrouped view vs the compact one."""
    channels = int(rng.integers(1, 7))
    layer = random_groupnorm(rng, channels)
    _randomise(layer, rng)
    shape = (int(rng.integers(2, 5)), channels, *_spatial(rng, int(rng.integers(0, 3))))
    x, upstream = _offset_input(rng, shape), rng.standard_normal(shape)
    out = one_step(layer, x, upstream, equation="LAYER.groupnorm")
    _, cache = layer.forward(x)
    g = rng.standard_normal(shape)
    compact = normalise_backward(
        layer._group(g, shape), layer._group(cache.x_hat, shape), cache.inv_std, (2,)
    ).reshape(shape)
    graph = normalise_backward_graph(
        layer._group(g, shape), layer._group(x, shape), (2,), layer.eps
    )
    scale = norm_terms(GroupNorm(layer.num_groups, channels, layer.eps, affine=False), g, cache)
    out.append(
        Comparison(
            "LAYER.groupnorm",
            "∂C/∂x compact vs graph",
            compact,
            graph.reshape(shape),
            scale["x"],
            oracle="graph form",
        )
    )
    return out


@register_check("layers-instancenorm")
def instancenorm_check(rng: np.random.Generator) -> list[Comparison]:
    """LAYER.instancenorm (+ .running): a random InstanceNorm1d/2d/3d, batched or one
    unbatched sample, in training mode then in evaluation mode, vs F.instance_norm."""
    dims = int(rng.integers(1, 4))
    channels = int(rng.integers(1, 5))
    layer = random_instancenorm(rng, dims, channels)
    _randomise(layer, rng)
    spatial = _spatial(rng, dims)
    if np.prod(spatial) == 1:
        spatial = (2, *spatial[1:])
    shape = (channels, *spatial)
    if rng.random() < 0.7:
        shape = (int(rng.integers(1, 5)), *shape)
    x, upstream = _offset_input(rng, shape), rng.standard_normal(shape)
    eq = "LAYER.instancenorm"
    out = one_step(layer, x, upstream, equation=eq, buffers_equation=eq + ".running")
    layer.eval()
    x2, u2 = _offset_input(rng, shape), rng.standard_normal(shape)
    eval_eq = "LAYER.batchnorm.eval" if layer.track_running_stats else eq
    return out + one_step(layer, x2, u2, equation=eval_eq)


@register_check("layers-instancenorm-running")
def instancenorm_running_check(rng: np.random.Generator) -> list[Comparison]:
    """LAYER.instancenorm.running: k training steps of ours and of torch's own module."""
    dims = int(rng.integers(1, 4))
    channels = int(rng.integers(1, 5))
    momentum = None if rng.random() < 0.25 else float(rng.choice([0.0, 0.1, 0.5, 1.0]))
    ours = INSTANCE[dims](channels, momentum=momentum, track_running_stats=True)
    theirs = getattr(torch.nn, f"InstanceNorm{dims}d")(
        channels, momentum=momentum, track_running_stats=True, dtype=torch.float64
    )
    for _ in range(int(rng.integers(1, 5))):
        shape = (int(rng.integers(1, 5)), channels, *(s + 1 for s in _spatial(rng, dims)))
        x = _offset_input(rng, shape)
        ours.forward(x)
        theirs(torch.tensor(x))
    return [
        Comparison("LAYER.instancenorm.running", name, ours.buffers[name], b.detach().numpy())
        for name, b in theirs.named_buffers()
    ]


@register_check("layers-rmsnorm")
def rmsnorm_check(rng: np.random.Generator) -> list[Comparison]:
    """LAYER.rmsnorm: a random RMSNorm (1–3 trailing axes, eps None or a number) alone."""
    per_sample = _spatial(rng, int(rng.integers(1, 4)))
    layer = random_rmsnorm(rng, per_sample)
    _randomise(layer, rng)
    shape = per_sample if rng.random() < 0.2 else (int(rng.integers(1, 5)), *per_sample)
    x, upstream = _offset_input(rng, shape), rng.standard_normal(shape)
    return one_step(layer, x, upstream, equation="LAYER.rmsnorm")


@register_check("layers-lrn")
def lrn_check(rng: np.random.Generator) -> list[Comparison]:
    """LAYER.lrn: a random LocalResponseNorm (window wider or narrower than C) alone."""
    channels = int(rng.integers(1, 7))
    layer = random_lrn(rng, channels)
    shape = (int(rng.integers(1, 4)), channels, *_spatial(rng, int(rng.integers(1, 4))))
    x, upstream = 2.0 * rng.standard_normal(shape), rng.standard_normal(shape)
    return one_step(layer, x, upstream, equation="LAYER.lrn")


@register_check("layers-batchnorm3d")
def batchnorm3d_check(rng: np.random.Generator) -> list[Comparison]:
    """LAYER.batchnorm on BatchNorm3d (training step then evaluation step)."""
    channels = int(rng.integers(1, 4))
    layer = BatchNorm3d(channels, **random_batchnorm_options(rng))
    _randomise(layer, rng)
    shape = (int(rng.integers(2, 4)), channels, *_spatial(rng, 3))
    x, upstream = _offset_input(rng, shape), rng.standard_normal(shape)
    eq = "LAYER.batchnorm"
    out = one_step(layer, x, upstream, equation=eq, buffers_equation=eq + ".running")
    layer.eval()
    eval_eq = "LAYER.batchnorm.eval" if layer.track_running_stats else eq
    return out + one_step(layer, _offset_input(rng, shape), upstream, equation=eval_eq)


STACK_BLOCKS = {
    "LAYER.groupnorm": ("images", ("groupnorm", "pool")),
    "LAYER.instancenorm": ("images", ("instancenorm", "pool")),
    "LAYER.rmsnorm": ("features", ("rmsnorm", "dense-tanh")),
    "LAYER.lrn": ("images", ("lrn", "pool")),
}


@register_check("layers-normalisation-in-stacks")
def normalisation_in_stack_check(rng: np.random.Generator) -> list[Comparison]:
    """Each layer in the middle of a random stack: one training step, then one eval step;
    kept: the quantities its equation owns (γ, β gradients, running statistics), and for
    a layer without parameters the stack's output and ∂C/∂x."""
    keys = sorted(STACK_BLOCKS)
    key = keys[int(rng.integers(len(keys)))]
    kind, names = STACK_BLOCKS[key]
    for _ in range(50):
        model, x, y = random_stack(rng, kind, max_blocks=3, blocks=names)
        if any(getattr(layer, "equation", "") == key for layer in model._leaves()):
            break
    for layer in model._leaves():
        if getattr(layer, "equation", "") in OURS:
            _randomise(layer, rng)
    kept, chain = [], []
    for mode in ("train", "eval"):
        if mode == "eval":
            model.eval()
        for c in stack_comparisons(model, x, y):
            if c.equation == "STACK.chain":
                chain.append(c)
            if c.name.startswith("buffer") and c.equation == "LAYER.instancenorm":
                c.equation = "LAYER.instancenorm.running"
            if c.equation in OURS:
                kept.append(c)
    if key == "LAYER.lrn" or not kept:
        # a layer without parameters (LRN, or γ and β switched off) owns nothing else: the
        # stack's output and ∂C/∂x verify it
        for c in chain:
            c.equation = key
        kept += chain
    return kept
