"""Adjoint (dot-product) tests of every VJP in the library (issue 15, item 3).

For a map ``f`` with Jacobian ``J`` at a point, our backward pass computes ``Jᵀu``; the
identity ``⟨u, J v⟩ = ⟨Jᵀu, v⟩`` for random ``u`` and ``v`` (never ones) checks it against
``J v`` from ``torch.func.jvp`` of the matching torch computation: a forward-mode oracle
that shares no code with torch's (or our) reverse mode. Covered here:

* every registered layer class (:data:`manual_bp.layers.LAYERS`), input *and* parameter
  tangents at once: ``⟨u, J_x v_x + Σ_p J_p v_p⟩ = ⟨∂x, v_x⟩ + Σ_p ⟨∂p, v_p⟩``; layers
  are drawn from the blocks of :mod:`reference.stack` (so they sit where a stack puts
  them, at the input shape of a real model) and their torch forwards are the ones
  registered there (:func:`reference.stack.torch_layer_forward`);
* every activation's ``backward`` (``Jᵀ g`` of ``z -> σ(z)``, coupled ones included);
* every cost's ``grad`` (``∂C_x/∂a``: the VJP of the per-sample cost with ``u`` a random
  weight per sample).

Tolerance: both sides are sums of products, each rounded relative to the magnitudes it
adds, so the bound is ``c·ε`` times ``Σ|u||Jv| + Σ|Jᵀu||v|`` (``c = 64`` per
:meth:`reference.compare.Comparison.check`), plus, for layers, the change of ``⟨Jᵀu, v⟩``
when the cache and ``u`` are perturbed by a relative ``δ = 2⁻²⁶`` (per unit ``δ``), which
bounds cancellation inside the layer (a normalisation over two features) that magnitude
sums cannot see — the same model as :func:`reference.checks_stack.adjoint_comparison`.
A wrong transpose, a dropped term or a wrong factor moves the identity by O(1).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.attention import SDPBackend, sdpa_kernel

import reference.checks  # noqa: F401  (imports every checks_* module: torch forwards, blocks)
from manual_bp.activations import ACTIVATIONS
from manual_bp.costs import COSTS
from manual_bp.layers import LAYERS, Embedding, Layer
from reference.checks_components import cost_case, random_activation, random_cost
from reference.compare import Comparison
from reference.components import torch_activation, torch_cost
from reference.layer_cases import DIRECT, layer_case, sources
from reference.stack import shake_cache, torch_layer_forward

seeds = st.integers(0, 2**31 - 1)
LAYER_NAMES = sorted(cls.__name__ for cls in LAYERS.classes())


DELTA = 2.0**-26


JITTER = np.random.default_rng(2)


def shake(array: np.ndarray) -> np.ndarray:
    """``array`` perturbed by a relative ±δ per entry (the rounding-sensitivity probe)."""
    return array * (1.0 + DELTA * JITTER.choice([-1.0, 1.0], size=array.shape))


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.vdot(a, b))


def _absdot(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a).ravel() @ np.abs(b).ravel())


def layer_adjoint(layer: Layer, x: np.ndarray, rng: np.random.Generator) -> Comparison:
    """⟨u, J_x v_x + Σ J_p v_p⟩ (torch.func.jvp) against ⟨Jᵀu, v⟩ (our backward)."""
    state = {k: v.copy() for k, v in layer.buffers.items()}
    out, cache = layer.forward(x)
    u = rng.standard_normal(out.shape)
    dx, grads = layer.backward(u, cache)
    names = sorted(layer.params)
    v_x = rng.standard_normal(x.shape)
    v_p = {n: rng.standard_normal(layer.params[n].shape) for n in names}
    if isinstance(layer, Embedding) and layer.padding_idx is not None:
        # torch's convention: the padding row is a constant (its gradient is 0 by
        # definition), so it is no direction of the map; F.embedding's JVP would move it.
        v_p["weight"][layer.padding_idx] = 0.0
    buffers = {k: torch.tensor(v) for k, v in state.items()}

    def function(xt, *params):
        own = dict(zip(names, params, strict=True))
        return torch_layer_forward(
            layer, own, {k: b.clone() for k, b in buffers.items()}, xt, cache
        )

    primals = (torch.tensor(x), *(torch.tensor(layer.params[n]) for n in names))
    tangents = (torch.tensor(v_x), *(torch.tensor(v_p[n]) for n in names))
    # torch's fused CPU attention kernel has no forward mode: its math backend (the same
    # function from differentiable primitives) has.
    with sdpa_kernel(SDPBackend.MATH):
        _, jv = torch.func.jvp(function, primals, tangents)
    jv = jv.numpy()
    left = _dot(u, jv)
    right = _dot(dx, v_x) + sum(_dot(grads[n], v_p[n]) for n in names)
    magnitude = _absdot(u, jv) + _absdot(dx, v_x) + sum(_absdot(grads[n], v_p[n]) for n in names)
    # Cancellation inside the layer: the change of ⟨Jᵀu, v⟩ under a relative shake δ of
    # the cache and of u, per unit δ (reference.checks_stack.adjoint_comparison's model).
    dx_s, grads_s = layer.backward(shake(u), shake_cache(cache, shake))
    shaken = _dot(dx_s, v_x) + sum(_dot(grads_s[n], v_p[n]) for n in names)
    scale = np.array(magnitude + abs(shaken - right) / DELTA)
    return Comparison(layer.equation, "adjoint ⟨u, J v⟩", np.array(right), np.array(left), scale)


def test_every_registered_layer_class_is_covered():
    """A new layer class must come with a block in reference.stack (or a case here)."""
    for name in LAYER_NAMES:
        assert name in DIRECT or sources(name), name


@pytest.mark.parametrize("name", LAYER_NAMES)
@given(seed=seeds)
@settings(max_examples=8)
def test_layer_vjp_is_the_adjoint_of_torch_jvp(name, seed):
    """LAYER.*: ``backward`` (input and parameter gradients) is the adjoint of the torch
    forward's JVP, for every registered layer class, in training and evaluation mode."""
    rng = np.random.default_rng(seed)
    layer, x = layer_case(name, rng)
    layer_adjoint(layer, x, rng).check()
    if layer.products_refusal is not None:  # a declared gap: refused in one line, as said
        with pytest.raises(NotImplementedError):
            own_jvp_adjoint(layer, x, rng)
        return
    own_jvp_adjoint(layer, x, rng).check()  # every layer has a forward mode (PROD.*.jvp)


