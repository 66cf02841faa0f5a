"""Checks of multi-head attention's masks (``ATT.mha`` in ``docs/sequences.md``).

Oracle: ``torch.nn.MultiheadAttention(batch_first=True)`` itself (through
``torch.func.functional_call`` with OUR parameters, float64) with ``key_padding_mask`` and
``attn_mask`` in torch's own forms — boolean (True = NOT allowed) or float (added), 2-D
``(L, S)`` or 3-D ``(N·heads, L, S)``, combined with ``causal`` — and random upstream
gradients; and self-attention in the middle of a stack, where ``∂C/∂x`` is the sum of the
query, key and value gradients.
"""

from __future__ import annotations

import numpy as np
import torch

from manual_bp.layers import ActivationLayer, Dense
from manual_bp.layers.attention import MultiheadAttention
from manual_bp.layers.recurrent import LSTM
from manual_bp.models.sequential import Sequential

# A module object, not names: check modules are loaded by reference.checks in a loop and
# must not need each other fully initialised at import time.
from reference import checks_attention as base
from reference.checks import register_check
from reference.compare import Comparison
from reference.sequence_tools import with_stack_scales
from reference.stack import stack_comparisons

__all__ = ["mha_mask_case", "mha_mask_draw"]


def mha_mask_draw(rng: np.random.Generator, kind: str, shape: tuple[int, ...]):
    """A torch-convention mask (True = NOT allowed) of ``kind``: key 0 stays allowed, except
    that a boolean mask sometimes disallows every key of one row (2-D: one query of every
    entry; ``key_padding_mask``: a batch entry of pure padding)."""
    if kind == "none":
        return None
    if kind == "float":
        mask = rng.standard_normal(shape)
        mask[..., 1:][rng.random(mask[..., 1:].shape) < 0.2] = -np.inf
        return mask
    mask = rng.random(shape) < 0.4
    mask[..., 0] = False
    if rng.random() < 0.25:  # one row with no admissible key (a sequence of pure padding)
        mask[int(rng.integers(shape[0]))] = True
    return mask


def mha_mask_case(
    batch: int, L: int, S: int, heads: int, head_dim: int, bias: bool, causal: bool,
    attn_kind: str, attn_3d: bool, padding_kind: str, self_attention: bool, seed: int,
) -> list[Comparison]:  # fmt: skip
    """ATT.mha with ``attn_mask`` (2-D or 3-D) and ``key_padding_mask`` against the torch module."""
    rng = np.random.default_rng(seed)
    layer, q, k, v = base.mha_inputs(
        rng, batch, L, S, heads, head_dim, bias, causal, self_attention
    )
    S, E = k.shape[1], q.shape[2]
    attn = mha_mask_draw(rng, attn_kind, (batch * heads, L, S) if attn_3d else (L, S))
    padding = mha_mask_draw(rng, padding_kind, (batch, S))
    d_out = rng.standard_normal((batch, L, E))
    out, cache = layer.attend(q, k, v, attn, padding)
    d_q, d_k, d_v, grads = layer.attend_backward(d_out, cache)
    params = {n: torch.tensor(p, requires_grad=True) for n, p in layer.params.items()}
    qt, kt, vt = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    out_t = base.torch_mha_module(layer, params, qt, kt, vt, attn, padding)
    (out_t * torch.tensor(d_out)).sum().backward()
    s_q, s_k, s_v, s_params = base.mha_magnitudes(layer, d_out, cache)
    comparisons = [
        Comparison("ATT.mha", "out", out, out_t.detach().numpy()),
        Comparison("ATT.mha", "∂C/∂query", d_q, qt.grad.numpy(), scale=s_q),
        Comparison("ATT.mha", "∂C/∂key", d_k, kt.grad.numpy(), scale=s_k),
        Comparison("ATT.mha", "∂C/∂value", d_v, vt.grad.numpy(), scale=s_v),
    ]
    return comparisons + [
        Comparison("ATT.mha", f"∂C/∂{n}", grads[n], t.grad.numpy(), scale=s_params[n])
        for n, t in params.items()
    ]


@register_check("attention-mha-masks")
def mha_mask_check(rng: np.random.Generator) -> list[Comparison]:
    """ATT.mha: key_padding_mask and attn_mask (bool/float, 2-D/3-D) vs nn.MultiheadAttention."""
    case = base._draw_mha(rng)
    case.pop("mask_kind")
    kinds = ("none", "bool", "float")
    case.update(
        attn_kind=kinds[int(rng.integers(3))],
        attn_3d=bool(rng.integers(2)),
        padding_kind=kinds[int(rng.integers(1, 3))],
    )
    return mha_mask_case(**case)


@register_check("attention-self-stack")
def attention_self_stack_check(rng: np.random.Generator) -> list[Comparison]:
    """ATT.mha self-attention (query = key = value = x, so ∂C/∂x = ∂q + ∂k + ∂v) in the
    middle of ``Dense → tanh → MHA(key_padding_mask) → [LSTM] → Dense → softmax``: the
    first dense layer's gradients and ∂C/∂x are reached only through that sum."""
    length, n_in = int(rng.integers(1, 6)), int(rng.integers(1, 5))
    heads, head_dim = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    E, n_classes, batch = heads * head_dim, int(rng.integers(2, 5)), int(rng.integers(1, 4))
    bias, causal = bool(rng.integers(2)), bool(rng.integers(2))
    mha = MultiheadAttention(E, heads, bias=bias, batch_first=True, causal=causal)
    layers = [Dense(n_in, E), ActivationLayer("tanh"), mha]
    width = E
    if rng.integers(2):
        width = int(rng.integers(1, 5))
        layers.append(LSTM(E, width, batch_first=True))
    layers += [Dense(width, n_classes), ActivationLayer("softmax")]
    model = Sequential(
        layers, "log-likelihood", input_shape=(length, n_in), seed=int(rng.integers(2**31))
    )
    mha.key_padding_mask = mha_mask_draw(rng, "bool", (batch, length))
    x = rng.standard_normal((batch, length, n_in))
    y = rng.integers(0, n_classes, size=(batch, length))
    comparisons = stack_comparisons(model, x, y, equation="ATT.mha")
    return with_stack_scales(model, x, y, comparisons)
