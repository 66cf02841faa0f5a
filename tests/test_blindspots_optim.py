"""Blind spots of optimizers, schedules, the optimizer CLI and initialisers found by mutation
testing (issue 15, docs/mutation.md): defaults, flags and counters a user relies on that no
other test pinned. The mutants each test kills are listed in docs/mutation.md.
"""

from __future__ import annotations

import argparse
import inspect

import numpy as np
import pytest
import torch

from manual_bp import Network
from manual_bp.optimizers import SGD, Adagrad, Adam, AdamW, RMSprop
from manual_bp.optimizers.cli import add_optimizer_arguments, schedule_from_args

OPTIMIZERS = (SGD, Adagrad, Adam, AdamW, RMSprop)


def _defaults(function) -> dict:
    return {
        name: p.default
        for name, p in inspect.signature(function).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


@pytest.mark.parametrize("cls", OPTIMIZERS, ids=lambda c: c.__name__)
def test_default_hyperparameters_are_torchs(cls):
    """Every default of ``__init__`` equals ``torch.optim.<cls>``'s (``betas`` split into
    ``beta1``, ``beta2``), except SGD's ``lr``: ours is Nielsen's η = 0.1 (torch: 1e-3),
    as docs/optimizers.md says (the CLI's ``--lr`` defaults to ``--eta`` for SGD)."""
    ours = _defaults(cls.__init__)
    theirs = _defaults(getattr(torch.optim, cls.__name__).__init__)
    if "betas" in theirs:
        theirs["beta1"], theirs["beta2"] = theirs.pop("betas")
        ours.pop("betas", None)  # the keyword form of the same two defaults
    if cls is SGD:
        assert ours.pop("lr") == 0.1
    for name, value in ours.items():
        assert value == theirs[name], (cls.__name__, name, value, theirs[name])
    # and on built optimizers: torch's `defaults` against our attributes
    built = getattr(torch.optim, cls.__name__)([torch.zeros(1, requires_grad=True)]).defaults
    mine = cls()
    if "betas" in built:
        built["beta1"], built["beta2"] = built.pop("betas")
    for name in ours:
        assert getattr(mine, name) == built[name], (cls.__name__, name)


@pytest.mark.parametrize("cls", OPTIMIZERS, ids=lambda c: c.__name__)
def test_step_count_counts_steps(cls):
    """``t`` is the step count (torch's ``state["step"]``), reset by ``reset()``."""
    opt = SGD(momentum=0.9) if cls is SGD else cls()
    p = np.zeros(3)
    for _ in range(3):
        opt.step([p], [np.ones(3)])
    assert opt.t == 3
    opt.reset()
    assert opt.t == 0


def test_plain_sgd_counts_its_steps_too():
    """Plain SGD (no momentum, no weight decay) returned before counting its step."""
    opt = SGD()
    p = np.zeros(3)
    for _ in range(3):
        opt.step([p], [np.ones(3)])
    assert opt.t == 3


def test_adamw_amsgrad_follows_torch():
    """``AdamW(amsgrad=True)`` keeps the running maximum of vₜ, as ``torch.optim.AdamW``:
    five steps with gradients that shrink (where the maximum differs from vₜ)."""
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(4)
    grads = [rng.standard_normal(4) * 0.5**k for k in range(5)]
    ours, p = AdamW(0.1, amsgrad=True), p0.copy()
    tp = torch.tensor(p0, requires_grad=True)
    theirs = torch.optim.AdamW([tp], lr=0.1, amsgrad=True)
    for g in grads:
        ours.step([p], [g])
        tp.grad = torch.tensor(g)
        theirs.step()
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-13, atol=1e-15)
    plain, q = AdamW(0.1), p0.copy()
    for g in grads:
        plain.step([q], [g])
    assert not np.allclose(q, p)  # the flag changes the trajectory at all


def test_interval_errors_show_which_ends_are_allowed():
    """``lr`` must be in (0, inf): the message writes the interval with its open/closed
    ends, so a user sees whether 0 itself is allowed."""
    with pytest.raises(ValueError, match=r"^lr must be in \(0\.0, inf\), got 0\.0$"):
        SGD(0.0)
    with pytest.raises(ValueError, match=r"^momentum must be in \[0\.0, 1\.0\), got 1\.0$"):
        SGD(0.1, momentum=1.0)