def own_jvp_adjoint(layer: Layer, x: np.ndarray, rng: np.random.Generator) -> Comparison:
    """⟨u, layer.jvp(v)⟩ = ⟨layer.backward(u), v⟩: the layer's forward and reverse modes
    are each other's adjoints (both ours; the torch oracle above pins each one)."""
    out, cache = layer.forward(x)
    u, v_x = rng.standard_normal(out.shape), rng.standard_normal(x.shape)
    v_p = {n: rng.standard_normal(p.shape) for n, p in layer.params.items()}
    for name, frozen in getattr(layer, "constant_rows", dict)().items():
        v_p[name][frozen] = 0.0  # a constant row (an embedding's padding) is no direction
    if layer.index_input:
        v_x = np.zeros_like(x)  # indices have no tangent
    jv = layer.jvp(cache, None if layer.index_input else v_x, v_p)
    dx, grads = layer.backward(u, cache)
    right = _dot(dx, v_x) + sum(_dot(grads[n], v_p[n]) for n in v_p)
    magnitude = _absdot(u, jv) + _absdot(dx, v_x) + sum(_absdot(grads[n], v_p[n]) for n in v_p)
    dx_s, grads_s = layer.backward(shake(u), shake_cache(cache, shake))
    shaken = _dot(dx_s, v_x) + sum(_dot(grads_s[n], v_p[n]) for n in v_p)
    scale = np.array(magnitude + abs(shaken - right) / DELTA)
    return Comparison(
        layer.equation, "own jvp adjoint", np.array(right), np.array(_dot(u, jv)), scale
    )


