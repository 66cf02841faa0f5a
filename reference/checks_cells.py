"""Checks of the cell modules RNNCell, LSTMCell, GRUCell (``docs/sequences.md#CELL.state``).

Oracles: ``torch.nn.RNNCell/LSTMCell/GRUCell`` run through ``torch.func.functional_call``
with OUR parameters in float64, upstream gradients random on ``h'`` AND ``c'``, the
gradients of ``input``, ``hx`` and every parameter compared; central finite differences;
``torch.func`` for the V-axis products (``PROD.cell.*``, with a plain-op twin of the cells:
``reference.checks_sequences``' own); the cells in the middle of random feature stacks
(blocks ``rnn_cell``, ``lstm_cell``, ``gru_cell``: a cell from the zero state is a layer).
Every option is drawn: the nonlinearity, ``bias``, batched ``(N, I)`` with ``N = 0`` or
unbatched ``(I,)``, ``hx`` given or None.
"""

from __future__ import annotations

import numpy as np
import torch

from manual_bp.layers.recurrent_cell_modules import (
    GRUCell,
    LSTMCell,
    RecurrentCellModule,
    RNNCell,
)
from manual_bp.layers.recurrent_cell_products import CELL_PRODUCTS
from reference.checks import register_check
from reference.compare import Comparison
from reference.products import product_comparisons, register_plain_twin
from reference.sequence_tools import finite_difference
from reference.stack import random_stack, register_block, register_torch, stack_comparisons

__all__ = ["cell_case", "cell_comparisons", "make_cell", "torch_cell"]

KINDS = ("rnn_tanh", "rnn_relu", "lstm", "gru")
_TORCH = {RNNCell: torch.nn.RNNCell, LSTMCell: torch.nn.LSTMCell, GRUCell: torch.nn.GRUCell}


def make_cell(kind: str, input_size: int, hidden: int, **kwargs) -> RecurrentCellModule:
    """``kind`` in :data:`KINDS` -> our cell module."""
    if kind.startswith("rnn"):
        return RNNCell(input_size, hidden, nonlinearity=kind[4:], **kwargs)
    return {"lstm": LSTMCell, "gru": GRUCell}[kind](input_size, hidden, **kwargs)


def torch_cell(layer: RecurrentCellModule, params: dict, x: torch.Tensor, hx=None):
    """torch's module of the same configuration, called with OUR parameters."""
    options = {"nonlinearity": layer.nonlinearity} if isinstance(layer, RNNCell) else {}
    module = _TORCH[type(layer)](
        layer.input_size, layer.hidden_size, layer.bias, dtype=torch.float64, **options
    )
    return torch.func.functional_call(module, params, (x,) if hx is None else (x, hx))


def _initial(layer: RecurrentCellModule):
    if layer.initial_state is None:
        return None
    tensors = tuple(torch.tensor(s) for s in layer.initial_state)
    return tensors if layer.cell.n_states == 2 else tensors[0]


@register_torch(RecurrentCellModule)
def _cell(layer, params, buffers, x, cache):
    out = torch_cell(layer, params, x, _initial(layer))
    return out[0] if isinstance(out, tuple) else out


@register_plain_twin(RecurrentCellModule)
def _cell_twin(layer, params, buffers, x, cache):
    """The products' oracle: the cell in plain torch ops (forward-over-reverse friendly)."""
    # imported here: checks_sequences imports reference.checks, which imports this module
    from reference.checks_sequences import _plain_cell

    hx = layer.initial_state
    if hx is None:
        zeros = x.new_zeros((*x.shape[:-1], layer.hidden_size))
        state = (zeros,) * layer.cell.n_states
    else:
        state = tuple(torch.tensor(s) for s in hx)
    return _plain_cell(layer.mode, x, state, params)[0]


# ---------------------------------------------------------------------------- one case
def cell_case(
    kind: str,
    batch: int | None,
    input_size: int,
    hidden: int,
    bias: bool,
    with_hx: bool,
    seed: int,
) -> tuple[RecurrentCellModule, np.ndarray, tuple | None, tuple]:
    """A cell, its input (``batch`` None: unbatched), ``hx`` (a tuple or None) and random
    upstream gradients of torch's value ``(dh', [dc'])``."""
    rng = np.random.default_rng(seed)
    layer = make_cell(kind, input_size, hidden, bias=bias, seed=rng)
    lead = () if batch is None else (batch,)
    x = rng.standard_normal((*lead, input_size))
    count = layer.cell.n_states
    hx = tuple(rng.standard_normal((*lead, hidden)) for _ in range(count)) if with_hx else None
    d_out = tuple(rng.standard_normal((*lead, hidden)) for _ in range(count))
    return layer, x, hx, d_out


