"""``nn.MultiheadAttention``'s computation on batch-first arrays, every option of torch's.

:class:`~manual_bp.layers.attention.MultiheadAttention` brings its inputs to one internal
layout — batched, batch first: ``query (N, L, E)``, ``key (N, S, kdim)``, ``value (N, S,
vdim)`` — with :func:`to_internal`, runs :func:`mha_forward` / :func:`mha_backward` here, and
takes the results back to the caller's layout (torch's default time-major ``(L, N, E)``,
``batch_first`` ``(N, L, E)`` or unbatched ``(L, E)``) with :func:`to_external`.

The chain (equation ``ATT.mha``; ``h`` heads of width ``d = E/h``, ``s = 1/√d``)::

    q = x_q W_qᵀ + b_q,  k = x_k W_kᵀ + b_k,  v = x_v W_vᵀ + b_v      (packed or separate)
    k ← [k; bias_k],  v ← [v; bias_v]                 one extra key row  (ATT.bias-kv)
    k_h ← [k_h; 0],   v_h ← [v_h; 0]                  one zero key/head  (ATT.bias-kv)
    P = softmax(s q_h k_hᵀ + mask),  P̃ = P ⊙ m        dropout on P       (ATT.dropout)
    out = concat_h(P̃ v_h) W_oᵀ + b_o

The masks get one 0 column per appended key (the appended keys are always visible), as
torch's ``pad(mask, (0, 1))``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from manual_bp.layers.attention_masks import mha_mask
from manual_bp.layers.attention_sdpa import (
    AttentionCache,
    attention_weights,
    sdpa_backward,
)

__all__ = ["Layout", "mha_backward", "mha_forward", "to_external", "to_internal"]


@dataclass(frozen=True)
class Layout:
    """How the caller's arrays sit: ``batched`` or not, ``batch_first`` or time-major."""

    batched: bool
    batch_first: bool

    def inward(self, a: np.ndarray, lead: int = 0) -> np.ndarray:
        """Caller's ``(..., L, N, F)`` / ``(..., N, L, F)`` / ``(..., L, F)`` -> ``(..., N, L, F)``
        (``lead`` leading axes, e.g. a V axis, left alone)."""
        if not self.batched:
            return np.expand_dims(a, lead)
        return a if self.batch_first else np.swapaxes(a, lead, lead + 1)

    def outward(self, a: np.ndarray, lead: int = 0) -> np.ndarray:
        """The inverse of :meth:`inward`."""
        if not self.batched:
            return np.squeeze(a, lead)
        return a if self.batch_first else np.swapaxes(a, lead, lead + 1)


def to_internal(layer: Any, query: Any, key: Any, value: Any) -> tuple[Layout, tuple]:
    """Check ``query, key, value`` against torch's shapes; their layout and batch-first forms.

    Batched: 3-D each; unbatched: 2-D each (torch's rule: the query decides).
    """
    from manual_bp.layers.base import check_input

    check_input(query, layer, ndim=(2, 3), trailing=(layer.embed_dim,), name="query")
    ndim = query.ndim
    check_input(key, layer, ndim=ndim, trailing=(layer.kdim,), name="key")
    check_input(value, layer, ndim=ndim, trailing=(layer.vdim,), name="value")
    layout = Layout(ndim == 3, layer.batch_first)
    q, k, v = (layout.inward(a) for a in (query, key, value))
    if k.shape[:2] != v.shape[:2] or k.shape[0] != q.shape[0]:
        raise ValueError(
            f"{layer!r}: query {query.shape}, key {key.shape}, value {value.shape} do not "
            f"fit (key and value need the same batch and length, the query the same batch)"
        )
    return layout, (q, k, v)


