"""Random-case checks of the activation and cost catalogue (docs/activations.md, docs/costs.md).

Each component is checked *alone* against torch autograd in float64:

* activations (``ACT.<name>``): the forward ``σ(z)`` and the vector–Jacobian
  product ``J_σ(z)ᵀ g`` for a **random** upstream gradient ``g`` (never all
  ones, which would hide a transposed Jacobian), on pre-activations drawn from
  several regimes: moderate, large, saturating (``|z|`` up to 1e4) and exact
  kinks (the breakpoints of ReLU-like units);
* costs (``COST.<name>``, ``COST.<name>.grad``): the mini-batch value ``C``
  and the per-sample gradient ``∂C_x/∂a`` (= ``n`` times autograd's gradient of
  the mean) against the torch loss with its reduction mapped to ours
  (:mod:`reference.components`);
* output shortcuts (``SHORTCUT.<activation>-<cost>``): the shortcut ``δᴸ``
  equals the general BP1 path ``J_σᵀ ∇ₐC`` and torch's ``n·∂C/∂zᴸ``.

Tolerances use :class:`~reference.compare.Comparison` with a magnitude
``scale`` of the terms each formula sums (``|J̃|ᵀ|g|`` with
:data:`reference.conditioning.DERIVATIVE_ROUNDING` for VJPs; the terms of each
cost's gradient formula for costs). The functions are shared by
``tests/test_activations.py``, ``tests/test_costs.py`` and the ``verify``
command (checks ``"activations"`` and ``"costs"``).
"""

from __future__ import annotations

import numpy as np
import torch

from manual_bp.activations import ACTIVATIONS, Activation
from manual_bp.costs import COSTS, Cost
from reference.cases import make_targets, output_activations_for
from reference.checks import register_check
from reference.compare import Comparison
from reference.components import torch_activation, torch_cost, torch_fused_output
from reference.conditioning import DERIVATIVE_ROUNDING

__all__ = [
    "FORWARD_CANCELS",
    "REGIMES",
    "activation_comparisons",
    "cost_case",
    "cost_comparisons",
    "kink_points",
    "random_activation",
    "random_cost",
    "random_preactivations",
    "random_upstream",
    "shortcut_comparisons",
]

#: Activations whose torch forward cancels terms of size |z| (GELU's ½z(1 + erf) in the
#: left tail, tanh-shrink's z − tanh z near 0): their σ(z) is compared at the scale |z|.
FORWARD_CANCELS = ("gelu", "tanhshrink")

#: Regimes of pre-activations: typical scale, large, saturating, exact breakpoints.
REGIMES = ("moderate", "large", "saturating", "kinks")


# ----------------------------------------------------------------- activations
def random_activation(rng: np.random.Generator, name: str | None = None) -> Activation:
    """An activation (``name`` or a random one) with randomly drawn hyper-parameters."""
    name = name or str(rng.choice(ACTIVATIONS.names()))
    cls = ACTIVATIONS.lookup(name)
    draws = {
        "leaky-relu": lambda: {"alpha": float(rng.choice([0.01, rng.uniform(0.0, 0.5)]))},
        "elu": lambda: {"alpha": float(rng.choice([1.0, rng.uniform(0.1, 3.0)]))},
        "softplus": lambda: {
            "beta": float(rng.choice([1.0, rng.uniform(0.25, 4.0)])),
            "threshold": float(rng.choice([20.0, rng.uniform(1.0, 20.0)])),
        },
        "gelu": lambda: {"approximate": str(rng.choice(["none", "tanh"]))},
        "hardtanh": lambda: (
            {"min_val": -1.0, "max_val": 1.0}
            if rng.random() < 0.5
            else {"min_val": float(-rng.uniform(0.1, 3.0)), "max_val": float(rng.uniform(0.1, 3))}
        ),
        # issue 26 (a negative CELU α overflows e^{z/α} at saturating z, in torch too: its
        # own tests are in tests/test_activations_torch_catalogue.py)
        "celu": lambda: {"alpha": float(rng.choice([1.0, 2.0, rng.uniform(0.1, 3.0)]))},
        "hardshrink": lambda: {"lambd": float(rng.choice([0.5, rng.uniform(-0.5, 3.0)]))},
        "softshrink": lambda: {"lambd": float(rng.choice([0.5, 0.0, rng.uniform(0.0, 3.0)]))},
        "threshold": lambda: {
            "threshold": float(rng.choice([0.0, rng.uniform(-3.0, 3.0)])),
            "value": float(rng.choice([0.0, 10.0 * rng.standard_normal()])),
        },
    }
    return cls(**draws[cls.name]()) if cls.name in draws else cls()


