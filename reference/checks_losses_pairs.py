"""Checks of the pairwise, margin and embedding losses (``LOSS.<name>`` and
``LOSS.<name>.grad`` of ``docs/losses_pairs.md``).

Oracle: torch's module of the same name in float64, with a random upstream gradient
(never ones), every option drawn; each gradient torch gives is compared, and a ``None``
of ours must be torch's ``None`` (see :data:`TORCH_DIFFERENTIABLE`). Magnitude scales
(``docs/conventions.md``, "Precision and tolerances") bound the values and gradients that
are differences: ``1 − cos``, ``Δ + d⁺ − d⁻``, ``½(ln v + r²/v)``, ``σ(x) − y``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy.special import expit

from manual_bp.losses import LOSSES, Loss, reduce, reduce_vjp
from manual_bp.losses.embeddings import COSINE_EPSILON, _norm, _norm_backward
from manual_bp.losses.pair_tools import unbroadcast
from reference.checks import register_check
from reference.compare import Comparison

__all__ = [
    "NAMES",
    "TORCH_DIFFERENTIABLE",
    "draw_arrays",
    "draw_options",
    "loss_case",
    "magnitudes",
    "run_torch",
]

NAMES = (
    "cosine-embedding-loss", "gaussian-nll-loss", "hinge-embedding-loss", "margin-ranking-loss",
    "multilabel-margin-loss", "multilabel-soft-margin-loss", "soft-margin-loss",
    "triplet-margin-loss", "triplet-margin-with-distance-loss",
)  # fmt: skip

#: The arguments torch differentiates (when they are float tensors); the others are None.
TORCH_DIFFERENTIABLE = {
    "cosine-embedding-loss": ("input1", "input2"),
    "gaussian-nll-loss": ("input", "target", "var"),
    "hinge-embedding-loss": ("input",),
    "margin-ranking-loss": ("input1", "input2", "target"),
    "multilabel-margin-loss": ("input",),
    "multilabel-soft-margin-loss": ("input", "target"),
    "soft-margin-loss": ("input",),
    "triplet-margin-loss": ("anchor", "positive", "negative"),
    "triplet-margin-with-distance-loss": ("anchor", "positive", "negative"),
}


def _torch_class(loss: Loss) -> type:
    return getattr(torch.nn, type(loss).__name__)


def run_torch(loss: Loss, arrays: list[Any], grad_output: np.ndarray):
    """torch's value and gradients (``None`` where torch gives none) for ``loss``'s
    configuration, in float64 where the arrays are."""
    kwargs = {k: v for k, v in loss.get_config().items() if k != "name"}
    if kwargs.get("weight") is not None:
        kwargs["weight"] = torch.tensor(np.asarray(kwargs["weight"]))
    module = _torch_class(loss)(**kwargs)
    tensors = []
    for array, arg in zip(arrays, loss.arguments, strict=True):
        if isinstance(array, float) and arg == "var":  # GaussianNLL's scalar variance
            tensors.append(array)
            continue
        grad = array.dtype.kind == "f" and arg in TORCH_DIFFERENTIABLE[loss.name]
        tensors.append(torch.tensor(array, requires_grad=grad))
    value = module(*tensors)
    (value * torch.tensor(grad_output)).sum().backward()
    grads = [t.grad.numpy() if isinstance(t, torch.Tensor) and t.grad is not None else None
             for t in tensors]  # fmt: skip
    return value.detach().numpy(), grads


# ------------------------------------------------------------------ magnitude bounds
def _softplus(x):
    return np.logaddexp(0, x)


def _magnitudes(loss: Loss, arrays: list[Any], g: np.ndarray) -> tuple[Any, list[Any]]:
    """``(elementwise magnitude of the unreduced loss, [magnitude of each gradient])``:
    the sums of absolute terms that rounding is relative to; ``None`` where no term
    cancels. ``g`` is the upstream gradient of every unreduced element."""
    name, ag = loss.name, np.abs(g)
    f = [a if isinstance(a, float) else np.asarray(a, dtype=np.float64) for a in arrays]
    if name == "hinge-embedding-loss":
        x, y = f
        elem = np.where(y != 1, abs(loss.margin) + np.abs(x), 0) + np.where(y != -1, abs(x), 0)
        return elem, [unbroadcast(2 * ag * np.ones_like(elem), x.shape), None]
    if name == "margin-ranking-loss":
        x1, x2, y = f
        elem = np.abs(y) * (np.abs(x1) + np.abs(x2)) + abs(loss.margin)
        e = np.ones_like(elem)
        return elem, [unbroadcast(ag * np.abs(y) * e, x1.shape),
                      unbroadcast(ag * np.abs(y) * e, x2.shape),
                      unbroadcast(ag * (np.abs(x1) + np.abs(x2)) * e, y.shape)]  # fmt: skip
    if name == "soft-margin-loss":
        return None, [None, None]
    if name == "multilabel-soft-margin-loss":
        x, y = f
        w = 1.0 if loss.weight is None else np.abs(loss.weight)
        terms = w * (np.abs(y) * _softplus(-x) + np.abs(1 - y) * _softplus(x))
        shape = terms.shape
        elem = terms.sum(-1) / x.shape[-1]
        gw = (ag[..., None] * w / x.shape[-1]) * np.ones(shape)
        return elem, [unbroadcast(gw * (expit(x) + np.abs(y)), x.shape),
                      unbroadcast(gw * np.abs(x), y.shape)]  # fmt: skip
    if name == "multilabel-margin-loss":
        return None, [None, None]
    if name == "cosine-embedding-loss":
        x1, x2, y = f
        m1, m2 = (x1 * x1).sum(-1) + COSINE_EPSILON, (x2 * x2).sum(-1) + COSINE_EPSILON
        den = np.sqrt(m1 * m2)
        cos = np.abs((x1 * x2).sum(-1)) / den
        elem = np.broadcast_to(1 + cos + abs(loss.margin), np.broadcast_shapes(cos.shape, y.shape))
        a = ag[..., None]
        s1 = a * (np.abs(x2) / den[..., None] + cos[..., None] * np.abs(x1) / m1[..., None])
        s2 = a * (np.abs(x1) / den[..., None] + cos[..., None] * np.abs(x2) / m2[..., None])
        return elem, [unbroadcast(s1, x1.shape), unbroadcast(s2, x2.shape), None]
    if name.startswith("triplet"):
        a, p, n = f
        power, eps = getattr(loss, "p", 2.0), getattr(loss, "eps", 1e-6)
        pairs = [(a, p), (a, n)] + ([(p, n)] if loss.swap else [])
        dists, grads = [], [np.zeros_like(a), np.zeros_like(p), np.zeros_like(n)]
        index = {0: (0, 1), 1: (0, 2), 2: (1, 2)}
        for k, (u, v) in enumerate(pairs):
            dists.append(_norm(np.abs(u) + np.abs(v) + abs(eps), power))
            d = _norm_backward(ag, np.abs(u - v + eps), _norm(np.abs(u - v + eps), power), power)
            i, j = index[k]
            grads[i] = grads[i] + unbroadcast(np.abs(d), grads[i].shape)
            grads[j] = grads[j] + unbroadcast(np.abs(d), grads[j].shape)
        return loss.margin + sum(dists), grads
    if name == "gaussian-nll-loss":
        x, y, var = f
        v = np.maximum(var if isinstance(var, float) else var.reshape(
            _var_shape_of(x.shape, var.shape)), loss.eps)  # fmt: skip
        r_mag = np.abs(x) + np.abs(y)
        elem = 0.5 * (np.abs(np.log(v)) + r_mag**2 / v) + 0.5 * math.log(2 * math.pi) * loss.full
        d_x = ag * r_mag / v
        grads = [unbroadcast(d_x, x.shape), unbroadcast(d_x, y.shape), None]
        if not isinstance(var, float):
            d_v = ag * (0.5 / v + 0.5 * (r_mag / v) ** 2)
            grads[2] = unbroadcast(d_v, v.shape if np.ndim(v) else ()).reshape(var.shape)
        return elem, grads
    raise KeyError(name)


def _var_shape_of(input_shape, var_shape):
    from manual_bp.losses.gaussian import _var_shape

    return _var_shape(tuple(input_shape), tuple(var_shape))


def magnitudes(loss: Loss, arrays: list[Any], g: np.ndarray) -> tuple[Any, list[Any]]:
    """``(magnitude of the value, [magnitude of each gradient])`` for upstream gradient
    ``g`` (of the reduced value): the rounding scales of ``docs/conventions.md``, ``None``
    where nothing cancels."""
    none_twin = LOSSES[loss.name](**{**_kwargs(loss), "reduction": "none"})
    elements = none_twin.forward(*arrays)[0]
    elem_mag, grad_mags = _magnitudes(loss, arrays, reduce_vjp(g, elements.shape, loss.reduction))
    if elem_mag is None:
        return None, grad_mags
    return reduce(np.broadcast_to(elem_mag, elements.shape), loss.reduction), grad_mags


def loss_case(loss: Loss, arrays: list[Any], seed: int) -> list[Comparison]:
    """``LOSS.<name>`` (value) and ``LOSS.<name>.grad`` (each gradient) of ``loss`` on
    ``arrays`` against torch's module, with a random upstream gradient."""
    rng = np.random.default_rng(seed)
    value, cache = loss.forward(*arrays)
    g = rng.standard_normal(np.shape(value))
    ours = loss.backward(g, cache)
    ref_value, ref_grads = run_torch(loss, arrays, g)
    value_scale, grad_mags = magnitudes(loss, arrays, g)
    out = [Comparison(loss.equation_value, "value", value, ref_value, scale=value_scale)]
    for arg, mine, ref, mag in zip(loss.arguments, ours, ref_grads, grad_mags, strict=True):
        if (mine is None) != (ref is None):
            raise AssertionError(f"{loss.equation_grad}: ∂/∂{arg} is "
                                 f"{'None' if mine is None else 'an array'} here, "
                                 f"{'None' if ref is None else 'an array'} in torch")  # fmt: skip
        if mine is not None:
            out.append(Comparison(loss.equation_grad, f"∂/∂{arg}", mine, ref, scale=mag))
    return out


