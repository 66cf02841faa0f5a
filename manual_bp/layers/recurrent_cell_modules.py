"""Cell modules ``RNNCell``, ``LSTMCell``, ``GRUCell`` — ``torch.nn.RNNCell/LSTMCell/GRUCell``.

One step of the recurrent layers' cells (:mod:`manual_bp.layers.recurrent_cells`, the same
code: equations ``RNN.step``, ``LSTM.step``, ``GRU.step``) as a module of its own, with
torch's constructors (``RNNCell(input_size, hidden_size, bias=True, nonlinearity='tanh',
device=None, dtype=None)``; ``LSTMCell``/``GRUCell`` without ``nonlinearity``), parameters
``weight_ih`` ``(gates·H, I)``, ``weight_hh`` ``(gates·H, H)``, ``bias_ih``, ``bias_hh``
``(gates·H,)`` in torch's gate order (LSTM ``i, f, g, o``; GRU ``r, z, n``), initialised
``U(−1/√H, 1/√H)`` as torch's, and torch's ``forward(input, hx=None)``: ``input`` batched
``(N, I)`` (``N = 0`` allowed) or unbatched ``(I,)``; ``hx`` is ``h`` (RNN, GRU) or
``(h, c)`` (LSTM), shaped ``(N, H)`` (``(H,)`` unbatched), zeros when None.

The state interface (``CELL.state``, ``docs/sequences.md``): ``forward`` returns
``(h', cache)`` (the Layer protocol: the output is ``h'``); the new state, ``(h',)`` or
``(h', c')``, is ``cache.final``, and ``cell(input, hx)`` returns torch's value: ``h'``, or
``(h', c')`` for the LSTM. ``backward(dh', cache)`` is the VJP of ``h'`` alone (``c'`` is
not the output, so it gets none); :meth:`RecurrentCellModule.backward_cell` takes the
gradient of torch's value (``dh'`` or ``(dh', dc')``, None for zero) and returns
``(∂C/∂input, ∂C/∂hx, grads)``, ``∂C/∂hx`` in the form of ``hx``. ``initial_state`` (a tuple
``(h,)`` or ``(h, c)`` in the input's layout, or None) is the ``hx`` used when none is
passed.

As a layer of a stack (``--layers "rnn_cell(16)"``, per-sample features ``(F,)``): a cell on
``(N, F)`` from the zero state (or ``initial_state``) is the map ``x ↦ h'`` — for the RNN
``φ(x W_ihᵀ + b_ih + b_hh)``, a dense layer with an activation, for the LSTM and GRU a gated
one. Its V-axis products (``PROD.cell.*``) treat ``hx`` as a constant
(:mod:`~manual_bp.layers.recurrent_cell_module_products`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from manual_bp.layers.base import Cache, layer_dtype, register_layer
from manual_bp.layers.recurrent_cell_module_products import CellModuleProducts
from manual_bp.layers.recurrent_cells import CELLS, Cell, StepCache

__all__ = ["CellCache", "GRUCell", "LSTMCell", "RNNCell", "RecurrentCellModule"]

States = tuple[np.ndarray, ...]
_KINDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


@dataclass
class CellCache(Cache):
    """``input``: as given; ``x``: batched ``(N, I)``; ``prev``: the previous state stacked
    ``(states, N, H)``; ``values``: the step's cached activations stacked ``(k, N, H)``
    (every cell's are ``(N, H)`` each); ``params``: the step's parameters; ``final``: the
    new state ``(h',)`` or ``(h', c')`` in the input's layout; ``unbatched``: whether the
    input was one sample ``(I,)``. Plain array fields, so that a perturbed copy of the cache
    (``dataclasses.replace``) is a perturbed step."""

    x: np.ndarray
    prev: np.ndarray
    values: np.ndarray
    params: dict[str, np.ndarray | None]
    final: States
    unbatched: bool = False

    @property
    def step(self) -> StepCache:
        """The cell's step cache (:mod:`~manual_bp.layers.recurrent_cells`), batched."""
        return StepCache(self.x, tuple(self.prev), tuple(self.values), self.params)


class RecurrentCellModule(CellModuleProducts):
    """The machinery of the three cell modules (see the module docstring)."""

    hyperparameters = ("input_size", "hidden_size", "bias")
    decay = ("weight_ih", "weight_hh")
    product_equations = ("PROD.cell.vjp", "PROD.cell.jvp", "PROD.cell.residual")

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
        *,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        self.input_size = _positive_int(input_size, "input_size")
        self.hidden_size = _positive_int(hidden_size, "hidden_size")
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"bias must be True or False, got {bias!r}")
        self.bias = self.has_bias = bool(bias)
        self.dtype = layer_dtype(dtype, type(self).__name__, device)
        self.cell: Cell = CELLS[self.mode]
        self.initial_state: States | None = None
        gates_h = self.cell.gates * self.hidden_size
        shapes = {"weight_ih": (gates_h, self.input_size), "weight_hh": (gates_h, self.hidden_size)}
        if self.bias:
            shapes.update(bias_ih=(gates_h,), bias_hh=(gates_h,))
        for name, shape in shapes.items():  # torch's state-dict order
            self.params[name] = np.zeros(shape, self.dtype)
        self.reset_parameters(np.random.default_rng(seed))

    def reset_parameters(self, rng: np.random.Generator) -> None:
        """torch's default: every parameter ``U(−1/√H, 1/√H)``, in state-dict order."""
        bound = 1.0 / np.sqrt(self.hidden_size)
        for array in self.params.values():
            array[...] = rng.uniform(-bound, bound, size=array.shape)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if tuple(input_shape) != (self.input_size,):
            raise ValueError(
                f"{self!r} takes per-sample features ({self.input_size},), "
                f"got per-sample shape {tuple(input_shape)}"
            )
        return (self.hidden_size,)

    @classmethod
    def from_shape(cls, input_shape, *args, n_outputs=None, **kwargs) -> RecurrentCellModule:
        """``lstm_cell(32)`` on features ``(D,)`` -> ``LSTMCell(D, 32)`` from the zero state."""
        if len(input_shape) != 1:
            raise ValueError(f"{cls.name} needs per-sample features (D,), got {input_shape}")
        return cls(input_shape[0], *args, **kwargs)

    # ------------------------------------------------------------------ torch's forms
    def _step_params(self) -> dict[str, np.ndarray | None]:
        return {kind: self.params.get(kind) for kind in _KINDS}

    def _states(self, hx: Any, n: int, unbatched: bool, dtype: Any) -> States:
        """torch's ``hx`` (``h`` or ``(h, c)``; a tuple for every cell) as batched states."""
        count = self.cell.n_states
        if hx is None:
            return tuple(np.zeros((n, self.hidden_size), dtype) for _ in range(count))
        if isinstance(hx, np.ndarray) and count == 1:
            hx = (hx,)
        if not isinstance(hx, (tuple, list)) or len(hx) != count:
            want = "(h, c)" if count == 2 else "h"
            raise ValueError(f"{self!r}: hx must be {want} (NumPy arrays) or None, "
                             f"got {_describe(hx)}")  # fmt: skip
        shape = (self.hidden_size,) if unbatched else (n, self.hidden_size)
        states = []
        for label, state in zip(("h", "c"), hx, strict=False):
            if not isinstance(state, np.ndarray) or state.shape != shape:
                raise ValueError(f"{self!r}: hx's {label} has shape {np.shape(state)}, "
                                 f"expected {shape}")  # fmt: skip
            state = state.astype(dtype, copy=False)
            states.append(state[None] if unbatched else state)
        return tuple(states)

    def forward(self, input: np.ndarray, hx: Any = None) -> tuple[np.ndarray, CellCache]:
        """torch's ``forward(input, hx)``: ``(h', cache)``, the new state on ``cache.final``
        (``CELL.state``); ``hx`` None: ``initial_state`` (zeros when that is None)."""
        if not isinstance(input, np.ndarray):
            raise TypeError(f"{self!r}: input must be a NumPy array, got {type(input).__name__}")
        if input.ndim not in (1, 2) or input.shape[-1] != self.input_size:
            size = self.input_size
            raise ValueError(f"{self!r}: input has shape {input.shape}; expected "
                             f"(N, {size}) or unbatched ({size},)")  # fmt: skip
        unbatched = input.ndim == 1
        x = input[None] if unbatched else input
        hx = self.initial_state if hx is None else hx
        prev = self._states(hx, x.shape[0], unbatched, x.dtype)
        state, step = self.cell.step(x, prev, self._step_params())
        final = tuple(s[0] for s in state) if unbatched else tuple(state)
        cache = CellCache(input, x, np.stack(prev), np.stack(step.values), step.params, final)
        cache.unbatched = unbatched
        return final[0], cache

    def __call__(self, input: np.ndarray, hx: Any = None) -> Any:
        """torch's call: ``h'`` (RNNCell, GRUCell) or ``(h', c')`` (LSTMCell)."""
        _, cache = self.forward(input, hx)
        return cache.final if self.cell.n_states == 2 else cache.final[0]

    def backward_cell(
        self, d_out: Any, cache: CellCache
    ) -> tuple[np.ndarray, Any, dict[str, np.ndarray]]:
        """The VJP of torch's call (``CELL.state``): ``d_out`` is ``∂C/∂h'`` (RNN, GRU) or
        ``(∂C/∂h', ∂C/∂c')`` (LSTM; None entries are zero); returns ``(∂C/∂input, ∂C/∂hx,
        grads)``, ``∂C/∂hx`` as ``hx``: ``h̄ = δa_hh W_hh + direct`` (the GRU's ``δh' ⊙ z``),
        the LSTM's ``c̄ = ĉ ⊙ f`` — the step's VJP (``RNN.step``, ``LSTM.step``, ``GRU.step``)."""
        count = self.cell.n_states
        d = (d_out,) if count == 1 or isinstance(d_out, np.ndarray) else d_out
        if not isinstance(d, (tuple, list)) or len(d) not in (1, count):
            raise ValueError(f"{self!r}: d_out must be ∂C/∂h' or (∂C/∂h', ∂C/∂c'), "
                             f"got {_describe(d_out)}")  # fmt: skip
        d = (*d, None) if len(d) < count else tuple(d)
        batched = []
        for label, grad, final in zip(("d_out", "∂C/∂c'"), d, cache.final, strict=False):
            if grad is None:
                grad = np.zeros_like(final)
            elif not isinstance(grad, np.ndarray) or grad.shape != final.shape:
                raise ValueError(f"{self!r}: {label} has shape {np.shape(grad)}, "
                                 f"expected {final.shape}")  # fmt: skip
            batched.append(grad[None] if cache.unbatched else grad)
        dx, d_prev, grads = self.cell.step_backward(tuple(batched), cache.step)
        if cache.unbatched:
            dx, d_prev = dx[0], tuple(s[0] for s in d_prev)
        grads = {name: grads[name] for name in self.params}  # state-dict order
        return dx, (tuple(d_prev) if count == 2 else d_prev[0]), grads

    def backward(self, dout: np.ndarray, cache: CellCache) -> tuple[np.ndarray, dict]:
        """``(∂C/∂input, grads)`` from ``∂C/∂h'``; ``c'`` receives no gradient (not the output)."""
        dx, _, grads = self.backward_cell(dout, cache)
        return dx, grads


def _describe(value: Any) -> str:
    """A value in a one-line message: arrays by shape, sequences by length."""
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return repr(value)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


@register_layer
class RNNCell(RecurrentCellModule):
    """``torch.nn.RNNCell``: ``h' = φ(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)``, φ = tanh or relu
    (``RNN.step``; ``nonlinearity`` fourth, after ``bias``, as torch's)."""

    name = "rnn_cell"
    aliases = ("rnncell",)
    equation = "RNN.step"
    hyperparameters = (*RecurrentCellModule.hyperparameters, "nonlinearity")

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        device: Any = None,
        dtype: Any = None,
        *,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self.mode = f"rnn_{nonlinearity}"
        super().__init__(input_size, hidden_size, bias, device, dtype, seed=seed)


@register_layer
class LSTMCell(RecurrentCellModule):
    """``torch.nn.LSTMCell``, gates ``i, f, g, o`` (``LSTM.step``); torch's call returns
    ``(h', c')``, the layer's output is ``h'``."""

    name = "lstm_cell"
    aliases = ("lstmcell",)
    mode = "lstm"
    equation = "LSTM.step"


@register_layer
class GRUCell(RecurrentCellModule):
    """``torch.nn.GRUCell``, gates ``r, z, n`` with ``b_hn`` inside the reset (``GRU.step``)."""

    name = "gru_cell"
    aliases = ("grucell",)
    mode = "gru"
    equation = "GRU.step"
