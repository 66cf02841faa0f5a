"""Torch oracles, random-stack blocks and checks of normalisation, dropout and initialisers.

IDs: ``LAYER.batchnorm`` (training-mode backward), ``LAYER.batchnorm.running`` (running
statistics), ``LAYER.batchnorm.eval``, ``LAYER.layernorm``, ``LAYER.dropout`` and
``INIT.schemes``. Every layer is checked alone (random upstream gradient, never all ones)
and in the middle of random stacks (:func:`reference.stack.random_stack`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from manual_bp.layers import ActivationLayer, Dense
from manual_bp.layers.dropout import Dropout, Dropout2d
from manual_bp.layers.normalisation import (
    BatchNorm1d,
    BatchNorm2d,
    LayerNorm,
    _BatchNorm,
    normalise_backward,
    normalise_backward_graph,
)
from reference.checks import register_check
from reference.compare import Comparison
from reference.products import register_plain_twin
from reference.stack import random_stack, register_block, register_torch, stack_comparisons


# ---------------------------------------------------------------------- torch oracles
@register_torch(_BatchNorm)
def torch_batchnorm(layer, params, buffers, x, cache):
    """``F.batch_norm`` with torch's module logic for the momentum and the step counter."""
    mean, var = buffers.get("running_mean"), buffers.get("running_var")
    training = layer.training or not layer.track_running_stats
    momentum = 0.0
    if layer.training and layer.track_running_stats:
        buffers["num_batches_tracked"].add_(1)
        momentum = layer.momentum
        if momentum is None:  # cumulative moving average, as nn.BatchNorm
            momentum = 1.0 / float(buffers["num_batches_tracked"])
    return F.batch_norm(
        x, mean, var, params.get("weight"), params.get("bias"), training, momentum, layer.eps
    )


@register_torch(LayerNorm)
def torch_layernorm(layer, params, buffers, x, cache):
    return F.layer_norm(
        x, layer.normalized_shape, params.get("weight"), params.get("bias"), layer.eps
    )


def _plain_normalise(x, axes, eps):
    """``(x − μ)/√(σ² + ε)`` from plain ops (mean, subtract, square, rsqrt)."""
    centred = x - x.mean(axes, keepdim=True)
    return centred * torch.rsqrt((centred * centred).mean(axes, keepdim=True) + eps)


@register_plain_twin(_BatchNorm)
def plain_batchnorm(layer, params, buffers, x, cache):
    """Batch norm from plain torch ops (the products' oracle, ``reference.products``):
    batch statistics in training mode or without running ones, else the running ones.
    Leaves the buffers alone (the products act at the cached point)."""
    shape = (1, layer.num_features) + (1,) * (x.ndim - 2)
    if layer.training or not layer.track_running_stats:
        out = _plain_normalise(x, (0, *range(2, x.ndim)), layer.eps)
    else:
        mean, var = buffers["running_mean"], buffers["running_var"]
        out = (x - mean.reshape(shape)) * torch.rsqrt(var.reshape(shape) + layer.eps)
    if "weight" in params:
        out = out * params["weight"].reshape(shape)
    if "bias" in params:
        out = out + params["bias"].reshape(shape)
    return out


@register_plain_twin(LayerNorm)
def plain_layernorm(layer, params, buffers, x, cache):
    """Layer norm from plain torch ops (the products' oracle)."""
    axes = tuple(range(x.ndim - len(layer.normalized_shape), x.ndim))
    out = _plain_normalise(x, axes, layer.eps)
    if "weight" in params:
        out = out * params["weight"]
    if "bias" in params:
        out = out + params["bias"]
    return out


@register_torch(Dropout)
def torch_dropout(layer, params, buffers, x, cache):
    """Our own mask (torch's generator cannot reproduce it): ``x ⊙ m/(1 − p)``."""
    if cache.mask is None:
        return x
    return x * torch.tensor(cache.mask, dtype=x.dtype) * cache.scale


