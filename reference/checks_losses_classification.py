"""Checks of torch's classification losses: ``CrossEntropyLoss``, ``NLLLoss`` and
``MultiMarginLoss`` against torch's own modules in float64 (``LOSS.cross-entropy*``,
``LOSS.nll*``, ``LOSS.multi-margin*``).

A case is a dict of options (:func:`draw_class_case`, :func:`draw_margin_case`): the input
form (``(C)``, ``(N, C)``, ``(N, C, d…)``), class weights, ``ignore_index`` absent, present
or covering every target, label smoothing 0, inside ``(0, 1)`` or 1, both target forms,
the reduction, and the logits' magnitude (1, or 700 for saturation). Each comparison runs a
random ``grad_output`` of the value's shape; the Hessian is checked as a product with a
random direction against torch's double backward (for the multi-margin hinge, of the same
formula in torch primitives: torch's kernel has no double backward). Magnitude bounds
(docs/conventions.md, "Precision and tolerances") carry the rounding of ``log_softmax`` at
large logits: ``ε·|z|`` in each log-probability.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from manual_bp.losses import CrossEntropyLoss, MultiMarginLoss, NLLLoss
from manual_bp.losses.classification import log_softmax_rows
from reference.checks import register_check
from reference.compare import Comparison

__all__ = [
    "class_loss_comparisons",
    "draw_class_case",
    "draw_margin_case",
    "margin_loss_comparisons",
]

REDUCTIONS = ("none", "mean", "sum")


def draw_class_case(rng: np.random.Generator, loss: str = "cross-entropy") -> dict[str, Any]:
    """Options of one random ``CrossEntropyLoss``/``NLLLoss`` case (every option drawn)."""
    n_classes = int(rng.integers(1, 6))
    form = ("1d", "2d", "kd")[int(rng.integers(3))]
    extra = tuple(int(d) for d in rng.integers(1, 4, size=int(rng.integers(1, 3))))
    soft = loss == "cross-entropy" and bool(rng.integers(2))
    ignore = "absent" if soft else ("absent", "present", "all")[int(rng.integers(3))]
    reduction = REDUCTIONS[int(rng.integers(3))]
    if ignore == "all" and reduction == "mean":
        ignore = "present"  # 0/0: NaN as torch, which the tests assert on their own
    smoothing = 0.0
    if loss == "cross-entropy":
        smoothing = (0.0, float(rng.uniform(0.01, 0.99)), 1.0)[int(rng.integers(3))]
    return dict(
        loss=loss,
        n_classes=n_classes,
        batch=int(rng.integers(1, 5)),
        form=form,
        extra=extra,
        soft=soft,
        weighted=bool(rng.integers(2)),
        ignore=ignore,
        ignore_index=int(rng.choice([-100, -1, 0, n_classes - 1])),
        label_smoothing=smoothing,
        reduction=reduction,
        magnitude=(1.0, 700.0)[int(rng.integers(4) == 0)],
        seed=int(rng.integers(2**31)),
    )


def _class_arrays(case: dict[str, Any]) -> tuple:
    """Input, target, weight and the loss's keyword arguments of a class-loss case."""
    rng = np.random.default_rng(case["seed"])
    c = case["n_classes"]
    shape = {"1d": (c,), "2d": (case["batch"], c), "kd": (case["batch"], c, *case["extra"])}[
        case["form"]
    ]
    x = case["magnitude"] * rng.standard_normal(shape)
    if case["loss"] == "nll":
        x = np.ascontiguousarray(_from_rows(log_softmax_rows(_rows(x))[0], x.shape))
    element = () if x.ndim == 1 else (shape[0], *shape[2:])
    weight = rng.uniform(0.1, 2.0, c) if case["weighted"] else None
    kwargs: dict[str, Any] = {"reduction": case["reduction"]}
    if case["soft"]:
        target = rng.random(shape)
        target /= target.sum(axis=0 if x.ndim == 1 else 1, keepdims=True)
    else:
        target = rng.integers(0, c, element)
        ignore_index = case["ignore_index"]
        if case["ignore"] != "absent":
            kwargs["ignore_index"] = ignore_index
            if case["ignore"] == "all":
                target = np.full(element, ignore_index)
            else:
                target = np.where(rng.random(element) < 0.4, ignore_index, target)
                if ignore_index < 0:  # keep one counted target where a mean needs one
                    target.reshape(-1)[0] = int(rng.integers(c))
    if case["loss"] == "cross-entropy":
        kwargs["label_smoothing"] = case["label_smoothing"]
    if case["reduction"] == "mean" and not case["soft"]:
        kept = np.asarray(target).reshape(-1) != kwargs.get("ignore_index", -100)
        if not kept.any():  # a mean over nothing is 0/0 (the tests assert that case)
            kwargs["ignore_index"] = -100
            target = np.asarray(rng.integers(0, c, element))
    return x, np.asarray(target), weight, kwargs


