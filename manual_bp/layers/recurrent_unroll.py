"""Unrolling a recurrent cell through time, and torch's input forms of a recurrent layer.

The core (:func:`run_direction`, :func:`backprop_direction`) works batch-major, ``x`` of
shape ``(N, T, I)``. A layer takes torch's forms and maps them onto it
(:func:`to_core`, :func:`from_core`):

* time-major ``(T, N, I)`` (torch's default, ``batch_first=False``) — swapped to ``(N, T, I)``;
* batch-major ``(N, T, I)`` (``batch_first=True``) — as is;
* unbatched ``(T, I)`` — one sample ``(1, T, I)``, its states ``(L·D, H)`` given an axis.

Initial and final states keep torch's layout ``(L·D, N, H_out)`` (``(L·D, H_out)``
unbatched) in every form: torch's ``h_n`` is never batch-first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from manual_bp._validation import check_layer_array
from manual_bp.layers._entry import layer_float_dtype
from manual_bp.layers.base import Cache
from manual_bp.layers.recurrent_cells import Cell

__all__ = [
    "RecurrentCache",
    "backprop_direction",
    "from_core",
    "run_direction",
    "state_sizes",
    "to_core",
]

States = tuple[np.ndarray, ...]

#: The layouts of a recurrent layer's input: torch's ``batch_first=True``, its default
#: time-major form, and one unbatched sequence.
LAYOUTS = ("batch", "time", "unbatched")


@dataclass
class RecurrentCache(Cache):
    """``input``: the layer's input as given (torch's layout); per (layer, direction) the
    step caches (a fast LSTM: one :class:`~manual_bp.layers.recurrent_fast.FastLSTMCache`);
    ``final``: torch's ``h_n`` (``(h_n,)``, or ``(h_n, c_n)`` for the LSTM) in the layout of
    ``hx``; ``initial``: the initial states the core ran from ``(L·D, N, ·)``; ``x``: the
    input batch-major ``(N, T, I)``; ``layout``: one of :data:`LAYOUTS`; ``masks``: per
    layer the dropout mask (scaled by ``1/(1 − p)``) on its output, None where none."""

    steps: list[Any]
    final: States
    initial: States = ()
    x: np.ndarray | None = None
    layout: str = "batch"
    masks: list[np.ndarray | None] = field(default_factory=list)
    #: the products' per-direction linearisations, formed once per cache (fast LSTM sweeps)
    linearised: dict = field(default_factory=dict, repr=False, compare=False)


def run_direction(
    cell: Cell, x: np.ndarray, state: States, params: dict, reverse: bool
) -> tuple[np.ndarray, States, list[Any]]:
    """Unroll ``cell`` over time (backwards in time when ``reverse``): ``(out, final, caches)``."""
    n, length = x.shape[:2]
    out = np.empty((n, length, state[0].shape[-1]), dtype=x.dtype)
    caches: list[Any] = [None] * length
    for t in reversed(range(length)) if reverse else range(length):
        state, caches[t] = cell.step(x[:, t], state, params)
        out[:, t] = state[0]
    return out, state, caches


def backprop_direction(
    cell: Cell, d_out: np.ndarray, d_final: States, caches: list[Any], reverse: bool
) -> tuple[np.ndarray, States, dict[str, np.ndarray]]:
    """BPTT over one direction (``BPTT.sequence``): ``(∂C/∂x, ∂C/∂state_0, param grads)``.

    At each step (visited in the reverse of the forward order) the carried gradient
    ``δh_t`` gains the output's own ``∂C/∂out_t``, then the cell's VJP maps it back to
    ``δx_t`` and ``δh_{t-1}`` (and ``δc_{t-1}``); parameter gradients add up over steps.
    """
    length = d_out.shape[1]
    d_state = d_final
    dx = None
    grads: dict[str, np.ndarray] = {}
    for t in range(length) if reverse else reversed(range(length)):
        d_state = (d_state[0] + d_out[:, t], *d_state[1:])
        dx_t, d_state, step_grads = cell.step_backward(d_state, caches[t])
        if dx is None:
            dx = np.empty((*d_out.shape[:2], dx_t.shape[-1]), dtype=d_out.dtype)
        dx[:, t] = dx_t
        for name, grad in step_grads.items():
            grads[name] = grads[name] + grad if name in grads else grad
    return dx, d_state, grads


def state_sizes(layer: Any) -> tuple[int, ...]:
    """Units of each state: ``(H_out,)``, or ``(H_out, H)`` for the LSTM (``H_out`` is
    ``proj_size`` when set, else ``hidden_size``: torch's)."""
    h_out = getattr(layer, "proj_size", 0) or layer.hidden_size
    return (h_out, layer.hidden_size)[: layer.cell.n_states]


def to_core(layer: Any, x: Any, hx: Any, name: str = "input") -> tuple[np.ndarray, States, str]:
    """torch's ``(input, hx)`` as the core's ``(x (N, T, I), states (L·D, N, ·), layout)``.

    ``hx``: ``h0`` (RNN, GRU) or ``(h0, c0)`` (LSTM), or None (zeros); a tuple of states is
    taken for every class (the form ``initial_state`` and ``cache.final`` have).
    """
    check_layer_array(x, repr(layer), name, layer_float_dtype(layer))
    if x.ndim not in (2, 3) or x.shape[-1] != layer.input_size:
        order = "(N, T" if layer.batch_first else "(T, N"
        raise ValueError(
            f"{layer!r}: {name} has shape {x.shape}; expected {order}, {layer.input_size}) "
            f"or unbatched (T, {layer.input_size})"
        )
    layout = "unbatched" if x.ndim == 2 else "batch" if layer.batch_first else "time"
    core = x[None] if layout == "unbatched" else x.swapaxes(0, 1) if layout == "time" else x
    if core.shape[1] < 1:
        raise ValueError(f"{layer!r}: {name} has shape {x.shape}; sequences need length ≥ 1")
    return core, _states(layer, hx, core.shape[0], layout, core.dtype), layout


def _states(layer: Any, hx: Any, n: int, layout: str, dtype: Any) -> States:
    count = layer.cell.n_states
    if hx is None:
        hx = (None,) * count
    elif isinstance(hx, np.ndarray):
        hx = (hx,)
    if not isinstance(hx, (tuple, list)) or len(hx) != count:
        want = "(h0, c0)" if count == 2 else "h0"
        raise ValueError(f"{layer!r}: hx must be {want} (NumPy arrays) or None, got {hx!r}")
    rows = layer.num_layers * layer.directions
    states = []
    for label, state, units in zip(("h0", "c0"), hx, state_sizes(layer), strict=False):
        shape = (rows, units) if layout == "unbatched" else (rows, n, units)
        if state is None:
            states.append(np.zeros((rows, n, units), dtype=dtype))
            continue
        # the input's dtype (the layer's: checked by forward), never cast: torch's rule
        check_layer_array(state, repr(layer), label, np.dtype(dtype))
        if state.shape != shape:
            raise ValueError(f"{layer!r}: {label} has shape {state.shape}, expected {shape}")
        states.append(state[:, None] if layout == "unbatched" else state)
    return tuple(states)


def from_core(array: np.ndarray, layout: str) -> np.ndarray:
    """A core sequence ``(…, N, T, F)`` (a leading V axis allowed) in the input's layout."""
    if layout == "unbatched":
        return array[..., 0, :, :]
    return array.swapaxes(-3, -2) if layout == "time" else array


def sequence_to_core(array: np.ndarray, layout: str) -> np.ndarray:
    """Inverse of :func:`from_core`: a sequence in the input's layout as ``(…, N, T, F)``."""
    if layout == "unbatched":
        return array[..., None, :, :]
    return array.swapaxes(-3, -2) if layout == "time" else array


def states_from_core(states: States, layout: str) -> States:
    """Core states ``(L·D, N, ·)`` in torch's layout (``(L·D, ·)`` unbatched)."""
    return tuple(s[:, 0] for s in states) if layout == "unbatched" else tuple(states)
