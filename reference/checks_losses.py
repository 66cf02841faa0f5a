"""Verification checks of the element-wise torch-named losses (``docs/losses.md``).

IDs: ``LOSS.reduction`` and ``LOSS.<name>``, ``LOSS.<name>.grad``, ``LOSS.<name>.hess`` for
``mse``, ``l1``, ``huber``, ``smooth-l1``, ``bce``, ``bce-logits``, ``kl-div``,
``poisson-nll``. Each case draws the loss's every option (reduction, ``delta``, ``beta``,
``weight``, ``pos_weight``, ``log_target``, ``log_input``, ``full``, ``eps``), an input of
rank 0–3 and a target of its shape (or, where torch broadcasts, a broadcastable one), and
one random ``grad_output`` of the value's shape; torch's module in float64 is the oracle of
the value, of both gradients, and (double backward) of the second derivative. The value and
the gradients carry a magnitude scale (:func:`loss_magnitudes`): a sum of elements of both
signs, and ``x − y``, ``eˣ − y``, ``(1 + (p − 1)y)σ − py`` cancel.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

import manual_bp.losses as losses
from manual_bp.losses._elementwise import sum_to_shape
from reference.checks import register_check
from reference.compare import Comparison

__all__ = ["ELEMENTWISE", "LossCase", "draw_case", "loss_comparisons", "ours", "torch_oracle"]

#: torch class name -> equation stem.
ELEMENTWISE = {
    "MSELoss": "mse",
    "L1Loss": "l1",
    "HuberLoss": "huber",
    "SmoothL1Loss": "smooth-l1",
    "BCELoss": "bce",
    "BCEWithLogitsLoss": "bce-logits",
    "KLDivLoss": "kl-div",
    "PoissonNLLLoss": "poisson-nll",
}
#: Losses whose target may have another (broadcastable) shape, as torch.
BROADCASTING = ("MSELoss", "L1Loss", "HuberLoss", "SmoothL1Loss", "KLDivLoss", "PoissonNLLLoss")


@dataclass
class LossCase:
    name: str
    kwargs: dict[str, Any]
    x: np.ndarray
    y: np.ndarray
    seed: int = 0
    notes: list[str] = field(default_factory=list)


def _shape(rng: np.random.Generator) -> tuple[int, ...]:
    return tuple(int(n) for n in rng.integers(1, 5, size=int(rng.integers(0, 4))))


def draw_case(rng: np.random.Generator, name: str, **options: Any) -> LossCase:
    """A random case of torch loss ``name``; ``options`` fix any keyword (and ``shape``,
    ``target_shape``) instead of drawing it."""
    shape = options.pop("shape", None)
    shape = _shape(rng) if shape is None else tuple(shape)
    target_shape = options.pop("target_shape", None)
    if target_shape is None:
        target_shape = shape
        if name in BROADCASTING and shape and rng.random() < 0.25:
            target_shape = shape[-1:]  # torch broadcasts it (and warns, for four of them)
    reductions = ["none", "mean", "sum"] + (["batchmean"] if name == "KLDivLoss" else [])

    def pick(key: str, draw: Any) -> Any:
        """``options[key]`` if given, else a draw (a callable, so nothing is drawn then)."""
        return options.pop(key) if key in options else draw()

    kwargs: dict[str, Any] = {"reduction": pick("reduction", lambda: str(rng.choice(reductions)))}
    full = np.broadcast_shapes(shape, tuple(target_shape))
    x = rng.standard_normal(shape) * float(rng.choice([0.5, 1.0, 3.0]))
    y = rng.standard_normal(target_shape)
    if name == "HuberLoss":
        kwargs["delta"] = pick("delta", lambda: float(rng.choice([0.25, 1.0, 2.0, 1.7])))
    elif name == "SmoothL1Loss":
        kwargs["beta"] = pick("beta", lambda: float(rng.choice([0.0, 0.5, 1.0, 1.7])))
    elif name in ("BCELoss", "BCEWithLogitsLoss"):
        size = full[-1:] if full and rng.random() < 0.5 else full
        weight = np.asarray(rng.uniform(0.1, 2.0, size)) if rng.random() < 0.5 else None
        kwargs["weight"] = pick("weight", lambda: weight)
        y = rng.random(target_shape) if rng.random() < 0.5 else rng.integers(0, 2, target_shape)
        y = np.asarray(y, dtype=np.float64)
        if name == "BCELoss":
            x = rng.uniform(0.02, 0.98, shape)
        else:
            pos = np.asarray(rng.uniform(0.1, 3.0, full[-1:])) if rng.random() < 0.5 else None
            kwargs["pos_weight"] = pick("pos_weight", lambda: pos)
    elif name == "KLDivLoss":
        kwargs["log_target"] = pick("log_target", lambda: bool(rng.random() < 0.5))
        x = np.log(rng.uniform(0.01, 1.0, shape))
        y = rng.uniform(0.01, 1.0, target_shape)
        if kwargs["log_target"]:
            y = np.log(y)
    elif name == "PoissonNLLLoss":
        kwargs["log_input"] = pick("log_input", lambda: bool(rng.random() < 0.5))
        kwargs["full"] = pick("full", lambda: bool(rng.random() < 0.5))
        kwargs["eps"] = pick("eps", lambda: float(rng.choice([1e-8, 1e-3, 0.1])))
        if not kwargs["log_input"]:
            x = rng.uniform(0.05, 4.0, shape)
        y = rng.integers(0, 7, target_shape).astype(np.float64)
        if kwargs["full"]:  # torch's target gradient is NaN at y = 0 with full (docs)
            y = np.where(y == 0, 0.5, y)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    for key, value in options.items():
        if key not in ("x", "y"):
            kwargs[key] = value
    x = np.asarray(options.get("x", x), dtype=np.float64)
    y = np.asarray(options.get("y", y), dtype=np.float64)
    return LossCase(name, kwargs, x, y)


def _torch_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {
        k: torch.from_numpy(np.asarray(v)) if isinstance(v, np.ndarray) else v
        for k, v in kwargs.items()
    }


def torch_oracle(case: LossCase, upstream: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """torch's value, ``∂input``, ``∂target`` and the second derivative's diagonal (double
    backward) under ``upstream`` (random of the value's shape when None)."""
    module = getattr(torch.nn, case.name)(**_torch_kwargs(case.kwargs))
    x = torch.tensor(case.x, requires_grad=True)
    y = torch.tensor(case.y, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = module(x, y)
    if upstream is None:
        upstream = np.random.default_rng(case.seed + 1).standard_normal(tuple(value.shape))
    g = torch.from_numpy(np.asarray(upstream, dtype=np.float64))
    dx, dy = torch.autograd.grad(value, (x, y), g, create_graph=True)
    (hess,) = torch.autograd.grad(dx, x, torch.ones_like(dx), allow_unused=True)
    # (L1's double backward is a ZeroTensor, which has no NumPy view: add a real zero)
    hess = torch.zeros_like(x) if hess is None else torch.zeros_like(x) + hess
    return {
        "value": value.detach().numpy(),
        "upstream": np.asarray(upstream),
        "input": dx.detach().numpy(),
        "target": dy.detach().numpy(),
        "hess": hess.detach().numpy(),
    }


def ours(case: LossCase, upstream: np.ndarray) -> dict[str, np.ndarray]:
    """The library's value, both gradients and the second derivative's diagonal."""
    loss = getattr(losses, case.name)(**case.kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value, cache = loss.forward(case.x, case.y)
    dx, dy = loss.backward(upstream, cache)
    return {
        "value": value,
        "input": dx,
        "target": dy,
        "hess": loss.hessian_diagonal(upstream, cache),
    }


def _term_magnitudes(case: LossCase, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """Element-wise sums of the absolute values of the terms of ``ℓ``, ``∂ℓ/∂x`` and
    ``∂ℓ/∂y`` (the a-priori rounding bounds of each formula, divided by ε)."""
    k, a = case.kwargs, np.abs
    w = 1.0 if k.get("weight") is None else a(k["weight"])
    if case.name in ("MSELoss", "L1Loss", "HuberLoss", "SmoothL1Loss"):
        loss = getattr(losses, case.name)(**k)
        with np.errstate(all="ignore"):
            d = a(x) + a(y)
            beta = k.get("beta", 1.0) if case.name == "SmoothL1Loss" else 1.0
            grad = d * (2.0 if case.name == "MSELoss" else 1.0 / beta if beta else 0.0) + 1.0
            return a(loss.elements(x, y)) + d * a(loss.partials(x, y)[0]), grad, grad
    if case.name == "BCELoss":
        lx, l1 = a(np.maximum(np.log(x), -100)), a(np.maximum(np.log1p(-x), -100))
        value = w * (a(y) * lx + a(1 - y) * l1)
        grad = w * (a(x) + a(y)) / np.maximum(x * (1 - x), 1e-12)
        return value, grad, w * (lx + l1)
    if case.name == "BCEWithLogitsLoss":
        p = 1.0 if k.get("pos_weight") is None else a(k["pos_weight"])
        sp, s = np.logaddexp(0, -x), 1 / (1 + np.exp(-x))
        big = 1 + (p + 1) * a(y)
        return (
            w * (a(1 - y) * a(x) + big * sp),
            w * (big * s + p * a(y)),
            w * (a(x) + (p + 1) * sp),
        )
    if case.name == "KLDivLoss":
        if k.get("log_target"):
            e = np.exp(y)
            return e * (a(y) + a(x)), e, e * (a(y) + a(x) + 1)
        return a(y) * (a(np.log(y)) + a(x)), a(y), a(np.log(y)) + 1 + a(x)
    # PoissonNLLLoss
    stirling = a(y) * a(np.log(np.maximum(y, 1))) + a(y) + 2 if k.get("full") else 0.0
    if k.get("log_input", True):
        return np.exp(x) + a(y * x) + stirling, np.exp(x) + a(y), a(x) + stirling
    eps = k.get("eps", 1e-8)
    log = a(np.log(x + eps))
    return a(x) + a(y) * log + stirling, 1 + a(y) / (x + eps), log + stirling


def loss_magnitudes(case: LossCase, upstream: np.ndarray) -> tuple[np.ndarray, ...]:
    """Magnitude scales ``S`` of the value, ``∂input`` and ``∂target``: the same reduction
    and VJP on absolute values (docs/conventions.md, "Precision and tolerances")."""
    x, y = np.broadcast_arrays(case.x, case.y)
    with np.errstate(all="ignore"):
        value_terms, dx_terms, dy_terms = _term_magnitudes(case, x, y)
    reduction = case.kwargs["reduction"]
    n = max(x.size, 1)
    if reduction == "none":
        up, s_value = np.abs(upstream), value_terms
    else:
        divisor = {"sum": 1, "mean": n, "batchmean": case.x.shape[0] if case.x.ndim else 1}
        up = np.full(x.shape, abs(float(upstream)) / divisor[reduction])
        s_value = np.sum(value_terms) / divisor[reduction]
    s_dx = sum_to_shape(np.broadcast_to(up * dx_terms, x.shape), case.x.shape)
    s_dy = sum_to_shape(np.broadcast_to(up * dy_terms, x.shape), case.y.shape)
    return np.asarray(s_value), s_dx, s_dy


def loss_comparisons(case: LossCase) -> list[Comparison]:
    """The value, both gradients and the second derivative of one case against torch, and
    ``LOSS.reduction`` (the reduction and its VJP against torch's on torch's elements)."""
    stem = ELEMENTWISE[case.name]
    theirs = torch_oracle(case)
    upstream = theirs["upstream"]
    mine = ours(case, upstream)
    s_value, s_dx, s_dy = loss_magnitudes(case, upstream)
    comparisons = [
        Comparison(f"LOSS.{stem}", "value", mine["value"], theirs["value"], scale=s_value),
        Comparison(f"LOSS.{stem}.grad", "∂input", mine["input"], theirs["input"], scale=s_dx),
        Comparison(f"LOSS.{stem}.grad", "∂target", mine["target"], theirs["target"], scale=s_dy),
        Comparison(
            f"LOSS.{stem}.hess",
            "∂²/∂input² (diagonal)",
            mine["hess"],
            theirs["hess"],
            scale=np.abs(mine["hess"]) + np.abs(theirs["hess"]),
        ),
    ]
    return comparisons + reduction_comparisons(case)


def reduction_comparisons(case: LossCase) -> list[Comparison]:
    """``LOSS.reduction``: :func:`manual_bp.losses.reduce` and ``reduce_vjp`` of torch's
    unreduced elements against torch's own reduction and its autograd."""
    reduction = case.kwargs["reduction"]
    if reduction == "batchmean":
        return []
    kwargs = {**case.kwargs, "reduction": "none"}
    module = getattr(torch.nn, case.name)(**_torch_kwargs(kwargs))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        elements = module(torch.tensor(case.x), torch.tensor(case.y)).detach()
    leaf = elements.clone().requires_grad_(True)
    reduced = {"none": leaf, "sum": leaf.sum(), "mean": leaf.mean()}[reduction]
    g = np.random.default_rng(case.seed + 2).standard_normal(tuple(reduced.shape))
    (vjp,) = torch.autograd.grad(reduced, leaf, torch.from_numpy(g))
    ell = elements.numpy()
    scale = (
        np.abs(ell)
        if reduction == "none"
        else np.asarray(np.sum(np.abs(ell)) / (ell.size if reduction == "mean" else 1))
    )
    return [
        Comparison(
            "LOSS.reduction",
            "value",
            losses.reduce(ell, reduction),
            reduced.detach().numpy(),
            scale=scale,
        ),
        Comparison(
            "LOSS.reduction", "VJP", losses.reduce_vjp(g, ell.shape, reduction), vjp.numpy()
        ),
    ]


@register_check("losses")
def losses_check(rng: np.random.Generator) -> list[Comparison]:
    """One random case of every element-wise torch-named loss against torch."""
    comparisons = []
    for name in ELEMENTWISE:
        case = draw_case(rng, name)
        case.seed = int(rng.integers(2**31))
        comparisons += loss_comparisons(case)
    return comparisons
