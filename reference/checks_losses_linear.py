"""Checks of torch's ``LinearCrossEntropyLoss`` against torch's own module in float64
(``LOSS.linear-cross-entropy``, ``.grad``, ``.hessian``).

A case (:func:`draw_linear_case`) draws every option: ``in_features``, ``num_classes``,
``out_features`` (``()`` or a shape), ``bias``, the reduction, class weights,
``ignore_index`` (``None``, in range, out of range, covering every target), label smoothing
(0, inside, 1), both target forms, an unbatched input, the chunked path
(``options``: a ``batch_chunk_size`` or an ``aspect_ratio`` method) and the logits' size.
torch's parameters are copied into ours; each comparison runs a random ``grad_output``.
Magnitude bounds (docs/conventions.md, "Precision and tolerances") are the cross-entropy's
(``ε·|z|`` in each log-probability) pulled through the projection in absolute values.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from manual_bp.losses import LinearCrossEntropyLoss
from reference.checks import register_check
from reference.compare import Comparison

__all__ = ["draw_linear_case", "linear_arrays", "linear_loss_comparisons", "torch_linear_loss"]

REDUCTIONS = ("none", "mean", "sum")


def draw_linear_case(rng: np.random.Generator) -> dict[str, Any]:
    """Options of one random ``LinearCrossEntropyLoss`` case (every option drawn)."""
    c = int(rng.integers(1, 6))
    batched = bool(rng.integers(4))
    out_features = () if not batched or rng.integers(2) else tuple(
        int(d) for d in rng.integers(1, 4, size=int(rng.integers(1, 3))))  # fmt: skip
    soft = bool(rng.integers(3) == 0)
    reduction = REDUCTIONS[int(rng.integers(3))]
    ignore = None if soft else [None, -100, 0, c - 1, c + 5][int(rng.integers(5))]
    if c == 1 and ignore == 0:
        ignore = -1  # the one class ignored leaves a mean of nothing (0/0: the tests' own)
    options = None
    if rng.integers(2):
        options = ({"batch_chunk_size": int(rng.integers(1, 5))},
                   {"chunking_method": f"aspect_ratio:{int(rng.integers(1, 4))}"},
                   {})[int(rng.integers(3))]  # fmt: skip
    return dict(
        in_features=int(rng.integers(1, 6)),
        num_classes=c,
        batch=int(rng.integers(1, 7)) if batched else None,
        out_features=out_features,
        bias=bool(rng.integers(2)),
        soft=soft,
        weighted=bool(rng.integers(2)),
        ignore_index=ignore,
        all_ignored=bool(rng.integers(6) == 0) and ignore is not None and reduction != "mean",
        label_smoothing=(0.0, float(rng.uniform(0.01, 0.99)), 1.0)[int(rng.integers(3))],
        reduction=reduction,
        options=options,
        magnitude=(1.0, 1.0, 40.0)[int(rng.integers(3))],
        seed=int(rng.integers(2**31)),
    )


def linear_arrays(case: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The input, the target and the constructor's keyword arguments of a case."""
    rng = np.random.default_rng(case["seed"])
    c, of = case["num_classes"], case["out_features"]
    batch = () if case["batch"] is None else (case["batch"],)
    x = rng.standard_normal((*batch, case["in_features"]))
    if case["soft"]:
        target = rng.random((*batch, c, *of))
        target /= target.sum(axis=len(batch), keepdims=True)
    else:
        target = rng.integers(0, c, (*batch, *of))
        ii = case["ignore_index"]
        if ii is not None:
            if case["all_ignored"]:
                target = np.full_like(target, ii)
            else:
                target = np.where(rng.random(target.shape) < 0.4, ii, target)
                first = int(rng.integers(c))  # a mean needs one counted row
                target.reshape(-1)[0] = (first + 1) % c if first == ii else first
    kwargs = dict(
        out_features=of,
        bias=case["bias"],
        reduction=case["reduction"],
        weight=rng.uniform(0.1, 2.0, c) if case["weighted"] else None,
        ignore_index=case["ignore_index"],
        label_smoothing=case["label_smoothing"],
        options=case["options"],
    )
    return x, np.asarray(target), kwargs