def kink_points(activation: Activation) -> list[float]:
    """The breakpoints where ``activation``'s derivative jumps (empty if smooth)."""
    name = activation.name
    if name in ("relu", "leaky-relu", "elu", "selu"):
        return [0.0]
    if name == "hardtanh":
        return [activation.min_val, activation.max_val]
    if name == "softplus":  # the switch to the identity at βz = threshold
        return [activation.threshold / activation.beta]
    # issue 26
    if name == "celu":
        return [0.0]
    if name in ("hardshrink", "softshrink"):
        return [-activation.lambd, activation.lambd]
    if name in ("hardsigmoid", "hardswish"):
        return [-3.0, 3.0]
    if name == "relu6":
        return [0.0, 6.0]
    if name == "threshold":
        return [activation.threshold]
    return []


def random_preactivations(
    rng: np.random.Generator, activation: Activation, shape: tuple[int, int], regime: str
) -> np.ndarray:
    """Pre-activations ``z`` of ``shape`` in one of :data:`REGIMES`.

    ``"saturating"`` mixes ``|z|`` up to 1e4 with moderate values (the row
    maximum of a softmax must not overflow ``exp``); ``"kinks"`` sets about a
    third of the entries to the activation's breakpoints exactly (and to 0).
    """
    if regime == "moderate":
        z = rng.standard_normal(shape) * 2.0
    elif regime == "large":
        z = rng.standard_normal(shape) * 30.0
    elif regime == "saturating":
        z = rng.choice([-1.0, 1.0], shape) * 10.0 ** rng.uniform(-1, 4, shape)
        z[rng.random(shape) < 0.2] = 1e4 * rng.choice([-1.0, 1.0])
    elif regime == "kinks":
        z = rng.standard_normal(shape) * 2.0
        points = np.array([*kink_points(activation), 0.0])
        mask = rng.random(shape) < 0.35
        z[mask] = rng.choice(points, int(mask.sum()))
    else:
        raise ValueError(f"unknown regime {regime!r}; valid: {REGIMES}")
    return z


