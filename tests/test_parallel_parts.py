"""The mini-batch in parts (``manual_bp/training/parallel.py``, issue 22 item 4).

* the parts' gradients equal the unsplit fused step's and the readable path's to rounding
  (the conventions' ``64·ε`` of the largest entry), every family, batch sizes on both sides
  of and exactly at the split's edge, drawn by hypothesis;
* batch norm meets the parts whole: its running statistics after a step in parts are
  torch's over the WHOLE batch, and the gradients torch autograd's;
* models the plan must not cut (dropout, a torch-named loss, masks, an MLP) train whole.

The bit identity of 1 and 2 threads is ``tests/test_threads.py``'s.
"""

from __future__ import annotations

import ast

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.models.sequential import Sequential
from manual_bp.optimizers import SGD
from manual_bp.training import parallel
from manual_bp.training.fused import FusedTrainer

EDGE = parallel.PARTS * parallel.MIN_PART_ROWS  # the smallest batch cut into parts (tiny data)


@pytest.fixture(autouse=True, scope="module")
def every_batch_in_parts():
    """The tests' models are small: cut every batch of ≥ EDGE rows, whatever its elements."""
    before = parallel.MIN_PART_ELEMENTS
    parallel.MIN_PART_ELEMENTS = 0
    yield
    parallel.MIN_PART_ELEMENTS = before


C = 64  # the conventions' c

FAMILIES = {
    "lenet": (
        "[('conv2d', (4, 3), {'padding': 1}), 'relu', ('maxpool2d', (2,), {}), 'flatten',"
        " ('dense', (12,), {}), 'relu', 'dense', 'softmax']",
        (1, 8, 8),
        5,
        "log-likelihood",
    ),
    "cnn-bn": (
        "[('conv2d', (4, 3), {'padding': 1, 'bias': False}), 'batchnorm2d', 'relu',"
        " ('conv2d', (6, 3), {'stride': 2}), 'relu', 'global-avgpool2d', 'flatten', 'dense',"
        " 'softmax']",
        (3, 8, 8),
        5,
        "log-likelihood",
    ),
    "lstm": (
        "[('embedding', (20, 6), {}), ('lstm', (8,), {}), 'dense', 'softmax']",
        (5,),
        20,
        "log-likelihood",
    ),
    "gru-rnn": (
        "[('embedding', (20, 6), {}), ('gru', (8,), {}), ('rnn', (8,), {}), 'dense', 'softmax']",
        (5,),
        20,
        "log-likelihood",
    ),
    "transformer": (
        "[('residual', ([('multihead_attention', (2,), {'causal': True})],), {}), 'layernorm',"
        " ('residual', ([('dense', (16,), {}), 'gelu', 'dense'],), {}), 'layernorm']",
        (6, 8),
        8,
        "quadratic",
    ),
}


