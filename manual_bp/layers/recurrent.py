"""Recurrent layers ``RNN`` (tanh/relu), ``LSTM`` and ``GRU`` — ``torch.nn.RNN/LSTM/GRU``.

torch's constructors (same arguments, order and defaults: ``num_layers=1``, ``bias=True``,
``batch_first=False``, ``dropout=0.0``, ``bidirectional=False``, the LSTM's ``proj_size=0``,
the RNN's ``nonlinearity="tanh"``, ``device``/``dtype``) and torch's forward
``forward(input, hx=None)``: ``input`` time-major ``(T, N, I)`` by default, batch-major
``(N, T, I)`` with ``batch_first=True``, or unbatched ``(T, I)``; ``hx`` is ``h0`` (RNN, GRU)
or ``(h0, c0)`` (LSTM), shaped ``(L·D, N, H_out)`` (``(L·D, H_out)`` unbatched; ``c0`` has
``H`` units), zeros when None. ``H_out`` is ``proj_size`` when set, else ``hidden_size``.

``forward`` returns ``(output, cache)`` (the Layer protocol): ``output`` is torch's first
output; torch's second, ``h_n`` or ``(h_n, c_n)``, is ``cache.final`` (always a tuple:
``(h_n,)`` or ``(h_n, c_n)``), and ``layer(input, hx)`` returns both as torch's call does:
``output, h_n`` or ``output, (h_n, c_n)``. ``backward(d_output, cache)`` gives the final
states no gradient (they are not the output); :meth:`backward_sequence` takes theirs and
returns the initial states' gradients.

Parameters are named and shaped exactly as torch's (``weight_ih_l0``, ``weight_hh_l0``,
``bias_ih_l0``, ``bias_hh_l0``, the LSTM's ``weight_hr_l0`` with ``proj_size``,
``…_reverse`` for the backward direction), so a state dict copies 1:1. Initialisation is
torch's: ``U(−1/√H, 1/√H)`` for every parameter. ``dropout`` acts on the output of every
layer but the last in training (``RNN.dropout``), its mask drawn from the layer's own
generator (seeded with the layer, saved with it); evaluation mode is the identity.

``initial_state`` (a tuple ``(h0,)`` or ``(h0, c0)``, or None) is the ``hx`` used when none
is passed: a stateful caller (truncated BPTT) sets it to the last chunk's ``cache.final``.

Backpropagation through time (``BPTT.sequence``) is the per-step VJP of the cell
(:mod:`manual_bp.layers.recurrent_cells`) run backwards in time with the carried
gradient ``∂C/∂h_t`` (and ``∂C/∂c_t``): ``δh_t = ∂C/∂out_t + (δh_{t+1} through the cell)``;
the core works batch-major (:mod:`manual_bp.layers.recurrent_unroll`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp.layers.base import register_layer
from manual_bp.layers.recurrent_base import RecurrentLayer
from manual_bp.layers.recurrent_fast import LSTMStep
from manual_bp.layers.recurrent_unroll import RecurrentCache, backprop_direction, run_direction
from manual_bp.layers.steps import GenericStep

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "RecurrentCache",
    "RecurrentLayer",
    "backprop_direction",  # BPTT.sequence (recurrent_unroll), re-exported
    "run_direction",
]

States = tuple[np.ndarray, ...]


class _HiddenOnly(RecurrentLayer):
    """RNN and GRU: the state is ``h`` alone."""

    def forward_sequence(
        self, x: np.ndarray, h0: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, RecurrentCache]:
        """``(output, h_n (L·D, N, H), cache)`` from ``h0`` (zeros when None)."""
        out, cache = self.forward(x, (h0,))
        return out, cache.final[0], cache

    def backward_sequence(
        self, d_out: np.ndarray, d_hT: np.ndarray | None, cache: RecurrentCache
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """``(∂C/∂x, ∂C/∂h0, grads)`` from ``∂C/∂out`` and ``∂C/∂h_n`` (None: zero)."""
        dx, (dh0,), grads = self._backward_torch(d_out, (d_hT,), cache)
        return dx, dh0, grads


@register_layer
class RNN(_HiddenOnly):
    """``torch.nn.RNN``: ``h_t = φ(x_t W_ihᵀ + b_ih + h W_hhᵀ + b_hh)``, φ = tanh or relu.

    Equations ``RNN.step`` and ``BPTT.sequence``. torch's argument order (``nonlinearity``
    fourth).
    """

    name = "rnn"
    equation = "RNN.step"
    product_equations = ("PROD.rnn.vjp", "PROD.rnn.jvp", "PROD.rnn.residual")
    hyperparameters = (*RecurrentLayer.hyperparameters, "nonlinearity")

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: Any = None,
        dtype: Any = None,
        *,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self.mode = f"rnn_{nonlinearity}"
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, 0, device, dtype, seed=seed)  # fmt: skip


@register_layer
class GRU(_HiddenOnly):
    """``torch.nn.GRU``, gates ``r, z, n``, ``b_hn`` inside the reset."""

    name = "gru"
    mode = "gru"
    equation = "GRU.step"
    product_equations = ("PROD.gru.vjp", "PROD.gru.jvp", "PROD.gru.residual")

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: Any = None,
        dtype: Any = None,
        *,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, 0, device, dtype, seed=seed)  # fmt: skip


@register_layer
class LSTM(RecurrentLayer):
    """``torch.nn.LSTM``, gates ``i, f, g, o``; ``proj_size`` (``LSTM.proj``). Equation
    ``LSTM.step``.

    ``implementation="fast"`` (default, the training path) hoists the input projections of
    all steps and the parameter gradients out of the time loop
    (:mod:`~manual_bp.layers.recurrent_fast`); ``"readable"`` unrolls
    :func:`~manual_bp.layers.recurrent_cells.lstm_step` step by step as the derivation reads
    (and so does a projected LSTM). Both compute the same function and gradients
    (``tests/test_recurrent.py``).
    """

    name = "lstm"
    mode = "lstm"
    equation = "LSTM.step"
    product_equations = ("PROD.lstm.vjp", "PROD.lstm.jvp", "PROD.lstm.residual")
    hyperparameters = (*RecurrentLayer.hyperparameters, "proj_size", "implementation")

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
        implementation: str = "fast",
        seed: int | np.random.Generator | None = None,
    ) -> None:
        if implementation not in ("fast", "readable"):
            raise ValueError(f"implementation must be 'fast' or 'readable', got {implementation!r}")
        self.implementation = implementation
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device, dtype, seed=seed)  # fmt: skip

    def fast_step(self) -> Any:
        """:class:`~manual_bp.layers.recurrent_fast.LSTMStep` for one batch-major layer and
        direction in the fast implementation; the readable forward/backward otherwise."""
        return LSTMStep(self) if self.fast and self._fusable() else GenericStep(self)

    def forward_sequence(
        self, x: np.ndarray, h0: np.ndarray | None = None, c0: np.ndarray | None = None
    ) -> tuple[np.ndarray, States, RecurrentCache]:
        """``(output, (h_n, c_n), cache)``: torch's ``lstm(x, (h0, c0))``."""
        out, cache = self.forward(x, (h0, c0))
        return out, cache.final, cache

    def backward_sequence(
        self,
        d_out: np.ndarray,
        d_hT: np.ndarray | None,
        d_cT: np.ndarray | None,
        cache: RecurrentCache,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """``(∂C/∂x, ∂C/∂h0, ∂C/∂c0, grads)``; None upstream gradients are zeros."""
        dx, (dh0, dc0), grads = self._backward_torch(d_out, (d_hT, d_cT), cache)
        return dx, dh0, dc0, grads
