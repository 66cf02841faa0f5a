"""Optimizer, regulariser and schedule checks for ``python -m manual_bp verify``.

Each check draws one random case and returns one :class:`Comparison` per
parameter array and step of a trajectory (ours vs ``torch.optim``), tagged with
the equation ID, with the trajectory's ``max|θ|`` as the tolerance scale.
"""

from __future__ import annotations

import numpy as np
import torch

from manual_bp.optimizers import SGD, Adagrad, Adam, AdamW, RMSprop
from manual_bp.regularizers import L1
from manual_bp.schedules import CosineAnnealingLR, ExponentialLR, StepLR
from reference.checks import register_check
from reference.compare import Comparison
from reference.optim import torch_optimizer, torch_schedule, trajectories

__all__: list[str] = []


def _problem(rng: np.random.Generator, steps: int = 20):
    shapes = [
        tuple(int(k) for k in rng.integers(1, 7, size=int(rng.integers(1, 3))))
        for _ in range(int(rng.integers(1, 5)))
    ]
    params = [rng.standard_normal(s) * float(rng.choice([0.1, 1.0, 10.0])) for s in shapes]
    sizes = 10.0 ** rng.uniform(-3, 1, size=steps)
    return params, [[rng.standard_normal(s) * size for s in shapes] for size in sizes]


def _draw(rng: np.random.Generator) -> list[tuple[str, object]]:
    lr = float(10 ** rng.uniform(-4, np.log10(0.5)))
    mu = float(rng.uniform(0.01, 0.99))
    wd = float(10 ** rng.uniform(-3, 0))
    eps = float(rng.choice([0.0, 1e-10, 1e-8, 1e-3]))
    b1, b2 = (float(b) for b in rng.uniform(0.0, 0.999, size=2))
    return [
        ("OPT.sgd-momentum", SGD(lr, momentum=mu, dampening=float(rng.uniform(0, 1)))),
        ("OPT.sgd-nesterov", SGD(lr, momentum=mu, nesterov=True)),
        ("OPT.weight-decay", SGD(lr, momentum=mu, weight_decay=wd)),
        ("OPT.weight-decay", Adam(lr, weight_decay=wd)),
        (
            "OPT.adagrad",
            Adagrad(
                lr,
                lr_decay=float(rng.uniform(0, 1)),
                eps=eps,
                initial_accumulator_value=float(rng.uniform(0, 1)),
            ),
        ),
        ("OPT.rmsprop", RMSprop(lr, alpha=b2, eps=eps, momentum=float(rng.choice([0, mu])))),
        ("OPT.rmsprop-centered", RMSprop(lr, alpha=max(b2, 0.5), eps=eps, centered=True)),
        ("OPT.adam", Adam(lr, beta1=b1, beta2=b2, eps=eps)),
        ("OPT.amsgrad", Adam(lr, beta1=b1, beta2=b2, eps=eps, amsgrad=True)),
        ("OPT.adamw", AdamW(lr, beta1=b1, beta2=b2, eps=eps, weight_decay=wd)),
    ]


@register_check("optimizer-trajectories")
def optimizer_trajectories_check(rng: np.random.Generator) -> list[Comparison]:
    """Every update rule, 20 steps on random arrays and gradients, against torch.optim."""
    params, grads = _problem(rng)
    out: list[Comparison] = []
    for equation, opt in _draw(rng):
        trajectory = trajectories(opt, params, grads)
        for k, (ours, theirs) in enumerate(zip(trajectory.ours, trajectory.torch, strict=True)):
            for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
                scale = np.full(a.shape, trajectory.scales[i])
                out.append(Comparison(equation, f"{opt!r} θ[{i}] step {k + 1}", a, b, scale))
    return out


@register_check("regularizer-l1")
def l1_check(rng: np.random.Generator) -> list[Comparison]:
    """REG.l1: (λ/N) sgn w against torch autograd of (λ/N) Σ|w|."""
    weights = [rng.standard_normal(tuple(int(k) for k in rng.integers(1, 7, size=2)))]
    lmbda, n = float(rng.uniform(0, 5)), int(rng.integers(1, 1000))
    grads = [np.zeros_like(weights[0])]
    L1(lmbda).add_gradient(weights, grads, n)
    tensor = torch.tensor(weights[0], requires_grad=True)
    (lmbda / n * tensor.abs().sum()).backward()
    return [Comparison("REG.l1", "∂R/∂W", grads[0], tensor.grad.numpy())]


@register_check("schedules")
def schedules_check(rng: np.random.Generator) -> list[Comparison]:
    """SCHED.*: the rate after each of up to 60 epochs against torch's get_last_lr()."""
    base = float(10 ** rng.uniform(-4, 1))
    epochs = int(rng.integers(1, 61))
    out = []
    for equation, schedule in (
        (
            "SCHED.step",
            StepLR(step_size=int(rng.integers(1, 11)), gamma=float(rng.uniform(0.01, 2))),
        ),
        ("SCHED.exponential", ExponentialLR(gamma=float(rng.uniform(0.5, 1.0)))),
        (
            "SCHED.cosine",
            CosineAnnealingLR(
                T_max=int(rng.integers(1, 31)), eta_min=float(rng.uniform(0, 1)) * base
            ),
        ),
    ):
        schedule.bind(SGD(base))
        twin = torch_schedule(schedule, torch_optimizer(SGD(base), [torch.zeros(1)]))
        ours, theirs = [], []
        for _ in range(epochs):
            twin.optimizer.step()
            twin.step()
            ours.append(schedule.step())
            theirs.append(twin.get_last_lr()[0])
        out.append(
            Comparison(
                equation,
                f"{schedule!r} η₁..η{epochs}",
                np.array(ours),
                np.array(theirs),
                np.full(epochs, base),
            )
        )
    return out