def torch_linear_loss(case: dict[str, Any], kwargs: dict[str, Any]) -> torch.nn.Module:
    """torch's module of a case, float64, its parameters scaled to the case's magnitude."""
    torch.manual_seed(case["seed"] % 2**31)
    options = kwargs["options"]
    module = torch.nn.LinearCrossEntropyLoss(
        case["in_features"], case["num_classes"], dtype=torch.float64,
        **{**kwargs, "weight": None if kwargs["weight"] is None else torch.tensor(kwargs["weight"]),
           "options": None if options is None else torch.nn.LinearCrossEntropyOptions(**options)},
    )  # fmt: skip
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.mul_(case["magnitude"])
    return module


def linear_loss_comparisons(case: dict[str, Any]) -> list[Comparison]:
    """Value, ∂input, ∂target (probabilities), ∂linear.weight, ∂linear.bias and the input
    Hessian-vector product against torch."""
    x, target, kwargs = linear_arrays(case)
    module = torch_linear_loss(case, kwargs)
    loss = LinearCrossEntropyLoss(case["in_features"], case["num_classes"], **kwargs)
    params = dict(module.named_parameters())
    for name, array in loss.named_parameters():
        array[...] = params[name].detach().numpy()
    value, cache = loss.forward(x, target)
    rng = np.random.default_rng(case["seed"] + 1)
    grad_output = rng.standard_normal(value.shape)
    (d_x, d_t), d_params = loss.backward_with_params(grad_output, cache)

    xt = torch.tensor(x, requires_grad=True)
    tt = torch.tensor(target, requires_grad=case["soft"])
    with warnings.catch_warnings():  # torch warns where it ignores options
        warnings.simplefilter("ignore")
        value_t = module(xt, tt)
        wrt = [xt, *params.values()] + ([tt] if case["soft"] else [])
        # the chunked op has no double backward: the Hessian's oracle is the reference path
        grads_t = torch.autograd.grad(value_t, wrt, torch.tensor(grad_output))
        module.options = None
        (gx_t,) = torch.autograd.grad(module(xt, tt.detach()), xt, torch.tensor(grad_output),
                                      create_graph=True)  # fmt: skip
    n_params = len(params)

    # magnitude bounds: the cross-entropy's per-row bound, pulled through |W|
    w = loss.params["linear.weight"]
    b = loss.params.get("linear.bias")
    z = x @ w.T + (0.0 if b is None else b)
    rows_z = _rows(z.reshape(cache.logits_shape))
    spread = np.abs(rows_z) + np.abs(rows_z).max(axis=1, keepdims=True) + 1.0
    top = rows_z.max(axis=1, keepdims=True)
    log_p = rows_z - top - np.log(np.exp(rows_z - top).sum(axis=1, keepdims=True))
    p = np.exp(log_p)
    mix = _mixture(case, kwargs, target)
    total = len(mix) if case["soft"] else _class_total(kwargs, target, case)
    divisor = abs(float(total)) if case["reduction"] == "mean" and total else 1.0
    terms = (np.abs(mix) * (np.abs(log_p) + spread)).sum(axis=1)
    element_shape = cache.element_shape
    if case["reduction"] == "none":
        value_scale = terms.reshape(element_shape)
    else:
        value_scale = np.asarray(terms.sum() / divisor + abs(float(value)))
    g = np.abs(np.reshape(np.broadcast_to(grad_output, element_shape), -1)) / divisor
    mass = np.abs(mix).sum(axis=1, keepdims=True)
    row_scale = g[:, None] * (mass * p * spread + np.abs(mix))
    flat = _from_rows(row_scale, cache.logits_shape).reshape(*x.shape[:-1], -1)
    flat2 = flat.reshape(-1, flat.shape[-1])
    x2 = np.abs(x.reshape(-1, x.shape[-1]))
    eq = "LOSS.linear-cross-entropy"
    out = [
        Comparison(eq, "value", value, value_t.detach().numpy(), value_scale),
        Comparison(f"{eq}.grad", "∂/∂input", d_x, grads_t[0].numpy(),
                   (flat2 @ np.abs(w)).reshape(x.shape) + np.abs(d_x)),
        Comparison(f"{eq}.grad", "∂/∂linear.weight", d_params["linear.weight"],
                   grads_t[1].numpy(), flat2.T @ x2 + np.abs(d_params["linear.weight"])),
    ]  # fmt: skip
    if b is not None:
        out.append(Comparison(f"{eq}.grad", "∂/∂linear.bias", d_params["linear.bias"],
                              grads_t[2].numpy(), flat2.sum(axis=0)))  # fmt: skip
    if case["soft"]:
        weight = np.ones(case["num_classes"]) if kwargs["weight"] is None else kwargs["weight"]
        t_scale = g[:, None] * np.abs(weight) * (np.abs(log_p) + spread)
        out.append(Comparison(f"{eq}.grad", "∂/∂target", d_t, grads_t[1 + n_params].numpy(),
                              _from_rows(t_scale, cache.logits_shape)))  # fmt: skip
    direction = rng.standard_normal(x.shape)
    (hvp_t,) = torch.autograd.grad(gx_t, xt, torch.tensor(direction))
    hessian = loss.input_hessian(grad_output, cache)
    hvp = np.einsum("...ik,...k->...i", hessian, direction)
    # Σ_j |W_j|ᵀ M_j |W_j| |v| with M_j ≥ |rounding of H_j|: g s spread (diag p + p pᵀ)
    n_in, c = case["in_features"], case["num_classes"]
    w3 = np.abs(w).reshape(c, -1, n_in)
    u = np.einsum("cpk,nk->npc", w3, np.abs(direction).reshape(-1, n_in))
    shape = u.shape
    p3, s3 = p.reshape(shape), spread.reshape(shape)
    gm = (g[:, None] * mass).reshape(*shape[:2], 1)
    mu = gm * s3 * p3 * (u + (p3 * u).sum(axis=-1, keepdims=True))
    h_scale = np.einsum("cpk,npc->nk", w3, mu).reshape(x.shape)
    h_scale = h_scale + np.einsum("...ik,...k->...i", np.abs(hessian), np.abs(direction))
    out.append(Comparison(f"{eq}.hessian", "H·v", hvp, hvp_t.numpy(), h_scale))
    return out


