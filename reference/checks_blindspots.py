"""``verify`` checks covering the ground of ``tests/test_blindspots_*.py`` (issue 15).

* ``cost-target-forms``: every class cost with labels, one-hot rows and (where
  accepted) soft rows; the categorical cross-entropy on rows whose maxima differ by
  thousands; the KL cost with one-hot targets (entries exactly 1)
  (``COST.<name>``, ``COST.<name>.grad``);
* ``regularizer-l1-at-zero``: L1 with weights exactly 0 (subgradient 0, as torch's
  ``abs``) among random ones (``REG.l1``);
* ``fast-path-options``: ``train(..., fast=True)`` against ``torch.optim`` and its
  ``lr_scheduler`` twin, with a random optimizer carrying every option, a random
  regulariser and a random schedule (``OPT.*``, ``REG.*``, ``SCHED.*``).

Each returns :class:`~reference.compare.Comparison` objects tagged with the
equation IDs of the catalogue, so ``python -m manual_bp verify`` reports them.
"""

from __future__ import annotations

import numpy as np
import torch

from manual_bp.costs import COSTS, get_cost
from manual_bp.optimizers import SGD, Adagrad, Adam, AdamW, RMSprop
from manual_bp.regularizers import L1, L2
from manual_bp.schedules import CosineAnnealingLR, ExponentialLR, StepLR
from reference.cases import NetworkSpec, build_case, output_activations_for
from reference.checks import SMOOTH_ACTIVATIONS, register_check
from reference.compare import Comparison
from reference.components import torch_cost
from reference.optim import network_trajectories

__all__: list[str] = []

#: Costs whose training trajectories stay bounded at the rates used below.
_STABLE_COSTS = ("bce-logits", "categorical-cross-entropy", "cross-entropy", "quadratic")


def _cost_comparisons(cost, a: np.ndarray, rows: np.ndarray, y, form: str) -> list[Comparison]:
    """Value and per-sample gradient of ``cost`` on targets ``y`` (``rows`` = y as rows)."""
    at = torch.tensor(a, requires_grad=True)
    value = torch_cost(cost)(at, torch.tensor(rows))
    value.backward()
    grad = at.grad.numpy() * a.shape[0]
    return [
        Comparison(cost.equation_value, f"C ({form})", np.array(cost.value(a, y)), value.detach()),
        Comparison(cost.equation_grad, f"∂C_x/∂a ({form})", cost.grad(a, y), grad),
    ]


