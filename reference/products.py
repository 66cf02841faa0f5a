"""The ``torch.func`` oracle of the layer products on a leading axis of V vectors.

For a layer ``out = f(θ, x)`` at the point its forward cache records, torch computes, in
float64 and with ``V`` random vectors stacked by ``torch.func.vmap`` (never all ones):

* ``vjp``: ``J_xᵀ M`` and ``J_θᵀ M`` (``torch.func.vjp``), and per sample the VJP of the
  cotangent restricted to one sample (``M`` zero outside sample ``n``): sample ``n``'s share;
* ``jvp``: ``J_x T`` and ``Σ_p J_p T_p`` (``torch.func.jvp``);
* ``residual``: the JVP of ``(θ, x) ↦ J(θ, x)ᵀ g`` with the cotangent ``g`` held fixed
  (forward over reverse), minus nothing: at fixed ``g`` it *is* ``Σ_o g_o ∇²f_o · (T, T_θ)``.

:func:`product_comparisons` pairs each of the layer's products with its oracle under the
layer's product equation IDs, plus the identities that tie them together without torch:
the adjoint identities ``⟨M, J T⟩ = ⟨Jᵀ M, T⟩`` (input and parameters), the per-sample
shares summing to the batch product, the symmetry of the second-order form
``⟨T₂, R(T₁)⟩ = ⟨T₁, R(T₂)⟩``, and ``V = 1`` equal to ``backward``.

Tolerance: ``c·ε`` relative to the larger of ``max|expected|`` and the change of our product
when the cache and the vectors are shaken by a relative ``δ = 2⁻²⁶`` (per unit ``δ``; the
larger of two random draws, times 4): the rounding sensitivity of the computation, which
magnitude alone misses under cancellation (the model of ``reference/stack.py``).

A layer whose torch forward cannot be differentiated twice by ``torch.func`` (a fused kernel
without forward mode), or whose fused double backward one would rather not trust as the only
oracle (``layer_norm``/``batch_norm``: reported wrong in the mixed block, not reproduced on
torch 2.13.0+cpu here, and pinned by a test — ``docs/products.md``), registers a plain-op twin
with :func:`register_plain_twin`; the oracle then uses it for every product.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from manual_bp.layers import BatchCouplingError, Layer
from reference.compare import Comparison
from reference.stack import TorchForward, paired_shakes, shake_cache, torch_layer_forward

__all__ = [
    "PLAIN_TWINS",
    "product_comparisons",
    "register_plain_twin",
    "torch_products",
]

#: layer class -> a plain-op torch forward (same signature as reference.stack's).
PLAIN_TWINS: dict[type, TorchForward] = {}

DELTA = 2.0**-26
V = 3


def register_plain_twin(cls: type) -> Callable[[TorchForward], TorchForward]:
    def decorator(function: TorchForward) -> TorchForward:
        PLAIN_TWINS[cls] = function
        return function

    return decorator


def _oracle_forward(layer: Layer) -> Callable[..., torch.Tensor]:
    for cls in type(layer).__mro__:
        if cls in PLAIN_TWINS:
            return PLAIN_TWINS[cls]
    return torch_layer_forward


def _t(array: np.ndarray) -> torch.Tensor:
    return torch.tensor(np.asarray(array, dtype=np.float64))


def torch_products(
    layer: Layer,
    x: Any,
    cache: Any,
    M: np.ndarray,
    T: Any,
    T_params: dict[str, np.ndarray],
    g: np.ndarray,
    oracle: Callable[..., torch.Tensor] | None = None,
    batch_axis: int = 0,
) -> dict[str, Any]:
    """Every product of ``layer`` at ``(θ, x)`` by ``torch.func``, float64, V-stacked.

    ``x`` may be a tuple of inputs (a decoder's ``(tgt, memory)``): its tangents ``T`` and
    input products are then tuples too, and ``oracle(params, *inputs)`` gives the output
    (default: the forward registered for the layer's class, one input). ``batch_axis``: the
    output's sample axis (1 for a time-major ``(L, N, E)``) the per-sample shares split."""
    names = sorted(layer.params)
    forward = _oracle_forward(layer)
    buffers = {k: _t(v) for k, v in layer.named_buffers()}  # a container's: its children's
    params = {n: _t(layer.params[n]) for n in names}
    several = isinstance(x, tuple)
    xt = tuple(_t(a) for a in x) if several else _t(x)

    def f(p: dict[str, torch.Tensor], xin: Any) -> torch.Tensor:
        if oracle is not None:
            return oracle(p, *xin) if several else oracle(p, xin)
        return forward(layer, p, {k: b.clone() for k, b in buffers.items()}, xin, cache)

    Mt, gt = _t(M), _t(g)
    result: dict[str, Any] = {}
    with sdpa_kernel(SDPBackend.MATH):  # the fused CPU attention kernel has no forward mode
        _, vjp_fn = torch.func.vjp(f, params, xt)
        dp, dx = torch.func.vmap(vjp_fn)(Mt)
        result["input_vjp"] = _numpy(dx)
        result["param_vjp"] = {n: dp[n].numpy() for n in names}
        # sample n's share: the cotangent restricted to sample n
        N = M.shape[1 + batch_axis]
        eye = torch.eye(N, dtype=torch.float64).reshape(
            N, *([1] * batch_axis), N, *([1] * (M.ndim - 2 - batch_axis))
        )
        masked = (Mt[:, None] * eye[None]).reshape(M.shape[0] * N, *M.shape[1:])
        dp_n, _ = torch.func.vmap(vjp_fn)(masked)
        result["param_vjp_per_sample"] = {
            n: dp_n[n].reshape(M.shape[0], N, *dp_n[n].shape[1:]).numpy() for n in names
        }
        zeros_p = {n: torch.zeros_like(params[n]) for n in names}

        def jvp_of(tp: dict[str, torch.Tensor], tx: torch.Tensor) -> torch.Tensor:
            return torch.func.jvp(f, (params, xt), (tp, tx))[1]

        if T is not None:
            Tt = tuple(_t(a) for a in T) if several else _t(T)
            result["input_jvp"] = torch.func.vmap(lambda tx: jvp_of(zeros_p, tx))(Tt).numpy()
        if names:
            Tp = {n: _t(T_params[n]) for n in names}
            zx = tuple(torch.zeros_like(a) for a in xt) if several else torch.zeros_like(xt)
            result["param_jvp"] = torch.func.vmap(lambda tp: jvp_of(tp, zx))(Tp).numpy()

        def gradient(p: dict[str, torch.Tensor], xin: torch.Tensor):
            return torch.func.vjp(f, p, xin)[1](gt)

        if T is not None:
            Tx = tuple(_t(a) for a in T) if several else _t(T)
        else:
            Tx = torch.zeros((M.shape[0], *x.shape), dtype=torch.float64)
        Tp = {n: _t(T_params[n]) for n in names}

        def second(tp: dict[str, torch.Tensor], tx: torch.Tensor):
            return torch.func.jvp(gradient, (params, xt), (tp, tx))[1]

        r_p, r_x = torch.func.vmap(second)(Tp, Tx)
        result["residual_input"] = _numpy(r_x)
        result["residual_params"] = {n: r_p[n].numpy() for n in names}
    return result


def _numpy(value: Any) -> Any:
    """A tensor, or a tuple of them (one per input), as NumPy."""
    return tuple(v.numpy() for v in value) if isinstance(value, tuple) else value.numpy()


def _dot(a: Any, b: Any) -> float:
    """``⟨a, b⟩``; over a tuple of inputs, the sum of the pairs'."""
    if isinstance(a, tuple):
        return sum(_dot(u, v) for u, v in zip(a, b, strict=True))
    return float(np.vdot(a, b))


def _absdot(a: Any, b: Any) -> float:
    if isinstance(a, tuple):
        return sum(_absdot(u, v) for u, v in zip(a, b, strict=True))
    return float(np.abs(a).ravel() @ np.abs(b).ravel())


def _at(value: Any, i: Any) -> Any:
    """``value[i]`` of an array or of each array of a tuple (one per input)."""
    return tuple(v[i] for v in value) if isinstance(value, tuple) else value[i]


def _random_like(rng: np.random.Generator, v: int, x: Any) -> Any:
    """``V`` standard normal tangents shaped like ``x`` (a tuple: one stack per input)."""
    if isinstance(x, tuple):
        return tuple(rng.standard_normal((v, *a.shape)) for a in x)
    return rng.standard_normal((v, *x.shape))


def _ours(layer: Layer, cache: Any, M, T, T_params, g, per_sample: bool) -> dict[str, Any]:
    ours: dict[str, Any] = {"param_vjp": layer.param_vjp(cache, M)}
    if T is not None:
        ours["input_vjp"] = layer.input_vjp(cache, M)
        ours["input_jvp"] = layer.input_jvp(cache, T)
    if layer.params:
        ours["param_jvp"] = layer.param_jvp(cache, T_params)
    if per_sample:
        ours["param_vjp_per_sample"] = layer.param_vjp(cache, M, sum_batch=False)
    r_x, r_p = layer.residual(cache, g, T, T_params)
    ours["residual_input"], ours["residual_params"] = r_x, r_p
    return ours


def _flat(result: dict[str, Any]) -> dict[str, np.ndarray]:
    flat = {}
    for key, value in result.items():
        if isinstance(value, dict):
            flat.update({f"{key}[{n}]": np.asarray(v) for n, v in value.items()})
        elif isinstance(value, tuple):  # one per input
            flat.update({f"{key}[input {i}]": np.asarray(v) for i, v in enumerate(value)})
        else:
            flat[key] = np.asarray(value)
    return flat


def _equation(layer: Layer, kind: str) -> str:
    """The layer's product ID for ``vjp``/``jvp``/``residual`` (the class declares them)."""
    ids = [e for e in layer.product_equations if e.endswith(f".{kind}")]
    if not ids and len(set(layer.product_equations)) == 1:
        return layer.product_equations[0]  # one ID for every product (PROD.elementwise)
    assert ids, f"{type(layer).__name__}.product_equations has no '*.{kind}' ID"
    return ids[0]


def product_comparisons(
    layer: Layer,
    x: Any,
    rng: np.random.Generator,
    v: int = V,
    *,
    kwargs: dict[str, Any] | None = None,
    oracle: Callable[..., torch.Tensor] | None = None,
    batch_axis: int | None = 0,
) -> list[Comparison]:
    """Every product of ``layer`` at input ``x`` against ``torch.func``, plus the identities.

    ``x`` a tuple: a layer of several inputs (``forward(*x, **kwargs)``; tangents and input
    products are tuples, one per input), with ``oracle(params, *inputs)`` its torch forward
    (:func:`torch_products`). ``batch_axis`` the sample axis of the output (1 time-major;
    None for an unbatched input: no per-sample shares to compare)."""
    kwargs = kwargs or {}
    buffers = dict(layer.named_buffers())  # a container's: its children's, by dotted name
    state = {k: b.copy() for k, b in buffers.items()}
    extra = [each.get_extra_state() for each in _layers(layer)]
    out, cache = layer.forward(*x, **kwargs) if isinstance(x, tuple) else layer.forward(x, **kwargs)
    for k, b in state.items():  # the oracle runs at the buffers the forward used
        buffers[k][...] = b
    index_input = getattr(layer, "index_input", False)
    M = rng.standard_normal((v, *out.shape))
    g = rng.standard_normal(out.shape)
    T = None if index_input else _random_like(rng, v, x)
    T_params = {n: rng.standard_normal((v, *p.shape)) for n, p in layer.params.items()}
    for name, frozen in getattr(layer, "constant_rows", dict)().items():
        T_params[name][:, frozen] = 0.0  # e.g. an embedding's padding row is no direction
    try:
        layer.param_vjp(cache, M, sum_batch=False)
        per_sample = batch_axis is not None
    except BatchCouplingError:
        per_sample = False
    T2 = None if T is None else _random_like(rng, v, x)  # for the symmetry identity
    T2_params = {n: rng.standard_normal(a.shape) for n, a in T_params.items()}
    for name, frozen in getattr(layer, "constant_rows", dict)().items():
        T2_params[name][:, frozen] = 0.0
    point = (cache, M, T, T_params, g, T2, T2_params)
    ours = _ours(layer, *point[:5], per_sample)
    # One ±δ pattern estimates how far rounding moves a value; the actual pattern can
    # align worse (measured up to 4.8× one draw at the end of a deep residual chain): the
    # larger of a paired draw (reference.stack.paired_shakes: a pair of neighbours gets
    # equal signs in one and opposite in the other), times 4, as reference/stack.py's
    # sensitivity model. The same shaken points serve the identities, whose terms cancel
    # inside a normalisation over two values ((σ² + ε)/ε) where magnitude sums cannot
    # see it.
    # A container's forward also rounds between its children, and a later child can
    # amplify that (a layer norm over two features after a residual sum that cancels):
    # its probes re-run the forward with the input and every weight shaken (backward
    # error analysis: a rounded matrix product is an exact one of weights moved ~ε).
    # A container's probes are two pairs: its rounding comes from many children, and one
    # pair's maximum fell short of the actual error by up to 1.6× on a decoder stack over
    # two features (tests/test_products_transformer_decoder.py, an edge case).
    seed = int(rng.integers(2**32))
    probes = paired_shakes(seed, DELTA)
    if layer.children():
        probes += paired_shakes(seed + 1, DELTA)
    shaken_points = []
    for shake in probes:
        at = cache
        if layer.children():
            at = _forward_shaken(layer, x, shake, state, extra, kwargs)
        shaken_points.append(_shaken((at, *point[1:]), shake))
    shaken_ours = [_ours(layer, *q[:5], per_sample) for q in shaken_points]
    shakes = [_flat(o) for o in shaken_ours]
    expected = torch_products(layer, x, cache, M, T, T_params, g, oracle, batch_axis or 0)
    if not per_sample:
        expected.pop("param_vjp_per_sample")
    if T is None:  # an index input has no input products (tests check its zero input_vjp)
        expected.pop("input_vjp")
    ours_flat, expected_flat = _flat(ours), _flat(expected)
    comparisons = []
    for key, want in expected_flat.items():
        kind = "residual" if key.startswith("residual") else key.split("_")[1][:3]
        got = ours_flat.get(key)
        if got is None:  # e.g. a parameter the layer left out of a product
            got = np.full(want.shape, np.nan)
        moved = [np.abs(shaken.get(key, got) - got) for shaken in shakes]
        scale = np.maximum(np.abs(want), 4.0 * np.max(moved, axis=0) / DELTA)
        comparisons.append(
            Comparison(_equation(layer, kind), f"{key} vs torch.func", got, want, scale)
        )
    base = _identities(layer, *point, ours, per_sample)
    moved_ids = [
        _identities(layer, *q, o, per_sample)
        for q, o in zip(shaken_points, shaken_ours, strict=True)
    ]
    for i, (equation, name, actual, want, magnitude) in enumerate(base):
        moved = np.max(
            [np.maximum(np.abs(m[i][2] - actual), np.abs(m[i][3] - want)) for m in moved_ids],
            axis=0,
        )
        scale = np.maximum(magnitude, 4.0 * moved / DELTA)
        comparisons.append(Comparison(equation, name, actual, want, scale))
    return comparisons


def _layers(layer: Layer) -> list[Layer]:
    """``layer`` and every layer below it."""
    return [layer] + [each for child in layer.children() for each in _layers(child)]


def _forward_shaken(
    layer: Layer, x: Any, shake: Callable, state: dict, extra: list, kwargs: dict
) -> Any:
    """The cache of ``layer``'s forward at a shaken input with shaken weights, run from
    the buffers and generator states of the first forward (so dropout draws the same
    masks); parameters, buffers and generators are left as they were."""
    buffers, layers = dict(layer.named_buffers()), _layers(layer)
    after = ({k: b.copy() for k, b in buffers.items()}, [e.get_extra_state() for e in layers])
    weights = [(array, array.copy()) for _, array in layer.named_parameters()]
    try:
        for k, b in buffers.items():
            b[...] = state[k]
        for each, saved in zip(layers, extra, strict=True):
            each.set_extra_state(saved)
        for array, _ in weights:
            array[...] = shake(array)
        if isinstance(x, tuple):
            return layer.forward(*(shake(a) for a in x), **kwargs)[1]
        index_input = getattr(layer, "index_input", False)
        return layer.forward(x if index_input else shake(x), **kwargs)[1]
    finally:
        for array, original in weights:
            array[...] = original
        for k, b in buffers.items():
            b[...] = after[0][k]
        for each, saved in zip(layers, after[1], strict=True):
            each.set_extra_state(saved)


def _shaken(point: tuple, shake: Callable[[np.ndarray], np.ndarray]) -> tuple:
    """``(cache, M, T, T_params, g, T2, T2_params)`` with every float entry shaken."""
    cache, *vectors = point

    def each(value):
        if value is None:
            return None
        if isinstance(value, dict):
            return {k: shake(v) for k, v in value.items()}
        if isinstance(value, tuple):
            return tuple(shake(v) for v in value)
        return shake(value)

    return (shake_cache(cache, shake), *(each(v) for v in vectors))


def _identities(
    layer: Layer, cache, M, T, T_params, g, T2, T2_params, ours, per_sample: bool
) -> list[tuple[str, str, np.ndarray, np.ndarray, np.ndarray]]:
    """Identities among our own products (no torch): adjoints, per-sample sums, symmetry of
    the residual, and ``V = 1`` against ``backward``, as ``(ID, name, actual, expected,
    magnitude)``."""
    found = []
    vjp_id, jvp_id, res_id = (_equation(layer, k) for k in ("vjp", "jvp", "residual"))
    names = sorted(layer.params)
    for i in range(M.shape[0]):
        left = right = magnitude = 0.0
        if T is not None:
            vjp_i = _at(ours["input_vjp"], i)
            left += _dot(M[i], ours["input_jvp"][i])
            right += _dot(vjp_i, _at(T, i))
            magnitude += _absdot(M[i], ours["input_jvp"][i]) + _absdot(vjp_i, _at(T, i))
        if names:
            left += _dot(M[i], ours["param_jvp"][i])
            magnitude += _absdot(M[i], ours["param_jvp"][i])
            for n in names:
                right += _dot(ours["param_vjp"][n][i], T_params[n][i])
                magnitude += _absdot(ours["param_vjp"][n][i], T_params[n][i])
        if T is not None or names:
            found.append(
                (
                    jvp_id,
                    f"adjoint ⟨M, J T⟩ = ⟨Jᵀ M, T⟩ [{i}]",
                    np.array(left),
                    np.array(right),
                    np.array(magnitude),
                )
            )
    if per_sample:
        for n in names:
            total = ours["param_vjp_per_sample"][n].sum(axis=1)
            scale = np.abs(ours["param_vjp_per_sample"][n]).sum(axis=1)
            found.append((vjp_id, f"Σ per-sample {n} = batch", total, ours["param_vjp"][n], scale))
    # symmetry of the second-order form: ⟨T₂, R(T₁)⟩ = ⟨T₁, R(T₂)⟩
    r2_x, r2_p = layer.residual(cache, g, T2, T2_params)
    r1_x, r1_p = ours["residual_input"], ours["residual_params"]

    def pair(tx, tp, rx, rp) -> tuple[float, float]:
        value = magnitude = 0.0
        if tx is not None:
            value, magnitude = _dot(tx, rx), _absdot(tx, rx)
        for n in names:
            value += _dot(tp[n], rp[n])
            magnitude += _absdot(tp[n], rp[n])
        return value, magnitude

    a, ma = pair(T2, T2_params, r1_x, r1_p)
    b, mb = pair(T, T_params, r2_x, r2_p)
    found.append(
        (res_id, "symmetry ⟨T₂, R T₁⟩ = ⟨T₁, R T₂⟩", np.array(a), np.array(b), np.array(ma + mb))
    )
    # V = 1 is backward
    dx, grads = layer.backward(M[0], cache)
    if T is not None:
        v1 = _at(layer.input_vjp(cache, M[:1]), 0)
        pairs = zip(dx, v1, strict=True) if isinstance(v1, tuple) else [(dx, v1)]
        for k, (d, w) in enumerate(pairs):
            label = f" [input {k}]" if isinstance(v1, tuple) else ""
            found.append((vjp_id, f"backward = input_vjp at V = 1{label}", d, w, np.abs(w)))
    one = layer.param_vjp(cache, M[:1])
    for n in names:
        v1 = one[n][0]
        found.append((vjp_id, f"backward {n} = param_vjp at V = 1", grads[n], v1, np.abs(v1)))
    return found
