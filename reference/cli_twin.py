"""The torch twin of a model the CLI trains: the same modules, weights, mini-batches, optimizer.

The twin is :func:`reference.interop.to_torch` (which converts the Transformer stacks too:
``nn.TransformerEncoder``/``nn.TransformerEncoderLayer``, batch-first, the layer's own
dropout). ``torch_training(...)`` trains that twin
as ``manual_bp.training.train`` trains the model: the epochs' mini-batches from
``iterate_minibatches`` with the same seed, the mean cross-entropy of the logits (the
library's softmax + log-likelihood), autograd's gradients and a ``torch.optim`` optimizer,
then per epoch the training and validation cost in evaluation mode (the ``History`` curve).

``trajectory_sensitivity(...)`` is the conditioning of the whole run: the library's training
repeated from initial parameters shaken by ``θ·(1 ± δ)`` and with every step's gradients moved
by ``±δ·max|g|``, ``|result(probe) − result| / δ`` per entry. Rounding is such a perturbation
of size ε, at the start and at every step; a run that amplifies δ by κ amplifies rounding as
much, so ``c·ε·max(max|θ|, κ)`` is the bound a correct implementation meets
(docs/conventions.md, "Precision and tolerances"; the stack tests' measured sensitivity, over
a whole run).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from manual_bp.models.sequential import Sequential
from manual_bp.training import iterate_minibatches, train
from reference.interop import to_torch

__all__ = [
    "Run",
    "library_training",
    "output_sensitivity",
    "torch_training",
    "trajectory_sensitivity",
]


@dataclass
class Run:
    """A training run: the per-epoch costs (evaluation mode) and the final parameters."""

    training_cost: list[float] = field(default_factory=list)
    evaluation_cost: list[float] = field(default_factory=list)
    params: dict[str, np.ndarray] = field(default_factory=dict)

    def values(self) -> dict[str, np.ndarray]:
        """Every compared quantity by name: the cost curves and each parameter."""
        curves = {"training cost": self.training_cost, "evaluation cost": self.evaluation_cost}
        return {**{k: np.asarray(v) for k, v in curves.items()}, **self.params}


def _logits(twin: nn.Sequential) -> nn.Sequential:
    if not isinstance(twin[-1], nn.Softmax):
        raise ValueError(f"the model must end in softmax (log-likelihood), got {twin[-1]}")
    return twin[:-1]


def torch_training(
    model: Sequential,
    data,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    make_optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer],
) -> tuple[Run, nn.Sequential]:
    """Train the torch twin of ``model`` (its current parameters) as the CLI trains ``model``."""
    twin = to_torch(model).train()
    body = _logits(twin)
    optimizer = make_optimizer(list(twin.parameters()))
    x, y = torch.tensor(data.x_train), torch.tensor(data.y_train)
    x_val, y_val = torch.tensor(data.x_val), torch.tensor(data.y_val)
    shuffle = np.random.default_rng(seed)
    run = Run()
    for _ in range(epochs):
        for index in iterate_minibatches(len(y), batch_size, shuffle):
            optimizer.zero_grad()
            F.cross_entropy(body(x[index]), y[index]).backward()
            optimizer.step()
        twin.eval()
        with torch.no_grad():
            run.training_cost.append(float(F.cross_entropy(body(x), y)))
            run.evaluation_cost.append(float(F.cross_entropy(body(x_val), y_val)))
        twin.train()
    run.params = {k: v.detach().numpy().copy() for k, v in twin.state_dict().items()}
    return run, twin.eval()


def library_training(model: Sequential, data, *, epochs: int, batch_size: int, seed: int,
                     optimizer) -> Run:  # fmt: skip
    """``manual_bp.training.train`` of a copy of ``model`` (the CLI's call, quiet)."""
    ours = model.copy()
    history = train(ours, data.x_train, data.y_train, epochs=epochs, batch_size=batch_size,
                    optimizer=optimizer, evaluation_data=(data.x_val, data.y_val),
                    monitor=("cost",), seed=seed)  # fmt: skip
    params = {k: np.array(v) for k, v in ours.state_dict().items()}
    return Run(history.training_cost, history.evaluation_cost, params)


def _signs(rng: np.random.Generator, shape: tuple[int, ...], alternate: bool) -> np.ndarray:
    signs = rng.choice([-1.0, 1.0], size=shape)
    if alternate:  # the paired pattern of reference.stack.paired_shakes
        signs = signs * np.where(np.arange(signs.size) % 2, -1.0, 1.0).reshape(shape)
    return signs


def _shaken_steps(optimizer, delta: float, alternate: bool) -> list[int]:
    """Perturb every gradient the optimizer receives by ``δ·r·max|g|`` (r = ±1): rounding
    moves a gradient by ε times the size of the terms summed into it, which the step's
    largest gradient stands for (a gradient exact-zero by symmetry, attention's key bias,
    is rounding noise that Adam divides by its own tiny √v + eps). Returns a step counter:
    a fused plain-SGD update never calls ``step`` and must not go unprobed."""
    rng, real, calls = np.random.default_rng(1), optimizer.step, [0]

    def step(params, grads):
        top = max(float(np.abs(g).max(initial=0.0)) for g in grads)
        for g in grads:
            g += delta * top * _signs(rng, g.shape, alternate)
        calls[0] += 1
        real(params, grads)

    optimizer.step = step  # an instance attribute: the trainer's ``opt.step`` finds it
    return calls


def trajectory_sensitivity(
    model: Sequential, data, *, make_optimizer: Callable[[], object], delta: float = 2.0**-26,
    **fit,
) -> tuple[Run, dict[str, np.ndarray]]:  # fmt: skip
    """The library's run and, per entry of every compared quantity, its condition number
    ``max |result(probe) − result| / δ`` over two probes: each the library's run from
    ``θ₀·(1 ± δ)`` with every step's gradients moved by ``±δ·max|g|`` (two sign patterns:
    random, and random with neighbours opposed). Rounding is such a perturbation of size ε,
    at the start and at every step."""
    run = library_training(model, data, optimizer=make_optimizer(), **fit)
    base = run.values()
    sensitivity = {k: np.zeros(np.shape(v)) for k, v in base.items()}
    for alternate in (False, True):
        shaken, rng = model.copy(), np.random.default_rng(0)
        for _, array in shaken.named_parameters():
            array[...] *= 1.0 + delta * _signs(rng, array.shape, alternate)
        optimizer = make_optimizer()
        calls = _shaken_steps(optimizer, delta, alternate)
        moved = library_training(shaken, data, optimizer=optimizer, **fit).values()
        if not calls[0]:
            raise ValueError(f"{optimizer!r} never called step (fused plain SGD): not probed")
        for k, v in moved.items():
            sensitivity[k] = np.maximum(sensitivity[k], np.abs(v - base[k]) / delta)
    return run, sensitivity


def output_sensitivity(model: Sequential, x: np.ndarray, delta: float = 2.0**-26) -> np.ndarray:
    """``max |infer(θ(1 ± δ)) − infer(θ)| / δ`` over the two sign patterns (evaluation mode)."""
    base, sensitivity = model.infer(x), 0.0
    for alternate in (False, True):
        shaken, rng = model.copy(), np.random.default_rng(0)
        for _, array in shaken.named_parameters():
            array[...] *= 1.0 + delta * _signs(rng, array.shape, alternate)
        sensitivity = np.maximum(sensitivity, np.abs(shaken.infer(x) - base) / delta)
    return sensitivity
