"""The layer-stack model (docs/stack.md): STACK.chain, LAYER.residual, Network ≡ Sequential,
save/load, training, the CLI's stack spec, and the one-way data path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp import (
    SGD,
    Adam,
    Dense,
    Network,
    Residual,
    Sequential,
    load,
    save,
    train,
)
from manual_bp.cli import main
from manual_bp.gradcheck import assert_gradients_close
from manual_bp.layers import get_layer
from reference.checks_stack import (
    adjoint_check,
    network_equivalence_check,
    random_image_stack_check,
    random_stack_check,
    residual_check,
    residual_model,
)
from reference.stack import random_stack

ROOT = Path(__file__).resolve().parent.parent
seeds = st.integers(0, 2**31 - 1)


@given(seeds)
def test_stack_chain_random_stacks_match_torch(seed):
    """STACK.chain: random stacks of every registered feature block (each layer kind also in
    the middle), one training step or an evaluation pass: output, cost, ∂C/∂x, every
    parameter gradient and every running statistic against torch autograd (float64)."""
    for comparison in random_stack_check(np.random.default_rng(seed)):
        comparison.check()


@given(seeds)
@settings(max_examples=30)
def test_stack_chain_random_image_stacks_match_torch(seed):
    """STACK.chain: random CNN stacks of every registered image block, against torch."""
    for comparison in random_image_stack_check(np.random.default_rng(seed)):
        comparison.check()


@given(seeds)
def test_stack_chain_equals_network_backprop(seed):
    """STACK.chain: Sequential.from_network(net) gives Network.backprop's gradients (BP1–BP4
    are the Dense and activation VJPs of the chain)."""
    for comparison in network_equivalence_check(np.random.default_rng(seed)):
        comparison.check()


@given(seeds)
@settings(max_examples=50)
def test_stack_chain_adjoint(seed):
    """STACK.chain: ⟨u, J v⟩ = ⟨Jᵀu, v⟩ with J v from torch.func.jvp of the same stack."""
    for comparison in adjoint_check(np.random.default_rng(seed)):
        comparison.check()


@given(seeds)
def test_residual_block_matches_torch(seed):
    """LAYER.residual: y = x + f(x) between two layers; ∂C/∂x sums the skip and the branch."""
    for comparison in residual_check(np.random.default_rng(seed)):
        comparison.check()


def test_residual_backward_sums_both_paths():
    """With the branch's last weights zero, f ≡ 0 and ∂C/∂x = ∂C/∂y exactly (skip path);
    with the skip path alone dropped the gradient would be zero."""
    block = Residual([Dense(3, 3), "tanh", Dense(3, 3)])
    block.layers[2].params["weight"][...] = 0.0
    block.layers[2].params["bias"][...] = 0.0
    x = np.random.default_rng(0).standard_normal((4, 3))
    y, cache = block.forward(x)
    np.testing.assert_array_equal(y, x)
    upstream = np.random.default_rng(1).standard_normal((4, 3))
    dx, grads = block.backward(upstream, cache)
    np.testing.assert_array_equal(dx, upstream)
    assert set(grads) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    with pytest.raises(ValueError, match="needs equal shapes"):
        Residual([Dense(3, 2)]).output_shape((3,))


def test_residual_in_a_model_is_named_like_torch():
    model = residual_model(np.random.default_rng(0), width=4)
    names = [name for name, _ in model.named_parameters()]
    assert "2.0.weight" in names and "2.2.bias" in names
    assert len(model.regularized_indices()) == 4  # the four weights, not the biases


# ---------------------------------------------------------------------- model mechanics
def test_parameters_are_views_of_one_buffer():
    model = Sequential([Dense(3, 4), "relu", Dense(4, 2)], seed=0)
    model.flat_parameters[:] = np.arange(model.n_parameters)
    assert model.layers[0].params["weight"][0, 0] == 0
    assert model.layers[2].params["bias"][-1] == model.n_parameters - 1
    assert model.n_parameters == 3 * 4 + 4 + 4 * 2 + 2


def test_seed_makes_models_reproducible_and_different_seeds_differ():
    def make(seed):
        return Sequential([Dense(5, 4), "tanh", Dense(4, 3)], seed=seed)

    np.testing.assert_array_equal(make(1).flat_parameters, make(1).flat_parameters)
    assert not np.array_equal(make(1).flat_parameters, make(2).flat_parameters)


def test_construction_checks_the_stack_before_any_data():
    with pytest.raises(ValueError, match=r"layer 2 .*Dense\(5, 2\).*last axis has 5 features"):
        Sequential([Dense(3, 4), "relu", Dense(5, 2)])
    with pytest.raises(ValueError, match="needs an output activation"):
        Sequential([Dense(3, 4), "relu"], cost="log-likelihood")
    with pytest.raises(ValueError, match="non-empty list"):
        Sequential([])
    model = Sequential([Dense(3, 2)])
    with pytest.raises(ValueError, match=r"x has shape \(4, 5\); the model takes .*\(batch, 3\)"):
        model.backprop(np.zeros((4, 5)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="non-finite"):
        model.backprop(np.full((2, 3), np.nan), np.zeros((2, 2)))
    with pytest.raises(TypeError, match="real numbers"):
        model.backprop(np.zeros((2, 3), complex), np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"y has shape \(2, 3\); the model's outputs are"):
        model.backprop(np.zeros((2, 3)), np.zeros((2, 3)))


def test_labels_and_one_hot_targets_give_the_same_gradients():
    model = Sequential([Dense(3, 4), "tanh", Dense(4, 3), "softmax"], "log-likelihood", seed=0)
    x = np.random.default_rng(0).standard_normal((5, 3))
    labels = np.array([0, 2, 1, 1, 0])
    a, b = model.backprop(x, labels), model.backprop(x, np.eye(3)[labels])
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])


def test_copy_and_state_dict_round_trip():
    model, x, y = random_stack(np.random.default_rng(3), "features", max_blocks=4)
    clone = model.copy()
    for (n1, a1), (n2, a2) in zip(model.named_parameters(), clone.named_parameters(), strict=True):
        assert n1 == n2 and np.array_equal(a1, a2) and a1 is not a2
    g1, g2 = model.copy().backprop(x, y), clone.copy().backprop(x, y)
    for name in g1.params:
        np.testing.assert_array_equal(g1.params[name], g2.params[name])
    # torch's wording (and torch's RuntimeError; ValueError as before)
    with pytest.raises(ValueError, match=r'Missing key\(s\) in state_dict: "0.weight", "0.bias"'):
        model.load_state_dict({})


# ---------------------------------------------------------------------- save / load
@pytest.mark.parametrize("suffix", [".json", ".npz"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@given(seed=seeds)
@settings(max_examples=10)
def test_save_load_is_bit_exact_and_continues_identically(tmp_path_factory, suffix, dtype, seed):
    rng = np.random.default_rng(seed)
    model, x, y = random_stack(rng, "features", max_blocks=4)
    model = Sequential(
        [get_layer(c) for c in model.get_config()["layers"]],
        model.cost,
        input_shape=model.input_shape,
        seed=seed,
        dtype=dtype,
    )
    n = x.shape[0]  # whole batches: batch norm refuses a batch of one in training
    train(model, x, y, epochs=2, batch_size=n, optimizer=Adam(lr=0.01), monitor=(), seed=0)
    path = tmp_path_factory.mktemp("m") / f"model{suffix}"
    save(model, path)
    loaded = load(path)
    assert isinstance(loaded, Sequential) and loaded.dtype == model.dtype
    state, loaded_state = model.state_dict(), loaded.state_dict()
    assert state.keys() == loaded_state.keys()
    for name in state:
        assert state[name].dtype == loaded_state[name].dtype
        np.testing.assert_array_equal(state[name], loaded_state[name])
    # the next step (dropout masks drawn from the saved generators) is identical
    a, b = model.backprop(x, y), loaded.backprop(x, y)
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])


def test_load_names_the_fault(tmp_path):
    model = Sequential([Dense(3, 2)], seed=0)
    path = tmp_path / "m.json"
    save(model, path)
    document = json.loads(path.read_text())
    document["parameters"]["0.weight"] = [[1.0, 2.0]]
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"0\.weight has shape \(1, 2\); the model needs \(2, 3\)"):
        load(path)
    document["parameters"]["0.weight"] = [[1e300] * 3] * 2
    document["config"]["dtype"] = "float32"
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match="overflows float32"):
        load(path)


# ---------------------------------------------------------------------- training
def test_training_a_stack_reduces_the_cost_and_l2_decays_weights_only():
    from manual_bp import load_digits

    data = load_digits()
    model = Sequential([Dense(64, 32), "relu", Dense(32, 10), "softmax"], "log-likelihood", seed=0)
    history = train(
        model,
        data.x_train,
        data.y_train,
        epochs=6,
        batch_size=16,
        eta=0.2,
        seed=0,
        evaluation_data=(data.x_val, data.y_val),
    )
    assert history.training_cost[-1] < history.training_cost[0]
    assert history.evaluation_accuracy[-1] > 0.85
    # λ huge with η small: the decay factor (1 − ηλ/N) shrinks weights, never biases
    frozen = Sequential([Dense(64, 4), "relu", Dense(4, 10), "softmax"], "log-likelihood", seed=0)
    weights, biases = (frozen.layers[0].params[k].copy() for k in ("weight", "bias"))
    x, y = data.x_train[:8], data.y_train[:8]
    grads = frozen.backprop(x, y)
    train(frozen, x, y, epochs=1, batch_size=8, optimizer=SGD(lr=0.1), lmbda=4.0, monitor=())
    np.testing.assert_allclose(
        frozen.layers[0].params["weight"],
        weights - 0.1 * (grads.params["0.weight"] + 4.0 / 8 * weights),
        rtol=1e-12,
        atol=1e-15,
    )
    np.testing.assert_allclose(
        frozen.layers[0].params["bias"], biases - 0.1 * grads.params["0.bias"], rtol=1e-12
    )


def test_a_sequential_mlp_trains_on_the_networks_fused_path():
    """One fused path for every model: a Network and the same stack built as a plain
    Sequential follow bit-identical trajectories (the same layer steps, the same update)."""
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((13, 6)), rng.random((13, 3))
    net = Network([6, 5, 4, 3], ["relu", "tanh", "sigmoid"], "quadratic", seed=0)
    model = Sequential.from_network(net)
    assert type(model) is Sequential
    for m in (net, model):
        train(m, x, y, epochs=2, batch_size=4, eta=0.5, lmbda=1.0, seed=1, monitor=())
    np.testing.assert_array_equal(net.flat_parameters, model.flat_parameters)


@pytest.mark.parametrize("kind", ["features", "images", "sequences"])
@given(seed=st.integers(0, 2**31 - 1))
@settings(max_examples=6, deadline=None)
def test_fused_path_equals_the_readable_step_on_random_stacks(kind, seed):
    """Every layer kind trains through its fast form (or the generic step) as through the
    readable step, plain SGD (η/n folded into the seed) and momentum (optimizer.step on
    the views): equal to rounding. The bound: each of the K steps rounds θ and its update
    relative to the largest parameter, so after K steps the bound is 64·K·ε·max|θ|
    (the gradient checks' normwise bound, ``assert_gradients_close``, with c = 64·K)."""
    rng = np.random.default_rng(seed)
    model, x, labels = random_stack(rng, kind)
    # no mini-batch of one sample: batch norm in training mode needs two
    batch_size = next(b for b in (3, 2, 4, 5) if x.shape[0] % b != 1)
    for optimizer in ({"name": "sgd", "lr": 0.05}, {"name": "sgd", "lr": 0.05, "momentum": 0.5}):
        start, paths = model.copy(), []
        for fast in (True, False):
            candidate = start.copy()
            train(
                candidate,
                x,
                labels,
                epochs=2,
                batch_size=batch_size,
                optimizer=optimizer,
                seed=seed,
                monitor=(),
                fast=fast,
            )
            paths.append(candidate.flat_parameters)
        steps = 2 * -(-x.shape[0] // batch_size)
        assert_gradients_close(
            paths[0], paths[1], name=f"{kind} fused vs readable, {optimizer}", c=64.0 * steps
        )


# The data path (CLI → training → model → layers → costs) is tests/test_architecture.py's.


def test_gradcheck_helpers_work_on_stack_layers():
    """manual_bp.gradcheck.check_layer accepts any layer of the protocol, containers too
    (finite differences and torch): STACK.chain through a residual branch."""
    import torch

    from manual_bp.gradcheck import check_layer

    block = Residual([Dense(3, 4, seed=0), "tanh", Dense(4, 3, seed=1)])
    x = np.random.default_rng(2).standard_normal((5, 3))

    def torch_forward(xt, p):
        h = torch.tanh(torch.nn.functional.linear(xt, p["0.weight"], p["0.bias"]))
        return xt + torch.nn.functional.linear(h, p["2.weight"], p["2.bias"])

    report = check_layer(block, x, torch_forward=torch_forward)
    assert set(report.torch) == {"x", "0.weight", "0.bias", "2.weight", "2.bias"}


@pytest.mark.parametrize("layers", [None, "dense(30), relu, dense"])
def test_cli_divergence_is_one_line_and_exit_1(layers, capsys):
    """A learning rate that diverges ends with one line naming the cause, on both paths."""
    argv = [
        "train",
        "--quiet",
        "--epochs",
        "2",
        "--eta",
        "1e8",
        "--cost",
        "quadratic",
    ]
    # the activations of the --sizes form; a stack names its own (issue 24 refuses the flags)
    argv += (
        ["--layers", layers]
        if layers
        else ["--activation", "relu", "--output-activation", "identity"]
    )
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "lower the learning rate" in err and "Traceback" not in err and err.count("\n") == 1


def test_cli_trains_a_sequence_model_on_a_synthetic_task(capsys):
    """--task copy: an embedding + LSTM stack reaches near-perfect per-position accuracy."""
    argv = [
        "train",
        "--quiet",
        "--task",
        "copy",
        "--epochs",
        "3",
        "--batch-size",
        "32",
        "--layers",
        "embedding(8, 16), lstm(32), dense, softmax",
        "--cost",
        "log-likelihood",
        "--optimizer",
        "adam",
        "--lr",
        "0.01",
    ]
    assert main(argv) == 0
    accuracy = float(capsys.readouterr().out.split("test accuracy ")[1].split("%")[0])
    assert accuracy > 95.0
    assert main(["train", "--quiet", "--task", "copy"]) == 2  # needs a stack
    assert "give --layers or --model" in capsys.readouterr().err


@given(seeds)
@settings(max_examples=30)
def test_layer_jvps_compose_to_torch_jvp(seed):
    """Forward mode: the layers' ``jvp`` (Dense, activations, Residual) chained through a
    random stack equals ``torch.func.jvp`` of the same stack, with random tangents on the
    input and on every parameter at once."""
    import torch

    from reference.stack import torch_layer_forward

    rng = np.random.default_rng(seed)
    model, x, _ = random_stack(rng, "features", max_blocks=4, blocks=("dense-tanh", "residual"))
    out, caches = model.forward(x)
    v = rng.standard_normal(x.shape)
    tangents = {name: rng.standard_normal(a.shape) for name, a in model.named_parameters()}
    ours = v
    for index, (layer, cache) in enumerate(zip(model.layers, caches, strict=True)):
        prefix = f"{index}."
        own = {k[len(prefix) :]: t for k, t in tangents.items() if k.startswith(prefix)}
        ours = layer.jvp(cache, ours, own)
    names = [name for name, _ in model.named_parameters()]

    def function(xt, *params):
        tensors = dict(zip(names, params, strict=True))
        h = xt
        for index, (layer, cache) in enumerate(zip(model.layers, caches, strict=True)):
            prefix = f"{index}."
            own = {k[len(prefix) :]: t for k, t in tensors.items() if k.startswith(prefix)}
            h = torch_layer_forward(layer, own, {}, h, cache)
        return h

    primals = (torch.tensor(x), *(torch.tensor(a) for _, a in model.named_parameters()))
    directions = (torch.tensor(v), *(torch.tensor(tangents[n]) for n in names))
    _, expected = torch.func.jvp(function, primals, directions)
    # A dropped term (the x dWᵀ product, the residual's skip path) changes the result at
    # O(1); 1e-10 relative sits far above both libraries' rounding on these small stacks.
    np.testing.assert_allclose(
        ours, expected.numpy(), rtol=1e-10, atol=1e-12 * (1 + np.abs(expected.numpy()).max())
    )
    assert ours.shape == out.shape


@pytest.mark.parametrize("kind", ["features", "images", "sequences"])
@given(seed=seeds)
@settings(max_examples=15)
def test_training_step_skips_only_the_unused_input_gradient(kind, seed):
    """STACK.chain with ``input_grad=False`` (what ``loss_and_gradients`` runs): every
    parameter gradient is bit-identical to the full backward's, and no ∂C/∂x is made. The
    lowest trainable layer (dense, convolution, recurrent, …) uses its
    ``parameter_gradients``; parameter-free layers below it are not visited."""
    rng = np.random.default_rng(seed)
    model, x, y = random_stack(rng, kind)
    if rng.random() < 0.5:
        model.eval()
    twin, trainer = model.copy(), model.copy()  # same parameters, buffers, dropout generators
    full = model.backprop(x, y)
    step = twin.backprop(x, y, input_grad=False)
    assert full.input_grad is not None and step.input_grad is None
    assert full.params.keys() == step.params.keys()
    for name, grad in full.params.items():
        np.testing.assert_array_equal(step.params[name], grad, err_msg=name)
    cost, grads = trainer.loss_and_gradients(x, y)
    assert cost == full.cost
    for name, grad in zip(trainer._parameter_names, grads, strict=True):
        np.testing.assert_array_equal(grad, full.params[name], err_msg=name)


def test_parameter_free_bottom_layers_are_skipped_and_a_parameter_free_model_has_no_sweep():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 2, 3)), np.array([0, 1, 2, 1])
    model = Sequential(
        ["flatten", Dense(6, 3), "softmax"], cost="log-likelihood", input_shape=(2, 3), seed=1
    )
    step = model.backprop(x, y, input_grad=False)
    full = model.backprop(x, y)
    np.testing.assert_array_equal(step.params["1.weight"], full.params["1.weight"])
    frozen = Sequential(["flatten", "softmax"], cost="log-likelihood", input_shape=(2, 3))
    result = frozen.backprop(x, y, input_grad=False)
    assert result.params == {} and result.input_grad is None


