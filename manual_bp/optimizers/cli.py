"""Command-line options for optimizers and learning-rate schedules.

``add_optimizer_arguments(parser)`` adds ``--optimizer`` and the
hyper-parameters of every rule (``--momentum``, ``--beta1``, ...) plus
``--schedule`` and its options; ``optimizer_from_args(args)`` and
``schedule_from_args(args)`` build the objects, or return ``None`` when no
such option was given (plain SGD with ``--eta``, constant rate);
``step_from_args(args)`` gives the keyword arguments of
:func:`manual_bp.training.train` that say how to step: the one call a command makes.

The path is one-way: a command calls these helpers and hands their result to
``train`` unchanged; nothing here imports a command. The learning rate is decided
in one place, :func:`learning_rate`: ``--lr`` when given, else ``--eta`` for SGD,
else the rule's torch default (Adam 1e-3, Adagrad and RMSprop 1e-2), so that
``--optimizer adam`` does not inherit SGD's η. With no optimizer option at all,
η goes to ``train(eta=…)`` as given and becomes SGD's ``lr`` there, once. An
option that the chosen optimizer does not have is an error naming it.
"""

from __future__ import annotations

import argparse
from typing import Any

from manual_bp._argtypes import finite_float
from manual_bp.optimizers.base import OPTIMIZERS, Optimizer
from manual_bp.schedules import SCHEDULES, Schedule

__all__ = [
    "add_optimizer_arguments",
    "learning_rate",
    "optimizer_from_args",
    "schedule_from_args",
    "step_from_args",
]

#: option dest -> (hyper-parameter name, type, help); ``bool`` options are flags.
_OPTIMIZER_OPTIONS: dict[str, tuple[str, type, str]] = {
    "lr": ("lr", float, "learning rate (default: --eta for sgd, else the rule's default)"),
    "momentum": ("momentum", float, "momentum μ (sgd, rmsprop)"),
    "dampening": ("dampening", float, "dampening τ (sgd)"),
    "nesterov": ("nesterov", bool, "Nesterov momentum (sgd)"),
    "weight_decay": ("weight_decay", float, "torch-style weight decay, biases included"),
    "lr_decay": ("lr_decay", float, "rate decay (adagrad)"),
    "initial_accumulator_value": ("initial_accumulator_value", float, "S₀ (adagrad)"),
    "alpha": ("alpha", float, "smoothing α (rmsprop)"),
    "centered": ("centered", bool, "centred variance (rmsprop)"),
    "beta1": ("beta1", float, "β₁ (adam, adamw)"),
    "beta2": ("beta2", float, "β₂ (adam, adamw)"),
    "eps": ("eps", float, "ε added to the root (adagrad, rmsprop, adam, adamw)"),
    "amsgrad": ("amsgrad", bool, "AMSGrad variant (adam, adamw)"),
}
_SCHEDULE_OPTIONS: dict[str, tuple[str, type, str]] = {
    "step_size": ("step_size", int, "epochs between decays (step)"),
    "gamma": ("gamma", float, "decay factor γ (step, exponential)"),
    "t_max": ("T_max", int, "half-period T in epochs (cosine; default: --epochs)"),
    "eta_min": ("eta_min", float, "minimum rate (cosine)"),
}


def add_optimizer_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add ``--optimizer``, its hyper-parameters, ``--schedule`` and its options.

    Given a parser (not a group), they go into two argument groups of their own.
    """
    schedule_group = parser
    if isinstance(parser, argparse.ArgumentParser):
        schedule_group = parser.add_argument_group("learning-rate schedule (per epoch)")
        parser = parser.add_argument_group("optimizer (docs/optimizers.md)")
    parser.add_argument(
        "--optimizer",
        choices=OPTIMIZERS.names(),
        default=None,
        help="update rule (default: plain SGD with --eta); see docs/optimizers.md",
    )
    _add_options(parser, _OPTIMIZER_OPTIONS)
    schedule_group.add_argument(
        "--schedule",
        choices=SCHEDULES.names(),
        default=None,
        help="learning-rate schedule, stepped per epoch (default: constant)",
    )
    _add_options(schedule_group, _SCHEDULE_OPTIONS)


def _add_options(parser, options: dict[str, tuple[str, type, str]]) -> None:
    for dest, (_, kind, text) in options.items():
        flag = "--" + dest.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, dest=dest, action="store_true", default=None, help=text)
        else:
            kind = finite_float if kind is float else kind
            parser.add_argument(flag, dest=dest, type=kind, default=None, help=text)


def _given(args: argparse.Namespace, options: dict[str, tuple[str, type, str]]) -> dict[str, Any]:
    return {
        name: getattr(args, dest)
        for dest, (name, _, _) in options.items()
        if getattr(args, dest, None) is not None
    }


def optimizer_from_args(args: argparse.Namespace) -> Optimizer | None:
    """The optimizer the options describe, or ``None`` for plain SGD with ``--eta``.

    Raises
    ------
    ValueError
        An option the chosen optimizer does not have, or a bad value.
    """
    params = _given(args, _OPTIMIZER_OPTIONS)
    name = getattr(args, "optimizer", None)
    if name is None and not params:
        return None
    cls = OPTIMIZERS.lookup(name or "sgd")
    unknown = sorted(set(params) - set(cls.hyperparameters))
    if unknown:
        raise ValueError(
            f"optimizer {cls.name!r} has no option(s) "
            f"{', '.join('--' + u.replace('_', '-') for u in unknown)}"
        )
    lr = learning_rate(cls, params.pop("lr", None), getattr(args, "eta", None))
    return cls(**params) if lr is None else cls(lr=lr, **params)


def learning_rate(cls: type[Optimizer], lr: float | None, eta: float | None) -> float | None:
    """The rate of ``cls``: ``--lr``, else η for SGD (``OPT.sgd``: η is its ``lr``), else
    ``None`` (the rule's own default). The only place the CLI turns η into a rate."""
    if lr is not None:
        return lr
    return eta if cls.name == "sgd" else None


def step_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :func:`manual_bp.training.train`: ``{"eta": η}`` for plain SGD
    (no optimizer option given) or ``{"optimizer": …}``, plus ``"schedule"`` when one is.

    Raises
    ------
    ValueError
        As :func:`optimizer_from_args` and :func:`schedule_from_args`.
    """
    optimizer = optimizer_from_args(args)
    step: dict[str, Any] = {"eta": args.eta} if optimizer is None else {"optimizer": optimizer}
    schedule = schedule_from_args(args)
    if schedule is not None:
        step["schedule"] = schedule
    return step


def schedule_from_args(args: argparse.Namespace) -> Schedule | None:
    """The (unbound) schedule the options describe, or ``None`` for a constant rate."""
    params = _given(args, _SCHEDULE_OPTIONS)
    name = getattr(args, "schedule", None)
    if name is None:
        if params:
            raise ValueError(f"schedule option(s) {sorted(params)} given without --schedule")
        return None
    cls = SCHEDULES.lookup(name)
    if cls.name == "cosine" and "T_max" not in params and getattr(args, "epochs", None):
        params["T_max"] = args.epochs
    unknown = sorted(set(params) - set(cls.hyperparameters))
    if unknown:
        raise ValueError(f"schedule {cls.name!r} has no option(s) {unknown}")
    return cls(**params)
