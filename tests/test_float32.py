"""A float32 model computes in float32: every registered layer, every result (issue 22).

For every class of ``manual_bp.layers.LAYERS``, a layer drawn as a stack puts it
(:func:`reference.layer_cases.layer_case`) is converted to float32 — its parameters,
buffers, initial states and ``dtype`` attribute, recursively through its children — and fed
float32 input. Then

* the output,
* every floating array of the forward cache (recursively into tuples, lists, dicts and
  objects),
* ``backward``'s input gradient and every parameter gradient,
* every product on the V axis (``input_vjp``, ``param_vjp`` summed and per sample,
  ``input_jvp``, ``param_jvp``, ``residual``)

must be float32: a float64 anywhere is a leak (an allocation without ``dtype``, a float64
constant array, ``astype(float)``) that doubles the memory traffic of a float32 model. A
float32 ``Sequential`` of every stack block, trained one fused epoch
(``manual_bp.train(..., epochs=1)``), keeps float32 parameters and buffers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tracemalloc
from typing import Any

import numpy as np
import pytest

import reference.checks  # noqa: F401  (registers every block of reference.stack.BLOCKS)
from manual_bp import train
from manual_bp.activations import ACTIVATIONS
from manual_bp.costs import COSTS
from manual_bp.layers import (
    ActivationLayer,
    BatchCouplingError,
    Dense,
    Dropout,
    Dropout2d,
    Layer,
    attention_masks,
)
from manual_bp.models import Sequential
from manual_bp.optimizers import Adam
from reference.checks_components import cost_case, random_activation, random_cost
from reference.layer_cases import LAYER_NAMES, layer_case
from reference.stack import BLOCKS, random_stack

F32 = np.dtype(np.float32)
SEEDS = (0, 1, 2)


def _to_float32(value: Any) -> Any:
    """``value`` with every floating array (in tuples, lists and dicts) cast to float32."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return value.astype(F32)
    if isinstance(value, dict):
        return {k: _to_float32(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_to_float32(v) for v in value)
    return value


def _layers(layer: Layer) -> list[Layer]:
    return [layer, *(leaf for child in layer.children() for leaf in _layers(child))]


def make_float32(layer: Layer) -> Layer:
    """Cast ``layer`` (and its children) to float32 in place: parameters, buffers, initial
    states, any other floating array attribute, and a ``dtype`` attribute."""
    for part in _layers(layer):
        for name, value in list(vars(part).items()):
            if name == "dtype" and isinstance(value, np.dtype):
                setattr(part, name, F32)
            elif isinstance(value, (np.ndarray, dict, tuple)):
                converted = _to_float32(value)
                if isinstance(value, dict):  # keep the dict object: others may hold it
                    value.update(converted)
                else:
                    setattr(part, name, converted)
    return layer


def float64_leaks(value: Any, where: str = "", seen: set[int] | None = None) -> list[str]:
    """Paths of every float64 array (or float64 NumPy scalar) inside ``value``."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return []
    seen.add(id(value))
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "O":
            return [p for i, v in enumerate(value.flat) for p in float64_leaks(v, where, seen)]
        if value.dtype.kind in "fc" and value.dtype != F32:
            return [f"{where or '.'}: {value.dtype}{value.shape}"]
        return []
    if isinstance(value, np.floating | np.complexfloating):
        return [] if value.dtype == F32 else [f"{where or '.'}: {value.dtype} scalar"]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in float64_leaks(v, f"{where}[{k!r}]", seen)]
    if isinstance(value, (tuple, list)):
        return [p for i, v in enumerate(value) for p in float64_leaks(v, f"{where}[{i}]", seen)]
    if isinstance(value, Layer):  # caches may name their layer: its params are checked apart
        return []
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return [p for k, v in fields.items() for p in float64_leaks(v, f"{where}.{k}", seen)]
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return [p for k, v in vars(value).items() for p in float64_leaks(v, f"{where}.{k}", seen)]
    if hasattr(value, "__slots__"):
        names = [s for s in getattr(type(value), "__slots__", ()) if hasattr(value, s)]
        return [p for s in names for p in float64_leaks(getattr(value, s), f"{where}.{s}", seen)]
    return []


def _float32_case(name: str, seed: int) -> tuple[Layer, np.ndarray]:
    layer, x = layer_case(name, np.random.default_rng(seed))
    return make_float32(layer), np.asarray(x).astype(F32)


def _results(layer: Layer, x: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    """Every result of ``layer`` at ``x``, by name (the cache among them)."""
    out, cache = layer.forward(x)
    found: dict[str, Any] = {"output": out, "cache": cache}
    dout = rng.standard_normal(out.shape).astype(F32)
    dx, grads = layer.backward(dout, cache)
    found["backward.dx"] = None if layer.index_input else dx
    found["backward.grads"] = grads
    if layer.products_refusal is not None:  # a declared gap (tests/test_layer_products.py)
        return found
    M = rng.standard_normal((3, *out.shape)).astype(F32)
    T = None if layer.index_input else rng.standard_normal((3, *x.shape)).astype(F32)
    Tp = {k: rng.standard_normal((3, *p.shape)).astype(F32) for k, p in layer.params.items()}
    if not layer.index_input:
        found["input_vjp"] = layer.input_vjp(cache, M)
        found["input_jvp"] = layer.input_jvp(cache, T)
    if layer.params:
        found["param_vjp(sum)"] = layer.param_vjp(cache, M)
        # no per-sample share under batch statistics (BatchCouplingError)
        with contextlib.suppress(BatchCouplingError):
            found["param_vjp(per sample)"] = layer.param_vjp(cache, M, sum_batch=False)
        found["param_jvp"] = layer.param_jvp(cache, Tp)
    if not layer.hessian_is_zero:
        found["residual"] = layer.residual(cache, dout, T, Tp or None)
    return found


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", LAYER_NAMES)
def test_float32_layer_computes_in_float32(name, seed):
    """Output, forward cache, backward and every V-axis product of a float32 layer are
    float32 (PROD.*.vjp, PROD.*.jvp, PROD.*.residual of every registered class)."""
    layer, x = _float32_case(name, seed)
    before = float64_leaks({"params": layer.params, "buffers": dict(layer.named_buffers())})
    assert not before, f"{name}: the conversion left float64 state: {before}"
    leaks = [
        f"{key}{path}"
        for key, value in _results(layer, x, np.random.default_rng(seed)).items()
        for path in float64_leaks(value)
    ]
    assert not leaks, f"{name} (seed {seed}, {type(layer).__name__}) leaks float64:\n" + "\n".join(
        leaks
    )


@pytest.mark.parametrize("block", [(k, b) for k in sorted(BLOCKS) for b in sorted(BLOCKS[k])])
def test_float32_model_trains_in_float32(block):
    """A float32 Sequential of a stack block, trained one fused epoch (SGD, then Adam),
    keeps float32 parameters and buffers."""
    kind, name = block
    for optimizer in (None, Adam(lr=1e-3)):
        rng = np.random.default_rng(11)
        stack, x, y = random_stack(rng, kind, blocks=(name,))
        for layer in stack.layers:  # float32 layer attributes (Dense.dtype, initial states)
            make_float32(layer)
        model = Sequential(stack.layers, stack.cost, input_shape=stack.input_shape, dtype="float32")
        x = x.astype(F32)
        step = {"eta": 0.1} if optimizer is None else {"optimizer": optimizer}
        train(model, x, y, epochs=1, batch_size=2, monitor=(), seed=0, fast=True, **step)
        assert model.flat_parameters.dtype == F32
        state = {
            "params": dict(model.named_parameters()),
            "buffers": dict(model.named_buffers()),
            "layers": [(top.params, top.buffers) for top in model.layers],
        }
        leaks = float64_leaks(state)
        assert not leaks, f"{kind}/{name} ({'sgd' if optimizer is None else 'adam'}): {leaks}"


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS.names()))
def test_float32_activation_computes_in_float32(activation, seed):
    """Every activation of the catalogue (drawn options), as a layer on float32 (N, D) and
    (N, T, D) inputs: output, cache, backward and products float32 (PROD.activation.*)."""
    rng = np.random.default_rng(seed)
    layer = ActivationLayer(random_activation(rng, activation))
    shape = (int(rng.integers(1, 4)), *(int(k) for k in rng.integers(1, 5, size=1 + seed % 2)))
    x = (2.0 * rng.standard_normal(shape)).astype(F32)
    leaks = [
        f"{key}{path}"
        for key, value in _results(layer, x, rng).items()
        for path in float64_leaks(value)
    ]
    assert not leaks, f"{activation} (seed {seed}) leaks float64:\n" + "\n".join(leaks)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("cost_name", sorted(COSTS.names()))
def test_float32_cost_computes_in_float32(cost_name, seed):
    """Every cost of the catalogue (drawn options) on float32 outputs and targets: the
    per-sample cost, ∇ₐC (``grad`` and ``grad_into``), the output error δᴸ (BP1, with its
    shortcut and without) and, where defined, the Hessian diagonal are float32."""
    rng = np.random.default_rng(seed)
    cost = random_cost(rng, cost_name)
    a64, y64, activation = cost_case(rng, cost, int(rng.integers(1, 5)), int(rng.integers(2, 5)))
    z = (2.0 * rng.standard_normal(a64.shape)).astype(F32)  # a = σ(z) of float32 z below
    a, y = activation.forward(z), y64.astype(F32)
    assert a.dtype == F32, f"{activation.name}.forward: {a.dtype}"
    found: dict[str, Any] = {
        "per_sample": cost.per_sample(a, y),
        "grad": cost.grad(a, y),
        "grad_into": cost.grad_into(a, y, np.empty_like(a)),
        "delta": cost.delta(z, a, y, activation),
        "delta_general": cost.delta_general(z, a, y, activation),
    }
    with contextlib.suppress(NotImplementedError, ValueError):
        found["hessian_diagonal"] = cost.hessian_diagonal(a, y)
    leaks = [f"{key}{path}" for key, value in found.items() for path in float64_leaks(value)]
    assert not leaks, f"{cost_name} (seed {seed}) leaks float64:\n" + "\n".join(leaks)


@pytest.mark.parametrize("cost_name", sorted(COSTS.names()))
def test_float32_model_of_every_cost_trains_in_float32(cost_name):
    """A float32 Dense → σ model under every cost, one fused epoch: float32 parameters."""
    rng = np.random.default_rng(3)
    cost = random_cost(rng, cost_name)
    _, y, activation = cost_case(rng, cost, 6, 3)
    layers = [Dense(4, 3, seed=rng, dtype=F32), ActivationLayer(activation)]
    model = Sequential(layers, cost, input_shape=(4,), dtype="float32")
    x = rng.standard_normal((6, 4)).astype(F32)
    train(model, x, y.astype(F32), epochs=1, batch_size=4, eta=0.1, monitor=(), seed=0)
    leaks = float64_leaks(dict(model.named_parameters()))
    assert model.flat_parameters.dtype == F32 and not leaks, f"{cost_name}: {leaks}"


class _RecordingGenerator:
    """A generator that records the dtype of every array it draws."""

    def __init__(self, generator: np.random.Generator) -> None:
        self.generator, self.dtypes = generator, []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.generator, name)

        def draw(*args: Any, **kwargs: Any) -> Any:
            out = method(*args, **kwargs)
            self.dtypes.append(np.asarray(out).dtype)
            return out

        return draw


@pytest.mark.parametrize("cls", [Dropout, Dropout2d])
def test_float32_dropout_draws_its_mask_in_float32(cls):
    """LAYER.dropout: a float32 input's mask comes from a float32 uniform draw (a float64
    draw was a temporary of the input's size); a float64 input's draw is unchanged."""
    x = np.random.default_rng(1).standard_normal((8, 3, 4, 5))
    masks = {}
    for dtype in (np.float64, np.float32):
        layer = cls(0.4, seed=2).train()
        layer._generator = recorder = _RecordingGenerator(layer._generator)
        out, cache = layer.forward(x.astype(dtype))
        assert out.dtype == dtype and recorder.dtypes == [np.dtype(dtype)], recorder.dtypes
        masks[dtype] = cache.mask
    reference = np.random.default_rng(2).random(masks[np.float64].shape) >= 0.4
    np.testing.assert_array_equal(masks[np.float64], reference)  # float64 masks as before


def _peak_bytes(function: Any, *args: Any) -> tuple[Any, int]:
    """``function(*args)`` and the peak of the memory it allocated meanwhile."""
    tracemalloc.start()
    try:
        result = function(*args)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _built_in_float32(function: Any, *args: Any) -> None:
    """A float32 array built without a float64 one of its size: a float64 temporary cast
    down costs 8 + 4 bytes per element beside the result's 4 (a bool condition adds 1)."""
    result, peak = _peak_bytes(function, *args)
    assert result.dtype == F32, result.dtype
    assert peak < 2 * result.nbytes, f"peak {peak} B for a {result.nbytes} B float32 result"


def test_float32_leaky_relu_derivative_is_built_in_float32():
    """ACT.leaky-relu's σ′ = 1 or α: built from float32 scalars (PROD.activation.jvp)."""
    z = np.random.default_rng(0).standard_normal(1 << 20).astype(F32)
    activation = ACTIVATIONS.get("leaky-relu")
    _built_in_float32(activation.derivative, z, activation.forward(z))


def test_float32_attention_masks_are_built_in_float32():
    """Boolean attention masks (a key padding mask of the batch, a per-head mask, the causal
    triangle) become float32 additive masks of 0 and −inf without a float64 copy."""
    rng = np.random.default_rng(0)
    key_padding = rng.random((256, 4096)) < 0.3
    _built_in_float32(
        attention_masks._mha_part, key_padding, "key_padding_mask", key_padding.shape, F32
    )
    _built_in_float32(
        attention_masks.additive_mask, rng.random((512, 512)) < 0.3, False, (512, 512), F32
    )
    _built_in_float32(attention_masks.additive_mask, None, True, (1024, 1024), F32)