def test_cli_cosine_schedule_lasts_the_training_by_default():
    """``--schedule cosine`` without ``--t-max``: the half-period is ``--epochs``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int)
    add_optimizer_arguments(parser)
    schedule = schedule_from_args(parser.parse_args(["--schedule", "cosine", "--epochs", "7"]))
    assert schedule.T_max == 7
    schedule = schedule_from_args(
        parser.parse_args(["--schedule", "cosine", "--epochs", "7", "--t-max", "3"])
    )
    assert schedule.T_max == 3


def test_nielsen_default_initializer_statistics():
    """``INIT.default``: ``W ~ N(0, 1/n_in)``, ``b ~ N(0, 1)`` (Nielsen's network2):
    sample standard deviations of 120 000 weights and 300 biases."""
    net = Network([400, 300], seed=0)
    W, b = np.asarray(net.weights[0]), np.asarray(net.biases[0])
    assert abs(W.std() * np.sqrt(400) - 1.0) < 0.01  # 1σ of the estimate ≈ 0.002
    assert abs(W.mean()) < 0.01 / np.sqrt(400) * 5
    assert abs(b.std() - 1.0) < 0.15  # 1σ ≈ 0.04


def test_fans_of_scalars_and_vectors():
    """torch's fan rule: a vector of n has fan_in = fan_out = n; a scalar counts as 1."""
    from manual_bp.initializers import fans

    assert fans((5,)) == (5, 5)
    assert fans(()) == (1, 1)
    assert fans((4, 3, 2, 2)) == (12, 16)


def test_hyperparameter_errors_name_the_parameter():
    with pytest.raises(ValueError, match=r"^eps must be in \[0\.0, inf\)"):
        Adagrad(eps=-1.0)
    with pytest.raises(ValueError, match=r"^beta2 must be in \[0\.0, 1\.0\)"):
        Adam(beta2=1.5)


def test_cli_help_names_the_options_and_their_chapter():
    """``--help`` shows the optimizer group and where the rules are documented."""
    parser = argparse.ArgumentParser()
    add_optimizer_arguments(parser)
    text = parser.format_help()
    assert "optimizer (docs/optimizers.md):" in text
    assert "update rule (default: plain SGD with --eta); see docs/optimizers.md" in " ".join(
        text.split()
    )


def test_centered_rmsprop_follows_torch_and_stays_finite_under_a_constant_gradient():
    """``RMSprop(centered=True)`` against ``torch.optim.RMSprop(centered=True)``; and with
    one gradient repeated, ``vₜ − ḡₜ²`` rounds below 0 for some entries (α = 0.1, about
    step 16): the clamp at 0 keeps the update finite (torch's would take √ of it)."""
    rng = np.random.default_rng(1)
    p0 = rng.standard_normal(5)
    ours, p = RMSprop(0.01, alpha=0.8, centered=True), p0.copy()
    tp = torch.tensor(p0, requires_grad=True)
    theirs = torch.optim.RMSprop([tp], lr=0.01, alpha=0.8, centered=True)
    for _ in range(4):
        g = rng.standard_normal(5)
        ours.step([p], [g])
        tp.grad = torch.tensor(g)
        theirs.step()
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-12, atol=1e-15)
    opt, q = RMSprop(0.01, alpha=0.1, centered=True), np.zeros(300)
    g = np.linspace(0.1, 3.0, 300)
    for _ in range(40):
        opt.step([q], [g])
    assert np.isfinite(q).all()


def test_regulariser_penalties():
    """``REG.l2``: ``(λ/2N) Σ‖W‖²``; ``REG.l1``: ``(λ/N) Σ|w|`` (what ``total_cost`` adds)."""
    from manual_bp.regularizers import L1, L2

    weights = [np.array([[1.0, -2.0]]), np.array([[3.0], [-0.5]])]
    assert L2(0.6).penalty(weights, 3) == pytest.approx(0.5 * 0.6 / 3 * (1 + 4 + 9 + 0.25))
    assert L1(0.6).penalty(weights, 3) == pytest.approx(0.6 / 3 * (1 + 2 + 3 + 0.5))


def test_gain_of_linear_maps_and_explicit_gains():
    """``calculate_gain`` as torch's (``"identity"``, the activation's name here, is linear:
    gain 1); an explicit ``gain`` overrides kaiming's default; Nielsen's large initialiser
    and the ``"nielsen-large"`` scheme are N(0, 1)."""
    from manual_bp.initializers import calculate_gain, initialize

    for name in ("linear", "conv2d", "sigmoid", "tanh", "relu", "selu"):
        assert calculate_gain(name) == pytest.approx(torch.nn.init.calculate_gain(name))
    assert calculate_gain("identity") == 1.0
    rng = np.random.default_rng(0)
    W = initialize({"name": "kaiming-normal", "gain": 3.0}, rng, (400, 100))
    assert abs(W.std() - 3.0 / np.sqrt(100)) < 0.01
    assert abs(initialize("nielsen-large", rng, (200, 200)).std() - 1.0) < 0.02
    net = Network([300, 200], initializer="large", seed=1)
    assert abs(np.asarray(net.weights[0]).std() - 1.0) < 0.02
