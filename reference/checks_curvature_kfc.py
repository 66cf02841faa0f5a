"""Verification checks of the Kronecker factors beyond Dense on (batch, features):
``CURV.kfc`` (convolution, BackPACK's scaling), ``CURV.kfac-expand`` (Dense on
``(N, T, D)``) and ``CURV.kfra`` (the recursive batch-averaged GGN), torch.func in float64
as the oracle (:func:`torch_factors`), BackPACK 1.7.1 in ``tests/test_curvature_kfc.py``.

The oracle forms each factor from torch's own pieces, never from the library's walk: ``A``
from ``jacrev`` of the layer's output in its weight (row ``0`` of a convolution's Jacobian
at location ``l`` is the patch ``u_l``; a dense layer's input rows), ``B`` from the GGN of
the loss in the layer's OUTPUT ``z``, ``G_z = J_tailᵀ ∇²_f C J_tail`` (``J_tail = ∂f/∂z``
by ``jacrev`` of the rest of the torch twin): ``Σ_{x,t} G_z[(x,t),(x,t)]`` (expand) or
``Σ_x Σ_{l,l'} G_z[(x,·,l),(x,·,l')]`` (KFC); and, at ``n = 1`` with one location, the
whole block ``B ⊗ A`` against the exact GGN block (``Twin.ggn``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from manual_bp import Sequential
from manual_bp import layers as L
from manual_bp.curvature.kfac import ggn_block, kflr
from manual_bp.curvature.kfra import kfra
from manual_bp.layers.convolution import Conv1d, Conv2d, Conv3d
from manual_bp.layers.dense import Dense
from reference.checks import register_check
from reference.compare import Comparison
from reference.curvature_twins import Twin

__all__ = [
    "kfc_case",
    "kfra_case",
    "sequence_case",
    "torch_factors",
    "torch_factors_scaled",
    "torch_kfra",
]

T = torch.float64
CONV = {1: L.Conv1d, 2: L.Conv2d, 3: L.Conv3d}
#: The floor of every B scale: a saturated sigmoid/tanh/softmax evaluates ``p(1 − p)``-type
#: factors whose parts have magnitude ≤ 1 while the result is ~1e-12 (as
#: :meth:`reference.curvature_oracle.TorchModel.floor`); a block carries ``|A|`` times it.
UNIT = 1.0


def _child_index(model: Any, layer: Any) -> int:
    return next(k for k, (_, c) in enumerate(model.named_children()) if c is layer)


def torch_factors(model: Any, x: np.ndarray, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(A, B)]`` per Dense/Conv layer with parameters (bias folded), from torch.func on
    the model's twin (see the module): KFC's BackPACK scaling for a convolution, expand for
    a dense layer on any rank."""
    return [(A, B) for A, B, _ in torch_factors_scaled(model, x, y)]