def class_loss_comparisons(case: dict[str, Any]) -> list[Comparison]:
    """Value, gradients and (cross-entropy) the Hessian-vector product against torch."""
    x, target, weight, kwargs = _class_arrays(case)
    rng = np.random.default_rng(case["seed"] + 1)
    ours_cls, torch_cls, eq = {
        "cross-entropy": (CrossEntropyLoss, torch.nn.CrossEntropyLoss, "LOSS.cross-entropy"),
        "nll": (NLLLoss, torch.nn.NLLLoss, "LOSS.nll"),
    }[case["loss"]]
    loss = ours_cls(weight=weight, **kwargs)
    value, cache = loss.forward(x, target)
    grad_output = rng.standard_normal(value.shape)
    d_x, d_t = loss.backward(grad_output, cache)

    xt = torch.tensor(x, requires_grad=True)
    tt = torch.tensor(target, requires_grad=case["soft"])
    wt = None if weight is None else torch.tensor(weight)
    value_t = torch_cls(weight=wt, **kwargs)(xt, tt)
    inputs = (xt, tt) if case["soft"] else (xt,)
    hessian = case["loss"] == "cross-entropy"
    grads_t = torch.autograd.grad(value_t, inputs, torch.tensor(grad_output), create_graph=hessian)

    # magnitude bounds: every term |a_ic ln p_ic| with ln p's rounding ε·(|z| + max|z|)
    a, kept, p = cache.mixture, cache.kept, cache.probabilities
    rows = _rows(x)
    spread = np.abs(rows) + np.abs(rows).max(axis=1, keepdims=True) + 1.0
    log_p = log_softmax_rows(rows)[0] if p is not None else rows
    terms = (np.abs(a) * (np.abs(log_p) + (spread if p is not None else 0.0))).sum(axis=1)
    divisor = abs(float(cache.total)) if case["reduction"] == "mean" else 1.0
    element_shape = cache.element_shape
    if case["reduction"] == "none":
        value_scale = terms.reshape(element_shape)
    else:
        value_scale = np.asarray(terms.sum() / divisor + abs(float(value)))
    g = np.abs(np.reshape(np.broadcast_to(grad_output, element_shape), -1)) / divisor
    g = np.where(kept, g, 0.0)
    out = [Comparison(eq, "value", value, value_t.detach().numpy(), value_scale)]
    if case["loss"] == "nll":
        out.append(Comparison(f"{eq}.grad", "∂/∂input", d_x, grads_t[0].detach().numpy()))
        return out
    mass = np.abs(a).sum(axis=1, keepdims=True)
    grad_scale = g[:, None] * (mass * p * spread + np.abs(a))
    out.append(
        Comparison(
            f"{eq}.grad",
            "∂/∂input",
            d_x,
            grads_t[0].detach().numpy(),
            _from_rows(grad_scale, x.shape),
        )
    )
    if case["soft"]:
        w = np.ones(x.shape[0 if x.ndim == 1 else 1]) if weight is None else weight
        target_scale = g[:, None] * np.abs(w) * (np.abs(log_p) + spread)
        out.append(
            Comparison(
                f"{eq}.grad",
                "∂/∂target",
                d_t,
                grads_t[1].detach().numpy(),
                _from_rows(target_scale, x.shape),
            )
        )
    direction = rng.standard_normal(x.shape)
    (hvp_t,) = torch.autograd.grad(grads_t[0], xt, torch.tensor(direction))
    blocks = loss.input_hessian(grad_output, cache).reshape(-1, *p.shape[1:], p.shape[1])
    v = _rows(direction)
    hvp = np.einsum("icd,id->ic", blocks, v)
    hvp_scale = g[:, None] * mass * p * (np.abs(v) + (p * np.abs(v)).sum(1, keepdims=True))
    out.append(
        Comparison(
            f"{eq}.hessian",
            "H·v",
            _from_rows(hvp, x.shape),
            hvp_t.numpy(),
            _from_rows(hvp_scale * spread, x.shape),
        )
    )
    return out


