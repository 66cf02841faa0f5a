"""Helpers shared by the sequence and attention checks (no check registration here).

Kept apart from ``reference/checks_*.py`` so that those modules can share them without
importing each other while :mod:`reference.checks` is loading them.
"""

from __future__ import annotations

from unittest import mock

import numpy as np

from manual_bp.layers import Dense, recurrent_cells
from manual_bp.layers.recurrent import RecurrentLayer
from manual_bp.sequential import Sequential
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


def magnitude_scales(layer: RecurrentLayer, d_out: np.ndarray, cache) -> dict[str, np.ndarray]:
    """``Σ_t |δa_t|ᵀ|x_t|`` (and ``Σ_t |δa_t|`` for biases): the rounding bound of each sum.

    A parameter gradient is a sum over batch and time of per-step terms; where the terms
    cancel (a gradient of 1e-7 from terms of 1e-4) its rounding error is relative to
    their magnitude, not to the result (docs/conventions.md, "Precision and tolerances").
    The same backward pass is replayed with the per-step parameter products taken in
    absolute value (a reference-side substitute for ``_param_grads``).
    """

    def absolute(d_ih, d_hh, x, h, params):
        grads = {"weight_ih": np.abs(d_ih).T @ np.abs(x), "weight_hh": np.abs(d_hh).T @ np.abs(h)}
        if params["bias_ih"] is not None:
            grads["bias_ih"], grads["bias_hh"] = np.abs(d_ih).sum(0), np.abs(d_hh).sum(0)
        return grads

    with mock.patch.object(recurrent_cells, "_param_grads", absolute):
        return layer.backward(d_out, cache)[1]


def with_stack_scales(model: Sequential, x, y, comparisons: list[Comparison]) -> list[Comparison]:
    """Attach :func:`magnitude_scales` to the recurrent layers' parameter comparisons."""
    ours = model.backprop(x, y)
    last = model.layers[-1]
    out, caches = ours.output, ours.caches
    rows = out.reshape(-1, out.shape[-1])
    targets = model.prepare_targets(y, x.shape[0]).reshape(rows.shape)
    z = caches[-1].input.reshape(rows.shape)
    upstream = model.cost.delta(z, rows, targets, last.activation).reshape(out.shape) / len(rows)
    by_name = {c.name: c for c in comparisons}
    for index in reversed(range(len(model.layers) - 1)):
        layer = model.layers[index]
        if isinstance(layer, RecurrentLayer):
            for name, scale in magnitude_scales(layer, upstream, caches[index]).items():
                by_name[f"∂C/∂{index}.{name}"].scale = scale
        if isinstance(layer, Dense):  # ∂W = Σ_rows dzᵀx over N·T rows cancels the same way
            d_rows = np.abs(upstream.reshape(-1, upstream.shape[-1]))
            x_rows = np.abs(caches[index].input.reshape(len(d_rows), -1))
            by_name[f"∂C/∂{index}.weight"].scale = d_rows.T @ x_rows
            if layer.bias:
                by_name[f"∂C/∂{index}.bias"].scale = d_rows.sum(0)
        upstream = layer.backward(upstream, caches[index])[0]
    return comparisons
