"""Checks of attention (``ATT.softmax``, ``ATT.sdpa``, ``ATT.mha`` in ``docs/sequences.md``).

Oracles: ``F.scaled_dot_product_attention`` and ``F.multi_head_attention_forward`` with
OUR parameters in float64 (random upstream gradients; boolean, float and causal masks;
cross-attention with ``S ≠ L``); central finite differences; the layer in the middle of
random sequence stacks.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from manual_bp.layers.attention import (
    MultiheadAttention,
    scaled_dot_product_attention,
    sdpa_backward,
    softmax_backward,
)
from reference.checks import register_check
from reference.compare import Comparison
from reference.sequence_tools import finite_difference, with_stack_scales
from reference.stack import random_stack, register_block, register_torch, stack_comparisons

__all__ = ["mha_case", "sdpa_case", "torch_mha"]


def _mask(rng: np.random.Generator, kind: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """A random SDPA mask (True = may attend); sometimes one query row admits no key at all
    (weights 0, torch's safe softmax), every other row keeps at least its first key."""
    if kind == "none":
        return None
    empty = int(rng.integers(shape[-2])) if rng.random() < 0.25 else None
    if kind == "float":
        mask = rng.standard_normal(shape)
        if empty is not None:
            mask[..., empty, :] = -np.inf
        return mask
    allowed = rng.random(shape) < 0.6
    allowed[..., 0] = True
    if empty is not None:
        allowed[..., empty, :] = False
    return allowed


def _sdpa_torch_mask(mask, causal: bool, shape: tuple[int, int]):
    """SDPA's mask (True = may attend) and causal flag as one tensor (torch refuses both)."""
    if mask is None and not causal:
        return None
    total = np.zeros(shape)
    if mask is not None:
        total = total + (np.where(mask, 0.0, -np.inf) if mask.dtype == np.bool_ else mask)
    if causal:
        total = total + np.where(np.tri(*shape, dtype=bool), 0.0, -np.inf)
    return torch.tensor(total)


def sdpa_case(
    batch: tuple[int, ...], L: int, S: int, d: int, dv: int, mask_kind: str, causal: bool,
    scale: float | None, seed: int,
) -> list[Comparison]:  # fmt: skip
    """ATT.sdpa and ATT.softmax against ``F.scaled_dot_product_attention``."""
    rng = np.random.default_rng(seed)
    q, k = rng.standard_normal((*batch, L, d)), rng.standard_normal((*batch, S, d))
    v, d_out = rng.standard_normal((*batch, S, dv)), rng.standard_normal((*batch, L, dv))
    mask = _mask(rng, mask_kind, (L, S))
    out, cache = scaled_dot_product_attention(q, k, v, mask, causal=causal, scale=scale)
    d_q, d_k, d_v = sdpa_backward(d_out, cache)
    qt, kt, vt = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    out_t = F.scaled_dot_product_attention(
        qt, kt, vt, attn_mask=_sdpa_torch_mask(mask, causal, (L, S)), scale=scale
    )
    (out_t * torch.tensor(d_out)).sum().backward()
    # ATT.softmax alone, on unmasked random scores (masked entries have no finite logit).
    scores = torch.tensor(rng.standard_normal(cache.weights.shape) * 3, requires_grad=True)
    g = rng.standard_normal(cache.weights.shape)
    (torch.softmax(scores, -1) * torch.tensor(g)).sum().backward()
    d_s = softmax_backward(g, torch.softmax(scores, -1).detach().numpy())
    # Magnitude bounds (docs/conventions.md): the same backward on absolute values. A
    # query with one admissible key has P one-hot and ∂S = 0 exactly; both sides round.
    p, s = cache.weights, cache.scale
    abs_dp = np.abs(d_out) @ np.swapaxes(np.abs(v), -1, -2)
    abs_ds = p * (abs_dp + (abs_dp * p).sum(-1, keepdims=True))
    scale_q = s * abs_ds @ np.abs(k)
    scale_k = s * np.swapaxes(abs_ds, -1, -2) @ np.abs(q)
    return [
        Comparison("ATT.sdpa", "out", out, out_t.detach().numpy()),
        Comparison("ATT.sdpa", "∂C/∂q", d_q, qt.grad.numpy(), scale=scale_q),
        Comparison("ATT.sdpa", "∂C/∂k", d_k, kt.grad.numpy(), scale=scale_k),
        Comparison("ATT.sdpa", "∂C/∂v", d_v, vt.grad.numpy()),
        Comparison("ATT.softmax", "∂C/∂S", d_s, scores.grad.numpy()),
    ]


def _draw_sdpa(rng: np.random.Generator) -> dict:
    return dict(
        batch=tuple(int(b) for b in rng.integers(1, 4, size=int(rng.integers(0, 3)))),
        L=int(rng.integers(1, 6)),
        S=int(rng.integers(1, 6)),
        d=int(rng.integers(1, 6)),
        dv=int(rng.integers(1, 6)),
        mask_kind=("none", "bool", "float")[int(rng.integers(3))],
        causal=bool(rng.integers(2)),
        scale=None if rng.integers(2) else float(rng.uniform(0.1, 2.0)),
        seed=int(rng.integers(2**31)),
    )


@register_check("attention-sdpa")
def sdpa_check(rng: np.random.Generator) -> list[Comparison]:
    """ATT.sdpa, ATT.softmax: a random attention against torch's."""
    return sdpa_case(**_draw_sdpa(rng))


def torch_mha(layer: MultiheadAttention, params: dict, q, k, v, attn_mask=None):
    """``F.multi_head_attention_forward`` (seq-first inside; batch-first outside)."""
    mask = _mha_torch_mask(attn_mask, layer.causal, (q.shape[1], k.shape[1]))
    out, _ = F.multi_head_attention_forward(
        q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), layer.embed_dim,
        layer.num_heads, params["in_proj_weight"], params.get("in_proj_bias"), None, None,
        False, 0.0, params["out_proj.weight"], params.get("out_proj.bias"), training=False,
        need_weights=False, attn_mask=mask,
    )  # fmt: skip
    return out.transpose(0, 1)


