"""Checks of torch's padding layers and ``Bilinear`` (``docs/padding.md``) for ``verify``.

Oracle: torch's own modules (``nn.ReflectionPad2d``, …, ``nn.Bilinear``) in float64 with
our parameters and a random upstream gradient; ``torch.func`` for the V-axis products; the
layer in the middle of random stacks (the blocks registered here put every class into
:func:`reference.stack.random_stack`). Cases are drawn at and beside torch's limits:
reflection padding up to ``size − 1``, circular up to ``size``, negative padding (cropping)
down to an empty output, unbatched inputs and empty batches.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from manual_bp.layers import LAYERS
from manual_bp.layers.bilinear import Bilinear
from manual_bp.layers.padding_fast import PadStep
from manual_bp.layers.padding_layers import _PadNd
from reference.checks import register_check
from reference.compare import Comparison
from reference.products import product_comparisons
from reference.stack import register_block, register_torch, stack_comparisons

__all__ = [
    "PAD_CLASSES",
    "bilinear_case",
    "pad_case",
    "pad_comparisons",
    "random_padding",
    "torch_module",
]

#: the 15 padding classes by torch's name
PAD_CLASSES = {
    cls.__name__: cls
    for cls in LAYERS.classes()
    if isinstance(cls, type) and issubclass(cls, _PadNd)
}
_F_MODE = {
    "zeros": "constant",
    "reflect": "reflect",
    "replicate": "replicate",
    "circular": "circular",
}


# ---------------------------------------------------------------------- torch forwards
@register_torch(_PadNd)
def _torch_pad(layer, params, buffers, x, cache):
    """``F.pad`` with torch's tuple (last axis first), as the modules call it."""
    if layer.mode == "zeros":
        return F.pad(x, layer.padding, "constant", layer.value)
    return F.pad(x, layer.padding, _F_MODE[layer.mode])


@register_torch(Bilinear)
def _torch_bilinear(layer, params, buffers, x, cache):
    """The one-input form: ``F.bilinear(x, x, A, b)``."""
    return F.bilinear(x, x, params["weight"], params.get("bias"))


def torch_module(layer) -> torch.nn.Module:
    """torch's module of ``layer``'s class and arguments (float64, our parameters)."""
    cls = getattr(torch.nn, type(layer).__name__)
    if isinstance(layer, Bilinear):
        module = cls(layer.in1_features, layer.in2_features, layer.out_features,
                     bias=layer.has_bias, dtype=torch.float64)  # fmt: skip
        with torch.no_grad():
            for name, p in module.named_parameters():
                p.copy_(torch.from_numpy(layer.params[name]))
        return module
    if layer.mode == "zeros" and type(layer).__name__.startswith("Constant"):
        return cls(layer.padding, layer.value)
    return cls(layer.padding)


# ---------------------------------------------------------------------- drawing cases
def random_padding(
    rng: np.random.Generator, mode: str, size: tuple[int, ...], *, crop: bool = True
) -> tuple[tuple[int, int], ...]:
    """Pads ``((a, b), …)`` per axis within torch's limits for ``mode``, often AT a limit.

    A side is cropped (negative) or padded: the crops ``c₀ + c₁ ≤ size`` leave ``kept``
    entries (at least one for reflect and replicate; zero is an empty output for zeros and
    circular); a padded side is at most ``size − 1`` for reflect (torch's check), ``kept``
    for circular (once round the cropped axis), up to 3 otherwise.
    """
    pads = []
    for s in size:
        floor = 1 if mode in ("reflect", "replicate") else 0
        c0 = int(rng.integers(0, s - floor + 1)) if crop and rng.random() < 0.3 else 0
        c1 = int(rng.integers(0, s - floor - c0 + 1)) if crop and rng.random() < 0.3 else 0
        kept = s - c0 - c1
        hi = {"reflect": s - 1, "circular": kept}.get(mode, 3)
        a, b = (int(rng.choice([0, hi, int(rng.integers(0, hi + 1))])) for _ in range(2))
        pads.append((-c0 if c0 else a, -c1 if c1 else b))
    return tuple(pads)