def _kwargs(loss: Loss) -> dict[str, Any]:
    return {k: v for k, v in loss.get_config().items() if k != "name"}


# ------------------------------------------------------------------------ random cases
def _shape(rng, ndim: int) -> tuple[int, ...]:
    return tuple(int(n) for n in rng.integers(1, 5, size=ndim))


def _sign_target(rng, shape, kind: str):
    y = np.where(np.asarray(rng.random(shape)) < 0.5, -1.0, 1.0)
    if kind == "other":  # entries that are neither 1 nor −1
        y = np.where(rng.random(shape) < 0.3, rng.choice([0.0, 0.5, 2.0], size=shape), y)
    return y.astype(np.int64) if kind == "int" else y


def draw_options(name: str, rng: np.random.Generator) -> dict[str, Any]:
    """Random constructor keywords of loss ``name`` (every option torch takes)."""
    options: dict[str, Any] = {"reduction": ("none", "mean", "sum")[int(rng.integers(3))]}
    if name in ("hinge-embedding-loss", "margin-ranking-loss", "cosine-embedding-loss"):
        options["margin"] = float(rng.choice([0.0, 0.5, 1.0, rng.uniform(-1, 2)]))
    if name.startswith("triplet"):
        options["margin"] = float(rng.choice([1.0, 0.25, rng.uniform(0.01, 3)]))
        options["swap"] = bool(rng.integers(2))
    if name == "triplet-margin-loss":
        options["p"] = float(rng.choice([2.0, 1.0, 3.0, 1.5, 0.5, math.inf]))
        options["eps"] = float(rng.choice([1e-6, 0.0, 1e-2]))
    if name == "gaussian-nll-loss":
        options["full"] = bool(rng.integers(2))
        options["eps"] = float(rng.choice([1e-6, 0.1, 1.0]))
    if name == "multilabel-soft-margin-loss" and rng.random() < 0.5:
        options["weight"] = rng.uniform(0, 2, size=int(rng.integers(1, 5))).tolist()
    return options


