"""Checks of the sequence layers: RNN/LSTM/GRU, embedding, BPTT (``docs/sequences.md``).

Oracles: ``torch.nn.RNN/LSTM/GRU`` (``batch_first=True``) run through
``torch.func.functional_call`` with OUR parameters, float64; ``F.embedding``; central
finite differences; and an adjoint (dot-product) test of every cell step's VJP,
``⟨u, J v⟩ = ⟨Jᵀu, v⟩`` with ``J v`` from central differences. Upstream gradients on the
output sequence AND on the final states are random. Blocks ``rnn``, ``lstm``, ``gru``
put the layers in the middle of random stacks (``reference.stack.random_stack``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from manual_bp.layers import ActivationLayer, Dense
from manual_bp.layers.embedding import Embedding
from manual_bp.layers.recurrent import GRU, LSTM, RNN, RecurrentLayer
from manual_bp.layers.recurrent_cells import CELLS
from manual_bp.models.sequential import Sequential
from reference.checks import register_check
from reference.compare import Comparison
from reference.products import register_plain_twin
from reference.sequence_tools import finite_difference, with_stack_scales
from reference.stack import register_block, register_torch, stack_comparisons

__all__ = ["plain_recurrent", "recurrent_case", "recurrent_comparisons", "torch_recurrent"]

KINDS = ("rnn_tanh", "rnn_relu", "lstm", "gru")
_TORCH = {"rnn_tanh": torch.nn.RNN, "rnn_relu": torch.nn.RNN, "lstm": torch.nn.LSTM}
_TORCH["gru"] = torch.nn.GRU


def make_layer(
    kind: str,
    input_size: int,
    hidden: int,
    num_layers: int = 1,
    bias: bool = True,
    bidirectional: bool = False,
    **kwargs,
) -> RecurrentLayer:
    """``kind`` in :data:`KINDS` -> our layer, batch-major unless ``batch_first=False`` is
    given (these checks draw batch-major data and stacks)."""
    kwargs.setdefault("batch_first", True)
    kwargs.update(num_layers=num_layers, bias=bias, bidirectional=bidirectional)
    if kind.startswith("rnn"):
        return RNN(input_size, hidden, nonlinearity=kind[4:], **kwargs)
    return {"lstm": LSTM, "gru": GRU}[kind](input_size, hidden, **kwargs)


def torch_recurrent(layer: RecurrentLayer, params: dict, x: torch.Tensor, states=None):
    """torch's module of the same configuration, called with OUR parameters: ``(out, final)``."""
    options = {"nonlinearity": layer.nonlinearity} if isinstance(layer, RNN) else {}
    if layer.proj_size:
        options["proj_size"] = layer.proj_size
    module = _TORCH[layer.mode](
        layer.input_size,
        layer.hidden_size,
        layer.num_layers,
        bias=layer.bias,
        bidirectional=layer.bidirectional,
        batch_first=layer.batch_first,
        dtype=torch.float64,
        **options,
    )
    args = (x,) if states is None else (x, states)
    return torch.func.functional_call(module, params, args)


@register_torch(RecurrentLayer)
def _recurrent(layer, params, buffers, x, cache):
    return torch_recurrent(layer, params, x, _initial_tensors(layer))[0]


def _initial_tensors(layer: RecurrentLayer):
    """``layer.initial_state`` as constant tensors in torch's form (``h0`` or ``(h0, c0)``)."""
    if layer.initial_state is None:
        return None
    tensors = tuple(torch.tensor(s) for s in layer.initial_state)
    return tensors if layer.mode == "lstm" else tensors[0]


def _plain_cell(mode: str, x, state, p):
    """One step written with plain torch ops (forward and forward-over-reverse friendly)."""
    gi = F.linear(x, p["weight_ih"], p.get("bias_ih"))
    gh = F.linear(state[0], p["weight_hh"], p.get("bias_hh"))
    if mode == "rnn_tanh":
        return (torch.tanh(gi + gh),)
    if mode == "rnn_relu":
        return (torch.relu(gi + gh),)
    if mode == "lstm":
        a_i, a_f, a_g, a_o = (gi + gh).chunk(4, dim=-1)
        c = torch.sigmoid(a_f) * state[1] + torch.sigmoid(a_i) * torch.tanh(a_g)
        return torch.sigmoid(a_o) * torch.tanh(c), c
    i_r, i_z, i_n = gi.chunk(3, dim=-1)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return ((1 - z) * n + z * state[0],)