def _data(family: str, model, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    _, shape, n_out, _ = FAMILIES[family]
    if family in ("lstm", "gru-rnn"):
        x, y = rng.integers(0, n_out, (n, *shape)), rng.integers(0, n_out, (n, *shape))
    elif family == "transformer":
        x, y = rng.standard_normal((n, *shape)), rng.standard_normal((n, *shape))
    else:
        x, y = rng.standard_normal((n, *shape)), rng.integers(0, n_out, n)
    x = model.prepare_inputs(x)
    return x, model.prepare_targets(y, n)


def _model(family: str, dtype: str = "float64", seed: int = 0) -> Sequential:
    spec, shape, n_out, cost = FAMILIES[family]
    spec = ast.literal_eval(spec)
    return Sequential.from_spec(spec, shape, n_out, cost=cost, seed=seed, dtype=dtype)


def _close(got: list[np.ndarray], ref: list[np.ndarray], eps: float) -> None:
    for g, r in zip(got, ref, strict=True):
        bound = C * eps * max(float(np.max(np.abs(r))), np.finfo(r.dtype).tiny)
        assert np.max(np.abs(g - r)) <= bound, (np.max(np.abs(g - r)), bound)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@settings(max_examples=6, deadline=None)
@given(n=st.sampled_from([EDGE - 1, EDGE, EDGE + 1, 2 * EDGE + 3]), seed=st.integers(0, 99))
def test_parts_equal_the_unsplit_step_and_the_readable_path(family, n, seed):
    results = []
    for unsplit in (False, True):
        model = _model(family, seed=seed)
        x, y = _data(family, model, n, np.random.default_rng(seed))
        trainer = FusedTrainer(model)
        assert trainer._parts is not None
        if unsplit:
            trainer._parts = None  # the fused step as before the parts
        results.append(trainer.gradients(x, y))
        assert unsplit or trainer._parts.ran == (n >= EDGE)
    readable = _model(family, seed=seed)
    x, y = _data(family, readable, n, np.random.default_rng(seed))
    _, ref = readable.loss_and_gradients(x, y)
    eps = float(np.finfo(np.float64).eps)
    _close(results[0], ref, eps)
    _close(results[1], ref, eps)


def _torch_bn_net(model: Sequential) -> torch.nn.Module:
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1, bias=False),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, 6, 3, stride=2),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(6, 5),
    ).double()
    with torch.no_grad():
        for module, layer in zip(net, model.layers, strict=False):
            for name, value in layer.params.items():
                getattr(module, name).copy_(torch.from_numpy(value.copy()))
    return net


@settings(max_examples=5, deadline=None)
@given(n=st.sampled_from([EDGE, EDGE + 1, 3 * EDGE - 1]), seed=st.integers(0, 99))
def test_batch_norm_meets_the_parts_whole_as_torch_computes_it(n, seed):
    """Batch statistics over the WHOLE batch (not per part): the running averages after a
    step in parts and every gradient equal torch's (float64, random data and weights)."""
    model = _model("cnn-bn", seed=seed)
    x, y = _data("cnn-bn", model, n, np.random.default_rng(seed))
    net = _torch_bn_net(model)
    trainer = FusedTrainer(model)
    grads = trainer.gradients(x, y)
    assert trainer._parts.ran
    out = net(torch.from_numpy(x))
    loss = torch.nn.functional.cross_entropy(out, torch.from_numpy(y.argmax(axis=1)))
    loss.backward()
    ref = [p.grad.numpy() for p in net.parameters()]
    _close(grads, ref, float(np.finfo(np.float64).eps))
    bn, tbn = model.layers[1], net[1]
    eps = float(np.finfo(np.float64).eps)
    for name in ("running_mean", "running_var"):
        got, want = bn.buffers[name], getattr(tbn, name).numpy()
        assert np.max(np.abs(got - want)) <= C * eps * float(np.max(np.abs(want))), name


@pytest.mark.parametrize(
    "spec, cost",
    [
        ("[('conv2d', (4, 3), {}), 'relu', ('dropout', (0.5,), {}), 'flatten', 'dense',"
         " 'softmax']", "log-likelihood"),
        ("[('dense', (16,), {}), 'relu', 'dense', 'softmax']", "log-likelihood"),
    ],
)  # fmt: skip
def test_models_the_plan_does_not_cut_train_whole(spec, cost):
    shape = (1, 6, 6) if "conv" in spec else (36,)
    model = Sequential.from_spec(ast.literal_eval(spec), shape, 5, cost=cost, seed=0)
    assert FusedTrainer(model, SGD(lr=0.1))._parts is None