def _torch_hx(layer, hx):
    return None if hx is None else (tuple(hx) if layer.cell.n_states == 2 else hx[0])


def cell_comparisons(layer: RecurrentCellModule, x, hx, d_out) -> list[Comparison]:
    """``forward``/``backward_cell`` against torch: ``h'`` (``c'``), ``∂x``, ``∂hx``, ``∂θ``.

    Magnitude scales: each quantity is a sum of products (``x W_ihᵀ + …``, ``δa_ihᵀ x``
    over the batch, ``δa W``) whose rounding is relative to the sum of the terms' absolute
    values, not to a result that may cancel; the terms are rebuilt from the step's own
    pre-activation cotangents on absolute values.
    """
    count = layer.cell.n_states
    out, cache = layer.forward(x, _torch_hx(layer, hx))
    dx, d_hx, grads = layer.backward_cell(d_out if count == 2 else d_out[0], cache)
    d_hx = d_hx if isinstance(d_hx, tuple) else (d_hx,)
    params = {k: torch.tensor(v, requires_grad=True) for k, v in layer.params.items()}
    xt = torch.tensor(x, requires_grad=True)
    hxt = None if hx is None else tuple(torch.tensor(s, requires_grad=True) for s in hx)
    value = torch_cell(layer, params, xt, _torch_hx(layer, hxt))
    value = value if isinstance(value, tuple) else (value,)
    loss = sum((v * torch.tensor(d)).sum() for v, d in zip(value, d_out, strict=True))
    loss.backward()
    step, state = layer.equation, "CELL.state"
    scales = _scales(layer, cache, d_out)
    comparisons = [
        Comparison(step, "h'", out, value[0].detach().numpy(), scale=scales["out"]),
        Comparison(state, "∂C/∂input", dx, xt.grad.numpy(), scale=scales["x"]),
    ]
    if count == 2:
        comparisons.append(
            Comparison(step, "c'", cache.final[1], value[1].detach().numpy(), scale=scales["out"])
        )
    if hxt is not None:
        for label, ours, theirs in zip(("∂C/∂h", "∂C/∂c"), d_hx, hxt, strict=False):
            comparisons.append(
                Comparison(state, label, ours, theirs.grad.numpy(), scale=scales["hx"])
            )
    for name, tensor in params.items():
        comparisons.append(
            Comparison(step, f"∂C/∂{name}", grads[name], tensor.grad.numpy(), scale=scales[name])
        )
    return comparisons


def _scales(layer: RecurrentCellModule, cache, d_out) -> dict[str, np.ndarray]:
    """Sums of the terms' magnitudes of every compared quantity (see :func:`cell_comparisons`)."""
    step, p = cache.step, layer.params  # the layer's own, not what the step was given
    dS = tuple(np.abs(d if not cache.unbatched else d[None]) for d in d_out)
    d_ih, d_hh, _ = CELL_PRODUCTS[layer.mode].vjp(dS, step.values, step.prev)
    d_ih, d_hh = np.abs(d_ih), np.abs(d_hh)
    x, h = np.abs(step.x), np.abs(step.prev[0])
    terms = x @ np.abs(p["weight_ih"]).T + h @ np.abs(p["weight_hh"]).T
    if layer.bias:
        terms = terms + np.abs(p["bias_ih"]) + np.abs(p["bias_hh"])
    width = layer.hidden_size
    pre = terms.reshape(*terms.shape[:-1], layer.cell.gates, width).max(axis=-2)  # largest gate
    scales = {
        "out": np.maximum(pre, 1.0),
        "x": d_ih @ np.abs(p["weight_ih"]),
        "hx": d_hh @ np.abs(p["weight_hh"]) + sum(dS),
        "weight_ih": d_ih.T @ x,
        "weight_hh": d_hh.T @ h,
        "bias_ih": d_ih.sum(axis=0),
        "bias_hh": d_hh.sum(axis=0),
    }
    if cache.unbatched:
        for key in ("out", "x", "hx"):
            scales[key] = scales[key][0]
    return scales