def _mha_torch_mask(attn_mask, causal: bool, shape: tuple[int, int]):
    """The MHA mask (bool True = NOT allowed) plus the causal mask as one float tensor."""
    if attn_mask is None and not causal:
        return None
    total = np.zeros(shape)
    if attn_mask is not None:
        m = np.asarray(attn_mask)
        total = total + (np.where(m, -np.inf, 0.0) if m.dtype == np.bool_ else m)
    if causal:
        total = total + np.where(np.tri(*shape, dtype=bool), 0.0, -np.inf)
    return torch.tensor(total)


@register_torch(MultiheadAttention)
def _mha(layer, params, buffers, x, cache):
    if layer.key_padding_mask is not None:  # the layer protocol's per-batch padding mask
        return torch_mha_module(layer, params, x, x, x, None, layer.key_padding_mask)
    return torch_mha(layer, params, x, x, x)


@functools.cache
def _torch_module(embed_dim: int, heads: int, bias: bool) -> torch.nn.MultiheadAttention:
    """One ``nn.MultiheadAttention`` per configuration; ``functional_call`` replaces all its
    parameters. Built with torch.func's transforms switched off: its random initialisation
    would otherwise fail inside ``torch.func.vmap`` (the products' oracle)."""
    with torch._C._DisableFuncTorch():
        return torch.nn.MultiheadAttention(
            embed_dim, heads, bias=bias, batch_first=True, dtype=torch.float64
        )


def torch_mha_module(layer: MultiheadAttention, params: dict, q, k, v, attn_mask, padding):
    """``torch.nn.MultiheadAttention(batch_first=True)`` itself, called with OUR parameters.

    Masks are handed over in torch's own form (bool or float, 2-D or 3-D ``attn_mask``,
    ``key_padding_mask``); ``causal`` becomes a float −inf mask added to ``attn_mask`` (torch's
    ``is_causal`` is only a hint that ``attn_mask`` is causal).
    """
    module = _torch_module(layer.embed_dim, layer.num_heads, layer.has_bias)
    mask = None if attn_mask is None else torch.tensor(attn_mask)
    if layer.causal:
        L, S = q.shape[1], k.shape[1]
        tril = torch.tensor(np.where(np.tri(L, S, dtype=bool), 0.0, -np.inf))
        if mask is None:
            mask = tril
        else:
            base = (
                mask
                if mask.dtype != torch.bool
                else torch.zeros(mask.shape).masked_fill(mask, -np.inf).double()
            )
            mask = base + tril
    padding = None if padding is None else torch.tensor(padding)
    with warnings.catch_warnings():  # torch deprecates a bool mask beside a float one
        warnings.simplefilter("ignore", UserWarning)
        out, _ = torch.func.functional_call(
            module, params, (q, k, v),
            {"key_padding_mask": padding, "attn_mask": mask, "need_weights": False},
        )  # fmt: skip
    return out


