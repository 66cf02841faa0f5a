"""Checks of the layer-stack model: ``STACK.chain`` on random stacks, ``LAYER.residual``.

Random stacks come from :func:`reference.stack.random_stack`, which draws every block
registered for feature vectors (dense, residual, and whatever the layer modules add:
batch norm, layer norm, dropout, ...), so every layer kind also sits in the middle of a
stack. Each case is one training step compared with torch autograd in float64.
"""

from __future__ import annotations

import numpy as np
import torch

from manual_bp.layers import ActivationLayer, Dense, Residual
from manual_bp.models.network import Network
from manual_bp.models.sequential import Sequential
from reference.checks import register_check
from reference.compare import Comparison
from reference.stack import random_stack, shake_cache, stack_comparisons, torch_layer_forward

__all__ = ["adjoint_comparison", "residual_model"]


@register_check("stack-random")
def random_stack_check(rng: np.random.Generator) -> list[Comparison]:
    """STACK.chain: a random stack (train or eval mode) against autograd, every quantity."""
    model, x, y = random_stack(rng, "features", max_blocks=4)
    if rng.random() < 0.3:
        model.eval()
    return stack_comparisons(model, x, y, equation="STACK.chain")


@register_check("stack-random-images")
def random_image_stack_check(rng: np.random.Generator) -> list[Comparison]:
    """STACK.chain: random CNN stacks (conv, batch norm, dropout2d, pooling, … → flatten →
    dense → softmax), a training step or an evaluation pass, against autograd."""
    model, x, y = random_stack(rng, "images", max_blocks=4)
    if rng.random() < 0.3:
        model.eval()
    return stack_comparisons(model, x, y, equation="STACK.chain")


def residual_model(rng: np.random.Generator, *, width: int | None = None) -> Sequential:
    """``Dense → tanh → Residual(Dense → σ → Dense) → Dense → softmax``: the block mid-stack."""
    n_in, width = int(rng.integers(1, 7)), width or int(rng.integers(1, 7))
    hidden, classes = int(rng.integers(1, 7)), int(rng.integers(2, 5))
    branch = [Dense(width, hidden), ActivationLayer("sigmoid"), Dense(hidden, width)]
    layers = [Dense(n_in, width), "tanh", Residual(branch), Dense(width, classes), "softmax"]
    return Sequential(layers, "log-likelihood", seed=int(rng.integers(2**31)))


@register_check("stack-residual")
def residual_check(rng: np.random.Generator) -> list[Comparison]:
    """LAYER.residual: ∂C/∂x = ∂C/∂y + J_fᵀ ∂C/∂y, with the block between two layers."""
    model = residual_model(rng)
    batch = int(rng.integers(1, 6))
    x = rng.standard_normal((batch, *model.input_shape))
    y = rng.integers(0, model.output_shape[0], size=batch)
    return stack_comparisons(model, x, y, equation="LAYER.residual")


@register_check("stack-network-equivalence")
def network_equivalence_check(rng: np.random.Generator) -> list[Comparison]:
    """STACK.chain: Sequential.from_network(net) gives Network.backprop's gradients."""
    sizes = [int(s) for s in rng.integers(1, 8, size=int(rng.integers(2, 5)))]
    activations = [str(a) for a in rng.choice(["sigmoid", "tanh", "relu", "gelu"], len(sizes) - 1)]
    net = Network(sizes, activations, "quadratic", seed=int(rng.integers(2**31)))
    x = rng.standard_normal((int(rng.integers(1, 6)), sizes[0]))
    y = rng.standard_normal((x.shape[0], sizes[-1]))
    ours = Sequential.from_network(net).backprop(x, y)
    reference = net.backprop(x, y)
    comparisons = [
        Comparison(
            "STACK.chain",
            "cost vs Network",
            np.array(ours.cost),
            np.array(reference.cost),
            oracle="Network",
        )
    ]
    for l, (gw, gb) in enumerate(zip(reference.weights, reference.biases, strict=True)):
        comparisons.append(
            Comparison(
                "STACK.chain",
                f"∂C/∂W{l + 1} vs Network",
                ours.params[f"{2 * l}.weight"],
                gw,
                oracle="Network",
            )
        )
        comparisons.append(
            Comparison(
                "STACK.chain",
                f"∂C/∂b{l + 1} vs Network",
                ours.params[f"{2 * l}.bias"],
                gb,
                oracle="Network",
            )
        )
    comparisons.append(
        Comparison(
            "STACK.chain",
            "∂C/∂x vs Network",
            ours.input_grad,
            reference.input_grad,
            oracle="Network",
        )
    )
    return comparisons


