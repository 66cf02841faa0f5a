"""Learning-rate schedules, stepped once per epoch, equal to ``torch.optim.lr_scheduler``.

A schedule is bound to an optimizer (``StepLR(optimizer, step_size=10)`` or
later with :meth:`Schedule.bind`); binding records the base rate ``η₀ =
optimizer.lr`` at epoch 0. Every :meth:`Schedule.step` advances the epoch
``t`` by one and sets ``optimizer.lr = ηₜ``. ``training.train(...,
schedule=...)`` calls it after every epoch, so epoch ``t + 1`` trains with
``ηₜ`` (torch's ``scheduler.step()`` at the end of an epoch).

The rates are computed with torch's *recursive* ("chainable") formulas from
the previous rate, so that they agree with torch to rounding; the closed forms
are in ``docs/optimizers.md``.
"""

from __future__ import annotations

import math
from typing import Any

from manual_bp._registry import Configurable, Registry
from manual_bp.optimizers.base import Optimizer, check_hyperparameter

__all__ = [
    "SCHEDULES",
    "CosineAnnealingLR",
    "ExponentialLR",
    "Schedule",
    "StepLR",
    "get_schedule",
]


class Schedule(Configurable):
    """Base class: ``next_lr(t, lr)`` gives ηₜ from ηₜ₋₁ (t ≥ 1)."""

    equation = ""

    def __init__(self, optimizer: Optimizer | None = None) -> None:
        self.optimizer: Optimizer | None = None
        self.base_lr: float | None = None
        self.last_epoch = 0
        if optimizer is not None:
            self.bind(optimizer)

    def bind(self, optimizer: Optimizer) -> Schedule:
        """Attach to ``optimizer`` at epoch 0 with ``η₀ = optimizer.lr``.

        Binding again to the same optimizer is a no-op; to another one, an error.
        """
        if self.optimizer is optimizer:
            return self
        if self.optimizer is not None:
            raise ValueError(f"{self!r} is already bound to {self.optimizer!r}")
        if not hasattr(optimizer, "lr"):
            raise TypeError(f"cannot schedule {optimizer!r}: it has no 'lr' attribute")
        self.optimizer = optimizer
        self.base_lr = float(optimizer.lr)
        self.last_epoch = 0
        return self

    def step(self) -> float:
        """Advance one epoch; set and return ``optimizer.lr = ηₜ``."""
        if self.optimizer is None:
            raise RuntimeError(f"{self!r} is not bound to an optimizer; call bind(optimizer)")
        self.last_epoch += 1
        self.optimizer.lr = self.next_lr(self.last_epoch, self.optimizer.lr)
        return self.optimizer.lr

    def get_last_lr(self) -> list[float]:
        """The current rate as a one-element list, as torch's ``get_last_lr()`` (one entry
        per parameter group; an optimizer here has one group)."""
        if self.optimizer is None:
            raise RuntimeError(f"{self!r} is not bound to an optimizer")
        return [self.optimizer.lr]

    def next_lr(self, t: int, lr: float) -> float:
        raise NotImplementedError


SCHEDULES = Registry("schedule", Schedule)


@SCHEDULES.register
class StepLR(Schedule):
    """``ηₜ = η₀ · γ^⌊t / step_size⌋``. Equation ``SCHED.step``.

    Parameters
    ----------
    optimizer : Optimizer, optional
    step_size : int
        Epochs between decays (≥ 1).
    gamma : float
        Factor γ > 0.
    """

    name = "step"
    aliases = ("steplr",)
    equation = "SCHED.step"
    hyperparameters = ("step_size", "gamma")

    def __init__(
        self, optimizer: Optimizer | None = None, step_size: int = 30, gamma: float = 0.1
    ) -> None:
        if isinstance(step_size, bool) or not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"step_size must be a positive integer, got {step_size!r}")
        self.step_size = step_size
        self.gamma = check_hyperparameter("gamma", gamma, closed="neither")
        super().__init__(optimizer)

    def next_lr(self, t: int, lr: float) -> float:
        """SCHED.step: multiply by γ at every multiple of step_size."""
        return lr * self.gamma if t % self.step_size == 0 else lr


@SCHEDULES.register
class ExponentialLR(Schedule):
    """``ηₜ = η₀ · γᵗ``. Equation ``SCHED.exponential``.

    Parameters
    ----------
    optimizer : Optimizer, optional
    gamma : float
        Factor γ > 0 per epoch.
    """

    name = "exponential"
    aliases = ("exponentiallr",)
    equation = "SCHED.exponential"
    hyperparameters = ("gamma",)

    def __init__(self, optimizer: Optimizer | None = None, gamma: float = 0.9) -> None:
        self.gamma = check_hyperparameter("gamma", gamma, closed="neither")
        super().__init__(optimizer)

    def next_lr(self, t: int, lr: float) -> float:
        """SCHED.exponential: ηₜ = γ ηₜ₋₁."""
        return lr * self.gamma


@SCHEDULES.register
class CosineAnnealingLR(Schedule):
    """``ηₜ = η_min + (η₀ − η_min)(1 + cos(π t / T))/2``. Equation ``SCHED.cosine``.

    Computed as torch does, from the previous rate::

        ηₜ = η_min + (ηₜ₋₁ − η_min) · (1 + cos(π t/T)) / (1 + cos(π (t−1)/T))

    and, where that ratio is 0/0 (t − 1 − T a multiple of 2T),
    ``ηₜ = ηₜ₋₁ + (η₀ − η_min)(1 − cos(π/T))/2``. Past ``T`` the rate rises
    again (torch's behaviour: a cosine of period 2T, no restart).

    Parameters
    ----------
    optimizer : Optimizer, optional
    T_max : int
        Half-period T ≥ 1 in epochs.
    eta_min : float
        Minimum rate ≥ 0.
    """

    name = "cosine"
    aliases = ("cosineannealinglr", "cosine-annealing")
    equation = "SCHED.cosine"
    hyperparameters = ("T_max", "eta_min")

    def __init__(
        self, optimizer: Optimizer | None = None, T_max: int = 10, eta_min: float = 0.0
    ) -> None:
        if isinstance(T_max, bool) or not isinstance(T_max, int) or T_max < 1:
            raise ValueError(f"T_max must be a positive integer, got {T_max!r}")
        self.T_max = T_max
        self.eta_min = check_hyperparameter("eta_min", eta_min)
        super().__init__(optimizer)

    def next_lr(self, t: int, lr: float) -> float:
        """SCHED.cosine, torch's recursive form (see the class docstring)."""
        T, low = self.T_max, self.eta_min
        if (t - 1 - T) % (2 * T) == 0:
            return lr + (self.base_lr - low) * (1 - math.cos(math.pi / T)) / 2
        ratio = (1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T))
        return ratio * (lr - low) + low


def cosine_closed_form(t: int, base_lr: float, T_max: int, eta_min: float = 0.0) -> float:
    """SCHED.cosine in closed form (the reference for t ≤ T_max)."""
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * t / T_max)) / 2


def get_schedule(spec: str | Schedule | type[Schedule] | dict[str, Any]) -> Schedule:
    """An unbound :class:`Schedule` from a name, class, instance or config dict."""
    return SCHEDULES.get(spec)