# ------------------------------------------------------------------------ activations
@pytest.mark.parametrize("name", ACTIVATIONS.names())
@given(seed=seeds, batch=st.integers(1, 5), n=st.integers(1, 6))
@settings(max_examples=10)
def test_activation_backward_is_the_adjoint_of_torch_jvp(name, seed, batch, n):
    """ACT.*: ``backward(u, z, a) = J_σ(z)ᵀ u`` against ``J_σ(z) v`` of torch's σ (random
    hyper-parameters; z away from kinks, where the JVP is one-sided)."""
    rng = np.random.default_rng(seed)
    activation = random_activation(rng, name)
    z = rng.standard_normal((batch, n)) * 3.0
    a = activation.forward(z)
    u, v = rng.standard_normal(a.shape), rng.standard_normal(z.shape)
    vjp = activation.backward(u, z, a)
    _, jv = torch.func.jvp(torch_activation(activation), (torch.tensor(z),), (torch.tensor(v),))
    jv = jv.numpy()
    right = _dot(vjp, v)
    # 1 − a² of a saturated tanh cancels: the shake of (u, z, a) measures what rounding of
    # the inputs does to the derivative, as for layers.
    shaken = _dot(activation.backward(shake(u), shake(z), shake(a)), v)
    scale = np.array(_absdot(u, jv) + _absdot(vjp, v) + abs(shaken - right) / DELTA)
    equation = activation.equation
    Comparison(equation, "adjoint", np.array(right), np.array(_dot(u, jv)), scale).check()
    # the activation's own forward mode is the adjoint of its backward, too
    own = activation.jvp(v, z, a)
    scale = np.array(_absdot(u, own) + _absdot(vjp, v) + abs(shaken - right) / DELTA)
    Comparison(equation, "own jvp adjoint", np.array(right), np.array(_dot(u, own)), scale).check()


@pytest.mark.parametrize("name", ACTIVATIONS.names())
@given(seed=seeds, batch=st.integers(1, 5), n=st.integers(1, 6))
@settings(max_examples=10)
def test_activation_second_vjp_is_self_adjoint(name, seed, batch, n):
    """ACT2.*: ``second_vjp(g, ·) = Σₖ gₖ ∇²σₖ(z)`` is a sum of Hessians, hence symmetric:
    ``⟨w, S v⟩ = ⟨S w, v⟩`` (a transposed or mis-indexed coupled term breaks it)."""
    rng = np.random.default_rng(seed)
    activation = random_activation(rng, name)
    z = rng.standard_normal((batch, n)) * 3.0
    a = activation.forward(z)
    g, v, w = (rng.standard_normal(z.shape) for _ in range(3))
    sv, sw = activation.second_vjp(g, v, z, a), activation.second_vjp(g, w, z, a)
    # Σₖ gₖ ∇²σₖ cancels inside (log-softmax: s − s² at a saturated class), which the
    # magnitudes of the results cannot see: the shake of (g, v, z, a) measures it.
    shaken = _dot(w, activation.second_vjp(shake(g), shake(v), shake(z), shake(a)))
    scale = _absdot(w, sv) + _absdot(sw, v) + abs(shaken - _dot(w, sv)) / DELTA
    terms = _coupled_terms(activation, g, z, a)
    if terms is not None:  # a coupled σ's cancellation inside S: the terms' own sizes
        scale += _absdot(w, terms(v)) + _absdot(terms(w), v)
    scale = np.array(scale)
    equation = "ACT2." + activation.name
    Comparison(equation, "symmetry", np.array(_dot(w, sv)), np.array(_dot(sw, v)), scale).check()