def plain_recurrent(layer: RecurrentLayer, params: dict, x: torch.Tensor, states=None):
    """torch's RNN/LSTM/GRU as plain-op cells looped over time: ``(out, final)`` in the
    module's form (the twin of :func:`torch_recurrent`, which calls ``_VF`` kernels); a
    time-major layer's ``x`` ``(T, N, I)`` and output are swapped around the batch-major loop."""
    if not layer.batch_first and x.dim() == 3:
        out, final = plain_recurrent(_BatchMajor(layer), params, x.transpose(0, 1), states)
        return out.transpose(0, 1), final
    L, D, H = layer.num_layers, layer.directions, layer.hidden_size
    n_states = layer.cell.n_states
    if states is None:
        zeros = x.new_zeros((L * D, x.shape[0], H))
        states = (zeros,) * n_states
    elif not isinstance(states, tuple):
        states = (states,)
    finals: list[list[torch.Tensor]] = [[] for _ in range(n_states)]
    h = x
    for layer_index in range(L):
        outs = []
        for d in range(D):
            k, suffix = layer_index * D + d, "_reverse" if d else ""
            p = {
                kind: params[f"{kind}_l{layer_index}{suffix}"]
                for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                if f"{kind}_l{layer_index}{suffix}" in params
            }
            state = tuple(s[k] for s in states)
            steps = range(h.shape[1] - 1, -1, -1) if d else range(h.shape[1])
            out: list[torch.Tensor | None] = [None] * h.shape[1]
            for t in steps:
                state = _plain_cell(layer.mode, h[:, t], state, p)
                out[t] = state[0]
            outs.append(torch.stack(out, dim=1))
            for slot, value in zip(finals, state, strict=True):
                slot.append(value)
        h = torch.cat(outs, dim=-1) if D > 1 else outs[0]
    final = tuple(torch.stack(slot) for slot in finals)
    return h, (final if layer.mode == "lstm" else final[0])


class _BatchMajor:
    """``layer`` read as batch-major (for :func:`plain_recurrent`)."""

    def __init__(self, layer: RecurrentLayer) -> None:
        self.layer, self.batch_first = layer, True

    def __getattr__(self, name: str):
        return getattr(self.layer, name)


@register_plain_twin(RecurrentLayer)
def _recurrent_twin(layer, params, buffers, x, cache):
    """The oracle of the products (``PROD.rnn/lstm/gru.*``): torch's ``_VF`` recurrent
    kernels are not trusted under forward mode / forward-over-reverse in ``torch.func``."""
    return plain_recurrent(layer, params, x, _initial_tensors(layer))[0]


@register_torch(Embedding)
def _embedding(layer, params, buffers, x, cache):
    indices = torch.tensor(cache.indices)
    # Indices carry no derivative: 0·x keeps x in the graph so that ∂C/∂x = 0 is compared.
    return F.embedding(indices, params["weight"], layer.padding_idx) + 0.0 * x.unsqueeze(-1)


def recurrent_case(
    kind: str,
    batch: int,
    length: int,
    input_size: int,
    hidden: int,
    layers: int,
    bias: bool,
    bidirectional: bool,
    seed: int,
    with_initial: bool = True,
) -> list[Comparison]:
    """Functional API vs torch: outputs, final states, ∂x, ∂h0 (∂c0), every ∂θ.

    ``C = Σ U ⊙ out + Σ V ⊙ h_T (+ Σ W ⊙ c_T)`` with random ``U, V, W``.
    """
    rng = np.random.default_rng(seed)
    layer = make_layer(kind, input_size, hidden, layers, bias, bidirectional, seed=rng)
    n_states = layer.cell.n_states
    state_shape = (layers * layer.directions, batch, hidden)
    x = rng.standard_normal((batch, length, input_size))
    initial = [rng.standard_normal(state_shape) if with_initial else None for _ in range(n_states)]
    d_out = rng.standard_normal((batch, length, hidden * layer.directions))
    d_final = [rng.standard_normal(state_shape) for _ in range(n_states)]
    return recurrent_comparisons(layer, x, initial, d_out, d_final)


