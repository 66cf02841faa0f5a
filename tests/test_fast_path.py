"""The fused training path (``manual_bp/training/fused.py``, ``docs/performance.md``) vs torch.

The fast path must pass the same verification as the readable one:

* BP3/BP4 of a fused step equal torch autograd (float64, ``64·ε`` with the
  magnitude bounds of ``reference/conditioning.py``), on hypothesis-drawn networks;
* parameters after k fused SGD steps with Nielsen's L2 (``OPT.sgd``, ``REG.l2``)
  equal ``torch.optim.SGD`` doing the same steps (weight decay λ/N on weights only),
  in float64 and — the float32 path end to end — in float32 with a float32 tolerance;
* fast and readable training (``train(fast=True|False)``) give the same trajectory,
  for fused and non-fused optimizers and regularizers;
* a fused step allocates no large array.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from manual_bp import Network
from manual_bp._validation import as_targets
from manual_bp.gradcheck import assert_gradients_close
from manual_bp.optimizers import SGD, get_optimizer
from manual_bp.regularizers import L2, get_regularizer
from manual_bp.training import FusedTrainer, train
from reference import torch_run
from reference.cases import build_case
from reference.conditioning import error_scales
from tests.strategies import STABLE_COSTS, network_specs

# Trajectory tests: well-conditioned networks (as tests/test_optimizers.py), so that
# rounding differences are not amplified by the dynamics; no dyadic values or planted
# kinks, so that no zˡ sits exactly on a kink after an update (where one rounding of
# difference flips relu'(z)).
SMOOTH = {
    "dyadic": False,
    "kinks": False,
    "weight_scales": (1.0,),
    "max_depth": 3,
    "max_width": 6,
    "max_batch": 8,
    "activations": ("identity", "sigmoid", "tanh", "relu"),
    "costs": STABLE_COSTS,
}


@given(network_specs())
def test_fast_gradients_match_torch(spec):
    """BP3, BP4 of the fused step (δᴸ scaled by 1/n once) equal autograd's ∂C/∂bˡ, ∂C/∂Wˡ."""
    net, x, y = build_case(spec)
    rows = as_targets(y, net.sizes[-1], x.shape[0], net.dtype)
    grads = FusedTrainer(net).gradients(x, y)  # torch's order: W¹, b¹, W², b², …
    grad_w, grad_b = grads[0::2], grads[1::2]
    run = torch_run(net, x, y)
    scales = error_scales(net, run, rows)
    for l in range(len(net.weights)):
        assert_gradients_close(
            grad_w[l], run.weights[l], name=f"BP4 fast ∂C/∂W[{l + 1}]", scale=scales.weights[l]
        )
        assert_gradients_close(
            grad_b[l], run.biases[l], name=f"BP3 fast ∂C/∂b[{l + 1}]", scale=scales.biases[l]
        )


def _state_dict_order(weights, biases) -> list:
    """``[W¹, b¹, W², b², …]``: every model's parameter order (torch's state dict)."""
    return [p for pair in zip(weights, biases, strict=True) for p in pair]


def _torch_sgd_steps(net, x, y, batches, eta, lmbda, n_train, dtype):
    """Parameters after ``torch.optim.SGD`` steps on autograd gradients of the same batches.

    Nielsen's L2 is torch's coupled ``weight_decay = λ/N`` on the weight group only.
    Returns the flat parameters (our layout) and a magnitude bound of their rounding.
    """
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    shadow = net.copy()
    weights = [torch.tensor(W, dtype=tdtype) for W in net.weights]
    biases = [torch.tensor(b, dtype=tdtype) for b in net.biases]
    optimizer = torch.optim.SGD(
        [{"params": weights, "weight_decay": lmbda / n_train}, {"params": biases}], lr=eta
    )
    rows = as_targets(y, net.sizes[-1], x.shape[0], np.float64)
    bound = np.abs(net._params).astype(np.float64)
    for index in batches:
        shadow.weights = [W.numpy() for W in weights]
        shadow.biases = [b.numpy() for b in biases]
        run = torch_run(shadow, x[index], rows[index], dtype=tdtype)
        scales = error_scales(shadow, run, rows[index])
        for p, g in zip([*weights, *biases], [*run.weights, *run.biases], strict=True):
            p.grad = torch.tensor(g, dtype=tdtype)
        optimizer.step()
        step = np.concatenate([s.ravel() for s in _state_dict_order(scales.weights, scales.biases)])
        bound += eta * step + np.abs(shadow._params)
    flat = np.concatenate([p.numpy().ravel() for p in _state_dict_order(weights, biases)])
    return flat, bound