def pad_case(rng: np.random.Generator, name: str | None = None):
    """A padding layer of a drawn class, padding and input (batched, unbatched, empty)."""
    name = name or str(rng.choice(sorted(PAD_CLASSES)))
    cls = PAD_CLASSES[name]
    d, mode = cls.dims, cls.mode
    size = tuple(int(k) for k in rng.integers(1, 5, size=d))
    pads = random_padding(rng, mode, size)
    padding = tuple(p for a, b in reversed(pads) for p in (a, b))  # torch: last axis first
    if len(set(padding)) == 1 and rng.integers(2):
        padding = padding[0]  # the int form
    args = (padding, float(rng.choice([0.0, -1.5, 2.0]))) if name.startswith("Constant") else (
        padding,
    )  # fmt: skip
    layer = cls(*args)
    batch = int(rng.choice([0, 1, 2, 3])) if rng.random() < 0.9 else None
    channels = int(rng.integers(1, 4))
    lead = (channels,) if batch is None else (batch, channels)
    if mode == "zeros" and rng.random() < 0.2:
        lead = lead[: int(rng.integers(0, len(lead) + 1))]  # ZeroPad/ConstantPad: any leading
    return layer, rng.standard_normal((*lead, *size))


def pad_comparisons(layer, x: np.ndarray, rng: np.random.Generator) -> list[Comparison]:
    """LAYER.pad and PAD.fold: output and ∂C/∂x (readable and fast) vs torch's module."""
    out, cache = layer.forward(x)
    g = rng.standard_normal(out.shape)
    dx, grads = layer.backward(g, cache)
    step = PadStep(layer)
    fast_out = step.forward(x).copy()
    fast_dx = step.backward(g.copy(), {}, True)
    xt = torch.tensor(x, requires_grad=True)
    ot = torch_module(layer)(xt)
    ot.backward(torch.from_numpy(g))
    ref_out, ref_dx = ot.detach().numpy(), xt.grad.numpy()
    scale = layer.backward(np.abs(g), cache)[0]  # Σ|terms| of each scatter-add
    return [
        Comparison("LAYER.pad", "output", out, ref_out),
        Comparison("LAYER.pad", "∂C/∂x", dx, ref_dx, scale),
        Comparison("LAYER.pad", "no parameters", np.array(len(grads)), np.array(0)),
        Comparison("PAD.fold", "fast output", fast_out, ref_out),
        Comparison("PAD.fold", "fast ∂C/∂x (fold)", fast_dx, ref_dx, scale),
    ]


def bilinear_case(rng: np.random.Generator, *, one_input: bool | None = None):
    """A ``Bilinear`` of drawn sizes and inputs ``(N, *, in)`` or unbatched; ``one_input``:
    the quadratic form (``in1 = in2``)."""
    one = bool(rng.integers(2)) if one_input is None else one_input
    in1 = int(rng.integers(1, 5))
    in2 = in1 if one else int(rng.integers(1, 5))
    layer = Bilinear(in1, in2, int(rng.integers(1, 4)), bias=bool(rng.integers(2)), seed=rng)
    lead = [(), (int(rng.integers(0, 4)),), (int(rng.integers(1, 4)), int(rng.integers(1, 3)))]
    shape = lead[int(rng.choice(3, p=[0.15, 0.6, 0.25]))]
    x1 = rng.standard_normal((*shape, in1))
    return layer, x1, None if one else rng.standard_normal((*shape, in2))


def bilinear_comparisons(layer, x1, x2, rng: np.random.Generator) -> list[Comparison]:
    """LAYER.bilinear: output, both input gradients and ∂A, ∂b vs ``nn.Bilinear``."""
    out, cache = layer.forward(x1, x2)
    g = rng.standard_normal(out.shape)
    d_in, grads = layer.backward(g, cache)
    runs = []
    for absolute in (False, True):  # the second run: |x|, |A|, |g|, Σ|terms| (scales)
        f = np.abs if absolute else (lambda a: a)
        module = torch_module(layer)
        if absolute:
            with torch.no_grad():
                for p in module.parameters():
                    p.abs_()
        t1 = torch.tensor(f(x1), requires_grad=True)
        t2 = t1 if x2 is None else torch.tensor(f(x2), requires_grad=True)
        ot = module(t1, t2)
        ot.backward(torch.from_numpy(f(g)))
        params = {n: p.grad.numpy() for n, p in module.named_parameters()}
        runs.append((ot.detach().numpy(), t1.grad.numpy(), None if x2 is None else t2.grad.numpy(),
                     params))  # fmt: skip
    (o, d1, d2, p), (so, s1, s2, sp) = runs
    eq = "LAYER.bilinear"
    found = [Comparison(eq, "output", out, o, so)]
    if x2 is None:
        found.append(Comparison(eq, "∂C/∂x (x₁ = x₂)", d_in, d1, s1))
    else:
        found += [
            Comparison(eq, "∂C/∂x₁", d_in[0], d1, s1),
            Comparison(eq, "∂C/∂x₂", d_in[1], d2, s2),
        ]
    found += [Comparison(eq, f"∂C/∂{n}", grads[n], p[n], sp[n]) for n in p]
    return found