def recurrent_comparisons(layer, x, initial, d_out, d_final) -> list[Comparison]:
    """Compare ``forward_sequence``/``backward_sequence`` of ``layer`` with torch's module."""
    out, final, cache = layer.forward_sequence(x, *initial)
    final = final if isinstance(final, tuple) else (final,)
    result = layer.backward_sequence(d_out, *d_final, cache)
    dx, d_initial, grads = result[0], result[1:-1], result[-1]
    params = {k: torch.tensor(v, requires_grad=True) for k, v in layer.params.items()}
    xt = torch.tensor(x, requires_grad=True)
    given = [torch.tensor(s, requires_grad=True) if s is not None else None for s in initial]
    states = None
    if given[0] is not None:
        states = tuple(given) if layer.mode == "lstm" else given[0]
    out_t, final_t = torch_recurrent(layer, params, xt, states)
    final_t = final_t if isinstance(final_t, tuple) else (final_t,)
    loss = (out_t * torch.tensor(d_out)).sum()
    for f, d in zip(final_t, d_final, strict=True):
        loss = loss + (f * torch.tensor(d)).sum()
    loss.backward()
    step, bptt = layer.equation, "BPTT.sequence"
    # A state is σ(W_ih x + b_ih + W_hh h + b_hh): its rounding is ε-relative to the sum of
    # the terms' magnitudes, not to the (possibly cancelled) result. Bound on every step:
    # max(1, |x|, |h|) · the largest row sum of |W| + the largest |b| pair (measured: an
    # output of 9.6e-4 off by 5.6e-17 where 64ε·max|out| allowed 2.7e-17).
    weights = [v for k, v in layer.params.items() if k.startswith("weight")]
    biases = [v for k, v in layer.params.items() if k.startswith("bias")]
    inputs = max(1.0, float(np.abs(x).max(initial=0.0)))
    terms = inputs * max(float(np.abs(w).sum(axis=1).max()) for w in weights)
    terms += 2.0 * max((float(np.abs(b).max()) for b in biases), default=0.0)

    def state_scale(value: np.ndarray) -> np.ndarray:
        return np.maximum(np.abs(value), terms)

    expected_out = out_t.detach().numpy()
    comparisons = [
        Comparison(step, "out", out, expected_out, scale=state_scale(expected_out)),
        Comparison(bptt, "∂C/∂x", dx, xt.grad.numpy()),
    ]
    for name, ours, theirs in zip(("h_T", "c_T"), final, final_t, strict=False):
        expected = theirs.detach().numpy()
        comparisons.append(Comparison(step, name, ours, expected, scale=state_scale(expected)))
    for name, ours, theirs in zip(("∂C/∂h0", "∂C/∂c0"), d_initial, given, strict=False):
        if theirs is not None:
            comparisons.append(Comparison(bptt, name, ours, theirs.grad.numpy()))
    for name, tensor in params.items():
        comparisons.append(Comparison(step, f"∂C/∂{name}", grads[name], tensor.grad.numpy()))
    return comparisons


def _draw(rng: np.random.Generator, kind: str | None = None) -> dict:
    return dict(
        kind=kind or KINDS[int(rng.integers(len(KINDS)))],
        batch=int(rng.integers(1, 5)),
        length=int(rng.integers(1, 7)),
        input_size=int(rng.integers(1, 5)),
        hidden=int(rng.integers(1, 5)),
        layers=int(rng.integers(1, 4)),
        bias=bool(rng.integers(2)),
        bidirectional=bool(rng.integers(2)),
        seed=int(rng.integers(2**31)),
        with_initial=bool(rng.integers(4)),  # mostly given; sometimes torch's zeros
    )


@register_check("sequences-recurrent")
def recurrent_check(rng: np.random.Generator) -> list[Comparison]:
    """RNN.step, LSTM.step, GRU.step, BPTT.sequence: a random recurrent layer vs torch."""
    return recurrent_case(**_draw(rng))