@pytest.mark.parametrize(
    "n, size, min_elements, parts",
    [
        (EDGE - 1, 10**6, 0, 1),  # rows: one short of two parts of MIN_PART_ROWS
        (EDGE, 10**6, 0, 2),
        (0, 10, 0, 1),
        (1, 10, 0, 1),
        (64, 2048, 65536, 2),  # elements: exactly MIN_PART_ELEMENTS a part
        (64, 2047, 65536, 1),
        (65, 2048, 65536, 2),  # an odd batch: the smaller part's 32 rows count
        (32, 35, 65536, 1),  # the LSTM benchmark's token ids
    ],
)
def test_the_part_count_is_the_shape_s_alone(n, size, min_elements, parts, monkeypatch):
    monkeypatch.setattr(parallel, "MIN_PART_ELEMENTS", min_elements)
    assert parallel.part_count(n, size) == parts


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_training_epoch_in_parts_reports_the_whole_batch_s_cost(family):
    """``run_epoch``'s cost of the last mini-batch, from the parts' outputs put together,
    equals the unsplit step's on the same parameters and batch."""
    model = _model(family)
    x, y = _data(family, model, 3 * EDGE, np.random.default_rng(3))
    trainer = FusedTrainer(model, SGD(lr=0.01))
    trainer.run_epoch(x, y, [np.arange(2 * EDGE)])
    assert trainer._parts.ran
    twin = _model(family)
    twin.flat_parameters[...] = model.flat_parameters
    unsplit = FusedTrainer(twin)
    unsplit._parts = None
    xb, yb = x[: 2 * EDGE], y[: 2 * EDGE]
    unsplit._forward_backward(xb, yb, 1.0)
    trainer._forward_backward(xb, yb, 1.0)  # in parts, on the updated parameters
    got, want = trainer._last_cost(), unsplit._last_cost()
    assert abs(got - want) <= C * np.finfo(np.float64).eps * max(1.0, abs(want))


@pytest.mark.parametrize(
    "spec, shape, widening",
    [
        ("[('conv2d', (4, 5), {'padding': 2}), 'relu', 'flatten', 'dense', 'softmax']",
         (1, 6, 6), 25),
        ("[('conv1d', (4, 3), {}), 'relu', ('conv1d', (4, 7), {}), 'flatten', 'dense', "
         "'softmax']", (2, 12), 7),
        ("[('dense', (8,), {}), 'relu', 'dense', 'softmax']", (36,), 1),
    ],
)  # fmt: skip
def test_a_convolution_widens_the_part_rule_by_its_kernel_taps(spec, shape, widening):
    layers = Sequential.from_spec(ast.literal_eval(spec), shape, 5, seed=0).layers
    assert parallel.widening(layers) == widening


@pytest.mark.parametrize(
    "n, parts",
    [(63, 1), (64, 2), (65, 2)],  # 64: exactly MIN_PART_ELEMENTS of im2col work a part
)
def test_a_convolutional_batch_is_cut_by_its_im2col_work(n, parts, monkeypatch):
    """LeNet's rule: a part's input (2·8·8 = 128 a sample) times the kernel's 16 taps,
    32 rows: 65 536 — at the edge; 31 rows one short. The input alone would never cut."""
    monkeypatch.setattr(parallel, "MIN_PART_ELEMENTS", 1 << 16)
    spec = [("conv2d", (4, 4), {"padding": 1}), "relu", "flatten", "dense", "softmax"]
    model = Sequential.from_spec(spec, (2, 8, 8), 5, cost="log-likelihood", seed=0)
    plan = FusedTrainer(model, SGD(lr=0.1))._parts
    assert plan.count(np.zeros((n, 2, 8, 8))) == parts
    assert parallel.part_count(n, 2 * 8 * 8) == 1


def test_the_lenet_benchmark_batch_runs_in_parts(monkeypatch):
    monkeypatch.setattr(parallel, "MIN_PART_ELEMENTS", 1 << 16)
    spec = [("reshape", ((1, 28, 28),), {}), ("conv2d", (6, 5), {"padding": 2}), "relu",
            ("maxpool2d", (2,), {}), ("conv2d", (16, 5), {}), "relu", ("maxpool2d", (2,), {}),
            "flatten", ("dense", (120,), {}), "relu", ("dense", (84,), {}), "relu", "dense",
            "softmax"]  # fmt: skip
    model = Sequential.from_spec(spec, (784,), 10, cost="log-likelihood", seed=0)
    assert FusedTrainer(model, SGD(lr=0.1))._parts.count(np.zeros((64, 784))) == 2