def bilinear_product_comparisons(layer, x1, x2, rng: np.random.Generator) -> list[Comparison]:
    """PROD.bilinear.*: two-input products vs ``torch.func`` (the one-input form goes
    through :func:`reference.products.product_comparisons`)."""
    from torch.func import jvp, vjp

    V = int(rng.integers(1, 4))
    out, cache = layer.forward(x1, x2)
    names = list(layer.params)
    M = rng.standard_normal((V, *out.shape))
    T1, T2 = rng.standard_normal((V, *x1.shape)), rng.standard_normal((V, *x2.shape))
    TP = {n: rng.standard_normal((V, *layer.params[n].shape)) for n in names}
    dout = rng.standard_normal(out.shape)
    tp = {n: torch.from_numpy(layer.params[n]) for n in names}

    def f(a, b, *ps):
        return F.bilinear(a, b, ps[0], ps[1] if len(ps) > 1 else None)

    prim = (torch.from_numpy(x1), torch.from_numpy(x2), *tp.values())

    def grad_of(*args):  # the backward with dout fixed, for the residual
        return vjp(f, *args)[1](torch.from_numpy(dout))

    ref_vjp = [vjp(f, *prim)[1](torch.from_numpy(m)) for m in M]
    tangents = [(torch.from_numpy(T1[v]), torch.from_numpy(T2[v]),
                 *(torch.from_numpy(TP[n][v]) for n in names)) for v in range(V)]  # fmt: skip
    ref_jvp = [jvp(f, prim, t)[1].numpy() for t in tangents]
    ref_res = [jvp(grad_of, prim, t)[1] for t in tangents]
    m1, m2 = layer.input_vjp(cache, M)
    pv = layer.param_vjp(cache, M)
    j = layer.input_jvp(cache, (T1, T2)) + layer.param_jvp(cache, TP)
    (r1, r2), rp = layer.residual(cache, dout, (T1, T2), TP)
    eq = "PROD.bilinear"
    found = [
        Comparison(f"{eq}.vjp", "J_x₁ᵀ M", m1, np.stack([r[0].numpy() for r in ref_vjp])),
        Comparison(f"{eq}.vjp", "J_x₂ᵀ M", m2, np.stack([r[1].numpy() for r in ref_vjp])),
        Comparison(f"{eq}.jvp", "J (T₁, T₂, T_θ)", j, np.stack(ref_jvp)),
        Comparison(f"{eq}.residual", "R∂x₁", r1, np.stack([r[0].numpy() for r in ref_res])),
        Comparison(f"{eq}.residual", "R∂x₂", r2, np.stack([r[1].numpy() for r in ref_res])),
    ]
    for i, n in enumerate(names):
        found.append(Comparison(f"{eq}.vjp", f"J_{n}ᵀ M", pv[n],
                                np.stack([r[2 + i].numpy() for r in ref_vjp])))  # fmt: skip
        found.append(Comparison(f"{eq}.residual", f"R∂{n}", rp[n],
                                np.stack([r[2 + i].numpy() for r in ref_res])))  # fmt: skip

    # the adjoint identity ⟨M, J T⟩ = ⟨Jᵀ M, T⟩ summed over both inputs
    def dot(a, b):
        return (a * b).reshape(V, -1).sum(axis=1)

    JT = layer.input_jvp(cache, (T1, T2))
    lhs, rhs = dot(M, JT), dot(m1, T1) + dot(m2, T2)
    scale = dot(np.abs(M), np.abs(JT))
    found.append(Comparison(f"{eq}.vjp", "⟨M, J T⟩ = ⟨Jᵀ M, T⟩", lhs, rhs, scale + np.abs(rhs)))
    return found