@register_check("sequences-recurrent-finite-differences")
def recurrent_fd_check(rng: np.random.Generator) -> list[Comparison]:
    """The same gradients against central finite differences of C (no torch)."""
    case = _draw(rng)
    case.update(batch=2, length=min(case["length"], 3), layers=min(case["layers"], 2))
    if case["kind"] == "rnn_relu":
        case["kind"] = "rnn_tanh"  # finite differences are invalid across relu's kink
    rng = np.random.default_rng(case["seed"])
    layer = make_layer(
        case["kind"], case["input_size"], case["hidden"], case["layers"], case["bias"],
        case["bidirectional"], seed=rng,
    )  # fmt: skip
    shape = (case["layers"] * layer.directions, case["batch"], case["hidden"])
    x = rng.standard_normal((case["batch"], case["length"], case["input_size"]))
    initial = [rng.standard_normal(shape) for _ in range(layer.cell.n_states)]
    d_out = rng.standard_normal((*x.shape[:2], case["hidden"] * layer.directions))
    d_final = [rng.standard_normal(shape) for _ in initial]

    def cost() -> float:
        out, final, _ = layer.forward_sequence(x, *initial)
        final = final if isinstance(final, tuple) else (final,)
        return float(
            (out * d_out).sum() + sum((f * d).sum() for f, d in zip(final, d_final, strict=True))
        )

    _, _, cache = layer.forward_sequence(x, *initial)
    result = layer.backward_sequence(d_out, *d_final, cache)
    dx, d_initial, grads = result[0], result[1:-1], result[-1]
    targets = [("BPTT.sequence", "∂C/∂x", dx, x)]
    for i, (d, s) in enumerate(zip(d_initial, initial, strict=True)):
        targets.append(("BPTT.sequence", f"∂C/∂state0[{i}]", d, s))
    targets += [(layer.equation, f"∂C/∂{k}", grads[k], v) for k, v in layer.params.items()]
    comparisons = []
    for equation, name, actual, array in targets:
        expected = finite_difference(cost, array)
        atol = 1e-7 * (1.0 + float(np.abs(expected).max(initial=0.0)))  # O(h²) + O(ε/h)
        comparisons.append(
            Comparison(equation, name, actual, expected, oracle="finite-differences", atol=atol)
        )
    return comparisons


@register_check("sequences-cell-adjoint")
def cell_adjoint_check(rng: np.random.Generator) -> list[Comparison]:
    """⟨u, J v⟩ = ⟨Jᵀu, v⟩ for each cell step, all inputs (x, state, θ) perturbed at once."""
    comparisons = []
    for kind, equation in zip(
        KINDS, ("RNN.step", "RNN.step", "LSTM.step", "GRU.step"), strict=True
    ):
        cell = CELLS[kind]
        batch, n_in, hidden = (int(k) for k in rng.integers(1, 5, size=3))
        gh = cell.gates * hidden
        params = {
            "weight_ih": rng.standard_normal((gh, n_in)),
            "weight_hh": rng.standard_normal((gh, hidden)),
            "bias_ih": rng.standard_normal(gh),
            "bias_hh": rng.standard_normal(gh),
        }
        x = rng.standard_normal((batch, n_in))
        state = tuple(rng.standard_normal((batch, hidden)) for _ in range(cell.n_states))
        u = tuple(rng.standard_normal((batch, hidden)) for _ in range(cell.n_states))
        v_x = rng.standard_normal(x.shape)
        v_s = tuple(rng.standard_normal(s.shape) for s in state)
        v_p = {k: rng.standard_normal(p.shape) for k, p in params.items()}
        _, cache = cell.step(x, state, params)
        dx, d_state, grads = cell.step_backward(u, cache)
        vjp_dot = (dx * v_x).sum() + sum((d * v).sum() for d, v in zip(d_state, v_s, strict=True))
        vjp_dot += sum((grads[k] * v_p[k]).sum() for k in params)

        h = 1e-6
        plus, minus = (_moved(cell, t, x, state, params, v_x, v_s, v_p) for t in (h, -h))
        jvp_dot = sum(
            (ui * (a - b) / (2 * h)).sum() for ui, a, b in zip(u, plus, minus, strict=True)
        )
        atol = 1e-6 * (1.0 + abs(jvp_dot))  # central differences: O(h²)·|f‴| + O(ε/h)
        comparisons.append(
            Comparison(
                equation,
                f"{kind} ⟨Jᵀu, v⟩",
                np.array(vjp_dot),
                np.array(jvp_dot),
                oracle="finite-differences",
                atol=atol,
            )
        )
    return comparisons