def _rows(x: np.ndarray) -> np.ndarray:
    return x[None, :] if x.ndim == 1 else np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])


def _from_rows(rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if len(shape) == 1:
        return rows.reshape(shape)
    return np.moveaxis(rows.reshape(shape[0], *shape[2:], shape[1]), -1, 1)


def draw_margin_case(rng: np.random.Generator) -> dict[str, Any]:
    """Options of one random ``MultiMarginLoss`` case."""
    return dict(
        p=int(rng.integers(1, 3)),
        margin=float(rng.choice([1.0, 0.5, 0.0, -0.5, float(rng.uniform(-2, 3))])),
        weighted=bool(rng.integers(2)),
        form=("0d", "1d", "1d-batch", "2d")[int(rng.integers(4))],
        n_classes=int(rng.integers(1, 7)),
        batch=int(rng.integers(1, 6)),
        reduction=REDUCTIONS[int(rng.integers(3))],
        magnitude=(1.0, 700.0)[int(rng.integers(4) == 0)],
        on_hinge=bool(rng.integers(2)),
        seed=int(rng.integers(2**31)),
    )


def _margin_arrays(case: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    rng = np.random.default_rng(case["seed"])
    c, n = case["n_classes"], case["batch"]
    form = case["form"]
    if form == "0d":
        c = 1
    shape = {"0d": (), "1d": (c,), "1d-batch": (c,), "2d": (n, c)}[form]
    target_shape = {"0d": (), "1d": (), "1d-batch": (1,), "2d": (n,)}[form]
    x = case["magnitude"] * rng.standard_normal(shape)
    target = rng.integers(0, c, target_shape)
    if case["on_hinge"] and x.ndim > 0:
        rows, labels = x.reshape(-1, c), target.reshape(-1)
        # some hinges exactly at 0: x_j = x_y − m, representable when the margin is dyadic
        at = rng.random(rows.shape) < 0.4
        at[np.arange(len(rows)), labels] = False
        at_hinge = rows[np.arange(len(rows)), labels][:, None] - case["margin"]
        rows[at] = np.broadcast_to(at_hinge, rows.shape)[at]
        x = rows.reshape(shape)
    weight = rng.uniform(0.1, 2.0, c) if case["weighted"] else None
    return x, target, weight


def _torch_margin(x, target, p, margin, weight, reduction):
    """torch's multi-margin formula in primitives (double backward for the Hessian)."""
    rows = x.reshape(target.numel(), -1)
    labels = target.reshape(-1)
    c = rows.shape[1]
    hinge = margin - rows.gather(1, labels[:, None]) + rows
    mask = torch.ones_like(rows, dtype=torch.bool)
    mask[torch.arange(len(rows)), labels] = False
    w = torch.ones(c, dtype=rows.dtype) if weight is None else weight
    # strict h > 0, as torch's kernel: the active set of the gradient and of the Hessian
    positive = torch.where(hinge > 0, hinge, torch.zeros_like(hinge))
    elements = w[labels] * (positive**p * mask).sum(1) / c
    if reduction == "none":
        return elements.reshape(target.shape)
    return elements.sum() if reduction == "sum" else elements.mean()


def margin_loss_comparisons(case: dict[str, Any]) -> list[Comparison]:
    """Value, input gradient and Hessian-vector product of ``MultiMarginLoss``."""
    x, target, weight = _margin_arrays(case)
    rng = np.random.default_rng(case["seed"] + 1)
    p, margin, reduction = case["p"], case["margin"], case["reduction"]
    loss = MultiMarginLoss(p=p, margin=margin, weight=weight, reduction=reduction)
    value, cache = loss.forward(x, target)
    grad_output = rng.standard_normal(value.shape)
    (d_x, _) = loss.backward(grad_output, cache)
    xt = torch.tensor(x, requires_grad=True)
    wt = None if weight is None else torch.tensor(weight)
    tt = torch.tensor(target)
    value_t = torch.nn.MultiMarginLoss(p=p, margin=margin, weight=wt, reduction=reduction)(xt, tt)
    (d_t,) = torch.autograd.grad(value_t, xt, torch.tensor(grad_output))

    rows = cache.hinge.reshape(len(cache.labels), -1)
    n_rows, c = rows.shape
    x_rows = np.reshape(x, (n_rows, c))
    size = (
        np.abs(margin) + np.abs(x_rows) + np.abs(x_rows[np.arange(n_rows), cache.labels])[:, None]
    )
    active = cache.active
    w = np.abs(cache.target_weight)[:, None] / c
    term = np.where(active, size if p == 1 else 2 * np.abs(rows) * size + rows**2, 0.0) * w
    g = np.abs(np.reshape(np.broadcast_to(grad_output, cache.element_shape), -1))
    g = g / (n_rows if reduction == "mean" else 1)
    if reduction == "none":
        value_scale = term.sum(1).reshape(cache.element_shape)
    else:
        value_scale = np.asarray(term.sum() / (n_rows if reduction == "mean" else 1))
    slope = np.where(active, 1.0 if p == 1 else 2 * (np.abs(rows) + size), 0.0) * w * g[:, None]
    slope[np.arange(n_rows), cache.labels] = slope.sum(1)
    eq = "LOSS.multi-margin"
    out = [
        Comparison(eq, "value", value, value_t.detach().numpy(), value_scale),
        Comparison(f"{eq}.grad", "∂/∂input", d_x, d_t.numpy(), slope.reshape(np.shape(x))),
    ]
    xt2 = torch.tensor(x, requires_grad=True)
    value_p = _torch_margin(xt2, tt, p, margin, wt, reduction)
    (g_p,) = torch.autograd.grad(value_p, xt2, torch.tensor(grad_output), create_graph=True)
    direction = rng.standard_normal(np.shape(x))
    hvp_t = (
        torch.autograd.grad(g_p, xt2, torch.tensor(direction))[0].numpy()
        if g_p.requires_grad
        else np.zeros_like(x)
    )
    blocks = loss.input_hessian(grad_output, cache)
    hvp = np.einsum("icd,id->ic", blocks, np.reshape(direction, (n_rows, c)))
    out.append(Comparison(f"{eq}.hessian", "H·v", hvp.reshape(np.shape(x)), hvp_t))
    return out


@register_check("loss-cross-entropy")
def cross_entropy_check(rng: np.random.Generator) -> list[Comparison]:
    """LOSS.cross-entropy, .grad, .hessian: a random case of every option against torch."""
    return class_loss_comparisons(draw_class_case(rng, "cross-entropy"))


@register_check("loss-nll")
def nll_check(rng: np.random.Generator) -> list[Comparison]:
    """LOSS.nll, LOSS.nll.grad: a random case of every option against torch."""
    return class_loss_comparisons(draw_class_case(rng, "nll"))


@register_check("loss-multi-margin")
def multi_margin_check(rng: np.random.Generator) -> list[Comparison]:
    """LOSS.multi-margin, .grad, .hessian: a random case against torch."""
    return margin_loss_comparisons(draw_margin_case(rng))
