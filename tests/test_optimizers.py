"""Optimizers, regularisers and schedules against ``torch.optim`` (docs/optimizers.md).

Trajectories, not single steps: from the same random parameters, ours and the
``torch.optim`` twin (``reference/optim.py``) take 20–40 steps on the same
random gradients (their size varies per step, so that moment estimates and
ε matter) and the parameters are compared after **every** step, in float64,
with the tolerance ``64·ε·max|θ|`` over the trajectory. End to end, our
Network is trained by ``training.train`` from its own backprop and a torch
copy from autograd's gradients. Schedules: the rate after every epoch equals
``get_last_lr()`` of torch's scheduler.
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from manual_bp.gradcheck import assert_gradients_close
from manual_bp.models.network import Network
from manual_bp.optimizers import OPTIMIZERS, SGD, Adagrad, Adam, AdamW, RMSprop, get_optimizer
from manual_bp.optimizers.cli import (
    add_optimizer_arguments,
    optimizer_from_args,
    schedule_from_args,
)
from manual_bp.regularizers import L1, L2
from manual_bp.schedules import (
    SCHEDULES,
    CosineAnnealingLR,
    ExponentialLR,
    StepLR,
    cosine_closed_form,
    get_schedule,
)
from manual_bp.training import train
from reference.cases import build_case
from reference.optim import network_trajectories, torch_optimizer, torch_schedule, trajectories
from tests.strategies import SMOOTH_ACTIVATIONS, STABLE_COSTS, network_specs

EPS = float(np.finfo(np.float64).eps)

# ---------------------------------------------------------------- strategies


@st.composite
def problems(draw, min_steps: int = 20, max_steps: int = 40):
    """Random parameter arrays and a gradient per array per step.

    Shapes: 1–4 arrays, matrices and vectors (a network's weights and biases).
    Each step's gradients get a random overall size 10^U(−3, 1), so that the
    second-moment estimates vary and ε is not negligible everywhere.
    """
    shapes = draw(
        st.lists(
            st.one_of(
                st.tuples(st.integers(1, 6), st.integers(1, 6)), st.tuples(st.integers(1, 6))
            ),
            min_size=1,
            max_size=4,
        )
    )
    steps = draw(st.integers(min_steps, max_steps))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    params = [rng.standard_normal(s) * draw(st.sampled_from([0.1, 1.0, 10.0])) for s in shapes]
    sizes = 10.0 ** rng.uniform(-3, 1, size=steps)
    grads = [[rng.standard_normal(s) * size for s in shapes] for size in sizes]
    return params, grads


lrs = st.floats(1e-4, 0.5)
epsilons = st.sampled_from([0.0, 1e-10, 1e-8, 1e-6, 1e-3, 0.1])
decays = st.floats(1e-3, 1.0)
fractions = st.floats(0.0, 0.999)


def assert_trajectory(trajectory, label: str) -> float:
    """Every step, every array: |ours − torch| ≤ 64·ε·max|θ| (the trajectory's scale)."""
    worst = 0.0
    for k, (ours, theirs) in enumerate(zip(trajectory.ours, trajectory.torch, strict=True)):
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            scale = np.full(a.shape, trajectory.scales[i])
            worst = max(
                worst,
                assert_gradients_close(
                    a, b, name=f"{label} θ[{i}] after step {k + 1}", scale=scale
                ),
            )
    return worst


def run(opt, problem, flat: bool = False) -> float:
    params, grads = problem
    return assert_trajectory(trajectories(opt, params, grads, flat=flat), repr(opt))


# ---------------------------------------------------------------- update rules


@given(problems(), lrs, st.floats(0.01, 0.99), st.floats(0.0, 1.0), st.booleans())
def test_sgd_momentum_trajectory(problem, lr, momentum, dampening, undamped):
    """OPT.sgd-momentum: b₁ = g, bₜ = μbₜ₋₁ + (1 − τ)g, θ ← θ − ηbₜ (torch.optim.SGD)."""
    run(SGD(lr, momentum=momentum, dampening=0.0 if undamped else dampening), problem)


@given(problems(), lrs, st.floats(0.01, 0.99))
def test_sgd_nesterov_trajectory(problem, lr, momentum):
    """OPT.sgd-nesterov: θ ← θ − η(g + μbₜ) (torch.optim.SGD(nesterov=True))."""
    run(SGD(lr, momentum=momentum, nesterov=True), problem)


@given(problems(), lrs, st.floats(0.0, 1.0), st.floats(0.0, 1.0), epsilons)
def test_adagrad_trajectory(problem, lr, lr_decay, initial, eps):
    """OPT.adagrad: Sₜ = Sₜ₋₁ + g², θ ← θ − η/(1 + (t−1)·decay) · g/(√Sₜ + ε)."""
    run(Adagrad(lr, lr_decay=lr_decay, initial_accumulator_value=initial, eps=eps), problem)


@given(problems(), lrs, fractions, epsilons, st.sampled_from([0.0, 0.5, 0.9]))
def test_rmsprop_trajectory(problem, lr, alpha, eps, momentum):
    """OPT.rmsprop: vₜ = αvₜ₋₁ + (1−α)g², θ ← θ − ηg/(√vₜ + ε) (with momentum buffer)."""
    run(RMSprop(lr, alpha=alpha, eps=eps, momentum=momentum), problem)


@given(problems(), lrs, st.floats(0.5, 0.999), epsilons, st.sampled_from([0.0, 0.5, 0.9]))
def test_rmsprop_centered_trajectory(problem, lr, alpha, eps, momentum):
    """OPT.rmsprop-centered: D = √(vₜ − ḡₜ²) + ε with ḡₜ = αḡₜ₋₁ + (1−α)g."""
    run(RMSprop(lr, alpha=alpha, eps=eps, momentum=momentum, centered=True), problem)


@given(problems(), lrs, fractions, fractions, epsilons)
def test_adam_trajectory(problem, lr, beta1, beta2, eps):
    """OPT.adam: θ ← θ − η/(1−β₁ᵗ) · mₜ/(√vₜ/√(1−β₂ᵗ) + ε), both bias corrections."""
    run(Adam(lr, beta1=beta1, beta2=beta2, eps=eps), problem)


@given(problems(), lrs, fractions, fractions, epsilons)
def test_amsgrad_trajectory(problem, lr, beta1, beta2, eps):
    """OPT.amsgrad: Adam with v̂ₜ = max(v̂ₜ₋₁, vₜ) in the denominator."""
    run(Adam(lr, beta1=beta1, beta2=beta2, eps=eps, amsgrad=True), problem)


@given(problems(), lrs, fractions, fractions, epsilons, decays, st.booleans())
def test_adamw_trajectory(problem, lr, beta1, beta2, eps, weight_decay, amsgrad):
    """OPT.adamw: θ ← (1 − η·wd)θ, then the Adam step from the undecayed gradient."""
    run(
        AdamW(lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad),
        problem,
    )


@st.composite
def decayed_optimizers(draw):
    """Every coupled-decay optimizer with random hyper-parameters and wd > 0."""
    wd = draw(decays)
    lr = draw(lrs)
    kind = draw(st.sampled_from(["sgd", "sgd-momentum", "adagrad", "rmsprop", "adam"]))
    if kind == "sgd":
        return SGD(lr, weight_decay=wd)
    if kind == "sgd-momentum":
        return SGD(
            lr, momentum=draw(st.floats(0.1, 0.9)), nesterov=draw(st.booleans()), weight_decay=wd
        )
    if kind == "adagrad":
        return Adagrad(lr, weight_decay=wd)
    if kind == "rmsprop":
        return RMSprop(lr, weight_decay=wd, centered=draw(st.booleans()))
    return Adam(lr, weight_decay=wd, amsgrad=draw(st.booleans()))


@given(problems(), decayed_optimizers())
def test_weight_decay_trajectory(problem, opt):
    """OPT.weight-decay: coupled L2 g ← g + wd·θ before the rule (torch's weight_decay)."""
    run(opt, problem)


@st.composite
def any_optimizers(draw, lr_max: float = 0.5):
    lr = draw(st.floats(1e-3, lr_max))
    kind = draw(
        st.sampled_from(
            [
                "sgd",
                "momentum",
                "nesterov",
                "adagrad",
                "rmsprop",
                "rmsprop-centered",
                "adam",
                "amsgrad",
                "adamw",
            ]
        )
    )
    return {
        "sgd": lambda: SGD(lr),
        "momentum": lambda: SGD(lr, momentum=0.9, dampening=0.1),
        "nesterov": lambda: SGD(lr, momentum=0.9, nesterov=True),
        "adagrad": lambda: Adagrad(lr, lr_decay=0.01),
        "rmsprop": lambda: RMSprop(lr / 10, momentum=0.5),
        "rmsprop-centered": lambda: RMSprop(lr / 10, centered=True),
        "adam": lambda: Adam(lr / 10),
        "amsgrad": lambda: Adam(lr / 10, amsgrad=True),
        "adamw": lambda: AdamW(lr / 10, weight_decay=0.1),
    }[kind]()


@given(problems(max_steps=25), any_optimizers())
def test_flat_buffer_equals_list_of_arrays(problem, opt):
    """One flat parameter buffer gives the same trajectory as the list of arrays."""
    run(opt, problem, flat=True)


# ---------------------------------------------------------------- end to end


#: Costs under which 20 steps of these rates do not diverge (poisson-nll's exp can):
#: a diverging trajectory amplifies rounding and proves nothing.


def smooth_networks():
    """Smooth, moderately initialised networks: a well-conditioned training trajectory."""
    return network_specs(
        max_depth=3,
        max_width=6,
        max_batch=8,
        activations=SMOOTH_ACTIVATIONS,
        costs=STABLE_COSTS,
        weight_scales=(1.0,),
        kinks=False,
        dyadic=False,
    )


@given(smooth_networks(), any_optimizers(lr_max=0.1), st.sampled_from([None, "l1", "l2"]))
def test_network_end_to_end(spec, opt, regularizer):
    """Our backprop + our optimizer = autograd + torch.optim, after every step.

    Full-batch ``training.train`` for 20 epochs (one step each) against torch
    computing its own gradients. Regularisers: REG.l2 (Nielsen, weights only)
    = torch ``weight_decay=λ/N`` on a weights-only param group; REG.l1 =
    ``(λ/N)Σ|w|`` added to torch's loss. Every OPT.* rule is drawn.
    """
    net, x, y = build_case(spec)
    reg = {None: None, "l1": L1(0.1), "l2": L2(0.5)}[regularizer]
    trajectory = network_trajectories(net, x, y, opt, epochs=20, regularizer=reg)
    assert_trajectory(trajectory, f"{opt!r} {reg!r}")


@given(
    smooth_networks(),
    st.floats(0.01, 2.0),
    st.integers(1, 3),
    st.sampled_from(["sgd", "momentum", "adam"]),
    st.booleans(),
)
def test_weight_decay_maps_to_nielsen_l2(spec, lmbda, copies, rule, fast):
    """OPT.weight-decay vs REG.l2: Nielsen's L2 (weights only, λ/N) equals torch's
    ``weight_decay=λ/N`` on a param group holding only the weights, under any optimizer,
    in both training paths (fused FastTrainer and readable backprop loop); decaying the
    biases too does not match."""
    net, x, y = build_case(spec)
    # N = len(x), the training-set size the regulariser divides by; two mini-batches an epoch.
    x, y = np.concatenate([x] * copies), np.concatenate([y] * copies)
    opt = {"sgd": SGD(0.05), "momentum": SGD(0.05, momentum=0.5), "adam": Adam(0.01)}[rule]
    trajectory = network_trajectories(
        net,
        x,
        y,
        opt,
        epochs=12,
        regularizer=L2(lmbda),
        batch_size=max(1, len(x) // 2),
        fast=fast,
    )
    assert_trajectory(trajectory, f"{opt!r} L2({lmbda}) fast={fast}")


@given(
    st.lists(st.tuples(st.integers(1, 6), st.integers(1, 6)), min_size=1, max_size=3),
    st.floats(0.0, 5.0),
    st.integers(1, 1000),
    st.integers(0, 2**32 - 1),
)
def test_l1_regulariser(shapes, lmbda, n_train, seed):
    """REG.l1: R = (λ/N)Σ|w| and ∂R/∂w = (λ/N) sgn w (0 at w = 0) equal torch autograd."""
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal(s) for s in shapes]
    weights[0].flat[0] = 0.0  # the kink: torch's subgradient of |w| at 0 is 0
    upstream = [rng.standard_normal(s) for s in shapes]
    grads = [u.copy() for u in upstream]
    reg = L1(lmbda)
    reg.add_gradient(weights, grads, n_train)
    tensors = [torch.tensor(W, requires_grad=True) for W in weights]
    penalty = lmbda / n_train * sum(t.abs().sum() for t in tensors)
    penalty.backward()
    assert_gradients_close(
        np.array(reg.penalty(weights, n_train)), penalty.detach().numpy(), name="R"
    )
    for i, (g, u, t) in enumerate(zip(grads, upstream, tensors, strict=True)):
        expected = t.grad.numpy()
        # g = upstream + ∂R/∂W: compare the sum, scaled by the terms added.
        assert_gradients_close(
            g, u + expected, name=f"∂R/∂W[{i}]", scale=np.abs(u) + np.abs(expected)
        )


# ---------------------------------------------------------------- schedules


def assert_schedule(schedule, base_lr: float, epochs: int) -> None:
    opt = SGD(base_lr)
    schedule.bind(opt)
    twin = torch_schedule(schedule, torch_optimizer(SGD(base_lr), [torch.zeros(1)]))
    assert schedule.get_last_lr() == [base_lr]  # a list, as torch's
    for epoch in range(1, epochs + 1):
        twin.optimizer.step()
        twin.step()
        ours = schedule.step()
        expected = twin.get_last_lr()[0]
        assert opt.lr == ours
        assert abs(ours - expected) <= 64 * EPS * base_lr, (
            f"{schedule!r} epoch {epoch}: lr {ours!r}, torch {expected!r}"
        )


@given(st.floats(1e-4, 10.0), st.integers(1, 10), st.floats(0.01, 2.0), st.integers(1, 60))
def test_step_schedule(base_lr, step_size, gamma, epochs):
    """SCHED.step: ηₜ = η₀γ^⌊t/step_size⌋ equals torch StepLR.get_last_lr()."""
    assert_schedule(StepLR(step_size=step_size, gamma=gamma), base_lr, epochs)


@given(st.floats(1e-4, 10.0), st.floats(0.5, 1.0), st.integers(1, 60))
def test_exponential_schedule(base_lr, gamma, epochs):
    """SCHED.exponential: ηₜ = η₀γᵗ equals torch ExponentialLR.get_last_lr()."""
    assert_schedule(ExponentialLR(gamma=gamma), base_lr, epochs)


@given(st.floats(1e-4, 10.0), st.integers(1, 30), st.floats(0.0, 1.0), st.integers(1, 90))
def test_cosine_schedule(base_lr, T_max, eta_min_fraction, epochs):
    """SCHED.cosine: ηₜ = η_min + (η₀ − η_min)(1 + cos(πt/T))/2 equals torch
    CosineAnnealingLR.get_last_lr() (past T too), and the closed form up to T."""
    eta_min = eta_min_fraction * base_lr
    assert_schedule(CosineAnnealingLR(T_max=T_max, eta_min=eta_min), base_lr, epochs)
    schedule = CosineAnnealingLR(SGD(base_lr), T_max=T_max, eta_min=eta_min)
    for t in range(1, T_max + 1):
        lr = schedule.step()
        closed = cosine_closed_form(t, base_lr, T_max, eta_min)
        assert abs(lr - closed) <= 64 * EPS * base_lr, f"epoch {t}: {lr!r} vs {closed!r}"


@given(smooth_networks(), st.sampled_from(["step", "exponential", "cosine"]), st.booleans())
def test_train_steps_schedule_per_epoch(spec, name, adam):
    """train(..., schedule=...) uses η₀ in epoch 1 and ηₜ in epoch t + 1, as torch's
    ``scheduler.step()`` at the end of each epoch: end to end with torch's scheduler."""
    net, x, y = build_case(spec)
    schedule = get_schedule(
        {
            "step": {"name": "step", "step_size": 2, "gamma": 0.5},
            "exponential": {"name": "exponential", "gamma": 0.8},
            "cosine": {"name": "cosine", "T_max": 4},
        }[name]
    )
    opt = Adam(0.02) if adam else SGD(0.02, momentum=0.5)
    trajectory = network_trajectories(net, x, y, opt, epochs=10, schedule=schedule)
    assert_trajectory(trajectory, f"{opt!r} {schedule!r}")


def test_train_with_schedule_records_rates():
    """The rate seen by each epoch's steps follows the schedule; eta-only training is unchanged."""
    net = Network([4, 3, 2], seed=0)
    x = np.random.default_rng(0).standard_normal((8, 4))
    y = np.arange(8) % 2
    opt = SGD(1.0)
    seen = []
    train(
        net,
        x,
        y,
        epochs=5,
        batch_size=8,
        optimizer=opt,
        monitor=(),
        schedule=StepLR(step_size=2, gamma=0.5),
        callbacks=[lambda epoch, history: seen.append(opt.lr)],
    )
    assert seen == [1.0, 0.5, 0.5, 0.25, 0.25]
    plain = Network([4, 3, 2], seed=0)
    train(
        plain, x, y, epochs=2, batch_size=4, eta=0.5, monitor=(), schedule=ExponentialLR(gamma=0.5)
    )


# ---------------------------------------------------------------- API and validation


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: SGD(lr=0), "lr"),
        (lambda: SGD(lr=float("nan")), "lr"),
        (lambda: SGD(momentum=1.0), "momentum"),
        (lambda: SGD(dampening=-0.1), "dampening"),
        (lambda: SGD(nesterov=True), "nesterov"),
        (lambda: SGD(momentum=0.9, dampening=0.5, nesterov=True), "nesterov"),
        (lambda: SGD(weight_decay=-1), "weight_decay"),
        (lambda: Adagrad(lr_decay=-1), "lr_decay"),
        (lambda: Adagrad(initial_accumulator_value=-1), "initial_accumulator_value"),
        (lambda: RMSprop(alpha=1.0), "alpha"),
        (lambda: RMSprop(eps=-1e-8), "eps"),
        (lambda: Adam(beta1=1.0), "beta1"),
        (lambda: Adam(beta2=-0.1), "beta2"),
        (lambda: AdamW(weight_decay=float("inf")), "weight_decay"),
        (lambda: Adam(lr="fast"), "lr"),
        (lambda: StepLR(step_size=0), "step_size"),
        (lambda: ExponentialLR(gamma=0), "gamma"),
        (lambda: CosineAnnealingLR(T_max=0), "T_max"),
        (lambda: CosineAnnealingLR(eta_min=-1), "eta_min"),
        (lambda: L1(-1.0), "lmbda"),
    ],
)
def test_bad_hyperparameters_are_named(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


def test_state_layout_must_not_change():
    opt = Adam()
    params = [np.zeros((2, 3)), np.zeros(3)]
    opt.step(params, [np.ones((2, 3)), np.ones(3)])
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        opt.step([np.zeros((3, 2)), np.zeros(3)], [np.ones((3, 2)), np.ones(3)])
    with pytest.raises(ValueError, match="gradient 1 has shape"):
        opt.step(params, [np.ones((2, 3)), np.ones(4)])
    opt.reset()
    opt.step([np.zeros(5)], [np.ones(5)])
    assert opt.t == 1


def test_registries_and_configs_round_trip():
    assert OPTIMIZERS.names() == ["adagrad", "adam", "adamw", "rmsprop", "sgd"]
    assert SCHEDULES.names() == ["cosine", "exponential", "step"]
    for opt in (
        SGD(0.3),
        SGD(0.1, momentum=0.9, nesterov=True),
        Adagrad(),
        RMSprop(centered=True),
        Adam(amsgrad=True),
        AdamW(weight_decay=0.5),
    ):
        assert get_optimizer(opt.get_config()) == opt
    assert SGD(0.3).get_config() == {"name": "sgd", "lr": 0.3}
    assert get_schedule({"name": "cosine", "T_max": 5}) == CosineAnnealingLR(T_max=5)
    schedule = StepLR(SGD(1.0), step_size=1)
    with pytest.raises(ValueError, match="already bound"):
        schedule.bind(SGD(1.0))
    with pytest.raises(RuntimeError, match="not bound"):
        StepLR().step()


def _parse(*argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--eta", type=float, default=0.5)
    add_optimizer_arguments(parser)
    return parser.parse_args(argv)


def test_cli_builds_optimizers_and_schedules():
    args = _parse()
    assert optimizer_from_args(args) is None and schedule_from_args(args) is None
    args = _parse("--optimizer", "adam", "--lr", "0.01", "--beta2", "0.99", "--amsgrad")
    assert optimizer_from_args(args) == Adam(0.01, beta2=0.99, amsgrad=True)
    args = _parse("--optimizer", "sgd", "--momentum", "0.9", "--nesterov", "--weight-decay", "1e-4")
    assert optimizer_from_args(args) == SGD(0.5, momentum=0.9, nesterov=True, weight_decay=1e-4)
    args = _parse("--optimizer", "rmsprop", "--centered", "--alpha", "0.9", "--eps", "1e-6")
    assert optimizer_from_args(args) == RMSprop(alpha=0.9, eps=1e-6, centered=True)
    assert optimizer_from_args(_parse("--optimizer", "adamw")) == AdamW()
    args = _parse("--schedule", "cosine", "--t-max", "7", "--eta-min", "0.01")
    assert schedule_from_args(args) == CosineAnnealingLR(T_max=7, eta_min=0.01)
    args = _parse("--schedule", "step", "--step-size", "3", "--gamma", "0.5")
    assert schedule_from_args(args) == StepLR(step_size=3, gamma=0.5)
    with pytest.raises(ValueError, match="amsgrad"):
        optimizer_from_args(_parse("--optimizer", "sgd", "--amsgrad"))