def _moved(cell, t: float, x, state, params, v_x, v_s, v_p) -> tuple:
    """The cell's new state at ``(x, state, θ) + t·v``."""
    p = {k: params[k] + t * v_p[k] for k in params}
    s = tuple(a + t * b for a, b in zip(state, v_s, strict=True))
    return cell.step(x + t * v_x, s, p)[0]


@register_check("sequences-embedding")
def embedding_check(rng: np.random.Generator) -> list[Comparison]:
    """EMB.lookup: repeated indices accumulate, the padding row gets none, vs F.embedding."""
    vocab, dim = int(rng.integers(1, 6)), int(rng.integers(1, 5))
    batch, length = int(rng.integers(1, 5)), int(rng.integers(1, 7))
    padding = None if rng.integers(2) else int(rng.integers(-vocab, vocab))
    layer = Embedding(vocab, dim, padding, seed=rng)
    x = rng.integers(0, vocab, size=(batch, length))  # small vocabularies: many repeats
    d_out = rng.standard_normal((batch, length, dim))
    out, cache = layer.forward(x.astype(np.float64) if rng.integers(2) else x)
    _, grads = layer.backward(d_out, cache)
    weight = torch.tensor(layer.params["weight"], requires_grad=True)
    out_t = F.embedding(torch.tensor(x), weight, layer.padding_idx)
    (out_t * torch.tensor(d_out)).sum().backward()
    return [
        Comparison("EMB.lookup", "out", out, out_t.detach().numpy()),
        Comparison("EMB.lookup", "∂C/∂weight", grads["weight"], weight.grad.numpy()),
    ]


# ---------------------------------------------------------------------------- random stacks
def _recurrent_block(kind: str):
    def block(rng: np.random.Generator, shape: tuple[int, ...]):
        hidden = int(rng.integers(1, 5))
        layer = make_layer(
            kind, shape[-1], hidden, int(rng.integers(1, 3)), bool(rng.integers(2)),
            bool(rng.integers(2)),
        )  # fmt: skip
        return [layer], tuple(layer.output_shape(shape))

    return block


for _kind in KINDS:
    register_block("sequences", _kind)(_recurrent_block(_kind))


@register_check("sequences-stack")
def sequence_stack_check(rng: np.random.Generator) -> list[Comparison]:
    """Recurrent layers (and attention, when registered) in the middle of random stacks."""
    from reference.stack import random_stack

    model, x, y = random_stack(rng, "sequences", blocks=KINDS)
    return with_stack_scales(model, x, y, stack_comparisons(model, x, y))


@register_check("sequences-embedding-stack")
def embedding_stack_check(rng: np.random.Generator) -> list[Comparison]:
    """Embedding → recurrent → dense → softmax on integer sequences, vs torch."""
    vocab, dim, length = int(rng.integers(2, 6)), int(rng.integers(1, 5)), int(rng.integers(1, 6))
    kind = KINDS[int(rng.integers(len(KINDS)))]
    recurrent, shape = _recurrent_block(kind)(rng, (length, dim))
    layers = [Embedding(vocab, dim, int(rng.integers(vocab))), *recurrent]
    n_classes = int(rng.integers(2, 5))
    layers += [Dense(shape[-1], n_classes), ActivationLayer("softmax")]
    model = Sequential(
        layers, "log-likelihood", input_shape=(length,), seed=int(rng.integers(2**31))
    )
    batch = int(rng.integers(1, 5))
    x = rng.integers(0, vocab, size=(batch, length))
    y = rng.integers(0, n_classes, size=(batch, length))
    return with_stack_scales(model, x, y, stack_comparisons(model, x, y))