# ---------------------------------------------------------------------- random layers
def random_batchnorm_options(rng: np.random.Generator) -> dict:
    return {
        "eps": float(rng.choice([1e-5, 1e-3, 0.1])),
        "momentum": None if rng.random() < 0.25 else float(rng.choice([0.0, 0.1, 0.5, 1.0])),
        "affine": bool(rng.random() < 0.75),
        "track_running_stats": bool(rng.random() < 0.8),
    }


def _randomise_affine(layer, rng: np.random.Generator) -> None:
    """γ, β away from (1, 0) so a dropped γ or β is caught (set after the model re-seeds)."""
    for array in layer.params.values():
        array[...] = rng.standard_normal(array.shape)


@register_block("features", "batchnorm1d")
def _bn1d_block(rng, shape):
    return [BatchNorm1d(shape[-1], **random_batchnorm_options(rng))], shape


@register_block("features", "layernorm")
def _ln_block(rng, shape):
    """Over ≥ 2 features: a layer norm of one value is constant (β), so every gradient
    below it is 0 in exact arithmetic and torch's residue has no scale; that case is
    checked alone, with the terms' scale, in ``layers-layernorm``."""
    layers = []
    if shape[-1] == 1:
        width = int(rng.integers(2, 6))
        layers, shape = [Dense(1, width), ActivationLayer("tanh")], (*shape[:-1], width)
    norm = LayerNorm(shape[-1], float(rng.choice([1e-5, 0.1])), bool(rng.random() < 0.75))
    return [*layers, norm], shape


@register_block("features", "dropout")
def _dropout_block(rng, shape):
    return [Dropout(float(rng.choice([0.0, 0.2, 0.5, 0.9, 0.99])))], shape


@register_block("images", "batchnorm2d")
def _bn2d_block(rng, shape):
    return [BatchNorm2d(shape[0], **random_batchnorm_options(rng))], shape


@register_block("images", "dropout2d")
def _dropout2d_block(rng, shape):
    return [Dropout2d(float(rng.choice([0.0, 0.3, 0.7])))], shape