@pytest.mark.parametrize(
    ("x", "error", "message"),
    [
        (np.ones((2, 3), dtype=bool), TypeError, "dtype bool"),
        (np.ones((2, 3), dtype=complex), TypeError, "complex"),
        ([[1.0, 2.0, 3.0], [1.0]], ValueError, "not a rectangular array"),
        (None, TypeError, "x is None"),
        (np.ones((0, 3)), ValueError, "x is empty"),
        (np.full((2, 3), 1e39), ValueError, "overflows float32"),
        (np.array([[1.0, np.nan, 0.0], [0.0, 0.0, 0.0]]), ValueError, "non-finite"),
    ],
)
def test_stack_inputs_are_validated_like_networks(x, error, message):
    """Sequential refuses what Network refuses, naming the true cause (dtype, raggedness,
    emptiness, a float32 overflow of a finite float64 value, NaN) — before any forward."""
    model = Sequential([Dense(3, 2), "softmax"], "log-likelihood", dtype="float32", seed=0)
    for call in (model.backprop, model.accuracy, model.total_cost):
        with pytest.raises(error, match=message):
            call(x, np.array([0, 1]))


def test_stack_targets_outside_the_cost_domain_are_refused_everywhere():
    """Targets of 2 for cross-entropy would give a negative cost: refused by backprop,
    accuracy and total_cost alike (ignored positions are exempt)."""
    model = Sequential([Dense(3, 2), "sigmoid"], "cross-entropy", seed=0)
    x = np.random.default_rng(0).standard_normal((4, 3))
    y = np.full((4, 2), 2.0)
    for call in (model.backprop, model.accuracy, model.total_cost):
        with pytest.raises(ValueError, match=r"cross-entropy.*\[0, 1\]"):
            call(x, y)