def _mixture(case, kwargs, target) -> np.ndarray:
    """|a| per row, as the cross-entropy builds it (for the bounds only)."""
    from manual_bp.losses.classification import target_mixture

    c = case["num_classes"]
    weight = np.ones(c) if kwargs["weight"] is None else np.asarray(kwargs["weight"])
    if case["soft"]:
        return target_mixture(None, _rows(target), weight, case["label_smoothing"], -100)[0]
    ii = -100 if case["ignore_index"] is None else case["ignore_index"]
    return target_mixture(target.reshape(-1), None, weight, case["label_smoothing"], ii)[0]


def _class_total(kwargs, target, case) -> float:
    c = case["num_classes"]
    weight = np.ones(c) if kwargs["weight"] is None else np.asarray(kwargs["weight"])
    ii = -100 if case["ignore_index"] is None else case["ignore_index"]
    labels = target.reshape(-1)
    kept = labels != ii
    return float(weight[np.where(kept, labels, 0)][kept].sum())


def _rows(x: np.ndarray) -> np.ndarray:
    return x[None, :] if x.ndim == 1 else np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])


def _from_rows(rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if len(shape) == 1:
        return rows.reshape(shape)
    return np.moveaxis(rows.reshape(shape[0], *shape[2:], shape[1]), -1, 1)


@register_check("loss-linear-cross-entropy")
def linear_cross_entropy_check(rng: np.random.Generator) -> list[Comparison]:
    """LOSS.linear-cross-entropy, .grad, .hessian: a random case of every option against
    torch (parameters copied in, the chunked path included)."""
    return linear_loss_comparisons(draw_linear_case(rng))