def _coupled_terms(activation, g: np.ndarray, z: np.ndarray, a: np.ndarray):
    """``v ↦`` the sizes of the terms each entry of a coupled σ's ``second_vjp(g, v)`` is
    summed from (None for an elementwise σ: one product ``g σ'' v``, no cancellation).

    Softmax-type forms subtract: ``w = p ⊙ (v − ⟨p, v⟩)`` rounds to ``ε·p ⊙ (|v| + ⟨p, |v|⟩)``
    however small ``w`` is (at a saturated class ``p ≈ 1`` the difference cancels), and the
    second-order VJP builds on it — ``−(Σg) w`` for log-softmax, ``g⊙w − a⟨g, w⟩ − ⟨g, a⟩w``
    for softmax and softmin. Each entry's rounding is then at most a few ε times the same
    expressions in absolute values, which a relative shake of the inputs (a change of z, not
    of the rounding inside) does not see: a drawn saturated log-softmax (n = 2) had
    |Δ| = 2.0e-17 on a bound of 2.8e-18 from the shake alone."""
    if activation.name not in ("softmax", "softmin", "log-softmax"):
        return None
    axis = activation.axis(a)
    p = np.exp(a) if activation.name == "log-softmax" else a
    G = np.abs(g)

    def terms(v: np.ndarray) -> np.ndarray:
        W = p * (np.abs(v) + np.sum(p * np.abs(v), axis=axis, keepdims=True))
        if activation.name == "log-softmax":
            return np.sum(G, axis=axis, keepdims=True) * W
        GW, GP = (np.sum(G * t, axis=axis, keepdims=True) for t in (W, p))
        return G * W + p * GW + GP * W

    return terms


# ------------------------------------------------------------------------ costs
#: Costs whose torch loss has no forward-mode derivative (torch 2.x): JVP by central
#: differences instead (exact for their piecewise linear form, up to the rounding of C).
NO_FORWARD_MODE = ("multi-margin",)


@pytest.mark.parametrize("name", COSTS.names())
@given(seed=seeds, batch=st.integers(1, 5), n=st.integers(2, 6))
@settings(max_examples=10)
def test_cost_grad_is_the_adjoint_of_torch_jvp(name, seed, batch, n):
    """COST.*.grad: ``Σ_x w_x ⟨∂C_x/∂a_x, v_x⟩`` against the JVP of torch's batch loss
    with per-sample weights ``w`` (a random cotangent of the per-sample cost vector:
    ``grad`` is that VJP row by row)."""
    rng = np.random.default_rng(seed)
    cost = random_cost(rng, name)
    a, y, _ = cost_case(rng, cost, batch, n, "moderate")
    w, v = rng.standard_normal(batch), rng.standard_normal(a.shape)
    grad = cost.grad(a, y)
    loss = torch_cost(cost)
    yt = torch.tensor(y)

    def weighted(at):  # Σ_x w_x C_x: the batch mean of one-row losses, times the batch
        return sum(w[i] * loss(at[i : i + 1], yt[i : i + 1]) for i in range(batch))

    right = _dot(w[:, None] * grad, v)
    if name in NO_FORWARD_MODE:
        # Piecewise linear: a central difference is exact unless a hinge lies within h|v|
        # (probability ~1e-6); what is left is the rounding of C, ε·Σ|w_x C_x| / h.
        h, at, vt = 2.0**-20, torch.tensor(a), torch.tensor(v)
        jv = float(weighted(at + h * vt) - weighted(at - h * vt)) / (2 * h)
        values = [abs(w[i]) * float(loss(at[i : i + 1], yt[i : i + 1])) for i in range(batch)]
        atol = 64 * np.finfo(float).eps * (1.0 + sum(values)) / h
        fd = Comparison(cost.equation_grad, "adjoint", np.array(right), np.array(jv), atol=atol)
        fd.oracle = "finite-differences"
        fd.check()
        return
    _, jv = torch.func.jvp(weighted, (torch.tensor(a),), (torch.tensor(v),))
    scale = _absdot(w[:, None] * grad, v) + _absdot(jv, 1.0)
    scale += _dot(w[:, None] * np.abs(grad), np.abs(v))
    Comparison(
        cost.equation_grad, "adjoint", np.array(right), np.array(float(jv)), np.array(scale)
    ).check()
