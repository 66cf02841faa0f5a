"""The machinery shared by :class:`~manual_bp.layers.recurrent.RNN`, ``LSTM`` and ``GRU``:
torch's constructor arguments, its input forms (time-major by default, batch-major, unbatched;
``hx``), dropout between stacked layers, and the batch-major core that unrolls the cells
(:mod:`manual_bp.layers.recurrent_unroll`). See :mod:`manual_bp.layers.recurrent`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp.layers._entry import check_like
from manual_bp.layers.base import layer_dtype
from manual_bp.layers.recurrent_cells import CELLS, Cell
from manual_bp.layers.recurrent_fast import lstm_backward_fast, lstm_forward_fast
from manual_bp.layers.recurrent_products import RecurrentProducts
from manual_bp.layers.recurrent_steps import GRUStep, RNNStep
from manual_bp.layers.recurrent_unroll import (
    RecurrentCache,
    backprop_direction,
    from_core,
    run_direction,
    sequence_to_core,
    states_from_core,
    to_core,
)
from manual_bp.layers.steps import GenericStep

__all__ = ["RecurrentLayer"]

States = tuple[np.ndarray, ...]
_KINDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")


class RecurrentLayer(RecurrentProducts):
    """Shared machinery of RNN, LSTM and GRU (see the module docstring); the products on a
    V axis come from :class:`~manual_bp.layers.recurrent_products.RecurrentProducts`."""

    mode = ""
    decay = ()  # set per instance: every weight_* parameter
    hyperparameters = (
        "input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
        "bidirectional",
    )  # fmt: skip

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: Any = None,
        dtype: Any = None,
        *,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        self.input_size = _positive_int(input_size, "input_size")
        self.hidden_size = _positive_int(hidden_size, "hidden_size")
        self.num_layers = _positive_int(num_layers, "num_layers")
        for flag, value in (("bias", bias), ("batch_first", batch_first),
                            ("bidirectional", bidirectional)):  # fmt: skip
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{flag} must be True or False, got {value!r}")
        self.bias, self.bidirectional = bool(bias), bool(bidirectional)
        self.batch_first = bool(batch_first)
        self.has_bias = self.bias  # torch's nn.RNNBase keeps ``bias`` as a flag
        if (
            isinstance(dropout, bool)
            or not isinstance(dropout, (int, float, np.floating))
            or not (0.0 <= dropout <= 1.0)
        ):
            raise ValueError(f"dropout must be a number in [0, 1], got {dropout!r}")
        self.dropout = float(dropout)
        if (
            isinstance(proj_size, bool)
            or not isinstance(proj_size, (int, np.integer))
            or not (0 <= proj_size < self.hidden_size)
        ):
            raise ValueError(
                f"proj_size must be an integer in [0, hidden_size={self.hidden_size}), "
                f"got {proj_size!r}"
            )
        self.proj_size = int(proj_size)
        self.dtype = layer_dtype(dtype, type(self).__name__, device)
        self.cell: Cell = CELLS[self.mode]
        self.initial_state: States | None = None
        self._generator: np.random.Generator | None = None
        H, h_out, D = self.hidden_size, self.proj_size or self.hidden_size, self.directions
        gates_h = self.cell.gates * H
        for layer in range(self.num_layers):
            width = self.input_size if layer == 0 else h_out * D
            for suffix in self._suffixes():
                shapes = {"weight_ih": (gates_h, width), "weight_hh": (gates_h, h_out)}
                if self.bias:
                    shapes.update(bias_ih=(gates_h,), bias_hh=(gates_h,))
                if self.proj_size:
                    shapes["weight_hr"] = (self.proj_size, H)
                for kind, shape in shapes.items():  # torch's state-dict order
                    self.params[f"{kind}_l{layer}{suffix}"] = np.zeros(shape, self.dtype)
        self.decay = tuple(name for name in self.params if name.startswith("weight"))
        self.reset_parameters(np.random.default_rng(seed))

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _suffixes(self) -> tuple[str, ...]:
        return ("", "_reverse") if self.bidirectional else ("",)

    @property
    def fast(self) -> bool:
        """Whether directions run in the fast form (``recurrent_fast``; LSTM only, without a
        projection)."""
        return getattr(self, "implementation", "readable") == "fast" and not self.proj_size

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
        return {kind: self.params.get(f"{kind}_l{layer}{suffix}") for kind in _KINDS}

    def reset_parameters(self, rng: np.random.Generator) -> None:
        """torch's default: every parameter ``U(−1/√H, 1/√H)``, in state-dict order; with
        ``dropout > 0`` a fresh mask generator seeded from ``rng`` (drawn after them)."""
        bound = 1.0 / np.sqrt(self.hidden_size)
        for array in self.params.values():
            array[...] = rng.uniform(-bound, bound, size=array.shape)
        if self.dropout > 0:
            self._generator = np.random.default_rng(int(rng.integers(0, 2**63 - 1)))

    def get_extra_state(self) -> dict[str, Any]:
        """The dropout mask generator's state (none without dropout)."""
        return {} if self._generator is None else {"generator": self._generator.bit_generator.state}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if not state and self._generator is None:
            return
        if set(state) != {"generator"} or self._generator is None:
            raise ValueError(f"{self!r}: extra state must be {{'generator'}} with dropout > 0, "
                             f"got {sorted(state)}")  # fmt: skip
        saved = state["generator"]
        kind = getattr(np.random, str(saved.get("bit_generator")), None)
        if not isinstance(kind, type):
            raise ValueError(f"{self!r}: unknown bit generator {saved.get('bit_generator')!r}")
        bit_generator = kind()
        bit_generator.state = saved
        self._generator = np.random.Generator(bit_generator)

    @property
    def output_size(self) -> int:
        """Features of the output: ``H_out · D``."""
        return (self.proj_size or self.hidden_size) * self.directions

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 2 or input_shape[-1] != self.input_size:
            raise ValueError(
                f"{self!r} takes per-sample sequences (T, {self.input_size}), "
                f"got per-sample shape {tuple(input_shape)}"
            )
        return (input_shape[0], self.output_size)

    # ------------------------------------------------------------------ functional core
    def _forward(self, x: np.ndarray, initial: States) -> tuple[np.ndarray, States, Any]:
        """The core: ``x (N, T, I)`` from states ``(L·D, N, ·)``: ``(out, finals, cache)``."""
        finals: list[list[np.ndarray]] = [[] for _ in initial]
        steps, masks, h = [], [], x
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
            mask = None
            if self.training and self.dropout > 0 and layer < self.num_layers - 1:
                h, mask = self._drop(h)
            masks.append(mask)
        final_states = tuple(np.stack(slot) for slot in finals)
        return h, final_states, RecurrentCache(x, steps, final_states, initial, x, "batch", masks)

    def _drop(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Dropout between layers (``RNN.dropout``): ``h ⊙ m/(1 − p)``, ``m`` kept with
        probability ``1 − p`` from the layer's own generator (as ``Dropout`` draws)."""
        draw = np.float32 if h.dtype == np.float32 else np.float64
        keep = self._generator.random(h.shape, dtype=draw) >= self.dropout
        mask = keep * h.dtype.type(0.0 if self.dropout == 1.0 else 1.0 / (1.0 - self.dropout))
        return h * mask, mask

    def _backward(
        self, d_out: np.ndarray, d_finals: States, cache: RecurrentCache
    ) -> tuple[np.ndarray, States, dict[str, np.ndarray]]:
        """The core's BPTT: ``d_out (N, T, H_out·D)``, ``d_finals`` as the core's states."""
        d_initial = [np.zeros_like(s) for s in d_finals]
        grads: dict[str, np.ndarray] = {}
        h_out = self.proj_size or self.hidden_size
        for layer in reversed(range(self.num_layers)):
            dx = None
            for d, suffix in enumerate(self._suffixes()):
                k = layer * self.directions + d
                dx_d, d_state, step_grads = self._run_backward(
                    d_out[..., d * h_out : (d + 1) * h_out],
                    tuple(s[k] for s in d_finals),
                    cache.steps[k],
                    bool(d),
                )
                dx = dx_d if dx is None else dx + dx_d
                for slot, value in zip(d_initial, d_state, strict=True):
                    slot[k] = value
                for kind, grad in step_grads.items():
                    grads[f"{kind}_l{layer}{suffix}"] = grad
            if layer and cache.masks and cache.masks[layer - 1] is not None:
                dx = dx * cache.masks[layer - 1]  # through the dropout below this layer
            d_out = dx
        grads = {name: grads[name] for name in self.params}  # state-dict order
        return d_out, tuple(d_initial), grads

    # ------------------------------------------------------------------ torch's forms
    def forward(self, input: np.ndarray, hx: Any = None) -> tuple[np.ndarray, RecurrentCache]:
        """torch's ``forward(input, hx)`` (see the module docstring): ``(output, cache)``,
        torch's ``h_n`` (``(h_n, c_n)``) on ``cache.final``; ``hx`` None: ``initial_state``
        (zeros when that is None)."""
        x, states, layout = to_core(self, input, self.initial_state if hx is None else hx)
        out, final, cache = self._forward(x, states)
        cache.input, cache.layout = input, layout
        cache.final = states_from_core(final, layout)
        return from_core(out, layout), cache

    def __call__(self, input: np.ndarray, hx: Any = None) -> tuple[np.ndarray, Any]:
        """torch's call: ``output, h_n`` (RNN, GRU) or ``output, (h_n, c_n)`` (LSTM)."""
        out, cache = self.forward(input, hx)
        return out, cache.final if self.cell.n_states == 2 else cache.final[0]

    def _backward_torch(
        self, d_out: Any, d_finals: tuple, cache: RecurrentCache
    ) -> tuple[np.ndarray, States, dict[str, np.ndarray]]:
        """``(∂C/∂input, ∂C/∂hx (a tuple), grads)`` in the layouts of the forward pass."""
        expected = (*cache.input.shape[:-1], self.output_size)
        spec = (expected, cache.input.dtype)
        check_like(self, d_out, "d_out", spec, stacked=False, what="output")
        core_finals = []
        for label, d, final in zip(("d_hT", "d_cT"), d_finals, cache.final, strict=False):
            if d is None:
                d = np.zeros_like(final)
            else:  # torch's grad_output rules: the final state's shape and the layer's dtype
                check_like(self, d, label, (final.shape, final.dtype), stacked=False, what="state")
            core_finals.append(d[:, None] if cache.layout == "unbatched" else d)
        dx, d_initial, grads = self._backward(
            sequence_to_core(d_out, cache.layout), tuple(core_finals), cache
        )
        return from_core(dx, cache.layout), states_from_core(d_initial, cache.layout), grads

    def backward(
        self, d_out: np.ndarray, cache: RecurrentCache
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(∂C/∂input, grads)``; the final states receive no gradient (not the output)."""
        dx, _, grads = self._backward_torch(d_out, (None,) * self.cell.n_states, cache)
        return dx, grads

    def fast_step(self) -> Any:
        """The fused step of one batch-major layer and direction (:class:`~manual_bp.layers.
        recurrent_steps.RNNStep`, ``GRUStep``; the LSTM's overrides this); the readable
        forward/backward (``GenericStep``) for any other configuration."""
        if self._fusable():
            return (GRUStep if self.mode == "gru" else RNNStep)(self)
        return GenericStep(self)

    def _fusable(self) -> bool:
        """The fused steps' case: batch-major, one layer, one direction, no projection."""
        return (
            self.batch_first
            and self.num_layers == 1
            and not self.bidirectional
            and not self.proj_size
        )

    @classmethod
    def from_shape(cls, input_shape, *args, n_outputs=None, **kwargs) -> RecurrentLayer:
        """``lstm(32)`` on sequences ``(T, D)`` -> ``LSTM(D, 32, batch_first=True)``: the spec
        language builds inside the library's batch-major ``Sequential``."""
        if len(input_shape) != 2:
            raise ValueError(f"{cls.name} needs per-sample sequences (T, D), got {input_shape}")
        kwargs.setdefault("batch_first", True)
        return cls(input_shape[-1], *args, **kwargs)

    def __repr__(self) -> str:
        defaults = {"num_layers": 1, "bias": True, "batch_first": False, "dropout": 0.0,
                    "bidirectional": False, "proj_size": 0, "nonlinearity": "tanh"}  # fmt: skip
        extra = "".join(
            f", {name}={getattr(self, name)!r}"
            for name, default in defaults.items()
            if name in self.hyperparameters and getattr(self, name) != default
        )
        return f"{type(self).__name__}({self.input_size}, {self.hidden_size}{extra})"


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