def _outputs(name: str, rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    logits = rng.standard_normal((n, k)) * 3
    if name == "log-likelihood":
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if name == "categorical-cross-entropy":  # rows with very different maxima
        return logits + rng.choice([-1000.0, 0.0, 1000.0], size=(n, 1))
    return logits


@register_check("cost-target-forms")
def cost_target_forms_check(rng: np.random.Generator) -> list[Comparison]:
    """Class costs with labels, one-hot and soft rows; KL with one-hot targets."""
    n, k = int(rng.integers(1, 9)), int(rng.integers(2, 7))
    out: list[Comparison] = []
    for name in COSTS.names():
        cost = get_cost(name)
        if cost.target_kind != "labels":
            continue
        a = _outputs(name, rng, n, k)
        labels = rng.integers(0, k, n)
        one_hot = np.eye(k)[labels]
        out += _cost_comparisons(cost, a, one_hot, labels, "labels")
        out += _cost_comparisons(cost, a, one_hot, one_hot, "one-hot")
        if not getattr(cost, "one_hot_only", False):
            soft = rng.exponential(size=(n, k))
            soft /= soft.sum(axis=1, keepdims=True)
            out += _cost_comparisons(cost, a, soft, soft, "soft")
    kl = get_cost("kl-divergence")
    logits = rng.standard_normal((n, k))
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    one_hot = np.eye(k)[rng.integers(0, k, n)]
    out += _cost_comparisons(kl, log_p, one_hot, one_hot, "one-hot, entries exactly 1")
    return out


@register_check("regularizer-l1-at-zero")
def l1_at_zero_check(rng: np.random.Generator) -> list[Comparison]:
    """REG.l1 with weights exactly 0 (sgn 0 = 0) among random ones, against autograd."""
    shape = tuple(int(s) for s in rng.integers(1, 7, size=2))
    weights = rng.standard_normal(shape)
    weights[rng.random(shape) < 0.4] = 0.0
    weights.flat[0] = 0.0
    lmbda, n = float(rng.uniform(0.1, 5)), int(rng.integers(1, 1000))
    grads = [np.zeros_like(weights)]
    L1(lmbda).add_gradient([weights], grads, n)
    tensor = torch.tensor(weights, requires_grad=True)
    (lmbda / n * tensor.abs().sum()).backward()
    penalty = np.array(L1(lmbda).penalty([weights], n))
    expected = np.array(lmbda / n * np.abs(weights).sum())
    return [
        Comparison("REG.l1", "∂R/∂W with exact zeros", grads[0], tensor.grad.numpy()),
        Comparison("REG.l1", "R with exact zeros", penalty, expected),
    ]


def _optimizer(rng: np.random.Generator) -> tuple[str, object]:
    """A random optimizer with every option drawn, and its equation ID."""
    wd = float(rng.choice([0.0, 0.3]))
    kind = str(rng.choice(["sgd", "nesterov", "adagrad", "rmsprop", "adam", "adamw"]))
    if kind == "sgd":
        momentum = float(rng.choice([0.0, 0.7]))
        opt = SGD(0.05, momentum=momentum, dampening=float(rng.choice([0.0, 0.3])), weight_decay=wd)
        return ("OPT.sgd-momentum" if momentum else "OPT.sgd"), opt
    if kind == "nesterov":
        return "OPT.sgd-nesterov", SGD(0.05, momentum=0.7, nesterov=True, weight_decay=wd)
    if kind == "adagrad":
        opt = Adagrad(0.05, lr_decay=0.1, weight_decay=wd, initial_accumulator_value=0.5)
        return "OPT.adagrad", opt
    if kind == "rmsprop":
        centered = bool(rng.random() < 0.5)
        opt = RMSprop(0.005, alpha=0.8, weight_decay=wd, momentum=0.5, centered=centered)
        return ("OPT.rmsprop-centered" if centered else "OPT.rmsprop"), opt
    amsgrad = bool(rng.random() < 0.5)
    if kind == "adamw":
        return "OPT.adamw", AdamW(0.01, beta1=0.5, weight_decay=0.1, amsgrad=amsgrad)
    return ("OPT.amsgrad" if amsgrad else "OPT.adam"), Adam(0.01, weight_decay=wd, amsgrad=amsgrad)


@register_check("fast-path-options")
def fast_path_options_check(rng: np.random.Generator) -> list[Comparison]:
    """train(fast=True) with a random optimizer/regulariser/schedule against torch, per epoch."""
    depth = int(rng.integers(1, 4))
    cost = str(rng.choice(_STABLE_COSTS))
    hidden = [str(rng.choice(SMOOTH_ACTIVATIONS)) for _ in range(depth - 1)]
    spec = NetworkSpec(
        sizes=tuple(int(s) for s in rng.integers(1, 6, size=depth + 1)),
        activations=(*hidden, str(rng.choice(output_activations_for(cost)))),
        cost=cost,
        batch=int(rng.integers(2, 9)),
        seed=int(rng.integers(2**31)),
    )
    net, x, y = build_case(spec)
    equation, opt = _optimizer(rng)
    reg_id, reg = [("", None), ("REG.l1", L1(0.3)), ("REG.l2", L2(0.8))][int(rng.integers(3))]
    sched_id, sched = [
        ("", None),
        ("SCHED.step", StepLR(step_size=2, gamma=0.5)),
        ("SCHED.exponential", ExponentialLR(gamma=0.7)),
        ("SCHED.cosine", CosineAnnealingLR(T_max=4, eta_min=0.001)),
    ][int(rng.integers(4))]
    batch_size = int(rng.integers(1, spec.batch + 1))
    try:
        trajectory = network_trajectories(
            net, x, y, opt, epochs=6, batch_size=batch_size, regularizer=reg,
            schedule=sched, seed=spec.seed, fast=True,
        )  # fmt: skip
    except FloatingPointError:  # diverged: nothing to compare
        return []
    out = []
    ids = [i for i in (equation, reg_id, sched_id) if i]
    for k, (ours, theirs) in enumerate(zip(trajectory.ours, trajectory.torch, strict=True)):
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            scale = np.full(a.shape, trajectory.scales[i])
            for eq in ids:  # the trajectory verifies every rule it went through
                out.append(Comparison(eq, f"fast {opt!r} θ[{i}] epoch {k + 1}", a, b, scale))
    return out
