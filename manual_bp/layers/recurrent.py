"""Recurrent layers ``RNN`` (tanh/relu), ``LSTM`` and ``GRU`` — ``torch.nn.RNN/LSTM/GRU``.

Sequences are batch-major, ``x`` of shape ``(N, T, I)`` (torch's ``batch_first=True``);
initial and final states keep torch's layout ``(num_layers · num_directions, N, H)``.
Parameters are named and shaped exactly as torch's (``weight_ih_l0``, ``weight_hh_l0``,
``bias_ih_l0``, ``bias_hh_l0``, ``…_reverse`` for the backward direction), so a state
dict copies 1:1. Initialisation is torch's: ``U(−1/√H, 1/√H)`` for every parameter.

Two interfaces:

* the functional one, with final states first class::

      out, (h_T, c_T), cache = lstm.forward_sequence(x, h0, c0)
      dx, dh0, dc0, grads = lstm.backward_sequence(d_out, d_hT, d_cT, cache)

  (``RNN``/``GRU``: ``out, h_T, cache = forward_sequence(x, h0)`` and
  ``dx, dh0, grads = backward_sequence(d_out, d_hT, cache)``);
* the :class:`~manual_bp.layers.base.Layer` protocol, for a :class:`Sequential`: ``forward(x)``
  returns the whole output sequence ``(N, T, H·D)``; ``backward`` gives the final states
  no gradient. ``initial_state`` (a tuple of arrays, or None for zeros) is the ``h0``/``c0``
  a stateful caller (truncated BPTT) passes in, as torch's ``lstm(x, (h0, c0))``.

Backpropagation through time (``BPTT.sequence``) is the per-step VJP of the cell
(:mod:`manual_bp.layers.recurrent_cells`) run backwards in time with the carried
gradient ``∂C/∂h_t`` (and ``∂C/∂c_t``): ``δh_t = ∂C/∂out_t + (δh_{t+1} through the cell)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from manual_bp.layers.base import Cache, check_input, register_layer
from manual_bp.layers.recurrent_cells import CELLS, Cell
from manual_bp.layers.recurrent_fast import LSTMStep, lstm_backward_fast, lstm_forward_fast
from manual_bp.layers.recurrent_products import RecurrentProducts
from manual_bp.layers.recurrent_steps import GRUStep, RNNStep
from manual_bp.layers.steps import GenericStep

__all__ = ["GRU", "LSTM", "RNN", "RecurrentCache", "RecurrentLayer"]

States = tuple[np.ndarray, ...]


@dataclass
class RecurrentCache(Cache):
    """``input`` ``(N, T, I)``; per (layer, direction) the step caches (a fast LSTM: one
    :class:`~manual_bp.layers.recurrent_fast.FastLSTMCache`); the initial and final states."""

    steps: list[Any]
    final: States
    initial: States = ()


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


class RecurrentLayer(RecurrentProducts):
    """Shared machinery of RNN, LSTM and GRU (see the module docstring); the products on a
    V axis come from :class:`~manual_bp.layers.recurrent_products.RecurrentProducts`."""

    mode = ""
    decay = ()  # set per instance: every weight_* parameter
    hyperparameters = ("input_size", "hidden_size", "num_layers", "bias", "bidirectional")

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        bidirectional: bool = False,
        *,
        seed: int | np.random.Generator | None = None,
        dtype: np.dtype | type | str = np.float64,
    ) -> None:
        super().__init__()
        self.input_size = _positive_int(input_size, "input_size")
        self.hidden_size = _positive_int(hidden_size, "hidden_size")
        self.num_layers = _positive_int(num_layers, "num_layers")
        for flag, value in (("bias", bias), ("bidirectional", bidirectional)):
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{flag} must be True or False, got {value!r}")
        self.bias, self.bidirectional = bool(bias), bool(bidirectional)
        self.has_bias = self.bias  # torch's nn.RNNBase keeps ``bias`` as a flag
        self.dtype = np.dtype(dtype)
        self.cell: Cell = CELLS[self.mode]
        self.initial_state: States | None = None
        gates_h, directions = self.cell.gates * self.hidden_size, self.directions
        for layer in range(self.num_layers):
            width = self.input_size if layer == 0 else self.hidden_size * directions
            for suffix in self._suffixes():
                self.params[f"weight_ih_l{layer}{suffix}"] = np.zeros((gates_h, width), self.dtype)
                self.params[f"weight_hh_l{layer}{suffix}"] = np.zeros(
                    (gates_h, self.hidden_size), self.dtype
                )
                if self.bias:
                    self.params[f"bias_ih_l{layer}{suffix}"] = np.zeros(gates_h, self.dtype)
                    self.params[f"bias_hh_l{layer}{suffix}"] = np.zeros(gates_h, self.dtype)
        self.decay = tuple(name for name in self.params if name.startswith("weight"))
        self.reset_parameters(np.random.default_rng(seed))

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _suffixes(self) -> tuple[str, ...]:
        return ("", "_reverse") if self.bidirectional else ("",)

    @property
    def fast(self) -> bool:
        """Whether directions run in the fast form (``recurrent_fast``; LSTM only)."""
        return getattr(self, "implementation", "readable") == "fast"

    def _run(self, x: np.ndarray, state: States, params: dict, reverse: bool):
        """One direction forward: ``(out, final, cache)``; the reverse one on flipped time."""
        if not self.fast:
            return run_direction(self.cell, x, state, params, reverse)
        out, final, cache = lstm_forward_fast(x[:, ::-1] if reverse else x, *state, params)
        return (out[:, ::-1] if reverse else out), final, cache

    def _run_backward(self, d_out: np.ndarray, d_final: States, cache: Any, reverse: bool):
        """One direction's BPTT: ``(∂C/∂x, ∂C/∂state_0, grads)``."""
        if not self.fast:
            return backprop_direction(self.cell, d_out, d_final, cache, reverse)
        d = d_out[:, ::-1] if reverse else d_out
        dx, dh0, dc0, grads = lstm_backward_fast(d, *d_final, cache)
        return (dx[:, ::-1] if reverse else dx), (dh0, dc0), grads

    def _cell_params(self, layer: int, suffix: str) -> dict[str, np.ndarray | None]:
        return {
            kind: self.params.get(f"{kind}_l{layer}{suffix}")
            for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        }

    def reset_parameters(self, rng: np.random.Generator) -> None:
        """torch's default: every parameter ``U(−1/√H, 1/√H)``, in state-dict order."""
        bound = 1.0 / np.sqrt(self.hidden_size)
        for array in self.params.values():
            array[...] = rng.uniform(-bound, bound, size=array.shape)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 2 or input_shape[-1] != self.input_size:
            raise ValueError(
                f"{self!r} takes per-sample sequences (T, {self.input_size}), "
                f"got per-sample shape {tuple(input_shape)}"
            )
        return (input_shape[0], self.hidden_size * self.directions)

    # ------------------------------------------------------------------ functional core
    def _initial(self, x: np.ndarray, states: tuple[np.ndarray | None, ...]) -> States:
        shape = (self.num_layers * self.directions, x.shape[0], self.hidden_size)
        out = []
        for name, state in zip(("h0", "c0"), states, strict=False):
            if state is None:
                out.append(np.zeros(shape, dtype=x.dtype))
                continue
            if not isinstance(state, np.ndarray) or state.shape != shape:
                raise ValueError(f"{self!r}: {name} has shape {np.shape(state)}, expected {shape}")
            out.append(state.astype(x.dtype, copy=False))
        return tuple(out)

    def _forward(self, x: np.ndarray, states: tuple) -> tuple[np.ndarray, States, RecurrentCache]:
        check_input(x, self, ndim=3, trailing=(self.input_size,), name="x")
        if x.shape[1] < 1:
            raise ValueError(f"{self!r}: x has shape {x.shape}; sequences need length ≥ 1")
        initial = self._initial(x, states)
        finals: list[list[np.ndarray]] = [[] for _ in initial]
        steps, h = [], x
        for layer in range(self.num_layers):
            outs = []
            for d, suffix in enumerate(self._suffixes()):
                k = layer * self.directions + d
                out, final, caches = self._run(
                    h, tuple(s[k] for s in initial), self._cell_params(layer, suffix), bool(d)
                )
                outs.append(out)
                steps.append(caches)
                for slot, value in zip(finals, final, strict=True):
                    slot.append(value)
            h = np.concatenate(outs, axis=-1) if len(outs) > 1 else outs[0]
        final_states = tuple(np.stack(slot) for slot in finals)
        return h, final_states, RecurrentCache(x, steps, final_states, initial)

    def _backward(
        self, d_out: np.ndarray, d_finals: tuple, cache: RecurrentCache
    ) -> tuple[np.ndarray, States, dict[str, np.ndarray]]:
        expected = (*cache.input.shape[:2], self.hidden_size * self.directions)
        if not isinstance(d_out, np.ndarray) or d_out.shape != expected:
            raise ValueError(f"{self!r}: d_out has shape {np.shape(d_out)}, expected {expected}")
        d_finals = self._initial(cache.input, d_finals)  # None -> zeros, shapes checked
        d_initial = [np.zeros_like(s) for s in d_finals]
        grads: dict[str, np.ndarray] = {}
        H = self.hidden_size
        for layer in reversed(range(self.num_layers)):
            dx = None
            for d, suffix in enumerate(self._suffixes()):
                k = layer * self.directions + d
                dx_d, d_state, step_grads = self._run_backward(
                    d_out[..., d * H : (d + 1) * H],
                    tuple(s[k] for s in d_finals),
                    cache.steps[k],
                    bool(d),
                )
                dx = dx_d if dx is None else dx + dx_d
                for slot, value in zip(d_initial, d_state, strict=True):
                    slot[k] = value
                for kind, grad in step_grads.items():
                    grads[f"{kind}_l{layer}{suffix}"] = grad
            d_out = dx
        grads = {name: grads[name] for name in self.params}  # state-dict order
        return d_out, tuple(d_initial), grads

    # ------------------------------------------------------------------ Layer protocol
    def forward(self, x: np.ndarray) -> tuple[np.ndarray, RecurrentCache]:
        """``x (N, T, I) -> out (N, T, H·D)`` from ``initial_state`` (zeros when None)."""
        states = self.initial_state or (None,) * self.cell.n_states
        out, _, cache = self._forward(x, tuple(states))
        return out, cache

    def backward(
        self, d_out: np.ndarray, cache: RecurrentCache
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(∂C/∂x, grads)``; the final states receive no gradient (they are not outputs)."""
        dx, _, grads = self._backward(d_out, (None,) * self.cell.n_states, cache)
        return dx, grads

    def fast_step(self) -> Any:
        """The fused step of one layer and direction (:class:`~manual_bp.layers.
        recurrent_steps.RNNStep`, ``GRUStep``; the LSTM's overrides this); the readable
        forward/backward (``GenericStep``) for stacked or bidirectional layers."""
        if self.num_layers == 1 and not self.bidirectional:
            return (GRUStep if self.mode == "gru" else RNNStep)(self)
        return GenericStep(self)

    @classmethod
    def from_shape(cls, input_shape, *args, n_outputs=None, **kwargs) -> RecurrentLayer:
        """``lstm(32)`` on sequences ``(T, D)`` -> ``LSTM(D, 32)``."""
        if len(input_shape) != 2:
            raise ValueError(f"{cls.name} needs per-sample sequences (T, D), got {input_shape}")
        return cls(input_shape[-1], *args, **kwargs)

    def __repr__(self) -> str:
        extra = "".join(
            f", {name}={getattr(self, name)!r}"
            for name, default in (("num_layers", 1), ("bias", True), ("bidirectional", False))
            if getattr(self, name) != default
        )
        return f"{type(self).__name__}({self.input_size}, {self.hidden_size}{extra})"


class _HiddenOnly(RecurrentLayer):
    """RNN and GRU: the state is ``h`` alone."""

    def forward_sequence(
        self, x: np.ndarray, h0: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, RecurrentCache]:
        """``(out (N, T, H·D), h_T (L·D, N, H), cache)`` from ``h0`` (zeros when None)."""
        out, (h_T,), cache = self._forward(x, (h0,))
        return out, h_T, cache

    def backward_sequence(
        self, d_out: np.ndarray, d_hT: np.ndarray | None, cache: RecurrentCache
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """``(∂C/∂x, ∂C/∂h0, grads)`` from ``∂C/∂out`` and ``∂C/∂h_T`` (None: zero)."""
        dx, (dh0,), grads = self._backward(d_out, (d_hT,), cache)
        return dx, dh0, grads


@register_layer
class RNN(_HiddenOnly):
    """``torch.nn.RNN(batch_first=True)``: ``h_t = φ(x_t W_ihᵀ + b_ih + h W_hhᵀ + b_hh)``.

    Equations ``RNN.step`` and ``BPTT.sequence``. ``nonlinearity`` is ``"tanh"`` or ``"relu"``.
    """

    name = "rnn"
    equation = "RNN.step"
    product_equations = ("PROD.rnn.vjp", "PROD.rnn.jvp", "PROD.rnn.residual")
    hyperparameters = (*RecurrentLayer.hyperparameters, "nonlinearity")

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, *args,
                 nonlinearity: str = "tanh", **kwargs) -> None:  # fmt: skip
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self.mode = f"rnn_{nonlinearity}"
        super().__init__(input_size, hidden_size, num_layers, *args, **kwargs)

    def __repr__(self) -> str:
        text = super().__repr__()
        return text if self.nonlinearity == "tanh" else f"{text[:-1]}, nonlinearity='relu')"


@register_layer
class GRU(_HiddenOnly):
    """``torch.nn.GRU(batch_first=True)``, gates ``r, z, n``, ``b_hn`` inside the reset."""

    name = "gru"
    mode = "gru"
    equation = "GRU.step"
    product_equations = ("PROD.gru.vjp", "PROD.gru.jvp", "PROD.gru.residual")


@register_layer
class LSTM(RecurrentLayer):
    """``torch.nn.LSTM(batch_first=True)``, gates ``i, f, g, o``. Equation ``LSTM.step``.

    ``implementation="fast"`` (default, the training path) hoists the input projections of
    all steps and the parameter gradients out of the time loop
    (:mod:`~manual_bp.layers.recurrent_fast`); ``"readable"`` unrolls
    :func:`~manual_bp.layers.recurrent_cells.lstm_step` step by step as the derivation reads.
    Both compute the same function and gradients (``tests/test_recurrent.py``).
    """

    name = "lstm"
    mode = "lstm"
    equation = "LSTM.step"
    product_equations = ("PROD.lstm.vjp", "PROD.lstm.jvp", "PROD.lstm.residual")
    hyperparameters = (*RecurrentLayer.hyperparameters, "implementation")

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, *args,
                 implementation: str = "fast", **kwargs) -> None:  # fmt: skip
        if implementation not in ("fast", "readable"):
            raise ValueError(f"implementation must be 'fast' or 'readable', got {implementation!r}")
        self.implementation = implementation
        super().__init__(input_size, hidden_size, num_layers, *args, **kwargs)

    def fast_step(self) -> Any:
        """:class:`~manual_bp.layers.recurrent_fast.LSTMStep` for one layer and direction in
        the fast implementation; the readable forward/backward (``GenericStep``) otherwise."""
        if self.fast and self.num_layers == 1 and not self.bidirectional:
            return LSTMStep(self)
        return GenericStep(self)

    def forward_sequence(
        self, x: np.ndarray, h0: np.ndarray | None = None, c0: np.ndarray | None = None
    ) -> tuple[np.ndarray, States, RecurrentCache]:
        """``(out (N, T, H·D), (h_T, c_T) each (L·D, N, H), cache)``."""
        out, final, cache = self._forward(x, (h0, c0))
        return out, final, cache

    def backward_sequence(
        self,
        d_out: np.ndarray,
        d_hT: np.ndarray | None,
        d_cT: np.ndarray | None,
        cache: RecurrentCache,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """``(∂C/∂x, ∂C/∂h0, ∂C/∂c0, grads)``; None upstream gradients are zeros."""
        dx, (dh0, dc0), grads = self._backward(d_out, (d_hT, d_cT), cache)
        return dx, dh0, dc0, grads


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