def mha_inputs(
    rng: np.random.Generator, batch: int, L: int, S: int, heads: int, head_dim: int,
    bias: bool, causal: bool, self_attention: bool,
) -> tuple[MultiheadAttention, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """A seeded layer and random ``q (batch, L, E)``, ``k, v (batch, S, E)``; with
    ``self_attention`` the three are one array (S = L), so ∂C/∂x sums three paths."""
    E = heads * head_dim
    S = L if self_attention else S
    layer = MultiheadAttention(E, heads, bias=bias, batch_first=True, causal=causal, seed=rng)
    q = rng.standard_normal((batch, L, E))
    k, v = rng.standard_normal((batch, S, E)), rng.standard_normal((batch, S, E))
    if self_attention:
        k = v = q
    return layer, q, k, v


def mha_case(
    batch: int, L: int, S: int, heads: int, head_dim: int, bias: bool, causal: bool,
    mask_kind: str, self_attention: bool, seed: int,
) -> list[Comparison]:  # fmt: skip
    """ATT.mha: the functional form (separate q, k, v) against torch, every gradient."""
    rng = np.random.default_rng(seed)
    layer, q, k, v = mha_inputs(rng, batch, L, S, heads, head_dim, bias, causal, self_attention)
    S, E = k.shape[1], q.shape[2]
    mask = _mask(rng, mask_kind, (L, S))
    if mask is not None and mask.dtype == np.bool_:
        mask = ~mask  # MHA's convention: True = NOT allowed (key 0 stays allowed)
    d_out = rng.standard_normal((batch, L, E))
    out, cache = layer.attend(q, k, v, mask)
    d_q, d_k, d_v, grads = layer.attend_backward(d_out, cache)
    params = {n: torch.tensor(p, requires_grad=True) for n, p in layer.params.items()}
    qt, kt, vt = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    out_t = torch_mha(layer, params, qt, kt, vt, mask)
    (out_t * torch.tensor(d_out)).sum().backward()
    s_q, s_k, s_v, s_params = mha_magnitudes(layer, d_out, cache)
    comparisons = [
        Comparison("ATT.mha", "out", out, out_t.detach().numpy()),
        Comparison("ATT.mha", "∂C/∂query", d_q, qt.grad.numpy(), scale=s_q),
        Comparison("ATT.mha", "∂C/∂key", d_k, kt.grad.numpy(), scale=s_k),
        Comparison("ATT.mha", "∂C/∂value", d_v, vt.grad.numpy(), scale=s_v),
    ]
    comparisons += [
        Comparison("ATT.mha", f"∂C/∂{n}", grads[n], t.grad.numpy(), scale=s_params[n])
        for n, t in params.items()
    ]
    return comparisons


def mha_magnitudes(layer: MultiheadAttention, d_out: np.ndarray, cache) -> tuple:
    """``attend_backward`` on absolute values: the magnitude bound ``S`` of each gradient.

    The softmax VJP ``P ⊙ (P̄ − Σ P̄P)`` becomes ``P ⊙ (|P̄| + Σ|P̄|P)``; every other factor
    is replaced by its absolute value (docs/conventions.md, "Precision and tolerances").
    """
    from unittest import mock

    from manual_bp.layers import attention_sdpa

    absolute = MultiheadAttention(layer.embed_dim, layer.num_heads, bias=layer.has_bias,
                                  batch_first=True, causal=layer.causal)  # fmt: skip
    for name, array in layer.params.items():
        absolute.params[name][...] = np.abs(array)
    att, core = cache.attention, cache.core
    abs_core = type(core)(
        tuple(np.abs(a) for a in core.inputs),
        type(att)(np.abs(att.q), np.abs(att.k), np.abs(att.v), att.weights, att.scale),
        np.abs(core.merged),
    )  # fmt: skip
    abs_cache = type(cache)(np.abs(cache.input), None, None, abs_core, cache.layout, None)

    def abs_softmax_backward(d_p, p):
        return p * (np.abs(d_p) + (np.abs(d_p) * p).sum(axis=-1, keepdims=True))

    with mock.patch.object(attention_sdpa, "softmax_backward", abs_softmax_backward):
        return absolute.attend_backward(np.abs(d_out), abs_cache)


def _draw_mha(rng: np.random.Generator) -> dict:
    return dict(
        batch=int(rng.integers(1, 4)),
        L=int(rng.integers(1, 6)),
        S=int(rng.integers(1, 6)),
        heads=int(rng.integers(1, 4)),
        head_dim=int(rng.integers(1, 4)),
        bias=bool(rng.integers(2)),
        causal=bool(rng.integers(2)),
        mask_kind=("none", "bool", "float")[int(rng.integers(3))],
        self_attention=bool(rng.integers(2)),
        seed=int(rng.integers(2**31)),
    )


@register_check("attention-mha")
def mha_check(rng: np.random.Generator) -> list[Comparison]:
    """ATT.mha: multi-head attention with separate query, key, value vs torch."""
    return mha_case(**_draw_mha(rng))


@register_check("attention-finite-differences")
def attention_fd_check(rng: np.random.Generator) -> list[Comparison]:
    """ATT.sdpa and ATT.mha against central finite differences (no torch)."""
    case = _draw_mha(rng)
    layer = MultiheadAttention(case["heads"] * case["head_dim"], case["heads"], bias=case["bias"],
                               batch_first=True, causal=case["causal"], seed=rng)  # fmt: skip
    x = rng.standard_normal((2, case["L"], layer.embed_dim))
    d_out = rng.standard_normal(x.shape)

    def cost() -> float:
        return float((layer.forward(x)[0] * d_out).sum())

    dx, grads = layer.backward(d_out, layer.forward(x)[1])
    targets = [("∂C/∂x", dx, x)] + [(f"∂C/∂{n}", grads[n], p) for n, p in layer.params.items()]
    comparisons = []
    for name, actual, array in targets:
        expected = finite_difference(cost, array)
        atol = 1e-7 * (1.0 + float(np.abs(expected).max(initial=0.0)))  # O(h²) + O(ε/h)
        comparisons.append(
            Comparison("ATT.mha", name, actual, expected, oracle="finite-differences", atol=atol)
        )
    return comparisons


@register_block("sequences", "mha")
def _mha_block(rng: np.random.Generator, shape: tuple[int, ...]):
    divisors = [h for h in range(1, shape[-1] + 1) if shape[-1] % h == 0]
    heads = divisors[int(rng.integers(len(divisors)))]
    bias, causal = bool(rng.integers(2)), bool(rng.integers(2))
    return [MultiheadAttention(shape[-1], heads, bias=bias, batch_first=True, causal=causal)], (
        shape
    )


@register_check("attention-stack")
def attention_stack_check(rng: np.random.Generator) -> list[Comparison]:
    """ATT.mha as self-attention in the middle of a random sequence stack."""
    model, x, y = random_stack(rng, "sequences", blocks=("mha", "lstm", "gru"))
    # stack.py's owner() cannot walk "out_proj.weight" (a dotted torch name): tag here.
    comparisons = stack_comparisons(model, x, y, equation="STACK.chain")
    for comparison in comparisons:
        index = comparison.name.removeprefix("∂C/∂").split(".", 1)[0]
        if index.isdigit():
            comparison.equation = model.layers[int(index)].equation or "STACK.chain"
    return with_stack_scales(model, x, y, comparisons)


@register_check("attention-adjoint")
def sdpa_adjoint_check(rng: np.random.Generator) -> list[Comparison]:
    """ATT.sdpa: ⟨u, J v⟩ = ⟨Jᵀu, v⟩ with q, k, v perturbed at once (J v by central differences)."""
    case = _draw_sdpa(rng)
    L, S, d, dv = case["L"], case["S"], case["d"], case["dv"]
    q, k = rng.standard_normal((2, L, d)), rng.standard_normal((2, S, d))
    v, u = rng.standard_normal((2, S, dv)), rng.standard_normal((2, L, dv))
    mask = _mask(rng, case["mask_kind"], (L, S))
    options = {"causal": case["causal"], "scale": case["scale"]}
    _, cache = scaled_dot_product_attention(q, k, v, mask, **options)
    directions = [rng.standard_normal(a.shape) for a in (q, k, v)]
    vjp_dot = sum((g * t).sum() for g, t in zip(sdpa_backward(u, cache), directions, strict=True))
    h = 1e-6
    plus, minus = (
        scaled_dot_product_attention(
            *(a + sign * h * t for a, t in zip((q, k, v), directions, strict=True)), mask, **options
        )[0]
        for sign in (1.0, -1.0)
    )
    jvp_dot = (u * (plus - minus) / (2 * h)).sum()
    atol = 1e-6 * (1.0 + abs(jvp_dot))  # central differences: O(h²)·|f‴| + O(ε/h)
    return [
        Comparison(
            "ATT.sdpa",
            "⟨Jᵀu, v⟩",
            np.array(vjp_dot),
            np.array(jvp_dot),
            oracle="finite-differences",
            atol=atol,
        )
    ]
