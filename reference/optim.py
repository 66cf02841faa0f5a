"""The torch side of the optimizer checks: ``torch.optim`` built from ours.

:func:`torch_optimizer` maps a manual_bp optimizer to its ``torch.optim``
namesake with the same hyper-parameters; :func:`torch_schedule` does the same
for learning-rate schedules. :func:`trajectories` runs both for ``steps``
steps from the same parameters with the same random gradients and returns the
parameters after every step; :func:`network_trajectories` trains our
Network from its own gradients and a torch copy from autograd's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from manual_bp import Network
from manual_bp.optimizers import SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop
from manual_bp.regularizers import L1, L2, Regularizer
from manual_bp.schedules import CosineAnnealingLR, ExponentialLR, Schedule, StepLR
from reference.network import _forward, _loss

__all__ = [
    "Trajectory",
    "network_trajectories",
    "torch_optimizer",
    "torch_schedule",
    "trajectories",
]


def torch_optimizer(opt: Optimizer, params) -> torch.optim.Optimizer:
    """``torch.optim`` optimizer with ``opt``'s hyper-parameters over ``params``
    (tensors, or param-group dicts)."""
    if isinstance(opt, SGD):
        return torch.optim.SGD(
            params,
            lr=opt.lr,
            momentum=opt.momentum,
            dampening=opt.dampening,
            nesterov=opt.nesterov,
            weight_decay=opt.weight_decay,
        )
    if isinstance(opt, Adagrad):
        return torch.optim.Adagrad(
            params,
            lr=opt.lr,
            lr_decay=opt.lr_decay,
            weight_decay=opt.weight_decay,
            initial_accumulator_value=opt.initial_accumulator_value,
            eps=opt.eps,
        )
    if isinstance(opt, RMSprop):
        return torch.optim.RMSprop(
            params,
            lr=opt.lr,
            alpha=opt.alpha,
            eps=opt.eps,
            weight_decay=opt.weight_decay,
            momentum=opt.momentum,
            centered=opt.centered,
        )
    if isinstance(opt, Adam):  # AdamW too
        cls = torch.optim.AdamW if isinstance(opt, AdamW) else torch.optim.Adam
        return cls(
            params,
            lr=opt.lr,
            betas=(opt.beta1, opt.beta2),
            eps=opt.eps,
            weight_decay=opt.weight_decay,
            amsgrad=opt.amsgrad,
        )
    raise TypeError(f"no torch.optim counterpart for {opt!r}")


def torch_schedule(schedule: Schedule, optimizer: torch.optim.Optimizer):
    """``torch.optim.lr_scheduler`` counterpart of an (unbound or bound) schedule."""
    sched = torch.optim.lr_scheduler
    if isinstance(schedule, StepLR):
        return sched.StepLR(optimizer, step_size=schedule.step_size, gamma=schedule.gamma)
    if isinstance(schedule, ExponentialLR):
        return sched.ExponentialLR(optimizer, gamma=schedule.gamma)
    if isinstance(schedule, CosineAnnealingLR):
        return sched.CosineAnnealingLR(optimizer, T_max=schedule.T_max, eta_min=schedule.eta_min)
    raise TypeError(f"no torch.optim.lr_scheduler counterpart for {schedule!r}")


@dataclass
class Trajectory:
    """Parameters after every step: ``ours[k][i]`` is array i after step k + 1."""

    ours: list[list[np.ndarray]]
    torch: list[list[np.ndarray]]
    #: max |θ| over the trajectory, per array (the tolerance's scale).
    scales: list[float]


def trajectories(
    opt: Optimizer,
    params: list[np.ndarray],
    grads: list[list[np.ndarray]],
    *,
    flat: bool = False,
) -> Trajectory:
    """Run ``opt`` and its torch twin for ``len(grads)`` steps from ``params``.

    ``grads[k][i]`` is the gradient of array i at step k. With ``flat``, ours
    is given one concatenated buffer (and flat gradients) instead of the list.
    """
    ours = [np.array(p, dtype=np.float64) for p in params]
    tensors = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in params]
    twin = torch_optimizer(opt, tensors)
    out = Trajectory([], [], [0.0] * len(params))
    if flat:
        buffer = np.concatenate([p.ravel() for p in ours])
    for step_grads in grads:
        if flat:
            opt.step(buffer, np.concatenate([g.ravel() for g in step_grads]))
            ours = _split(buffer, params)
        else:
            opt.step(ours, step_grads)
        for t, g in zip(tensors, step_grads, strict=True):
            t.grad = torch.tensor(g, dtype=torch.float64)
        twin.step()
        out.ours.append([p.copy() for p in ours])
        out.torch.append([t.detach().numpy().copy() for t in tensors])
        out.scales = [
            max(s, float(np.abs(p).max(initial=0.0))) for s, p in zip(out.scales, ours, strict=True)
        ]
    return out


def _split(buffer: np.ndarray, like: list[np.ndarray]) -> list[np.ndarray]:
    parts, start = [], 0
    for p in like:
        parts.append(buffer[start : start + p.size].reshape(p.shape).copy())
        start += p.size
    return parts


def torch_regularised_groups(
    weights: list[torch.Tensor],
    biases: list[torch.Tensor],
    regularizer: Regularizer | None,
    n: int,
    opt: Optimizer,
):
    """Param groups equal to our regulariser where torch has one built in.

    Nielsen's L2 (weights only) = ``weight_decay`` raised by ``λ/N`` on a group
    holding only the weights (``REG.l2`` / ``OPT.weight-decay``), for every
    optimizer whose ``weight_decay`` is coupled. AdamW's is decoupled and L1 has
    no torch option: those are added to the loss instead (:func:`torch_penalty`).
    """
    if isinstance(regularizer, L2) and not isinstance(opt, AdamW):
        own = getattr(opt, "weight_decay", 0.0)
        return [
            {"params": weights, "weight_decay": own + regularizer.lmbda / n},
            {"params": biases, "weight_decay": own},
        ]
    return [*weights, *biases]


def torch_penalty(weights: list[torch.Tensor], regularizer: Regularizer | None, n: int, opt):
    """The regulariser as a term of torch's loss, where no param group expresses it."""
    if isinstance(regularizer, L1):
        return regularizer.lmbda / n * sum(W.abs().sum() for W in weights)
    if isinstance(regularizer, L2) and isinstance(opt, AdamW):
        return regularizer.lmbda / (2 * n) * sum((W * W).sum() for W in weights)
    return 0.0