def _draw(rng: np.random.Generator, kind: str | None = None) -> dict:
    batch = int(rng.integers(0, 5))
    return dict(
        kind=kind or KINDS[int(rng.integers(len(KINDS)))],
        batch=None if rng.integers(4) == 0 else batch,  # unbatched one time in four
        input_size=int(rng.integers(1, 5)),
        hidden=int(rng.integers(1, 5)),
        bias=bool(rng.integers(2)),
        with_hx=bool(rng.integers(4)),  # mostly given; sometimes torch's zeros
        seed=int(rng.integers(2**31)),
    )


@register_check("cells-torch")
def cells_torch_check(rng: np.random.Generator) -> list[Comparison]:
    """RNN.step, LSTM.step, GRU.step, CELL.state: a random cell module vs torch's."""
    return cell_comparisons(*cell_case(**_draw(rng)))


@register_check("cells-finite-differences")
def cells_fd_check(rng: np.random.Generator) -> list[Comparison]:
    """CELL.state: ∂C/∂input, ∂C/∂hx and ∂C/∂θ of ``C = Σ U ⊙ h' (+ Σ W ⊙ c')`` by central
    differences (smooth cells: relu's kink is left to the torch checks)."""
    draw = _draw(rng, kind=("rnn_tanh", "lstm", "gru")[int(rng.integers(3))])
    draw["with_hx"], draw["batch"] = True, draw["batch"] or 1
    layer, x, hx, d_out = cell_case(**draw)
    count = layer.cell.n_states

    def cost() -> float:
        _, cache = layer.forward(x, _torch_hx(layer, hx))
        return float(sum((s * d).sum() for s, d in zip(cache.final, d_out, strict=True)))

    _, cache = layer.forward(x, _torch_hx(layer, hx))
    dx, d_hx, grads = layer.backward_cell(d_out if count == 2 else d_out[0], cache)
    d_hx = d_hx if isinstance(d_hx, tuple) else (d_hx,)
    pairs = [("∂C/∂input", dx, x)]
    pairs += [(f"∂C/∂{label}", d, s) for label, d, s in zip("hc", d_hx, hx, strict=False)]
    pairs += [(f"∂C/∂{name}", grads[name], array) for name, array in layer.params.items()]
    comparisons = []
    for label, ours, array in pairs:
        expected = finite_difference(cost, array)
        atol = 1e-6 * (1.0 + float(np.abs(expected).max(initial=0.0)))
        comparisons.append(
            Comparison("CELL.state", label, ours, expected, oracle="finite-differences", atol=atol)
        )
    return comparisons


@register_check("cells-products")
def cells_products_check(rng: np.random.Generator) -> list[Comparison]:
    """PROD.cell.vjp, PROD.cell.jvp, PROD.cell.residual: a random cell module's products vs
    ``torch.func`` (hx: zeros or a constant ``initial_state``), and their identities."""
    draw = _draw(rng)
    draw["batch"] = max(1, draw["batch"] or 1)
    layer, x, hx, _ = cell_case(**draw)
    layer.initial_state = hx
    return product_comparisons(layer, x, rng)


def _cell_block(kind: str):
    def block(rng: np.random.Generator, shape: tuple[int, ...]):
        layer = make_cell(kind, shape[-1], int(rng.integers(1, 5)), bias=bool(rng.integers(2)))
        return [layer], layer.output_shape(shape)

    return block


for _kind, _name in (("rnn_tanh", "rnn_cell"), ("rnn_relu", "rnn_cell_relu"),
                     ("lstm", "lstm_cell"), ("gru", "gru_cell")):  # fmt: skip
    register_block("features", _name)(_cell_block(_kind))

CELL_BLOCKS = ("rnn_cell", "rnn_cell_relu", "lstm_cell", "gru_cell")


@register_check("cells-stack")
def cells_stack_check(rng: np.random.Generator) -> list[Comparison]:
    """RNN.step, LSTM.step, GRU.step: cell modules in the middle of random feature stacks."""
    model, x, y = random_stack(rng, "features", blocks=CELL_BLOCKS)
    return stack_comparisons(model, x, y)