def draw_arrays(name: str, options: dict[str, Any], rng: np.random.Generator) -> list[Any]:
    """Random arguments of loss ``name`` in every input form torch accepts (batched,
    unbatched, broadcasting, integer targets; GaussianNLL's ``var`` as a Python float
    too) for the options drawn."""
    arrays = _draw_arrays(name, options, rng)
    return [a if type(a) is float else np.asarray(a) for a in arrays]


def _draw_arrays(name: str, options: dict[str, Any], rng: np.random.Generator) -> list[Any]:

    def normal(shape):  # an array even when 0-d
        return np.asarray(rng.standard_normal(shape))

    if name == "hinge-embedding-loss":
        shape = _shape(rng, int(rng.integers(0, 3)))
        x = normal(shape) * 2
        # Some entries exactly at the hinge Δ − x = 0 (torch passes the gradient there).
        x = np.where(rng.random(shape) < 0.25, options.get("margin", 1.0), x)
        y_shape = shape[1:] if len(shape) > 1 and rng.random() < 0.3 else shape
        return [x, _sign_target(rng, y_shape, rng.choice(["float", "int", "other"]))]
    if name == "margin-ranking-loss":
        shape = _shape(rng, int(rng.integers(0, 3)))
        kind = rng.choice(["float", "int", "other"])
        y = _sign_target(rng, shape, kind)
        if rng.random() < 0.3:  # exactly at the hinge: x₁ = 0, x₂ = −yΔ gives u = 0
            x1 = np.zeros(shape)
            return [x1, np.asarray(-y * options.get("margin", 0.0), dtype=np.float64), y]
        second = tuple(1 if rng.random() < 0.3 else n for n in shape)
        return [normal(shape), normal(second), y]
    if name == "soft-margin-loss":
        shape = _shape(rng, int(rng.integers(0, 3)))
        y = _sign_target(rng, shape, rng.choice(["float", "int"]))
        if rng.random() < 0.3:
            y = normal(shape)
        return [normal(shape) * 3, y]
    if name == "multilabel-soft-margin-loss":
        n_class = len(options["weight"]) if options.get("weight") else int(rng.integers(1, 5))
        shape = (*_shape(rng, int(rng.integers(0, 3))), n_class)
        kind = rng.integers(3)
        y = (rng.random(shape) < 0.5).astype(np.int64) if kind == 0 else (
            rng.random(shape) if kind == 1 else normal(shape))  # fmt: skip
        return [normal(shape) * 3, y]
    if name == "multilabel-margin-loss":
        shape = _shape(rng, int(rng.integers(0, 3)))
        n_class = shape[-1] if shape else 1
        # Quarter-integers: ties make 1 − x_j + x_i = 0 exactly now and then.
        x = np.asarray(rng.integers(-8, 9, size=shape) / 4.0)
        return [x, np.asarray(rng.integers(-1, n_class, size=shape))]
    if name == "cosine-embedding-loss":
        batched = bool(rng.integers(2))
        dim = int(rng.integers(1, 5))
        shape = (int(rng.integers(1, 5)), dim) if batched else (dim,)
        second = (1, dim) if batched and rng.random() < 0.25 else shape
        y = _sign_target(rng, shape[:-1], rng.choice(["float", "int", "other"]))
        return [normal(shape), normal(second), y]
    if name.startswith("triplet"):
        ndim = int(rng.integers(1, 4))
        shape = _shape(rng, ndim)
        arrays = [normal(shape)]
        for _ in range(2):
            arrays.append(normal(tuple(1 if rng.random() < 0.2 else n for n in shape)))
        return arrays
    if name == "gaussian-nll-loss":
        shape = _shape(rng, int(rng.integers(1, 4)))
        x = normal(shape)
        y = normal(shape[1:] if len(shape) > 1 and rng.random() < 0.25 else shape)
        form = rng.integers(4)
        if form == 0:
            var_shape = shape
        elif form == 1:
            var_shape = shape[:-1]
        else:
            axis = int(rng.integers(len(shape)))
            var_shape = tuple(1 if i == axis else n for i, n in enumerate(shape))
            if var_shape == shape:
                var_shape = shape
        var = rng.uniform(0, 2, size=var_shape) ** 2
        # Some variances at, below and just above the clamp (and exact zeros).
        var = np.where(rng.random(var_shape) < 0.3, rng.choice(
            [0.0, options["eps"] / 2, options["eps"], options["eps"] * 2]), var)  # fmt: skip
        if form == 3:
            return [x, y, float(rng.uniform(0, 2))]
        return [x, y, var]
    raise KeyError(name)


def random_case(name: str, rng: np.random.Generator) -> list[Comparison]:
    options = draw_options(name, rng)
    loss = LOSSES[name](**options)
    return loss_case(loss, draw_arrays(name, options, rng), int(rng.integers(2**31)))


def _register(name: str) -> None:
    @register_check(f"loss-{name}")
    def check(rng: np.random.Generator) -> list[Comparison]:
        return random_case(name, rng)

    check.__doc__ = f"LOSS.{name}, LOSS.{name}.grad: a random case against torch's module."


for _name in NAMES:
    _register(_name)