def random_norm_case(rng: np.random.Generator, kind: str):
    """A random batch norm / layer norm layer, an input and a random upstream gradient."""
    batch = int(rng.integers(2, 7))
    if kind == "batchnorm1d":
        channels = int(rng.integers(1, 6))
        shape = (
            (batch, channels) if rng.random() < 0.5 else (batch, channels, int(rng.integers(1, 5)))
        )
        layer = BatchNorm1d(channels, **random_batchnorm_options(rng))
    elif kind == "batchnorm2d":
        channels = int(rng.integers(1, 4))
        shape = (batch, channels, int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        layer = BatchNorm2d(channels, **random_batchnorm_options(rng))
    else:
        per_sample = tuple(int(s) for s in rng.integers(1, 5, size=int(rng.integers(1, 4))))
        k = int(rng.integers(1, len(per_sample) + 1))
        shape = (batch, *per_sample)
        layer = LayerNorm(
            per_sample[-k:], float(rng.choice([1e-5, 0.1])), bool(rng.random() < 0.75)
        )
    _randomise_affine(layer, rng)
    for name in ("running_mean", "running_var"):
        if name in layer.buffers:
            layer.buffers[name][...] = rng.uniform(0.2, 2.0, layer.buffers[name].shape)
    x = rng.standard_normal(shape) * float(rng.choice([0.1, 1.0, 10.0])) + rng.standard_normal()
    return layer, x, rng.standard_normal(shape)


def layer_comparisons(layer, x, upstream, *, equation: str, buffers_equation: str | None = None):
    """One forward+backward of ``layer`` against autograd on ``C = Σ upstream ⊙ out``."""
    params = {n: torch.tensor(a, requires_grad=True) for n, a in layer.params.items()}
    buffers = {n: torch.tensor(np.array(a)) for n, a in layer.buffers.items()}
    out, cache = layer.forward(x)
    dx, grads = layer.backward(upstream, cache)
    xt = torch.tensor(x, requires_grad=True)
    from reference.stack import torch_layer_forward

    ref = torch_layer_forward(layer, params, buffers, xt, cache)
    scales = norm_scales(layer, upstream, cache)
    (ref * torch.tensor(upstream)).sum().backward()
    comparisons = [
        Comparison(equation, "output", out, ref.detach().numpy(), scale=np.abs(out) + 1.0),
        Comparison(equation, "∂C/∂x", dx, xt.grad.numpy(), scales.get("x")),
    ]
    for name, tensor in params.items():
        comparisons.append(
            Comparison(equation, f"∂C/∂{name}", grads[name], tensor.grad.numpy(), scales.get(name))
        )
    for name, tensor in buffers.items():
        comparisons.append(
            Comparison(
                buffers_equation or equation, name, layer.buffers[name].copy(), tensor.numpy()
            )
        )
    return comparisons


def norm_scales(layer, upstream: np.ndarray, cache, size=None) -> dict[str, np.ndarray]:
    """A-priori rounding scales (Σ|terms|) of a normalisation layer's gradients.

    ``x̂ = (x − μ)·s`` carries an absolute rounding error ~ε·(|x| + |μ|)·s, large when the
    spread is small against the offset; ``∂C/∂γ = Σ dout·x̂`` and the compact VJP
    ``s·(g − mean g − x̂·mean(g x̂))`` cancel (exactly, for a group of one or two values
    with ε ≪ σ²). The bound is therefore relative to the terms, not to the tiny result.
    ``size`` (default ``|x|``) is the magnitude of the terms that formed ``x`` (in a stack,
    the forward rounding of the layers below). Returns scales under ``"x"`` and the
    parameter names; empty for other layers.
    """
    if not isinstance(layer, (_BatchNorm, LayerNorm)):
        return {}
    x = cache.input
    if isinstance(layer, LayerNorm):
        axes = tuple(range(x.ndim - len(layer.normalized_shape), x.ndim))
        lead = tuple(range(x.ndim - len(layer.normalized_shape)))
        weight = cache.weight
    else:
        axes = lead = (0, *range(2, x.ndim))
        weight = None if cache.weight is None else cache.weight.reshape(layer._shape(x))
    size = np.abs(x) if size is None else size
    offset = size.mean(axis=axes, keepdims=True) if cache.batch_stats else np.abs(x - x)
    x_hat = np.abs(cache.x_hat) + (size + offset) * cache.inv_std
    g = np.abs(upstream if weight is None else upstream * weight)
    # ∂C/∂β = Σ dout cancels too: below another batch norm Σ dout is 0 in exact arithmetic
    scales = {
        "weight": np.sum(np.abs(upstream) * x_hat, axis=lead),
        "bias": np.sum(np.abs(upstream), axis=lead),
    }
    if cache.batch_stats:
        mean_g = g.mean(axis=axes, keepdims=True)
        mean_gx = (g * x_hat).mean(axis=axes, keepdims=True)
        scales["x"] = cache.inv_std * (g + mean_g + x_hat * mean_gx)
    return scales


def stack_scales(model, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """``{"<i>.weight": scale}`` for the normalisation layers of a stack (see norm_scales).

    Computed on a copy (same parameters, buffers, mode and dropout generator state, so
    the same masks) before the step, with each layer's own upstream gradient.
    """
    twin = model.copy()
    before = {name: np.abs(array) for name, array in twin.named_buffers()}
    result = twin.backprop(x, y)
    sizes = forward_sizes(twin, result.caches)
    dout = result.output_grad
    # Σ|terms| of each layer's upstream gradient, carried down the stack: below a
    # normalisation layer the gradient is itself a cancellation (its sum over a batch
    # norm's group is 0 in exact arithmetic), so |dout| alone understates its rounding.
    magnitude = np.abs(dout)
    scales = {}
    for i in range(len(twin.layers) - 1, -1, -1):
        layer, cache = twin.layers[i], result.caches[i]
        terms = norm_scales(layer, magnitude, cache, sizes[i])
        for name, scale in terms.items():
            if name != "x":
                scales[f"∂C/∂{i}.{name}"] = scale
        if isinstance(layer, _BatchNorm) and layer.training and layer.track_running_stats:
            scales[f"buffer {i}.running_mean"] = running_mean_scale(
                layer, before[f"{i}.running_mean"], sizes[i]
            )
        if "x" in terms:
            magnitude = terms["x"]
        elif isinstance(layer, Dense):
            magnitude = magnitude @ np.abs(cache.weight)
        elif i == len(twin.layers) - 1:  # the output activation: its own product
            magnitude = np.abs(layer.backward(dout, cache)[0])
        else:  # dropout, eval-mode batch norm, monotone activations: non-negative factors
            magnitude = np.abs(layer.backward(magnitude, cache)[0])
        dout, _ = layer.backward(dout, cache)
        magnitude = np.maximum(magnitude, np.abs(dout))
    return scales


def forward_sizes(model, caches) -> list[np.ndarray]:
    """Magnitude of the terms behind each layer's input (its forward rounding scale).

    ``|x|`` at the bottom; a dense layer sums ``|x||W|ᵀ + |b|``; a normalisation layer's
    ``x̂`` carries ``(|x| + mean|x|)·s``; other layers (tanh, sigmoid, dropout: factors of
    magnitude ≤ 1 or the mask scale) pass ``|out| + factor·size``.
    """
    sizes = [np.abs(caches[0].input)]
    for layer, cache in zip(model.layers[:-1], caches[:-1], strict=True):
        size, x = sizes[-1], cache.input
        if isinstance(layer, Dense):
            bias = np.abs(layer.params["bias"]) if "bias" in layer.params else 0.0
            size = size @ np.abs(cache.weight).T + bias
        elif isinstance(layer, (_BatchNorm, LayerNorm)):
            axes = (
                tuple(range(x.ndim - len(layer.normalized_shape), x.ndim))
                if isinstance(layer, LayerNorm)
                else (0, *range(2, x.ndim))
            )
            offset = size.mean(axis=axes, keepdims=True)
            size = np.abs(cache.x_hat) + (size + offset) * cache.inv_std
            if cache.weight is not None:
                shape = cache.weight.shape if isinstance(layer, LayerNorm) else layer._shape(x)
                size = size * np.abs(cache.weight).reshape(shape)
                if "bias" in layer.params:
                    size = size + np.abs(layer.params["bias"]).reshape(shape)
        elif isinstance(layer, Dropout):
            size = np.abs(layer.backward(size, cache)[0])
        else:
            out = layer.forward(x)[0]
            size = np.abs(out) + size.reshape(out.shape)  # reshape/flatten: same values
        sizes.append(size)
    return sizes


def running_mean_scale(layer, before: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Σ|terms| of ``(1 − m)·r + m·mean x`` (the batch mean may cancel to ~0); ``size`` is
    ``|x|`` or the magnitude behind it (:func:`forward_sizes`)."""
    tracked = float(layer.buffers["num_batches_tracked"])
    m = 1.0 / tracked if layer.momentum is None else layer.momentum
    return (1.0 - m) * before + m * size.mean(axis=(0, *range(2, size.ndim)))


# ---------------------------------------------------------------------- checks
@register_check("layers-batchnorm")
def batchnorm_check(rng: np.random.Generator) -> list[Comparison]:
    """LAYER.batchnorm (+ .running, .eval): a random BN layer alone, train then eval step."""
    layer, x, upstream = random_norm_case(rng, str(rng.choice(["batchnorm1d", "batchnorm2d"])))
    eq = "LAYER.batchnorm"
    out = layer_comparisons(layer, x, upstream, equation=eq, buffers_equation=eq + ".running")
    # the readable graph form against the compact form, on the same case
    axes = (0, *range(2, x.ndim))
    g = rng.standard_normal(x.shape)
    _, cache = layer.forward(x)
    compact = normalise_backward(g, cache.x_hat, cache.inv_std, axes)
    graph = normalise_backward_graph(g, x, axes, layer.eps)
    scale = norm_scales(layer, g, cache)["x"]
    out.append(Comparison(eq, "∂C/∂x compact vs graph", compact, graph, scale, oracle="graph form"))
    layer.eval()
    x2, u2 = rng.standard_normal(x.shape), rng.standard_normal(x.shape)
    eval_eq = "LAYER.batchnorm.eval" if layer.track_running_stats else eq
    return out + layer_comparisons(layer, x2, u2, equation=eval_eq)


@register_check("layers-batchnorm-running")
def batchnorm_running_check(rng: np.random.Generator) -> list[Comparison]:
    """LAYER.batchnorm.running: k training steps of our layer and of torch's own module."""
    two_d = bool(rng.random() < 0.5)
    options = random_batchnorm_options(rng) | {"track_running_stats": True}
    channels = int(rng.integers(1, 5))
    ours = (BatchNorm2d if two_d else BatchNorm1d)(channels, **options)
    theirs = (torch.nn.BatchNorm2d if two_d else torch.nn.BatchNorm1d)(
        channels, dtype=torch.float64, **options
    )
    scale = np.zeros(channels)  # Σ|terms| of the running mean (see running_mean_scale)
    for _ in range(int(rng.integers(1, 6))):
        batch = int(rng.integers(2, 6))
        shape = (batch, channels, 2, 3) if two_d else (batch, channels)
        x = rng.standard_normal(shape) * rng.uniform(0.5, 3.0) + rng.standard_normal()
        before = scale.copy()
        ours.forward(x)
        scale = running_mean_scale(ours, before, np.abs(x))
        theirs(torch.tensor(x))
    return [
        Comparison(
            "LAYER.batchnorm.running",
            name,
            ours.buffers[name],
            buffer.detach().numpy(),
            scale if name == "running_mean" else None,
        )
        for name, buffer in theirs.named_buffers()
    ]


@register_check("layers-layernorm")
def layernorm_check(rng: np.random.Generator) -> list[Comparison]:
    """LAYER.layernorm: a random LayerNorm alone, and compact vs graph backward."""
    layer, x, upstream = random_norm_case(rng, "layernorm")
    out = layer_comparisons(layer, x, upstream, equation="LAYER.layernorm")
    axes = tuple(range(x.ndim - len(layer.normalized_shape), x.ndim))
    _, cache = layer.forward(x)
    g = rng.standard_normal(x.shape)
    compact = normalise_backward(g, cache.x_hat, cache.inv_std, axes)
    graph = normalise_backward_graph(g, x, axes, layer.eps)
    scale = norm_scales(layer, g, cache)["x"]
    out.append(
        Comparison(
            "LAYER.layernorm", "∂C/∂x compact vs graph", compact, graph, scale, oracle="graph form"
        )
    )
    return out


@register_check("layers-dropout")
def dropout_check(rng: np.random.Generator) -> list[Comparison]:
    """LAYER.dropout: Dropout / Dropout2d alone in train or eval mode, with our mask."""
    two_d = bool(rng.random() < 0.5)
    p = float(rng.choice([0.0, 0.1, 0.5, 0.9, 0.999, 1.0]))
    layer = (Dropout2d if two_d else Dropout)(p, seed=int(rng.integers(2**31)))
    batch = int(rng.integers(1, 6))
    if two_d:
        shape = (batch, int(rng.integers(1, 4)), *rng.integers(1, 4, size=int(rng.integers(1, 3))))
    else:
        shape = (batch, *rng.integers(1, 6, size=int(rng.integers(1, 3))))
    layer.train(bool(rng.random() < 0.8))
    x = rng.standard_normal(shape)
    return layer_comparisons(layer, x, rng.standard_normal(shape), equation="LAYER.dropout")


STACK_BLOCKS = (
    ("LAYER.batchnorm", "features", ("batchnorm1d", "dense-tanh")),
    ("LAYER.layernorm", "features", ("layernorm", "dense-tanh")),
    ("LAYER.dropout", "features", ("dropout", "dense-tanh")),
    ("LAYER.batchnorm", "images", ("batchnorm2d", "dropout2d")),
)
OURS = ("LAYER.batchnorm", "LAYER.layernorm", "LAYER.dropout")


def _owner_tracks(model, name: str) -> bool:
    """Whether the layer owning ``∂C/∂<i>.<param>`` is a batch norm with running stats."""
    index = name.rsplit("/", 1)[-1].lstrip("∂").split(".", 1)[0]
    layer = model.layers[int(index)] if index.isdigit() else None
    return isinstance(layer, _BatchNorm) and layer.track_running_stats


@register_check("layers-in-stacks")
def layers_in_stack_check(rng: np.random.Generator) -> list[Comparison]:
    """Each layer in the middle of a random stack: one training step, then one eval step.

    Kept: the quantities owned by our layers (γ, β gradients; running statistics under
    ``LAYER.batchnorm.running``; eval-mode batch norm under ``LAYER.batchnorm.eval``).
    The stack's output and ∂C/∂x stay ``STACK.chain`` quantities (the lead's checks):
    through a batch norm of small spread they are amplified by ``1/σ`` beyond the
    stack oracle's plain ``|value|`` scale.
    """
    _key, kind, names = STACK_BLOCKS[int(rng.integers(len(STACK_BLOCKS)))]
    for _ in range(50):  # redraw until a layer of ours is in the stack (its blocks are random)
        model, x, y = random_stack(rng, kind, max_blocks=3, blocks=names)
        wanted = {"LAYER.batchnorm": _BatchNorm, "LAYER.layernorm": LayerNorm}.get(_key, Dropout)
        if any(isinstance(layer, wanted) for layer in model._leaves()):
            break
    for layer in model._leaves():
        if isinstance(layer, (_BatchNorm, LayerNorm)):
            _randomise_affine(layer, rng)
    scales = stack_scales(model, x, y)
    kept, chain = [], []
    for c in stack_comparisons(model, x, y):
        c.scale = scales.get(c.name, c.scale)
        if c.equation == "STACK.chain":
            chain.append(c)
        if _key != "LAYER.batchnorm" and c.equation == "STACK.chain":
            # No batch norm in these stacks, and dropout or a layer norm without affine
            # parameters owns nothing else: the stack's output and ∂C/∂x verify it.
            c.equation = _key
        if c.name.startswith("buffer") and c.equation == "LAYER.batchnorm":
            c.equation = "LAYER.batchnorm.running"
        if c.equation in (*OURS, "LAYER.batchnorm.running"):
            kept.append(c)
    model.eval()
    scales = stack_scales(model, x, y)
    for c in stack_comparisons(model, x, y):
        c.scale = scales.get(c.name, c.scale)
        if c.equation == "LAYER.batchnorm" and _owner_tracks(model, c.name):
            c.equation = "LAYER.batchnorm.eval"
        if c.equation in (*OURS, "LAYER.batchnorm.eval"):
            kept.append(c)
    if not kept:  # a batch norm without affine parameters or running statistics owns nothing
        for c in chain:
            c.equation = _key
        kept = chain
    return kept


# ---------------------------------------------------------------------- initialisers
#: scheme -> (variance given (fan_in, fan_out, gain), kurtosis of the distribution)
