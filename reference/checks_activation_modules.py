"""Checks of softmin and of torch's activation modules that are layers here — GLU, PReLU,
RReLU, Softmax2d (``docs/activations.md``, "Activation modules") — for ``verify``.

Oracle: torch's own modules and functions in float64 with our parameters and a random
upstream gradient; ``torch.func`` for the V-axis products (through
:func:`reference.products.product_comparisons`); the layers in the middle of random stacks
(the blocks registered here). RReLU's training slopes are torch's own draws: the layer's
generator is torch's Mersenne twister (``RReLU.manual_seed``), so the module alone is
compared with ``torch.manual_seed`` set to the same seed; inside a stack the torch forward
multiplies by the slopes of our cache, as dropout's does with its mask. Inputs carry exact
zeros and the neighbouring floats on both sides (every kink), and options are drawn at
their edges (``lower = upper``, a shared or per-channel slope, ``dim`` at both ends).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from manual_bp.activations import Softmin
from manual_bp.layers import Dense
from manual_bp.layers.activation_modules import GLU, Softmax2d
from manual_bp.layers.base import Layer
from manual_bp.layers.rectifiers import PReLU, RReLU
from reference.checks import register_check
from reference.compare import Comparison
from reference.products import product_comparisons, register_plain_twin
from reference.stack import random_stack, register_block, register_torch, stack_comparisons

__all__ = [
    "LAYER_CASES",
    "glu_case",
    "layer_comparisons",
    "prelu_case",
    "rrelu_case",
    "softmax2d_case",
    "softmin_case",
    "softmin_comparisons",
    "torch_module",
]


# ---------------------------------------------------------------------- torch forwards
@register_torch(GLU)
def _torch_glu(layer, params, buffers, x, cache):
    return F.glu(x, layer.dim)


@register_torch(PReLU)
def _torch_prelu(layer, params, buffers, x, cache):
    return F.prelu(x, params["weight"])


@register_plain_twin(PReLU)
def _plain_prelu(layer, params, buffers, x, cache):
    """``where(x > 0, x, w x)`` for the products: torch's forward-mode formula of ``prelu``
    takes slope 1 at ``x = 0`` where its backward takes ``w`` (its J is not the transpose of
    its Jᵀ there); this twin's derivatives are the backward's everywhere."""
    w = params["weight"]
    if w.numel() != 1:
        w = w.reshape(-1, *(1,) * (x.ndim - 2))
    return torch.where(x > 0, x, w * x)


@register_torch(RReLU)
def _torch_rrelu(layer, params, buffers, x, cache):
    """Training: the slopes of our cache (the module-alone check compares the draws
    themselves with torch's); evaluation: ``leaky_relu`` at ``(lower + upper)/2``, what
    torch's ``rrelu(training=False)`` calls (and which ``torch.func`` can batch)."""
    if layer.training:
        return x * torch.tensor(cache.slope, dtype=x.dtype)
    return F.leaky_relu(x, (layer.lower + layer.upper) / 2)


@register_torch(Softmax2d)
def _torch_softmax2d(layer, params, buffers, x, cache):
    return F.softmax(x, dim=-3)


def torch_module(layer: Layer) -> torch.nn.Module:
    """torch's module of ``layer``'s class and options (float64, our parameters, mode)."""
    if isinstance(layer, GLU):
        module = torch.nn.GLU(layer.dim)
    elif isinstance(layer, PReLU):
        module = torch.nn.PReLU(layer.num_parameters, layer.init, dtype=torch.float64)
        with torch.no_grad():
            module.weight.copy_(torch.from_numpy(layer.params["weight"]))
    elif isinstance(layer, RReLU):
        module = torch.nn.RReLU(layer.lower, layer.upper)
    else:
        module = torch.nn.Softmax2d()
    return module.train(layer.training)


# ---------------------------------------------------------------------- drawing cases
def kinked(rng: np.random.Generator, shape: tuple[int, ...], at: float = 0.0) -> np.ndarray:
    """Normal draws with a share of entries exactly at ``at`` and at its neighbours."""
    x = rng.standard_normal(shape)
    flat = x.reshape(-1)
    for value in (at, np.nextafter(at, -1.0), np.nextafter(at, 1.0), at - 1e-3, at + 1e-3):
        flat[rng.random(flat.size) < 0.08] = value
    return x


def _shape(rng: np.random.Generator, ndim: int, low: int = 1) -> list[int]:
    return [int(rng.integers(low, 5)) for _ in range(ndim)]


def glu_case(rng: np.random.Generator) -> tuple[GLU, np.ndarray]:
    """A GLU with ``dim`` anywhere in range (both ends) and an even halved axis (2 often)."""
    ndim = int(rng.integers(1, 5))
    dim = int(rng.choice([-1, 0, ndim - 1, -ndim, int(rng.integers(-ndim, ndim))]))
    shape = _shape(rng, ndim)
    shape[dim] = int(rng.choice([2, 2 * int(rng.integers(1, 4))]))
    return GLU(dim), rng.standard_normal(shape) * float(rng.choice([1.0, 10.0]))


def prelu_case(rng: np.random.Generator) -> tuple[PReLU, np.ndarray]:
    """A PReLU shared or per channel over 0-5 axes; slopes random, 0, 1 or negative."""
    ndim = int(rng.integers(0, 6))
    shape = _shape(rng, ndim)
    per_channel = ndim >= 2 and bool(rng.integers(2))
    n = shape[1] if per_channel else 1
    layer = PReLU(n, float(rng.choice([0.25, -0.5, 0.0])))
    weights = rng.standard_normal(n)
    weights[rng.random(n) < 0.3] = float(rng.choice([0.0, 1.0, -1.0]))
    layer.params["weight"][...] = weights
    layer.train(bool(rng.integers(2)))
    return layer, kinked(rng, tuple(shape))


def rrelu_case(rng: np.random.Generator) -> tuple[RReLU, np.ndarray]:
    """An RReLU of drawn bounds (equal, negative, above 1), in training or evaluation."""
    lower = float(rng.choice([1 / 8, 0.0, -0.5, 0.3, 1.5]))
    upper = lower + float(rng.choice([0.0, 0.2, 1.0, 1 / 3 - 1 / 8]))
    layer = RReLU(lower, upper, seed=int(rng.integers(2**32)))
    layer.train(bool(rng.integers(2)))
    return layer, kinked(rng, tuple(_shape(rng, int(rng.integers(0, 5)))))


def softmax2d_case(rng: np.random.Generator) -> tuple[Softmax2d, np.ndarray]:
    """``(N, C, H, W)`` or unbatched ``(C, H, W)``; one channel (output 1) at times."""
    layer = Softmax2d()
    layer.train(bool(rng.integers(2)))
    shape = _shape(rng, int(rng.choice([3, 4])))
    return layer, rng.standard_normal(shape) * float(rng.choice([1.0, 30.0]))


#: class name -> case drawer
LAYER_CASES = {"GLU": glu_case, "PReLU": prelu_case, "RReLU": rrelu_case,
               "Softmax2d": softmax2d_case}  # fmt: skip


def softmin_case(rng: np.random.Generator) -> tuple[Softmin, np.ndarray]:
    """A Softmin along a drawn ``dim`` (both ends) of a 0-4-d input (0-d: one element)."""
    ndim = int(rng.integers(0, 5))
    size = max(ndim, 1)
    dim = int(rng.choice([-1, 0, size - 1, -size, int(rng.integers(-size, size))]))
    z = rng.standard_normal(tuple(_shape(rng, ndim))) * float(rng.choice([1.0, 30.0]))
    return Softmin(dim), z


# ---------------------------------------------------------------------- comparisons
def _torch_run(layer: Layer, x: np.ndarray, g: np.ndarray, seed: int | None):
    module = torch_module(layer)
    xt = torch.tensor(x, requires_grad=True)
    if seed is not None:
        torch.manual_seed(seed)
    out = module(xt)
    out.backward(torch.from_numpy(g))
    grads = {n: p.grad.numpy() for n, p in module.named_parameters()}
    return out.detach().numpy(), xt.grad.numpy(), grads


def layer_comparisons(layer: Layer, x: np.ndarray, rng: np.random.Generator) -> list[Comparison]:
    """Output, ∂C/∂x and every parameter gradient of ``layer`` alone vs torch's module; for
    RReLU in training, torch draws its own slopes after ``torch.manual_seed(s)`` and ours
    come from ``manual_seed(s)``: the draws themselves are compared."""
    seed = None
    if isinstance(layer, RReLU):
        seed = int(rng.integers(2**32))
        layer.manual_seed(seed)
    out, cache = layer.forward(x)
    g = rng.standard_normal(out.shape)
    dx, grads = layer.backward(g, cache)
    ref_out, ref_dx, ref_grads = _torch_run(layer, x, g, seed)
    eq = layer.equation
    found = [
        Comparison(eq, "output", out, ref_out, np.abs(ref_out)),
        Comparison(eq, "∂C/∂x", dx, ref_dx, np.abs(ref_dx)),
        Comparison(
            eq,
            "parameter names as torch's",
            np.array(float(sorted(grads) == sorted(ref_grads))),
            np.array(1.0),
        ),
    ]
    if isinstance(layer, PReLU):  # Σ g x over positions cancels: scale Σ|g x|
        scale = layer._reduce((np.abs(g) * np.abs(layer._negative(x)))[None], cache, False)[0]
        found.append(Comparison(eq, "∂C/∂weight", grads["weight"], ref_grads["weight"], scale))
    if isinstance(layer, Softmax2d):  # a ⊙ (g − ⟨g, a⟩): the terms' magnitude
        a = np.abs(out)
        scale = a * (np.abs(g) + (np.abs(g) * a).sum(axis=-3, keepdims=True))
        found[1] = Comparison(eq, "∂C/∂x", dx, ref_dx, scale)
    return found


def softmin_comparisons(act: Softmin, z: np.ndarray, rng: np.random.Generator):
    """ACT.softmin (value, VJP, JVP) and ACT2.softmin (second-order VJP) vs torch."""
    a = act.forward(z)
    g, dz = rng.standard_normal(z.shape), rng.standard_normal(z.shape)
    zt = torch.tensor(z, requires_grad=True)
    at = torch.nn.Softmin(act.dim)(zt)
    (first,) = torch.autograd.grad(at, zt, torch.tensor(g), create_graph=True)
    (second,) = torch.autograd.grad(first, zt, torch.tensor(dz))
    jvp = torch.func.jvp(lambda t: torch.nn.Softmin(act.dim)(t), (zt.detach(),),
                         (torch.tensor(dz),))[1]  # fmt: skip
    axis = act.axis(z) if z.ndim else -1
    zz, aa, gg, dd = (v if z.ndim else v[None] for v in (z, a, g, dz))
    absum = lambda v: np.abs(v).sum(axis=axis, keepdims=True)  # noqa: E731
    # the terms of a ⊙ (g − ⟨g, a⟩) and of the second-order form (mass ≤ 1, see ACT2.softmax)
    vjp_scale = (np.abs(aa) * (np.abs(gg) + absum(gg * aa))).reshape(z.shape)
    jvp_scale = (np.abs(aa) * (np.abs(dd) + absum(dd * aa))).reshape(z.shape)
    second_scale = (absum(gg) * np.abs(dd).max(axis=axis, keepdims=True) + 0 * zz).reshape(z.shape)
    return [
        Comparison("ACT.softmin", "σ(z)", a, at.detach().numpy(), np.abs(a)),
        Comparison("ACT.softmin", "Jᵀ g", act.backward(g, z, a), first.detach().numpy(), vjp_scale),
        Comparison("ACT.softmin", "J dz", act.jvp(dz, z, a), jvp.numpy(), jvp_scale),
        Comparison(
            "ACT2.softmin", "Σ g ∇²σ dz", act.second_vjp(g, dz, z, a), second.numpy(), second_scale
        ),
    ]


# ---------------------------------------------------------------------- stack blocks
@register_block("features", "glu")
def _glu_block(rng: np.random.Generator, shape: tuple[int, ...]):
    """A dense layer to an even width, then GLU over it (the width halves)."""
    width = 2 * int(rng.integers(1, 5))
    return [Dense(shape[-1], width), GLU(-1)], (*shape[:-1], width // 2)


@register_block("images", "glu-channels")
def _glu_channels_block(rng: np.random.Generator, shape: tuple[int, ...]):
    """GLU over an even axis of ``(C, H, W)`` (``dim`` counts the batch axis), if any."""
    even = [axis for axis in range(3) if shape[axis] % 2 == 0]
    if not even:
        return [], shape
    layer = GLU(int(rng.choice(even)) + 1 if rng.integers(2) else int(rng.choice(even)) - 3)
    return [layer], layer.output_shape(shape)


def _prelu_block(rng: np.random.Generator, shape: tuple[int, ...]):
    channels = shape[0] if rng.integers(2) else 1
    layer = PReLU(channels)
    return [layer], shape


def _rrelu_block(rng: np.random.Generator, shape: tuple[int, ...]):
    lower = float(rng.choice([1 / 8, 0.0, 0.5]))
    return [RReLU(lower, lower + float(rng.choice([0.0, 0.3])))], shape


register_block("features", "prelu")(_prelu_block)
register_block("images", "prelu")(_prelu_block)
register_block("features", "rrelu")(_rrelu_block)
register_block("images", "rrelu")(_rrelu_block)


@register_block("images", "softmax2d")
def _softmax2d_block(rng: np.random.Generator, shape: tuple[int, ...]):
    return [Softmax2d()], shape


#: (kind, block) pairs, one per stack check draw
STACK_BLOCKS = (("features", "glu"), ("images", "glu-channels"), ("features", "prelu"),
                ("images", "prelu"), ("features", "rrelu"), ("images", "rrelu"),
                ("images", "softmax2d"))  # fmt: skip


def _randomise_slopes(model) -> None:
    """PReLU slopes away from ``init`` (set after the model seeds), so a slope the gradient
    ignores is caught."""
    rng = np.random.default_rng(len(model.layers))
    for layer in model.layers:
        if isinstance(layer, PReLU):
            layer.params["weight"][...] = rng.standard_normal(layer.params["weight"].shape)


# ---------------------------------------------------------------------- checks
@register_check("activation-modules-softmin")
def softmin_check(rng: np.random.Generator) -> list[Comparison]:
    """ACT.softmin, ACT2.softmin: a drawn Softmin vs torch's module and double backward."""
    return softmin_comparisons(*softmin_case(rng), rng)


@register_check("activation-modules-layers")
def layers_check(rng: np.random.Generator) -> list[Comparison]:
    """LAYER.glu, LAYER.prelu, LAYER.rrelu, ACT.softmax (Softmax2d): each alone vs torch."""
    found = []
    for draw in LAYER_CASES.values():
        found += layer_comparisons(*draw(rng), rng)
    return found


@register_check("activation-modules-products")
def products_check(rng: np.random.Generator) -> list[Comparison]:
    """PROD.glu.*, PROD.prelu.*, PROD.rrelu.*: products vs torch.func and the identities."""
    found = []
    for draw in (glu_case, prelu_case, rrelu_case):
        layer, x = draw(rng)
        # products: a batch axis, non-empty, and not halved by GLU
        while x.ndim < 2 or x.shape[0] == 0 or getattr(layer, "dim", 1) in (0, -x.ndim):
            layer, x = draw(rng)
        found += product_comparisons(layer, x, rng)
    return found


@register_check("activation-modules-stack")
def stack_check(rng: np.random.Generator) -> list[Comparison]:
    """The layers mid-stack (training or evaluation): a step of the stack vs torch."""
    kind, block = STACK_BLOCKS[int(rng.integers(len(STACK_BLOCKS)))]
    model, x, y = random_stack(rng, kind, blocks=(block,))
    _randomise_slopes(model)
    model.train(bool(rng.integers(2)))
    return stack_comparisons(model, x, y)