@pytest.mark.parametrize(
    ("output", "cost", "torch_loss"),
    [("sigmoid", "cross-entropy", "bce_with_logits"), ("softmax", "log-likelihood", "ce")],
)
def test_saturated_stack_outputs_give_the_logit_form_cost(output, cost, torch_loss):
    """A saturated output at a finite logit (σ(400) = 1 in float64): the cost comes from zᴷ
    (as torch's *_with_logits / cross_entropy), finite and equal to torch's, in backprop
    (training) and total_cost (evaluation) — not inf from log(1 − 1)."""
    import torch

    model = Sequential([Dense(2, 2), output], cost, seed=0)
    layer = model.layers[0]
    layer.params["weight"][...] = [[400.0, 0.0], [-400.0, 0.0]]  # e^{-800} underflows to 0
    layer.params["bias"][...] = 0.0
    x = np.array([[1.0, 0.0], [-1.0, 0.0]])
    y = np.array([1, 1])
    z = torch.tensor(x @ layer.params["weight"].T)
    t = torch.nn.functional.one_hot(torch.tensor(y), 2).double()
    if torch_loss == "ce":
        expected = torch.nn.functional.cross_entropy(z, torch.tensor(y)).item()
    else:
        expected = (
            torch.nn.functional.binary_cross_entropy_with_logits(z, t, reduction="sum").item() / 2
        )
    assert np.isfinite(expected)
    assert model.backprop(x, y).cost == pytest.approx(expected, rel=1e-12)
    assert model.total_cost(x, y) == pytest.approx(expected, rel=1e-12)