def _check_sgd_trajectory(spec, eta, lmbda, steps, dtype):
    net, x, y = build_case(spec, dtype=dtype)
    rng = np.random.default_rng(spec.seed)
    n = x.shape[0]
    batches = [rng.permutation(n)[: max(1, n // 2)] for _ in range(steps)]
    expected, bound = _torch_sgd_steps(net, x, y, batches, eta, lmbda, 4 * n, dtype)
    trainer = FusedTrainer(net, SGD(lr=eta), L2(lmbda), n_train=4 * n)
    assert trainer.fused_update
    rows = as_targets(y, net.sizes[-1], n, net.dtype)
    with np.errstate(over="ignore", under="ignore"):
        for index in batches:
            trainer.step(x, rows, index)
    assert_gradients_close(
        net._params, expected, name="OPT.sgd + REG.l2 parameters", dtype=dtype, scale=bound
    )


@given(
    network_specs(**SMOOTH),
    st.sampled_from([0.05, 0.3]),
    st.sampled_from([0.0, 1.0, 5.0]),
    st.integers(1, 3),
)
def test_fast_sgd_l2_steps_match_torch_optim(spec, eta, lmbda, steps):
    """OPT.sgd, REG.l2: k fused steps ``w ← (1 − ηλ/N)w − η∂C₀/∂w`` equal torch.optim.SGD."""
    _check_sgd_trajectory(spec, eta, lmbda, steps, np.float64)


@given(
    network_specs(**SMOOTH),
    st.sampled_from([0.05, 0.3]),
    st.sampled_from([0.0, 2.0]),
    st.integers(1, 3),
)
def test_fast_float32_training_matches_torch_float32(spec, eta, lmbda, steps):
    """The float32 path end to end: float32 fused steps equal torch float32 (tolerance 64·ε₃₂)."""
    _check_sgd_trajectory(spec, eta, lmbda, steps, np.float32)


def _replay_bound(net, x, y, *, epochs, batch_size, seed, lr, regularizer, momentum):
    """Magnitude bound of the rounding of a training trajectory, replayed on torch scales.

    Each step rounds the update by about ``ε·(|θ| + η_eff·S(∂C/∂θ))``: ``S`` the
    gradient's magnitude bound (``reference/conditioning.py``), ``η_eff = η/(1 − μ)``
    with momentum μ (a gradient's error stays in the buffer), plus ``η_eff·(λ/N)``
    for the regularizer's term. The bound is the sum over all steps.
    """
    from manual_bp.training import iterate_minibatches

    shadow = net.copy()
    rows = as_targets(y, net.sizes[-1], x.shape[0], net.dtype)
    rng = np.random.default_rng(seed)
    lr_eff = lr / (1.0 - momentum)
    optimizer = SGD(lr=lr, momentum=momentum)
    lmbda = 0.0 if regularizer is None else regularizer.lmbda
    bound = np.zeros_like(net._params)
    for _ in range(epochs):
        for index in iterate_minibatches(x.shape[0], batch_size, rng):
            run = torch_run(shadow, x[index], rows[index])
            scales = error_scales(shadow, run, rows[index])
            decay = [lmbda / x.shape[0] * (1.0 + np.abs(W)) for W in shadow.weights]
            weights = [s + d for s, d in zip(scales.weights, decay, strict=True)]
            step = np.concatenate([s.ravel() for s in _state_dict_order(weights, scales.biases)])
            bound += lr_eff * step + np.abs(shadow._params)
            grads = shadow.backprop(x[index], rows[index])
            if regularizer is not None:
                regularizer.add_gradient(shadow.weights, grads.weights, x.shape[0])
            optimizer.step([*shadow.weights, *shadow.biases], [*grads.weights, *grads.biases])
    return bound + np.abs(shadow._params)


@pytest.mark.parametrize(
    ("optimizer", "regularizer"),
    [
        # η ≤ 0.1 (as tests/test_optimizers.py): deep identity chains diverge at η = 0.3.
        ({"name": "sgd", "lr": 0.1}, {"name": "l2", "lmbda": 2.0}),  # fused
        ({"name": "sgd", "lr": 0.1}, None),  # fused, no decay
        ({"name": "sgd", "lr": 0.05, "momentum": 0.5}, {"name": "l2", "lmbda": 2.0}),  # generic
        ({"name": "sgd", "lr": 0.1}, {"name": "l1", "lmbda": 0.5}),  # generic regularizer
    ],
)
@given(spec=network_specs(**SMOOTH))
def test_fast_training_equals_readable(spec, optimizer, regularizer):
    """train(fast=True) and train(fast=False) follow the same trajectory (to rounding).

    Fused SGD/L2 and the generic routes (optimizer.step on per-layer views,
    regularizer.add_gradient) both. The bound sums each step's rounding bound.
    """
    net, x, y = build_case(spec)
    nets = [net, net.copy()]
    batch_size = max(1, x.shape[0] // 3)
    try:
        bound = _replay_bound(
            net,
            x,
            y,
            epochs=2,
            batch_size=batch_size,
            seed=spec.seed,
            lr=optimizer["lr"],
            regularizer=None if regularizer is None else get_regularizer(regularizer),
            momentum=optimizer.get("momentum", 0.0),
        )
        for candidate, fast in zip(nets, (True, False), strict=True):
            train(
                candidate,
                x,
                y,
                epochs=2,
                batch_size=batch_size,
                optimizer=get_optimizer(optimizer),
                regularizer=None if regularizer is None else get_regularizer(regularizer),
                monitor=(),
                seed=spec.seed,
                fast=fast,
            )
    except FloatingPointError:
        # The trajectory diverged (overflow): no trajectory to compare. Rare at η ≤ 0.1;
        # hypothesis's health check fails the test if it stops being rare.
        assume(False)
    assert_gradients_close(nets[0]._params, nets[1]._params, name="fast vs readable", scale=bound)


def test_fused_step_allocates_no_large_array():
    """After the first step (buffers), a fused step allocates nothing of batch or weight size."""
    net = Network([784, 30, 10], "sigmoid", "quadratic", seed=0)
    rng = np.random.default_rng(0)
    x = rng.random((200, 784))
    y = np.eye(10)[rng.integers(0, 10, 200)]
    trainer = FusedTrainer(net, SGD(lr=3.0), L2(5.0), n_train=200)
    index = rng.permutation(200)[:10]
    trainer.step(x, y, index)
    tracemalloc.start()
    try:
        for _ in range(5):
            trainer.step(x, y, index)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * 784 * 8, f"a fused step allocated {peak} bytes"


def test_fast_is_default_and_checks_class_targets():
    """train() takes the fast path by default; bad target rows still fail before training."""
    net = Network([3, 2], "relu", "log-likelihood", output_activation="softmax", seed=0)
    x = np.ones((4, 3))
    with pytest.raises(ValueError, match="not a probability distribution"):
        train(net, x, np.full((4, 2), 0.7), epochs=1, batch_size=2, eta=0.1)
    calls = []
    original = net.loss_and_gradients  # the readable step
    net.loss_and_gradients = lambda *a: calls.append(1) or original(*a)  # type: ignore[method-assign]
    train(net, x, np.array([0, 1, 0, 1]), epochs=1, batch_size=2, eta=0.1, monitor=())
    assert not calls
    train(net, x, np.array([0, 1, 0, 1]), epochs=1, batch_size=2, eta=0.1, monitor=(), fast=False)
    assert len(calls) == 2