def adjoint_comparison(
    model: Sequential, x: np.ndarray, rng: np.random.Generator, equation: str
) -> Comparison:
    """⟨u, J v⟩ = ⟨Jᵀ u, v⟩ for the map x -> output: J v from ``torch.func.jvp`` of the
    torch stack, Jᵀ u from our backward pass (random u and v, never ones)."""
    out, caches = model.forward(x)
    u, v = rng.standard_normal(out.shape), rng.standard_normal(x.shape)
    vjp_u, _ = model.backward(u, caches)
    params = {name: torch.tensor(array) for name, array in model.named_parameters()}
    buffers = {name: torch.tensor(array) for name, array in model.named_buffers()}

    def function(inputs):
        h = inputs
        for index, (layer, cache) in enumerate(zip(model.layers, caches, strict=True)):
            prefix = f"{index}."
            own = {k[len(prefix) :]: t for k, t in params.items() if k.startswith(prefix)}
            own_buffers = {
                k[len(prefix) :]: t.clone() for k, t in buffers.items() if k.startswith(prefix)
            }
            h = torch_layer_forward(layer, own, own_buffers, h, cache)
        return h

    _, jv = torch.func.jvp(function, (torch.tensor(x),), (torch.tensor(v),))
    left = float(np.vdot(u, jv.numpy()))
    right = float(np.vdot(vjp_u, v))
    # Both sides are sums of products accumulated through every layer; each layer's JVP
    # (torch) and VJP (ours) adds rounding relative to its own magnitudes, so the bound
    # is ε-relative to the absolute sums, once per layer (measured: 1e-15 on sums of 5e-3
    # through five layers, 5.7 ε-units of Σ|u||Jv| + Σ|Jᵀu||v|).
    magnitude = float(np.abs(u).ravel() @ np.abs(jv.numpy()).ravel())
    magnitude += float(np.abs(vjp_u).ravel() @ np.abs(v).ravel())
    # Cancellation inside a layer (layer norm over two features: x̂ = ±c) is invisible to
    # magnitude sums: add the change of ⟨Jᵀu, v⟩ when our backward pass runs on caches and
    # cotangents perturbed by a relative δ, per unit δ (as reference.stack does).
    delta, jitter = 2.0**-26, np.random.default_rng(2)

    def shake(array: np.ndarray) -> np.ndarray:
        return array * (1.0 + delta * jitter.choice([-1.0, 1.0], size=array.shape))

    d = u
    for layer, cache in zip(model.layers[::-1], caches[::-1], strict=True):
        d, _ = layer.backward(shake(d), shake_cache(cache, shake))
    sensitivity = abs(float(np.vdot(d, v)) - right) / delta
    scale = np.array(magnitude * len(model.layers) + sensitivity)
    return Comparison(
        equation, "adjoint ⟨u, J v⟩", np.array(right), np.array(left), scale=scale, oracle="torch"
    )


@register_check("stack-adjoint")
def adjoint_check(rng: np.random.Generator) -> list[Comparison]:
    """STACK.chain: the dot-product test of the whole stack's input VJP."""
    model, x, _ = random_stack(rng, "features", max_blocks=4)
    # The map x -> logits (the final softmax dropped: near one-hot outputs make J v a
    # cancelling difference whose rounding no magnitude sum of the result bounds).
    logits = Sequential(model.layers[:-1], "quadratic", input_shape=model.input_shape)
    logits.eval()  # eval: dropout off, batch norm's running statistics
    return [adjoint_comparison(logits, x, rng, "STACK.chain")]
