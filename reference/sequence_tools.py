"""Helpers shared by the sequence and attention checks (no check registration here).

Kept apart from ``reference/checks_*.py`` so that those modules can share them without
importing each other while :mod:`reference.checks` is loading them.
"""

from __future__ import annotations

from unittest import mock

import numpy as np

from manual_bp.layers import Dense, recurrent_cells
from manual_bp.layers.embedding import Embedding, embedding_backward
from manual_bp.layers.recurrent import RecurrentLayer
from manual_bp.models.sequential import Sequential
from reference.compare import Comparison

__all__ = ["finite_difference", "magnitude_scales", "with_stack_scales"]


def finite_difference(cost, array: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences of ``cost()`` in every entry of ``array`` (perturbed in place)."""
    grad = np.empty(array.size)
    flat = array.reshape(-1)
    for i in range(flat.size):
        original = flat[i]
        flat[i] = original + h
        plus = cost()
        flat[i] = original - h
        minus = cost()
        flat[i] = original
        grad[i] = (plus - minus) / (2 * h)
    return grad.reshape(array.shape)


def _abs_step_backward(step_backward):
    """A cell VJP evaluated on absolute values (upstream, cached values, parameters).

    Every factor of the step's products becomes non-negative, so the result bounds the
    magnitude of the terms each entry is summed from: the rounding bound ``S`` of
    docs/conventions.md, propagated through time.
    """

    def backward(d_state, cache):
        params = {k: None if v is None else np.abs(v) for k, v in cache.params.items()}
        absolute = recurrent_cells.StepCache(
            np.abs(cache.x),
            tuple(np.abs(s) for s in cache.prev),
            tuple(np.abs(v) for v in cache.values),
            params,
        )
        dx, d_prev, grads = step_backward(tuple(np.abs(d) for d in d_state), absolute)
        return np.abs(dx), tuple(np.abs(d) for d in d_prev), grads

    return backward


def _abs_param_grads(d_ih, d_hh, x, h, params):
    grads = {"weight_ih": np.abs(d_ih).T @ np.abs(x), "weight_hh": np.abs(d_hh).T @ np.abs(h)}
    if params["bias_ih"] is not None:
        grads["bias_ih"], grads["bias_hh"] = np.abs(d_ih).sum(0), np.abs(d_hh).sum(0)
    return grads


def magnitude_scales(
    layer: RecurrentLayer, d_out: np.ndarray, cache
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The layer's backward pass on absolute values: ``(S(∂C/∂x), {name: S(∂C/∂θ)})``.

    A parameter gradient is a sum over batch and time of per-step terms; where the terms
    cancel (a gradient of 1e-7 from terms of 1e-4) its rounding error is relative to
    their magnitude, not to the result (docs/conventions.md, "Precision and tolerances").
    The same BPTT is replayed with every step's VJP on absolute values (``|h − n|`` of the
    GRU is taken as ``||h| − |n||``, a slight underestimate) — reference-side substitutes
    for the cell's VJP and ``_param_grads``. A fast LSTM is replayed in the readable form
    (the same function), whose per-step VJP can be substituted.
    """
    cell = layer.cell
    absolute = recurrent_cells.Cell(
        cell.gates, cell.n_states, cell.step, _abs_step_backward(cell.step_backward)
    )
    with mock.patch.object(layer, "implementation", "readable", create=True):
        if not isinstance(cache.steps[0], list):  # a fast LSTM's cache: replay step by step
            replay = layer._forward(cache.x, cache.initial)[2]  # the batch-major core
            replay.input, replay.layout, replay.final = cache.input, cache.layout, cache.final
            cache = replay
        with (
            mock.patch.object(layer, "cell", absolute),
            mock.patch.object(recurrent_cells, "_param_grads", _abs_param_grads),
        ):
            dx, grads = layer.backward(np.abs(d_out), cache)
    return dx, grads


def with_stack_scales(model: Sequential, x, y, comparisons: list[Comparison]) -> list[Comparison]:
    """Attach magnitude bounds to the recurrent and dense layers' parameter comparisons.

    The upstream magnitude is propagated down the stack on absolute values (dense:
    ``|δ| |W|``; tanh/sigmoid/relu: ``|δ| σ'``, σ' ≥ 0; recurrent: :func:`magnitude_scales`;
    embedding: the scatter-add of ``|δ|``).
    """
    ours = model.backprop(x, y)
    last = model.layers[-1]
    out, caches = ours.output, ours.caches
    rows = out.reshape(-1, out.shape[-1])
    targets = model.prepare_targets(y, x.shape[0]).reshape(rows.shape)
    z = caches[-1].input.reshape(rows.shape)
    # SEQ.ignore_index: ignored positions (all-zero target rows) seed nothing.
    kept = targets.any(axis=1) if model.ignore_index is not None else np.ones(len(rows), bool)
    delta = np.zeros_like(rows)
    delta[kept] = model.cost.delta(z[kept], rows[kept], targets[kept], last.activation)
    delta = delta.reshape(out.shape) / kept.sum()
    upstream = np.abs(delta)
    if model.cost.name in ("log-likelihood", "categorical-cross-entropy"):
        # δ = p − y is a subtraction: rounded ε-relative to |p| + |y|, not to |p − y|, which
        # cancels where p → y. Measured: 1 − p ≈ 4e-3 gave a 5e-14 relative difference
        # from torch in an embedding gradient whose only sum was that subtraction.
        p = rows if model.cost.name == "log-likelihood" else _softmax(rows)
        bound = np.where(kept[:, None], np.abs(p) + np.abs(targets), 0.0) / kept.sum()
        upstream = np.maximum(upstream, bound.reshape(out.shape))
    by_name = {c.name: c for c in comparisons}
    for index in reversed(range(len(model.layers) - 1)):
        layer = model.layers[index]
        if isinstance(layer, RecurrentLayer):
            dx, scales = magnitude_scales(layer, upstream, caches[index])
            for name, scale in scales.items():
                by_name[f"∂C/∂{index}.{name}"].scale = scale
            upstream = dx
            continue
        if isinstance(layer, Dense):  # ∂W = Σ_rows dzᵀx over N·T rows
            d_rows = upstream.reshape(-1, upstream.shape[-1])
            x_rows = np.abs(caches[index].input.reshape(len(d_rows), -1))
            by_name[f"∂C/∂{index}.weight"].scale = d_rows.T @ x_rows
            if layer.has_bias:
                by_name[f"∂C/∂{index}.bias"].scale = d_rows.sum(0)
            upstream = upstream @ np.abs(layer.params["weight"])
            continue
        if isinstance(layer, Embedding):  # ∂W_k = Σ over the positions that look up row k
            key = f"∂C/∂{index}.weight"
            if key in by_name:
                by_name[key].scale = embedding_backward(
                    upstream, caches[index].indices, layer.num_embeddings, layer.padding_idx
                )
            continue
        upstream = np.abs(layer.backward(upstream, caches[index])[0])
    return comparisons


def with_sensitivity(model: Sequential, x, y, comparisons: list[Comparison]) -> list:
    """Raise each parameter comparison's scale to its measured condition: ``|g(θ·(1 ± δ)) −
    g(θ)| / δ`` over two random sign patterns, times 4 (reference/stack.py's measured factor).

    Rounding of the forward pass acts like relative perturbations of size ε; a saturated
    tanh turns them into a large relative change of ``1 − h²`` (measured: 8e-14 relative in
    ``∂C/∂W_hh`` at ``h ≈ ±0.9997`` where the Σ|terms| bound allowed 1.4e-14).
    """
    delta = 2.0**-26
    base = model.backprop(x, y).params
    arrays = dict(model.named_parameters())
    saved = {name: array.copy() for name, array in arrays.items()}
    spread = {name: np.zeros_like(g) for name, g in base.items()}
    try:
        for seed in (1, 2):
            signs = np.random.default_rng(seed)
            for name, array in arrays.items():
                array[...] = saved[name] * (1.0 + delta * signs.choice([-1.0, 1.0], array.shape))
            moved = model.backprop(x, y).params
            for name in spread:
                spread[name] = np.maximum(spread[name], np.abs(moved[name] - base[name]))
    finally:
        for name, array in arrays.items():
            array[...] = saved[name]
    for comparison in comparisons:
        name = comparison.name.removeprefix("∂C/∂")
        if name in spread:
            measured = 4.0 * spread[name] / delta
            scale = np.abs(comparison.expected) if comparison.scale is None else comparison.scale
            comparison.scale = np.maximum(scale, measured)
    return comparisons


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
