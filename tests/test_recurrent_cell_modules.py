"""RNNCell, LSTMCell, GRUCell: torch's cell modules (``docs/sequences.md#CELL.state``).

torch in float64 with random upstream gradients on ``h'`` and ``c'`` (never all ones), central
differences, the V-axis products against ``torch.func`` with their identities, the cells in
the middle of random feature stacks, and torch's forms: constructor, parameters, the call's
value, unbatched and empty batches, one-line refusals. Hypothesis draws every option.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import manual_bp
from manual_bp.layers import GRU, LAYERS, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from manual_bp.layers.recurrent_cells import CELLS
from manual_bp.models.sequential import Sequential
from reference.checks_cells import (
    KINDS,
    cell_case,
    cell_comparisons,
    cells_fd_check,
    cells_stack_check,
    make_cell,
)
from reference.layer_cases import layer_case
from reference.products import product_comparisons

seeds = st.integers(0, 2**31 - 1)
kinds = st.sampled_from(KINDS)
batches = st.one_of(st.none(), st.integers(0, 4))  # None: unbatched (I,); 0: empty batch
sizes = st.integers(1, 4)
TORCH = {RNNCell: torch.nn.RNNCell, LSTMCell: torch.nn.LSTMCell, GRUCell: torch.nn.GRUCell}


@given(kind=kinds, batch=batches, n_in=sizes, hidden=sizes, bias=st.booleans(),
       with_hx=st.booleans(), seed=seeds)  # fmt: skip
@settings(max_examples=40, deadline=None)
def test_cells_match_torch(kind, batch, n_in, hidden, bias, with_hx, seed):
    """CELL.state, RNN.step, LSTM.step, GRU.step: h' (c'), ∂input, ∂hx and every ∂θ of
    torch's value against torch's module, every option, batched, empty or unbatched."""
    layer, x, hx, d_out = cell_case(kind, batch, n_in, hidden, bias, with_hx, seed)
    for comparison in cell_comparisons(layer, x, hx, d_out):
        comparison.check()


@given(seed=seeds)
@settings(max_examples=10, deadline=None)
def test_cells_match_finite_differences(seed):
    """CELL.state: ∂input, ∂h, ∂c and ∂θ by central differences (smooth cells)."""
    for comparison in cells_fd_check(np.random.default_rng(seed)):
        comparison.check()


@given(kind=kinds, batch=st.integers(1, 4), n_in=sizes, hidden=sizes, bias=st.booleans(),
       with_hx=st.booleans(), seed=seeds)  # fmt: skip
@settings(max_examples=12, deadline=None)
def test_cell_products_match_torch_func(kind, batch, n_in, hidden, bias, with_hx, seed):
    """PROD.cell.vjp, PROD.cell.jvp, PROD.cell.residual against torch.func, from zeros or a
    constant initial_state, with the adjoint, per-sample, symmetry and V = 1 identities."""
    layer, x, hx, _ = cell_case(kind, batch, n_in, hidden, bias, with_hx, seed)
    layer.initial_state = hx
    for comparison in product_comparisons(layer, x, np.random.default_rng(seed)):
        comparison.check()


@pytest.mark.parametrize("name", ["RNNCell", "LSTMCell", "GRUCell"])
@given(seed=seeds)
@settings(max_examples=4, deadline=None)
def test_cells_in_the_middle_of_stacks(name, seed):
    """RNN.step, LSTM.step, GRU.step and PROD.cell.*: a cell fed by the layers of a random
    feature stack (reference.layer_cases), and a whole stack of cells against torch."""
    layer, x = layer_case(name, np.random.default_rng(seed))
    for comparison in product_comparisons(layer, x, np.random.default_rng(seed)):
        comparison.check()
    for comparison in cells_stack_check(np.random.default_rng(seed)):
        comparison.check()


@given(kind=kinds, n_in=sizes, hidden=sizes, seed=seeds)
@settings(max_examples=10, deadline=None)
def test_unbatched_products_are_the_batch_of_one(kind, n_in, hidden, seed):
    """PROD.cell.*: an unbatched input (I,) gives the products of x[None] without the batch
    axis; its per-sample products are refused in one line."""
    rng = np.random.default_rng(seed)
    layer = make_cell(kind, n_in, hidden, seed=rng)
    x = rng.standard_normal(n_in)
    _, one = layer.forward(x)
    _, batch = layer.forward(x[None])
    M, T = rng.standard_normal((2, hidden)), rng.standard_normal((2, n_in))
    T_p = {k: rng.standard_normal((2, *p.shape)) for k, p in layer.params.items()}
    g = rng.standard_normal(hidden)
    np.testing.assert_array_equal(layer.input_vjp(one, M), layer.input_vjp(batch, M[:, None])[:, 0])
    np.testing.assert_array_equal(layer.input_jvp(one, T), layer.input_jvp(batch, T[:, None])[:, 0])
    np.testing.assert_array_equal(layer.param_jvp(one, T_p), layer.param_jvp(batch, T_p)[:, 0])
    for k, v in layer.param_vjp(one, M).items():
        np.testing.assert_array_equal(v, layer.param_vjp(batch, M[:, None])[k])
    r1, rp1 = layer.residual(one, g, T, T_p)
    r2, rp2 = layer.residual(batch, g[None], T[:, None], T_p)
    np.testing.assert_array_equal(r1, r2[:, 0])
    for k in rp1:
        np.testing.assert_array_equal(rp1[k], rp2[k])
    with pytest.raises(ValueError, match="per-sample products need a batched input"):
        layer.param_vjp(one, M, sum_batch=False)


@given(kind=kinds, batch=st.integers(1, 3), n_in=sizes, hidden=sizes, bias=st.booleans(),
       seed=seeds)  # fmt: skip
@settings(max_examples=15, deadline=None)
def test_cell_is_one_step_of_the_recurrent_layer(kind, batch, n_in, hidden, bias, seed):
    """CELL.state: the cell equals the recurrent layer of the same kind on a sequence of
    length 1 from h0 = hx (both run the one step of recurrent_cells), bit for bit."""
    layer, x, hx, d_out = cell_case(kind, batch, n_in, hidden, bias, True, seed)
    options = {"nonlinearity": layer.nonlinearity} if kind.startswith("rnn") else {}
    if kind == "lstm":
        options["implementation"] = "readable"
    seq = {"rnn": RNN, "lst": LSTM, "gru": GRU}[kind[:3]](
        n_in, hidden, bias=bias, batch_first=True, **options
    )
    for name, array in layer.params.items():
        seq.params[f"{name}_l0"][...] = array
    out, cache = layer.forward(x, hx if kind == "lstm" else hx[0])
    seq_out, seq_cache = seq.forward(x[:, None], tuple(s[None] for s in hx))
    np.testing.assert_array_equal(out, seq_out[:, 0])
    for ours, theirs in zip(cache.final, seq_cache.final, strict=True):
        np.testing.assert_array_equal(ours, theirs[0])
    dx, d_hx, grads = layer.backward_cell(d_out if kind == "lstm" else d_out[0], cache)
    d_hx = d_hx if isinstance(d_hx, tuple) else (d_hx,)
    d_final = tuple(d[None] for d in d_out[1:])  # the LSTM's c̄' is c_T's gradient
    seq_dx, *seq_d0, seq_grads = seq.backward_sequence(d_out[0][:, None], None, *d_final, seq_cache)
    np.testing.assert_array_equal(dx, seq_dx[:, 0])
    for ours, theirs in zip(d_hx, seq_d0, strict=True):
        np.testing.assert_array_equal(ours, theirs[0])
    for name, grad in grads.items():
        np.testing.assert_array_equal(grad, seq_grads[f"{name}_l0"])


@pytest.mark.parametrize("cls", [RNNCell, LSTMCell, GRUCell])
def test_torch_constructor_parameters_and_defaults(cls):
    """torch's signature (names, order, defaults), parameter names/shapes/order, U(±1/√H)
    initialisation, the registry names, and the call's value per class."""
    ours = inspect.signature(cls.__init__).parameters
    theirs = inspect.signature(TORCH[cls].__init__).parameters
    positional = [n for n, p in ours.items() if p.kind is not p.KEYWORD_ONLY]
    assert positional == list(theirs)
    for name in theirs:
        if name != "self":
            assert ours[name].default == theirs[name].default, name
    layer, module = cls(3, 5, seed=0), TORCH[cls](3, 5)
    assert [(n, p.shape) for n, p in layer.named_parameters()] == [
        (n, tuple(p.shape)) for n, p in module.named_parameters()
    ]
    wide = cls(20, 25, seed=0)  # U(−1/√H, 1/√H): inside the bound, reaching near it
    assert all(np.abs(p).max() <= 1 / np.sqrt(25) for p in wide.params.values())
    assert all(np.abs(p).max() > 0.5 / np.sqrt(25) for p in wide.params.values())
    assert list(cls(3, 5, bias=False).params) == ["weight_ih", "weight_hh"]
    assert LAYERS.lookup(cls.name) is LAYERS.lookup(cls.name.replace("_", "")) is cls
    assert getattr(manual_bp.layers, cls.__name__) is cls
    value = layer(np.zeros((2, 3)))
    if cls is LSTMCell:
        assert isinstance(value, tuple) and [v.shape for v in value] == [(2, 5), (2, 5)]
    else:
        assert isinstance(value, np.ndarray) and value.shape == (2, 5)


