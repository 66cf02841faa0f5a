"""The torch oracle for layer stacks: the same stack built from torch functions in float64.

Every manual_bp layer class registers its torch forward here with :func:`register_torch`::

    @register_torch(Dense)
    def _dense(layer, params, buffers, x, cache):
        return F.linear(x, params["weight"], params.get("bias"))

``params`` are leaf tensors (``requires_grad``) under the layer's own names, ``buffers``
clones of its buffers (a stateful oracle updates them in place, e.g. ``F.batch_norm``'s
running statistics), ``x`` the input tensor and ``cache`` the manual layer's own forward
cache of the same step (so a stochastic layer's oracle can reuse *our* mask: torch's
generator cannot reproduce ours). Containers recurse through :func:`torch_layer_forward`.

:func:`stack_comparisons` runs a model and its oracle on one batch and pairs output,
cost, every parameter gradient, the input gradient and (in training mode) every buffer
after the step, each under the equation ID of the layer that produced it.

Random stacks: a *block* is a function ``block(rng, in_shape) -> (layers, out_shape)``
registered per data kind (``"features"`` ``(D,)``, ``"images"`` ``(C, H, W)``,
``"sequences"`` ``(T, D)``) with :func:`register_block`; :func:`random_stack` draws
a stack of random blocks between a first and a last dense layer, so every layer kind
also sits in the middle of a stack, never only first.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from manual_bp.layers import ActivationLayer, Dense, Flatten, Identity, Layer, Reshape, Residual
from manual_bp.models.sequential import Sequential
from reference.compare import Comparison
from reference.components import torch_activation, torch_cost

__all__ = [
    "BLOCKS",
    "TORCH_LAYERS",
    "abs_scale",
    "random_stack",
    "register_block",
    "register_torch",
    "stack_comparisons",
    "torch_layer_forward",
]

TorchForward = Callable[[Layer, dict, dict, torch.Tensor, Any], torch.Tensor]
#: layer class -> torch forward
TORCH_LAYERS: dict[type, TorchForward] = {}
Block = Callable[[np.random.Generator, tuple[int, ...]], tuple[list[Layer], tuple[int, ...]]]
#: data kind -> {block name: block}
BLOCKS: dict[str, dict[str, Block]] = {"features": {}, "images": {}, "sequences": {}}


def register_torch(cls: type) -> Callable[[TorchForward], TorchForward]:
    def decorator(function: TorchForward) -> TorchForward:
        TORCH_LAYERS[cls] = function
        return function

    return decorator


def register_block(kind: str, name: str) -> Callable[[Block], Block]:
    def decorator(block: Block) -> Block:
        BLOCKS[kind][name] = block
        return block

    return decorator


def _tensor(array: np.ndarray, grad: bool = False) -> torch.Tensor:
    tensor = torch.tensor(np.array(array), dtype=torch.float64 if array.dtype.kind == "f" else None)
    return tensor.requires_grad_(grad)


def torch_layer_forward(
    layer: Layer, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x, cache
) -> torch.Tensor:
    """Dispatch to the torch forward registered for ``type(layer)`` (or a base class)."""
    for cls in type(layer).__mro__:
        if cls in TORCH_LAYERS:
            return TORCH_LAYERS[cls](layer, params, buffers, x, cache)
    raise NotImplementedError(f"no torch oracle registered for {type(layer).__name__}")


@register_torch(Dense)
def _dense(layer, params, buffers, x, cache):
    return F.linear(x, params["weight"], params.get("bias"))


@register_torch(ActivationLayer)
def _activation(layer, params, buffers, x, cache):
    return torch_activation(layer.activation)(x)


@register_torch(Identity)
def _identity(layer, params, buffers, x, cache):
    return x


@register_torch(Reshape)
def _reshape(layer, params, buffers, x, cache):
    return x.reshape(x.shape[0], *layer.output_shape(tuple(x.shape[1:])))


@register_torch(Residual)
def _residual(layer, params, buffers, x, cache):
    h = x
    for i, (child, child_cache) in enumerate(zip(layer.layers, cache.branch, strict=True)):
        h = torch_layer_forward(
            child, _sub(params, f"{i}."), _sub(buffers, f"{i}."), h, child_cache
        )
    return x + h


def _sub(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def stack_comparisons(
    model: Sequential, x: np.ndarray, y: np.ndarray, *, equation: str | None = None
) -> list[Comparison]:
    """One training (or evaluation) step of ``model`` against the torch oracle.

    Runs ``model.backprop`` (in the model's current mode) and the same stack in torch
    with identical parameters and buffers, feeding each torch layer our cache of the
    same step. Every comparison is tagged with the equation of the layer that owns the
    quantity (``equation`` overrides this, e.g. ``"STACK.chain"``). Buffers are compared
    after the step. ``model`` is left with its buffers updated, as one step leaves it.
    """
    before = {name: array.copy() for name, array in model.named_buffers()}
    state = {
        "buffers": before,
        "extra": {path: layer.get_extra_state() for path, layer in model.named_layers()},
    }
    ours = model.backprop(x, y)
    x_ours = model.prepare_inputs(x)
    targets = _tensor(model.prepare_targets(y, x.shape[0]))
    arrays = dict(model.named_parameters())

    def run(perturb: float = 0.0, rng: np.random.Generator | None = None):
        """The torch step; inputs and parameters scaled by (1 + perturb·r), r = ±1."""

        def jitter(array: np.ndarray) -> np.ndarray:
            if not perturb:
                return array
            return array * (1.0 + perturb * rng.choice([-1.0, 1.0], size=array.shape))

        params = {name: _tensor(jitter(a), grad=True) for name, a in arrays.items()}
        buffers = {name: _tensor(array) for name, array in before.items()}
        xt = _tensor(jitter(x_ours), grad=True)
        h = xt
        for index, (layer, cache) in enumerate(zip(model.layers, ours.caches, strict=True)):
            prefix = f"{index}."
            h = torch_layer_forward(layer, _sub(params, prefix), _sub(buffers, prefix), h, cache)
        rows = h if h.ndim == 2 else h.reshape(-1, h.shape[-1])
        loss = torch_cost(model.cost)(rows, targets.reshape(rows.shape))
        loss.backward()
        return h, loss, xt, params, buffers

    out, loss, xt, params, buffers = run()
    # Conditioning by perturbation: how much each gradient moves when every input and
    # parameter is perturbed by a relative δ, per unit δ. Rounding acts like relative
    # perturbations of size ε, so 64·ε times this sensitivity bounds the error an exact-
    # ly correct implementation can show (batch norm with a small variance amplifies it:
    # measured 1e-12 relative differences in such cases, where 64ε·|g| is 1.4e-14).
    delta = 2.0**-26
    _, _, xt_p, params_p, _ = run(delta, np.random.default_rng(0))
    sensitivity = {"x": np.abs(xt_p.grad.numpy() - xt.grad.numpy()) / delta}
    for name, tensor in params.items():
        sensitivity[name] = np.abs(params_p[name].grad.numpy() - tensor.grad.numpy()) / delta
    # ... and when every intermediate of our own step is perturbed (see the function).
    # Measured case: batch norm on a batch of two, where ∂C/∂x ≈ (eps/var)·(terms) and
    # rounding is ε·var/eps relative (1e-12): the cache's x̂ perturbation exposes it.
    for name, value in _parameter_magnitudes(model, ours).items():
        sensitivity[name] = np.maximum(sensitivity[name], value)
    for name, value in _rounding_sensitivity(model, x, y, state, delta).items():
        sensitivity[name] = np.maximum(sensitivity.get(name, 0.0), value)

    def owner(name: str) -> str:
        if equation is not None:
            return equation
        layer: Layer = model.layers[int(name.split(".", 1)[0])]
        for part in name.split(".")[1:-1]:
            if not part.isdigit():
                break  # a layer's own dotted name (attention's "out_proj.weight")
            layer = layer.children()[int(part)]
        return layer.equation or "STACK.chain"

    chain = equation or "STACK.chain"
    # Magnitude floor of every gradient comparison: the largest gradient of the step.
    # A gradient that is zero in exact arithmetic (a bias in front of batch norm, a
    # branch whose contributions cancel) is computed as a sum of terms of about that
    # size, so its rounding is ε-relative to it, not to its own (near-zero) value.
    # Measured: bias-before-batchnorm gradients of 1e-17 where the largest is 0.1.
    floor = max(
        [float(np.abs(xt.grad.numpy()).max(initial=0.0))]
        + [float(np.abs(t.grad.numpy()).max(initial=0.0)) for t in params.values()]
    )

    def scaled(expected: np.ndarray, key: str) -> np.ndarray:
        return np.maximum(np.maximum(np.abs(expected), floor), sensitivity[key])

    comparisons = [
        Comparison(
            chain,
            "output",
            ours.output,
            out.detach().numpy(),
            scale=np.maximum(abs_scale(out), sensitivity["output"]),
        ),
        Comparison(chain, "cost", np.array(ours.cost), loss.detach().numpy()),
        Comparison(
            chain, "∂C/∂x", ours.input_grad, xt.grad.numpy(), scale=scaled(xt.grad.numpy(), "x")
        ),
    ]
    for name, tensor in params.items():
        expected = tensor.grad.numpy()
        comparisons.append(
            Comparison(
                owner(name),
                f"∂C/∂{name}",
                ours.params[name],
                expected,
                scale=scaled(expected, name),
            )
        )
    if model.training:
        # Running statistics average the layers' inputs (and their squares): their
        # rounding is relative to the inputs' magnitude, not to a mean that cancels to ~0.
        largest = max(float(np.abs(c.input).max(initial=0.0)) for c in ours.caches)
        stat_floor = max(largest, largest**2, 1.0)
        after = dict(model.named_buffers())
        for name, tensor in buffers.items():
            expected = tensor.numpy()
            scale = np.maximum(np.abs(expected), stat_floor) if expected.dtype.kind == "f" else None
            comparisons.append(
                Comparison(owner(name), f"buffer {name}", after[name], expected, scale=scale)
            )
    return comparisons


def paired_shakes(seed: int, delta: float) -> list[Callable[[np.ndarray], np.ndarray]]:
    """Two rounding probes ``array·(1 ± δ)``: random signs ``r``, and ``r`` with every other
    entry (in flat order) flipped.

    A cancellation between two neighbouring entries (along the last axis, or along any
    axis whose trailing size is odd) shows under equal signs in one kind of pattern and
    opposite signs in another: ``1 − x̂²`` of a layer norm over two features moves with a
    common scaling of the pair, its ``x̂₁ + x̂₂ ≈ 0`` with opposite signs (measured: 600×
    apart). Two independent draws give the pair the same relation a quarter of the time;
    this twin gives it both every time. Both probes draw their signs from ``seed`` in the
    order arrays are shaken, so each run of a computation gets the same pattern.
    """

    def probe(alternate: bool) -> Callable[[np.ndarray], np.ndarray]:
        rng = np.random.default_rng(seed)

        def shake(array: np.ndarray) -> np.ndarray:
            signs = rng.choice([-1.0, 1.0], size=array.shape)
            if alternate:
                signs = signs * np.where(np.arange(array.size) % 2, -1.0, 1.0).reshape(array.shape)
            return array * (1.0 + delta * signs)

        return shake

    return [probe(False), probe(True)]


def statistics_drift(cache: Any, shake: Callable[[np.ndarray], np.ndarray]) -> np.ndarray | None:
    """The coherent part of a normalisation's rounding, ``Δx̂`` (None for other caches).

    A statistic is one rounded number shared by its whole group, so its error moves every
    member alike, where the element-wise probes' random signs average out over the group.
    ``μ`` rounded to ``ε|μ|`` shifts ``x̂ = (x − μ)/σ`` by ``ε|μ|/σ`` — far more than
    ``ε|x̂|`` when ``|μ| ≫ σ`` — and ``σ`` rounded scales ``x̂`` by ``1 + ε``. The drift is
    ``Δx̂ = √L·(shake(|μ|/σ) − |μ|/σ + (shake(1) − 1)·x̂)``, one sign per group and per
    statistic, for groups of ``L`` values: torch's CPU batch norm accumulates its moments
    by Welford's update, one rounding per value, so its statistics wander like a random walk
    of ``L`` steps of ``ε|μ|`` (ours are NumPy's pairwise sums, within ε). Measured (verify,
    stack-random-images case 454): a BatchNorm3d over L = 14 312 values with
    ``|μ|/σ = 12`` — both libraries' ``mean`` within ε|μ| of the exact one, yet torch's
    ``batch_norm`` output shifted by a constant 422 ε (≈ 0.3·√L·ε|μ|/σ) from ours; the
    element-wise probes saw a fraction of it.
    """
    from manual_bp.layers.normalisation import NormCache

    if not isinstance(cache, NormCache) or not cache.batch_stats:
        return None
    x_hat, inv_std = cache.x_hat, cache.inv_std
    if inv_std.ndim != x_hat.ndim or x_hat.size == 0:
        return None  # a regrouped view (group norm): its groups are not broadcast axes
    try:
        np.broadcast_shapes(inv_std.shape, x_hat.shape)
    except ValueError:
        return None
    if x_hat.size == inv_std.size:
        return None  # groups of one value: the element-wise shake is the statistic's
    pairs = enumerate(zip(inv_std.shape, x_hat.shape, strict=True))
    axes = tuple(i for i, (a, b) in pairs if a == 1 < b)
    offset = np.abs(cache.input - x_hat / inv_std).mean(axis=axes, keepdims=True) * inv_std
    ones = np.ones(inv_std.shape, x_hat.dtype)
    # √L ≥ √2 keeps an element's own shake from cancelling against its group's drift
    walk = np.sqrt(x_hat.size / inv_std.size)  # √L, L values per group
    return walk * ((shake(offset) - offset) + (shake(ones) - ones) * x_hat)


def shake_cache(
    cache: Any, shake: Callable[[np.ndarray], np.ndarray], drifts: list | None = None
) -> Any:
    """A copy of a cache with every float array perturbed (x̂, σ, a, ...), recursing into
    nested caches and lists or tuples of them (a residual block's branch, an attention
    layer's core: the rounding of a container lives in its children's intermediates).
    A normalisation's ``x̂`` also gets its statistics' coherent drift
    (:func:`statistics_drift`), appended to ``drifts`` when given (the layer's own cache
    only: it moves the layer's output as well)."""
    if isinstance(cache, np.ndarray):
        return shake(cache) if cache.dtype.kind == "f" else cache
    if isinstance(cache, (list, tuple)):
        return type(cache)(shake_cache(item, shake) for item in cache)
    if isinstance(cache, dict):
        return {key: shake_cache(item, shake) for key, item in cache.items()}
    if not dataclasses.is_dataclass(cache) or isinstance(cache, type):
        return cache
    drift = statistics_drift(cache, shake)
    changes = {
        field.name: shake_cache(getattr(cache, field.name), shake)
        for field in dataclasses.fields(cache)
    }
    if drift is not None:
        changes["x_hat"] = changes["x_hat"] + drift
        if drifts is not None:
            drifts.append(drift)
    return dataclasses.replace(cache, **changes)


def _parameter_magnitudes(model: Sequential, ours) -> dict[str, np.ndarray]:
    """``Σ|terms|`` of every parameter gradient: each layer's backward re-run on ``|dout|``
    and the absolute values of its cache. A parameter gradient is a sum over the batch
    (and positions) of products such as ``δ·a``; the sum of their magnitudes is the
    a-priori bound of its rounding (a conv bias in front of batch norm sums to ~0)."""
    upstream, dout = [], ours.output_grad
    for index in range(len(model.layers) - 1, -1, -1):
        upstream.append(dout)
        dout, _ = model.layers[index].backward(dout, ours.caches[index])
    magnitudes: dict[str, np.ndarray] = {}
    for index, d in zip(range(len(model.layers) - 1, -1, -1), upstream, strict=True):
        layer = model.layers[index]
        if not layer.params:
            continue
        _, grads = layer.backward(np.abs(d), shake_cache(ours.caches[index], np.abs))
        magnitudes.update({f"{index}.{k}": np.abs(g) for k, g in grads.items()})
    return magnitudes


def _rounding_sensitivity(
    model: Sequential, x: np.ndarray, y: np.ndarray, state: dict, delta: float
) -> dict[str, np.ndarray]:
    """``|g(jittered) − g| / δ`` for ``∂C/∂x`` (``"x"``) and every parameter.

    Our own step is re-run from the saved ``state`` (buffers and generators, so dropout
    draws the same masks) twice: plainly, and with every layer's output, every float
    field of its cache and every cotangent entering its backward pass multiplied by
    ``1 ± δ``. Rounding acts
    like such relative perturbations of size ε, so this exposes cancellation *inside* a
    computation (batch norm's projection of its upstream gradient, nearly total for a
    batch of two), which perturbing only the inputs leaves intact.
    """
    after_buffers = {name: array.copy() for name, array in model.named_buffers()}
    after_extra = {path: layer.get_extra_state() for path, layer in model.named_layers()}

    def restore(buffers: dict, extra: dict) -> None:
        for name, array in model.named_buffers():
            array[...] = buffers[name]
        for path, layer in model.named_layers():
            layer.set_extra_state(extra[path])

    def step(shake: Callable[[np.ndarray], np.ndarray]):
        restore(state["buffers"], state["extra"])

        h, caches = model.prepare_inputs(x), []
        for layer in model.layers:
            h, cache = layer.forward(h)
            drifts: list[np.ndarray] = []
            caches.append(shake_cache(cache, shake, drifts))
            h = shake(h)
            for drift in drifts:  # the statistics' drift reaches the output as γ·Δx̂
                gain = 1.0 if cache.weight is None else float(np.abs(cache.weight).max())
                h = h + gain * drift.reshape(h.shape)
        targets = model.prepare_targets(y, x.shape[0])
        rows = h.reshape(-1, h.shape[-1])
        dout = model.cost.grad(rows, targets.reshape(rows.shape)).reshape(h.shape) / len(rows)
        named: dict[str, np.ndarray] = {}
        for index in range(len(model.layers) - 1, -1, -1):
            dout, grads = model.layers[index].backward(shake(dout), caches[index])
            named.update({f"{index}.{k}": g for k, g in grads.items()})
        return dout, named, h

    try:
        dx0, g0, out0 = step(lambda array: array)
        draws = [step(shake) for shake in paired_shakes(1, delta)]
    finally:
        restore(after_buffers, after_extra)
    # One ±δ pattern estimates how far rounding can move a value; the actual rounding
    # pattern can align worse. Measured on batch norm over a batch of two below a residual
    # block (the worst case seen in 3000 random stacks): up to 2.5× the larger of two
    # draws, for a bias whose exact gradient is 0. Larger of the paired draws, times 4.
    result = {"x": 4.0 * np.maximum(*(np.abs(dx - dx0) for dx, _, _ in draws)) / delta}
    result["output"] = 4.0 * np.maximum(*(np.abs(h - out0) for _, _, h in draws)) / delta
    for name in g0:
        spread = np.maximum(*(np.abs(g[name] - g0[name]) for _, g, _ in draws))
        result[name] = 4.0 * spread / delta
    return result


def abs_scale(tensor: torch.Tensor) -> np.ndarray:
    """``|value|`` as a magnitude scale (a forward value's rounding is relative to itself)."""
    return np.abs(tensor.detach().numpy())


def random_stack(
    rng: np.random.Generator,
    kind: str = "features",
    *,
    max_blocks: int = 3,
    blocks: tuple[str, ...] | None = None,
) -> tuple[Sequential, np.ndarray, np.ndarray]:
    """A random model of registered blocks of ``kind``, with a batch and integer labels.

    ``features``: ``Dense(n_in, w) → tanh → blocks… → Dense(·, k) → softmax`` under the
    log-likelihood cost, so every block has a layer before it (its input gradient is
    exercised) and one after it (its upstream gradient is random, never all ones).
    """
    registry = BLOCKS[kind]
    names = sorted(blocks or registry)
    batch = int(rng.integers(2, 7))
    n_classes = int(rng.integers(2, 5))
    if kind == "features":
        n_in, width = int(rng.integers(1, 9)), int(rng.integers(1, 9))
        layers: list[Layer] = [Dense(n_in, width), ActivationLayer("tanh")]
        shape: tuple[int, ...] = (width,)
        in_shape: tuple[int, ...] = (n_in,)
    elif kind == "images":
        channels, size = int(rng.integers(1, 4)), int(rng.integers(3, 9))
        in_shape = (channels, size, size)
        layers, shape = [], in_shape
    else:
        length, width = int(rng.integers(1, 6)), int(rng.integers(1, 7))
        in_shape = (length, width)
        layers, shape = [], in_shape
    for _ in range(int(rng.integers(1, max_blocks + 1))):
        block = registry[names[int(rng.integers(len(names)))]]
        new_layers, shape = block(rng, shape)
        layers += new_layers
    if kind == "images":
        layers.append(Flatten())
        shape = (math.prod(shape),)
    layers += [Dense(shape[-1], n_classes), ActivationLayer("softmax")]
    model = Sequential(
        layers, "log-likelihood", input_shape=in_shape, seed=int(rng.integers(2**31))
    )
    x = rng.standard_normal((batch, *in_shape))
    labels_shape = (batch,) if kind != "sequences" else (batch, in_shape[0])
    y = rng.integers(0, n_classes, size=labels_shape)
    return model, x, y


@register_block("features", "dense-tanh")
def _dense_tanh(rng: np.random.Generator, shape: tuple[int, ...]):
    width = int(rng.integers(1, 9))
    return [Dense(shape[-1], width), ActivationLayer("tanh")], (*shape[:-1], width)


@register_block("features", "residual")
def _residual_block(rng: np.random.Generator, shape: tuple[int, ...]):
    width = shape[-1]
    hidden = int(rng.integers(1, 9))
    branch = [Dense(width, hidden), ActivationLayer("sigmoid"), Dense(hidden, width)]
    return [Residual(branch)], shape