def random_upstream(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A random upstream gradient ``∂C/∂a`` (normal, with a random magnitude; never all ones)."""
    return rng.standard_normal(shape) * 10.0 ** rng.uniform(-2, 2)


def _torch_jacobians(activation: Activation, z: np.ndarray) -> np.ndarray:
    """Per-sample Jacobians ``∂a/∂z`` from torch, ``(batch, n, n)``."""
    f = torch_activation(activation)
    zt = torch.tensor(z, dtype=torch.float64)
    return torch.func.vmap(torch.func.jacrev(lambda v: f(v[None, :])[0]))(zt).numpy()


def activation_comparisons(
    activation: Activation, z: np.ndarray, g: np.ndarray
) -> list[Comparison]:
    """``σ(z)`` and the VJP ``J_σ(z)ᵀ g`` against torch autograd (float64), tagged ``ACT.<name>``.

    The VJP scale is ``J̃ᵀ|g|``, ``J̃ = |J| + diag(r)`` with ``r`` the terms that
    cancel in the derivative formula (``DERIVATIVE_ROUNDING``); the forward
    scale adds ``|z|`` for GELU, whose torch form ``½z(1 + erf(z/√2))``
    cancels in the left tail.
    """
    z = np.asarray(z, dtype=np.float64)
    a = activation.forward(z)
    grad_z = activation.backward(g, z, a)
    zt = torch.tensor(z, requires_grad=True)
    at = torch_activation(activation)(zt)
    (expected,) = torch.autograd.grad(at, zt, torch.tensor(g))
    a_ref = at.detach().numpy()

    jac = np.abs(_torch_jacobians(activation, z))
    rounding = DERIVATIVE_ROUNDING.get(activation.name)
    if rounding is not None:
        np.einsum("bii->bi", jac)[...] += rounding(z, a_ref)
    vjp_scale = np.einsum("bij,bi->bj", jac, np.abs(g))
    forward_scale = np.abs(a_ref) + (np.abs(z) if activation.name in FORWARD_CANCELS else 0.0)
    equation = activation.equation
    return [
        Comparison(equation, "σ(z)", a, a_ref, forward_scale),
        Comparison(equation, "J_σ(z)ᵀg", grad_z, expected.numpy(), vjp_scale),
    ]


# ----------------------------------------------------------------------- costs
def random_cost(rng: np.random.Generator, name: str | None = None) -> Cost:
    """A cost (``name`` or a random one) with randomly drawn hyper-parameters."""
    name = name or str(rng.choice(COSTS.names()))
    cls = COSTS.lookup(name)
    draws = {
        "huber": lambda: {"threshold": float(rng.choice([1.0, rng.uniform(0.1, 3.0)]))},
        "smooth-l1": lambda: {"beta": float(rng.choice([1.0, rng.uniform(0.1, 3.0)]))},
        "multi-margin": lambda: {"margin": float(rng.choice([1.0, rng.uniform(0.0, 2.0)]))},
        "poisson-nll": lambda: {"log_input": bool(rng.random() < 0.5)},
    }
    return cls(**draws[cls.name]()) if cls.name in draws else cls()


#: Largest |z| per regime for the output pre-activations of a cost case. Nielsen's
#: cross-entropy is compared with torch's *clamped* BCELoss, so its outputs stay where
#: the clamps (log ≥ −100, a(1 − a) ≥ 1e-12) are inactive: |z| ≤ 20.
_COST_Z_SCALE = {"moderate": 2.0, "large": 15.0}


def cost_case(
    rng: np.random.Generator, cost: Cost, batch: int, n: int, regime: str = "moderate"
) -> tuple[np.ndarray, np.ndarray, Activation]:
    """Outputs ``a = σ(z)`` of a valid output activation for ``cost``, and valid targets.

    Returns ``(a, y, σ)``; ``y`` are rows (class labels are one-hot encoded).
    Poisson with ``log_input=True`` keeps its log-rates below 30.
    """
    valid = cost.valid_output_activations
    names = list(valid) if valid is not None else output_activations_for(cost.name)
    activation = ACTIVATIONS.get(str(rng.choice(names)))
    z = rng.standard_normal((batch, n)) * _COST_Z_SCALE[regime]
    if cost.name == "cross-entropy":
        z = np.clip(z, -20.0, 20.0)
    if cost.name == "poisson-nll" and cost.log_input:
        z = np.minimum(z, 30.0)
    a = activation.forward(z)
    y = make_targets(cost.name, n, batch, rng)
    if y.ndim == 1:
        y = np.eye(n)[y]
    return a, y, activation


def _grad_terms(cost: Cost, a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Magnitude of the terms each gradient formula combines (its rounding bound / ε)."""
    name = cost.name
    if name in ("quadratic", "huber"):
        return np.abs(a) + np.abs(y)  # a − y
    if name == "smooth-l1":
        return (np.abs(a) + np.abs(y)) / cost.beta
    if name == "bce-logits":
        return 1.0 / (1.0 + np.exp(-np.clip(a, -700, 700))) + np.abs(y)  # sigmoid(a) − y
    if name == "categorical-cross-entropy":
        e = np.exp(a - a.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True) + np.abs(y)  # softmax(a) − y
    if name == "poisson-nll":
        if cost.log_input:
            return np.exp(np.minimum(a, 700.0)) + np.abs(y)
        return 1.0 + np.abs(y) / (a + cost.eps)
    return np.zeros_like(a)  # quotients, signs, counts, −y: no cancellation


def cost_comparisons(cost: Cost, a: np.ndarray, y: np.ndarray) -> list[Comparison]:
    """``C`` and the per-sample ``∂C_x/∂a`` against the torch loss, tagged with the cost's IDs."""
    n = a.shape[0]
    value = cost.value(a, y)
    grad = cost.grad(a, y)
    at = torch.tensor(a, requires_grad=True)
    ct = torch_cost(cost)(at, torch.tensor(y, dtype=torch.float64))
    (grad_ref,) = torch.autograd.grad(ct, at)
    grad_ref = grad_ref.numpy() * n  # autograd differentiates the mean: ∂C/∂a_x = ∂C_x/∂a_x / n
    grad_scale = np.maximum(np.abs(grad_ref), _grad_terms(cost, a, y))
    # The value is a sum of terms of size up to (1 + |a|)(1 + |y|) (and e^a for log-rates).
    terms = (1.0 + np.abs(a)) * (1.0 + np.abs(y))
    if cost.name == "poisson-nll" and cost.log_input:
        terms = terms + np.exp(np.minimum(a, 700.0))
    value_scale = np.array(terms.sum(axis=1).mean())
    return [
        Comparison(
            cost.equation_value, "C", np.array(value), np.array(float(ct.detach())), value_scale
        ),
        Comparison(cost.equation_grad, "∂C_x/∂a", grad, grad_ref, grad_scale),
    ]


def shortcut_comparisons(
    cost: Cost, activation: Activation, z: np.ndarray, y: np.ndarray
) -> list[Comparison]:
    """The shortcut ``δᴸ`` against the general BP1 path and against torch, ``SHORTCUT.*``.

    torch differentiates its fused stable loss of ``zᴸ`` where there is one
    (:data:`reference.components.TORCH_FUSED_OUTPUTS`), else the composition.
    The general path is exact only while ``∇ₐC`` is finite, so the
    shortcut-vs-general comparison is made where ``0 < a < 1`` (or everywhere
    for an identity output).
    """
    equation, shortcut = cost.shortcuts[activation.name]
    a = activation.forward(z)
    ours = shortcut(z, a, y)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        general = cost.delta_general(z, a, y, activation)
    n = z.shape[0]
    zt = torch.tensor(z, requires_grad=True)
    yt = torch.tensor(y, dtype=torch.float64)
    fused = torch_fused_output(activation, cost)
    if fused is not None:
        loss = fused(zt, yt)
    else:
        loss = torch_cost(cost)(torch_activation(activation)(zt), yt)
    (expected,) = torch.autograd.grad(loss, zt)
    expected = expected.numpy() * n
    # a − y and its general-path equivalent combine terms of size |a| + |y| (twice for softmax).
    scale = 2.0 * (np.abs(a) + np.abs(y))
    usable = np.isfinite(general).all(axis=1)
    return [
        Comparison(
            equation,
            "δᴸ shortcut vs general BP1",
            ours[usable],
            general[usable],
            scale[usable],
            oracle="general BP1",
        ),
        Comparison(equation, "δᴸ shortcut", ours, expected, scale),
    ]


# ---------------------------------------------------------------------- checks
@register_check("activations")
def activations_check(rng: np.random.Generator) -> list[Comparison]:
    """One random activation, pre-activations of a random regime, random upstream gradient."""
    activation = random_activation(rng)
    shape = (int(rng.integers(1, 17)), int(rng.integers(1, 17)))
    z = random_preactivations(rng, activation, shape, str(rng.choice(REGIMES)))
    return activation_comparisons(activation, z, random_upstream(rng, shape))


@register_check("costs")
def costs_check(rng: np.random.Generator) -> list[Comparison]:
    """One random cost: value and gradient, plus each of its output shortcuts."""
    cost = random_cost(rng)
    batch, n = int(rng.integers(1, 17)), int(rng.integers(1, 17))
    a, y, _ = cost_case(rng, cost, batch, n, str(rng.choice(list(_COST_Z_SCALE))))
    out = cost_comparisons(cost, a, y)
    for name in cost.shortcuts:
        activation = ACTIVATIONS.get(name)
        z = rng.standard_normal((batch, n)) * float(rng.choice([1.0, 10.0, 1e4]))
        out += shortcut_comparisons(cost, activation, z, y)
    return out