@pytest.mark.parametrize("cls", [RNNCell, LSTMCell, GRUCell])
def test_unbatched_and_empty_batches_as_torch(cls):
    """CELL.state: (I,) in -> (H,) out and ∂hx shaped like hx; N = 0 -> empty outputs and
    zero parameter gradients, as torch's."""
    layer = cls(3, 4, seed=1)
    count = layer.cell.n_states
    rng = np.random.default_rng(2)
    x = rng.standard_normal(3)
    hx = tuple(rng.standard_normal(4) for _ in range(count))
    out, cache = layer.forward(x, hx if count == 2 else hx[0])
    assert out.shape == (4,) and all(s.shape == (4,) for s in cache.final)
    dx, d_hx, grads = layer.backward_cell(rng.standard_normal(4), cache)
    assert dx.shape == (3,)
    assert all(d.shape == (4,) for d in (d_hx if count == 2 else (d_hx,)))
    out, cache = layer.forward(np.zeros((0, 3)))
    assert out.shape == (0, 4)
    dx, grads = layer.backward(np.zeros((0, 4)), cache)
    assert dx.shape == (0, 3) and all(not g.any() for g in grads.values())
    value = TORCH[cls](3, 4)(torch.zeros(0, 3))
    assert tuple((value[0] if count == 2 else value).shape) == (0, 4)