def to_external(layout: Layout, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    return tuple(layout.outward(a) for a in arrays)


def _split_heads(a: np.ndarray, heads: int) -> np.ndarray:
    """``(N, L, E) -> (N, heads, L, E/heads)``."""
    n, length, width = a.shape
    return a.reshape(n, length, heads, width // heads).transpose(0, 2, 1, 3)  # N may be 0


def _merge_heads(a: np.ndarray) -> np.ndarray:
    n, heads, length, d = a.shape
    return a.transpose(0, 2, 1, 3).reshape(n, length, heads * d)


def _projections(params: dict[str, np.ndarray], E: int) -> list[tuple[np.ndarray, Any]]:
    """``[(W_q, b_q), (W_k, b_k), (W_v, b_v)]`` from the packed or the separate weights."""
    bias = params.get("in_proj_bias")
    found = []
    for part, name in enumerate(("q_proj_weight", "k_proj_weight", "v_proj_weight")):
        rows = slice(part * E, (part + 1) * E)
        W = params[name] if name in params else params["in_proj_weight"][rows]
        found.append((W, None if bias is None else bias[rows]))
    return found


@dataclass
class CoreCache:
    """Batch-first inputs, the SDPA cache (heads) and the merged heads ``Z``."""

    inputs: tuple[np.ndarray, np.ndarray, np.ndarray]
    attention: AttentionCache
    merged: np.ndarray


def mha_forward(
    layer: Any,
    inputs: tuple[np.ndarray, np.ndarray, np.ndarray],
    attn_mask: Any,
    key_padding_mask: Any,
    *,
    safe: bool,
) -> tuple[np.ndarray, CoreCache]:
    """``out (N, L, E)`` of batch-first ``inputs`` (see the module's chain) and the cache."""
    E, H, params = layer.embed_dim, layer.num_heads, layer.params
    x_q, x_k, _ = inputs
    n, length, keys = x_q.shape[0], x_q.shape[1], x_k.shape[1]
    projected = [
        x @ W.T + (0 if b is None else b)
        for x, (W, b) in zip(inputs, _projections(params, E), strict=True)
    ]
    if layer.add_bias_kv:  # ATT.bias-kv: one more key (and value) row, the same for all n
        for i, name in ((1, "bias_k"), (2, "bias_v")):
            row = np.broadcast_to(params[name].reshape(1, 1, E), (n, 1, E))
            projected[i] = np.concatenate([projected[i], row], axis=1)
    q, k, v = (_split_heads(a, H) for a in projected)
    if layer.add_zero_attn:  # ATT.bias-kv: a zero key and value per head
        zeros = np.zeros((n, H, 1, E // H), q.dtype)
        k, v = np.concatenate([k, zeros], axis=2), np.concatenate([v, zeros], axis=2)
    extra = int(layer.add_bias_kv) + int(layer.add_zero_attn)
    shape = (n, H, length, keys)
    mask = mha_mask(attn_mask, key_padding_mask, layer.causal, shape, x_q.dtype, extra=extra,
                    owner=repr(layer))  # fmt: skip
    scale = 1.0 / float(np.sqrt(E // H))
    weights = attention_weights(scale * (q @ np.swapaxes(k, -1, -2)), mask, safe=safe)
    keep = None
    if layer.training and layer.dropout > 0.0:  # ATT.dropout: P̃ = P ⊙ keep/(1 − p)
        kept = layer._generator.random(weights.shape) >= layer.dropout
        keep = kept * (0.0 if layer.dropout >= 1.0 else 1.0 / (1.0 - layer.dropout))
        keep = keep.astype(q.dtype)
    attention = AttentionCache(q, k, v, weights, scale, keep)
    merged = _merge_heads(attention.dropped @ v)
    out = merged @ params["out_proj.weight"].T
    if "out_proj.bias" in params:
        out = out + params["out_proj.bias"]
    return out, CoreCache(inputs, attention, merged)


def mha_backward(
    layer: Any, d_out: np.ndarray, cache: CoreCache
) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """``([∂x_q, ∂x_k, ∂x_v], grads)`` batch-first, the VJP of :func:`mha_forward`."""
    E, H, params = layer.embed_dim, layer.num_heads, layer.params
    rows = d_out.reshape(-1, E)
    grads = {"out_proj.weight": rows.T @ cache.merged.reshape(-1, E)}
    if "out_proj.bias" in params:
        grads["out_proj.bias"] = rows.sum(axis=0)
    d_heads = _split_heads(d_out @ params["out_proj.weight"], H)
    d_q, d_k, d_v = sdpa_backward(d_heads, cache.attention)
    if layer.add_zero_attn:  # the zero key/value is a constant: its gradient goes nowhere
        d_k, d_v = d_k[:, :, :-1], d_v[:, :, :-1]
    d_proj = [_merge_heads(a) for a in (d_q, d_k, d_v)]
    if layer.add_bias_kv:  # ATT.bias-kv: the extra row's gradient, summed over the batch
        for i, name in ((1, "bias_k"), (2, "bias_v")):
            grads[name] = d_proj[i][:, -1].sum(axis=0).reshape(1, 1, E)
            d_proj[i] = d_proj[i][:, :-1]
    d_inputs, d_w, d_b = [], [], []
    for x, d, (W, _) in zip(cache.inputs, d_proj, _projections(params, E), strict=True):
        d2 = d.reshape(-1, E)
        d_inputs.append(d @ W)
        d_w.append(d2.T @ x.reshape(-1, x.shape[-1]))
        d_b.append(d2.sum(axis=0))
    if "in_proj_weight" in params:
        grads["in_proj_weight"] = np.concatenate(d_w)
    else:
        grads.update(zip(("q_proj_weight", "k_proj_weight", "v_proj_weight"), d_w, strict=True))
    if "in_proj_bias" in params:
        grads["in_proj_bias"] = np.concatenate(d_b)
    return d_inputs, {name: grads[name] for name in params}