def torch_factors_scaled(model: Any, x: np.ndarray, y: np.ndarray) -> list[tuple]:
    """:func:`torch_factors` with ``B``'s magnitude scale (the same sums of
    ``|J|ᵀ(|H| + 1/n)|J|``: ``B`` sums signed terms over locations and classes, which can
    cancel; ``+ 1/n`` as in :func:`_block_scale`)."""
    twin = Twin(model, x, y)
    H = torch.tensor(twin.output_hessian())  # ∇²_f C, mean loss: (|f|, |f|)
    body = list(twin.body.children())
    params = twin.params(twin.theta)
    out = []
    with torch.no_grad():
        for k, (name, layer) in enumerate(model.named_children()):
            if type(layer) not in (Dense, Conv1d, Conv2d, Conv3d):
                continue
            below = torch.nn.Sequential(*body[:k])
            a = below(twin.x)  # the layer's input
            module = body[k]
            z = module(a)
            n = z.shape[0]
            tail = torch.nn.Sequential(*body[k + 1 :])
            J = torch.func.jacrev(lambda t, tail=tail: tail(t).reshape(-1))(z).reshape(
                -1, z.numel()
            )
            size = z[0].numel()
            both = torch.stack([J.T @ H @ J, J.abs().T @ (H.abs() + 1.0 / n) @ J.abs()])
            both = both.reshape(2, n, size, n, size)
            both = torch.stack([both[:, i, :, i, :] for i in range(n)], 1)  # per sample
            bias = f"{name}.bias" in params
            weight = params[f"{name}.weight"]
            m_out = weight.shape[0]
            if type(layer) is Dense:
                rows = a.reshape(-1, a.shape[-1])
                if bias:
                    rows = torch.cat([rows, torch.ones(rows.shape[0], 1, dtype=T)], 1)
                A = rows.T @ rows / rows.shape[0]
                R = size // m_out
                blocks = both.reshape(2, n, R, m_out, R, m_out)
                B = torch.einsum("sxtiTj,tT->sij", blocks, torch.eye(R, dtype=T))
            else:
                J_w = torch.func.jacrev(
                    lambda w, a=a, module=module: torch.func.functional_call(
                        module, {"weight": w}, (a,)
                    )
                )(weight)  # (n, C_out, *So, C_out, C_in, *k)
                patches = J_w[:, 0].reshape(n, -1, m_out, weight[0].numel())[:, :, 0]
                if bias:
                    ones = torch.ones(*patches.shape[:2], 1, dtype=T)
                    patches = torch.cat([patches, ones], 2)
                A = torch.einsum("xli,xlj->ij", patches, patches) / n
                blocks = both.reshape(2, n, m_out, size // m_out, m_out, size // m_out)
                B = blocks.sum(axis=(1, 3, 5))  # Σ_x Σ_{l,l'}
            out.append((A.numpy(), B[0].numpy(), B[1].numpy()))
    return out


def kfc_case(rng: np.random.Generator, dims: int | None = None, **options: Any):
    """``(model, x, y)``: a random convolution (every option drawn unless given) in the
    middle of ``Conv → tanh → conv → sigmoid → Flatten → Dense``, softmax + log-likelihood;
    ``n`` (``size``: the spatial size) drawn unless given in ``options``."""
    dims = int(rng.integers(1, 4)) if dims is None else dims
    n = int(options.pop("n", rng.integers(1, 4)))
    size = int(options.pop("size", {1: 7, 2: 5, 3: 4}[dims]))
    c_in, c_out = int(rng.integers(1, 3)), int(rng.integers(1, 4))
    drawn = {
        "kernel_size": int(rng.integers(1, 3)),
        "stride": int(rng.integers(1, 3)),
        "padding": int(rng.integers(0, 2)),
        "dilation": int(rng.integers(1, 3)),
        "bias": bool(rng.integers(2)),
        "padding_mode": str(rng.choice(["zeros", "reflect", "replicate", "circular"])),
    }
    drawn.update(options)
    shape = (2, *([size] * dims))
    first = CONV[dims](2, c_in, 2 if size > 1 else 1, bias=bool(rng.integers(2)))
    middle = CONV[dims](c_in, c_out, **drawn)
    width = int(np.prod(middle.output_shape(first.output_shape(shape))))
    model = Sequential(
        [first, "tanh", middle, "sigmoid", L.Flatten(), L.Dense(width, 3), "softmax"],
        "log-likelihood",
        input_shape=shape,
    )
    model.load_state_dict(
        {k: rng.standard_normal(np.shape(v)) for k, v in model.state_dict().items()}
    )
    return model, rng.standard_normal((n, *shape)), rng.integers(0, 3, n)


def sequence_case(rng: np.random.Generator, n: int | None = None, positions: int | None = None):
    """``(model, x, y)``: ``Dense → tanh → Dense → softmax`` on ``(n, T, D)`` with a label
    per position (log-likelihood), the biases drawn."""
    n = int(rng.integers(1, 4)) if n is None else n
    T_ = int(rng.integers(1, 4)) if positions is None else positions
    d, h = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    model = Sequential(
        [
            L.Dense(d, h, bias=bool(rng.integers(2))),
            "tanh",
            L.Dense(h, 3, bias=bool(rng.integers(2))),
            "softmax",
        ],
        "log-likelihood",
        input_shape=(T_, d),
    )
    model.load_state_dict(
        {k: rng.standard_normal(np.shape(v)) for k, v in model.state_dict().items()}
    )
    return model, rng.standard_normal((n, T_, d)), rng.integers(0, 3, (n, T_))


def kfra_case(rng: np.random.Generator, n: int | None = None):
    """``(model, x, y)``: a random MLP of Dense layers and elementwise activations (the
    family KFRA is defined on), softmax + log-likelihood or identity + quadratic."""
    depth = int(rng.integers(1, 4))
    sizes = [int(s) for s in rng.integers(1, 5, depth + 1)]
    layers: list[Any] = []
    for k in range(depth):
        layers.append(L.Dense(sizes[k], sizes[k + 1], bias=bool(rng.integers(2))))
        if k < depth - 1:
            layers.append(str(rng.choice(["tanh", "sigmoid", "relu", "softplus", "elu"])))
    quadratic = bool(rng.integers(2))
    if not quadratic:
        layers.append("softmax")
    model = Sequential(layers, "quadratic" if quadratic else "log-likelihood")
    model.load_state_dict(
        {k: rng.standard_normal(np.shape(v)) for k, v in model.state_dict().items()}
    )
    n = int(rng.integers(1, 6)) if n is None else n
    x = rng.standard_normal((n, sizes[0]))
    y = rng.standard_normal((n, sizes[-1])) if quadratic else rng.integers(0, sizes[-1], n)
    return model, x, y


def torch_kfra(model: Any, x: np.ndarray, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """KFRA's ``[(A, B)]`` by the recursion of Botev et al. in torch: ``Ḡ_f = Σₓ ∇²_f C``
    blocks (the Hessian of the mean loss in ``f``, per sample), ``Wᵀ Ḡ W`` through a
    linear map, ``Ḡ ⊙ (1/n) Σₓ σ'σ'ᵀ`` through an activation, ``σ'`` by ``torch.func.jvp``."""
    twin = Twin(model, x, y)
    n = twin.x.shape[0]
    H = torch.tensor(twin.output_hessian())
    m = H.shape[0] // n
    G = torch.einsum("xixj->ij", H.reshape(n, m, n, m)) if n else H
    body = list(twin.body.children())
    acts = [twin.x]
    with torch.no_grad():
        for module in body:
            acts.append(module(acts[-1]))
        out = []
        for k in range(len(body) - 1, -1, -1):
            module = body[k]
            if isinstance(module, torch.nn.Linear):
                rows = acts[k]
                if module.bias is not None:
                    rows = torch.cat([rows, torch.ones(n, 1, dtype=T)], 1)
                out.append(((rows.T @ rows / n).numpy(), G.numpy().copy()))
                G = module.weight.T @ G @ module.weight
            else:
                z = acts[k]
                d = torch.func.jvp(module, (z,), (torch.ones_like(z),))[1]
                G = G * (d.T @ d) / n
    return out[::-1]


def _scale_of(expected: np.ndarray) -> np.ndarray:
    return np.full(np.shape(expected), max(float(np.abs(expected).max()), 1e-300))


def _block_scale(model: Any, twin: Twin, index: int) -> np.ndarray:
    """``|J|ᵀ(|H| + 1/n)|J|`` on a layer's block: the magnitude of the GGN's terms (``+ 1/n``:
    the unit mass of ``p`` whose products ``p(1 − p)`` round relative to 1, as
    :meth:`reference.curvature_oracle.TorchModel.ggn`)."""
    J = np.abs(twin.jacobian())
    G = J.T @ (np.abs(twin.output_hessian()) + 1.0 / twin.x.shape[0]) @ J
    return ggn_block(model, G, index)


def _kron_equals_block(
    equation: str, label: str, A: np.ndarray, B: np.ndarray, twin: Twin, G: np.ndarray, layer: int
) -> Comparison:
    """The structural identity ``B ⊗ A`` = the exact GGN block of layer ``layer`` (where the
    factorisation is exact), scaled by the block's magnitude plus a unit floor."""
    scale = _block_scale(twin.model, twin, layer) + UNIT * max(1.0, float(np.abs(A).max()))
    return Comparison(equation, label, np.kron(B, A), ggn_block(twin.model, G, layer), scale=scale)


@register_check("curvature-kfc")
def curvature_kfc_check(rng: np.random.Generator) -> list[Comparison]:
    """Conv1d/2d/3d (every option drawn) in a random stack: A and B against torch.func
    (BackPACK's scaling); at n = 1 and one output location, B ⊗ A = the exact GGN block."""
    model, x, y = kfc_case(rng)
    comps = []
    dims = len(x.shape) - 2
    ours = kflr(model, x, y)
    for l, ((A, B), (At, Bt, Bs)) in enumerate(
        zip(ours[:-1], torch_factors_scaled(model, x, y)[:-1], strict=True)
    ):
        comps.append(Comparison("CURV.kfc", f"A conv{dims}d layer {l}", A, At))
        comps.append(Comparison("CURV.kfc", f"B conv{dims}d layer {l}", B, Bt, scale=Bs + UNIT))
    # one output location: kernel = the whole (padded) input, batch of one
    size = int(rng.integers(2, 5))  # the first conv's kernel 2: the middle sees size - 1
    model, x, y = kfc_case(rng, dims, n=1, size=size, kernel_size=size - 1, padding=0, dilation=1)
    twin = Twin(model, x, y)
    G, (A, B) = twin.ggn(), kflr(model, x, y)[1]
    label = f"B ⊗ A = GGN block (conv{dims}d, n = 1, L = 1)"
    comps.append(_kron_equals_block("CURV.kfc", label, A, B, twin, G, 1))
    return comps


@register_check("curvature-kfac-expand")
def curvature_kfac_expand_check(rng: np.random.Generator) -> list[Comparison]:
    """Dense on (N, T, D): A and B against torch.func (expand); at n = 1, T = 1 the exact
    GGN block."""
    model, x, y = sequence_case(rng)
    comps = []
    for l, ((A, B), (At, Bt, Bs)) in enumerate(
        zip(kflr(model, x, y), torch_factors_scaled(model, x, y), strict=True)
    ):
        comps.append(Comparison("CURV.kfac-expand", f"A layer {l}", A, At))
        comps.append(Comparison("CURV.kfac-expand", f"B layer {l}", B, Bt, scale=Bs + UNIT))
    model, x, y = sequence_case(rng, n=1, positions=1)
    twin = Twin(model, x, y)
    G = twin.ggn()
    for l, (A, B) in enumerate(kflr(model, x, y)):
        label = f"B ⊗ A = GGN block layer {l} (n = 1, T = 1)"
        comps.append(_kron_equals_block("CURV.kfac-expand", label, A, B, twin, G, l))
    return comps


@register_check("curvature-kfra")
def curvature_kfra_check(rng: np.random.Generator) -> list[Comparison]:
    """KFRA on a random MLP against the recursion in torch; at n = 1 equal to the exact
    GGN block (B ⊗ A)."""
    model, x, y = kfra_case(rng)
    comps = []
    for l, ((A, B), (At, Bt)) in enumerate(
        zip(kfra(model, x, y), torch_kfra(model, x, y), strict=True)
    ):
        comps.append(Comparison("CURV.kfra", f"A layer {l}", A, At))
        comps.append(Comparison("CURV.kfra", f"B layer {l}", B, Bt, scale=_scale_of(Bt) + UNIT))
    model, x, y = kfra_case(rng, n=1)
    twin = Twin(model, x, y)
    G = twin.ggn()
    for l, (A, B) in enumerate(kfra(model, x, y)):
        label = f"B ⊗ A = GGN block layer {l} (n = 1)"
        comps.append(_kron_equals_block("CURV.kfra", label, A, B, twin, G, l))
    return comps