def test_bad_input_is_refused_in_one_line_naming_the_argument():
    """Every refusal names the argument at fault, on one line."""
    gru = GRUCell(3, 4)
    cases = [
        (lambda: RNNCell(3, 4, nonlinearity="sigmoid"), "nonlinearity"),
        (lambda: LSTMCell(0, 4), "input_size"),
        (lambda: GRUCell(3, 2.5), "hidden_size"),
        (lambda: GRUCell(3, 2, bias=1), "bias"),
        (lambda: RNNCell(3, 4, dtype="int32"), "dtype"),
        (lambda: RNNCell(3, 4).forward(np.zeros((2, 5, 3))), "input"),
        (lambda: RNNCell(3, 4).forward(np.zeros((2, 2))), "input"),
        (lambda: RNNCell(3, 4).forward(np.zeros((2, 3)), np.zeros((3, 4))), "hx"),
        (lambda: RNNCell(3, 4).forward(np.zeros(3), np.zeros((1, 4))), "hx"),
        (lambda: LSTMCell(3, 4).forward(np.zeros((2, 3)), np.zeros((2, 4))), "hx"),
        (lambda: LSTMCell(3, 4).forward(np.zeros((2, 3)), (np.zeros((2, 4)),) * 3), "hx"),
        (lambda: LSTMCell(3, 4).forward(np.zeros(3), (np.zeros(4), np.zeros(5))), "hx"),
        (
            lambda: gru.backward(np.zeros((2, 3)), gru.forward(np.zeros((2, 3)))[1]),
            "dout",
        ),  # the shared entry check names the upstream gradient dout
        (lambda: Sequential.from_spec([("gru_cell", (4,), {})], input_shape=(5, 3)), "features"),
    ]
    for build, argument in cases:
        with pytest.raises((ValueError, TypeError)) as caught:
            build()
        message = str(caught.value)
        assert argument in message and "\n" not in message, message


@given(spec=st.sampled_from(["rnn_cell", "lstm_cell", "gru_cell", "rnncell"]),
       dtype=st.sampled_from(["float32", "float64"]), seed=seeds)  # fmt: skip
@settings(max_examples=8, deadline=None)
def test_cells_from_layer_specs_train_in_the_model_dtype(spec, dtype, seed):
    """``--layers "lstm_cell(5)"`` on features: sizes inferred, a training step through the
    fast step (the readable form) in the model's dtype, and the config round-trips."""
    model = Sequential.from_spec(
        [(spec, (5,), {}), "dense", "softmax"],
        input_shape=(6,),
        n_outputs=3,
        cost="log-likelihood",
        seed=seed % 1000,
        dtype=dtype,
    )
    cell = model.layers[0]
    assert (cell.input_size, cell.hidden_size) == (6, 5)
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((4, 6)).astype(dtype), rng.integers(0, 3, 4)
    result = model.backprop(x, y)
    assert result.output.dtype == np.dtype(dtype)
    assert {g.dtype for g in result.params.values()} == {np.dtype(dtype)}
    copy = model.copy()
    assert copy.layers[0].get_config() == cell.get_config()
    np.testing.assert_array_equal(copy.backprop(x, y).output, result.output)


def test_the_cells_reuse_the_recurrent_step():
    """One copy of each gate's math: the modules run recurrent_cells' CELLS entries."""
    assert RNNCell(2, 3, nonlinearity="relu").cell is CELLS["rnn_relu"]
    assert LSTMCell(2, 3).cell is CELLS["lstm"]
    assert GRUCell(2, 3).cell is CELLS["gru"]