# ---------------------------------------------------------------------- stack blocks
def _pad_block(names: tuple[str, ...]):
    def block(rng: np.random.Generator, shape: tuple[int, ...]):
        cls = PAD_CLASSES[str(rng.choice(names))]
        # the per-sample shape's last ``dims`` axes are padded (3-d: channels too), kept small
        size = shape[len(shape) - cls.dims :]
        pads = random_padding(rng, cls.mode, size, crop=False)
        pads = tuple((min(a, 2), min(b, 2)) for a, b in pads)
        padding = tuple(p for a, b in reversed(pads) for p in (a, b))
        layer = cls(padding, 0.5) if cls.__name__.startswith("Constant") else cls(padding)
        return [layer], layer.output_shape(shape)

    return block


register_block("images", "pad2d")(_pad_block(tuple(n for n in PAD_CLASSES if "2d" in n)))
register_block("images", "pad3d")(_pad_block(tuple(n for n in PAD_CLASSES if "3d" in n)))
register_block("sequences", "pad1d")(_pad_block(tuple(n for n in PAD_CLASSES if "1d" in n)))


@register_block("features", "bilinear")
def _bilinear_block(rng: np.random.Generator, shape: tuple[int, ...]):
    """The quadratic form ``Bilinear(D, D, k)`` (the one-input form of a stack)."""
    layer = Bilinear(shape[-1], shape[-1], int(rng.integers(1, 5)), bias=bool(rng.integers(2)))
    return [layer], layer.output_shape(shape)


# ---------------------------------------------------------------------- checks
@register_check("padding-layers")
def padding_layers_check(rng: np.random.Generator) -> list[Comparison]:
    """LAYER.pad, PAD.fold: a drawn padding layer alone (readable and fast) vs torch."""
    layer, x = pad_case(rng)
    return pad_comparisons(layer, x, rng)


@register_check("padding-layers-products")
def padding_products_check(rng: np.random.Generator) -> list[Comparison]:
    """PROD.pad.*: a drawn padding layer's products vs torch.func, and the identities."""
    layer, x = pad_case(rng)
    while x.ndim < layer.dims + 1 or x.shape[0] == 0:  # products: a batch axis, non-empty
        layer, x = pad_case(rng)
    return product_comparisons(layer, x, rng)


@register_check("padding-layers-stack")
def padding_stack_check(rng: np.random.Generator) -> list[Comparison]:
    """LAYER.pad mid-stack: conv/pool blocks around a padding layer, a training step."""
    from reference.stack import random_stack

    kind, block = [("images", "pad2d"), ("images", "pad3d"), ("sequences", "pad1d")][
        int(rng.integers(3))
    ]
    model, x, y = random_stack(rng, kind, blocks=(block,))
    return stack_comparisons(model, x, y, equation="LAYER.pad")


@register_check("bilinear")
def bilinear_check(rng: np.random.Generator) -> list[Comparison]:
    """LAYER.bilinear: Bilinear alone (two inputs or the quadratic form) vs nn.Bilinear,
    then the quadratic form in the middle of a stack."""
    from reference.stack import random_stack

    layer, x1, x2 = bilinear_case(rng)
    found = bilinear_comparisons(layer, x1, x2, rng)
    model, x, y = random_stack(rng, "features", blocks=("bilinear", "dense-tanh"))
    return found + stack_comparisons(model, x, y, equation="LAYER.bilinear")


@register_check("bilinear-products")
def bilinear_products_check(rng: np.random.Generator) -> list[Comparison]:
    """PROD.bilinear.*: two-input products vs torch.func; the quadratic form's through the
    shared product comparisons."""
    layer, x1, x2 = bilinear_case(rng, one_input=False)
    found = bilinear_product_comparisons(layer, x1, x2, rng)
    layer, x1, _ = bilinear_case(rng, one_input=True)
    if x1.ndim == 1 or x1.shape[0] == 0:
        x1 = rng.standard_normal((2, *x1.shape[-1:]))
    return found + product_comparisons(layer, x1, rng)