def network_trajectories(
    net: Network,
    x: np.ndarray,
    y: np.ndarray,
    opt: Optimizer,
    *,
    epochs: int,
    batch_size: int | None = None,
    regularizer: Regularizer | None = None,
    schedule: Schedule | None = None,
    seed: int = 0,
    fast: bool | None = None,
) -> Trajectory:
    """Train a copy of ``net`` with :func:`manual_bp.training.train` and a torch twin.

    ``fast`` is passed to ``train`` (fused FastTrainer or the readable backprop loop).

    Ours: ``train(copy, x, y, optimizer=opt, regularizer=..., schedule=...)``
    from our backprop; parameters recorded after every epoch. Torch: the same
    mini-batches (``iterate_minibatches`` with the same seed), autograd
    gradients, the ``torch.optim`` twin of ``opt`` and of ``schedule``
    (stepped per epoch). With ``batch_size=None`` (full batch) an epoch is one
    step, so parameters are compared after every step. Regularisers: L2 as
    ``weight_decay=λ/N`` on a weights-only param group, L1 as ``(λ/N)Σ|w|``
    added to the loss. ``opt`` and ``schedule`` must be fresh.
    """
    from manual_bp._validation import as_targets
    from manual_bp.training import iterate_minibatches, train

    n = x.shape[0]
    batch_size = batch_size or n
    weights = [torch.tensor(W, dtype=torch.float64, requires_grad=True) for W in net.weights]
    biases = [torch.tensor(b, dtype=torch.float64, requires_grad=True) for b in net.biases]
    twin = torch_optimizer(opt, torch_regularised_groups(weights, biases, regularizer, n, opt))
    twin_schedule = torch_schedule(schedule, twin) if schedule is not None else None
    targets = torch.tensor(as_targets(y, net.sizes[-1], n, np.float64))
    inputs = torch.tensor(np.asarray(x, dtype=np.float64))
    shuffle = np.random.default_rng(seed)
    out = Trajectory([], [], [0.0] * (2 * len(weights)))
    ours = net.copy()

    def torch_epoch() -> None:
        for index in iterate_minibatches(n, batch_size, shuffle):
            twin.zero_grad()
            zs, activations = _forward(net, (weights, biases), inputs[index])
            loss = _loss(net, zs, activations, targets[index], fused=True)
            loss = loss + torch_penalty(weights, regularizer, n, opt)
            loss.backward()
            twin.step()
        if twin_schedule is not None:
            twin_schedule.step()

    def record(epoch: int, history) -> None:
        torch_epoch()
        params = [*ours.weights, *ours.biases]
        out.ours.append([np.array(p) for p in params])
        out.torch.append([t.detach().numpy().copy() for t in (*weights, *biases)])
        out.scales = [
            max(s, float(np.abs(p).max(initial=0.0)))
            for s, p in zip(out.scales, params, strict=True)
        ]

    train(
        ours,
        x,
        y,
        epochs=epochs,
        batch_size=batch_size,
        optimizer=opt,
        regularizer=regularizer,
        schedule=schedule,
        monitor=(),
        seed=seed,
        callbacks=[record],
        fast=fast,
    )
    return out
