"""Scaled dot-product and multi-head attention — torch's SDPA and ``nn.MultiheadAttention``.

``scaled_dot_product_attention(q, k, v)``: ``S = s·q kᵀ (+ mask)``, ``P = softmax(S)``
row-wise, ``out = P v`` with ``s = 1/√d`` by default (equations ``ATT.sdpa``,
``ATT.softmax``). Shapes: ``q`` ``(..., L, d)``, ``k`` ``(..., S, d)``, ``v`` ``(..., S, d_v)``.
Masks follow ``torch.nn.functional.scaled_dot_product_attention``: a boolean mask is
True where a query MAY attend; a float mask is added to the scores; ``causal=True``
lets position ``i`` see ``j ≤ i``. A query that may attend to nothing (a row of −inf)
gets attention weights 0, hence output 0 and no gradient — torch 2.x's
``F.scaled_dot_product_attention`` (the textbook softmax would give 0/0 = NaN).

:class:`MultiheadAttention` keeps torch's packed parameters ``in_proj_weight`` ``(3E, E)``,
``in_proj_bias`` ``(3E,)``, ``out_proj.weight`` ``(E, E)``, ``out_proj.bias`` ``(E,)``, with
``batch_first=True`` tensors ``(N, L, E)``. As a :class:`Layer` it is self-attention
(``query = key = value = x``); :meth:`MultiheadAttention.attend` / ``attend_backward``
take ``q, k, v`` separately and return a gradient for each (equation ``ATT.mha``). Its
masks follow ``nn.MultiheadAttention``: ``attn_mask`` ``(L, S)`` or ``(N·heads, L, S)`` and
``key_padding_mask`` ``(N, S)``, each boolean (True = NOT allowed — the opposite of SDPA's)
or float (added to the scores); both (and ``causal``) add up into one additive mask. A
query left with no key attends to nothing (output ``out_proj.bias``), as torch's module
with ``need_weights=False`` (with ``need_weights=True`` torch returns NaN there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from manual_bp.layers.attention_fast import AttentionStep
from manual_bp.layers.attention_masks import additive_mask, mha_mask
from manual_bp.layers.attention_products import AttentionProducts
from manual_bp.layers.base import Cache, Layer, check_input, register_layer

__all__ = [
    "MultiheadAttention",
    "mha_mask",
    "scaled_dot_product_attention",
    "sdpa_backward",
    "softmax_backward",
]


@dataclass
class AttentionCache:
    """``q, k, v``, the attention weights ``P`` and the scale ``s``."""

    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    weights: np.ndarray
    scale: float


def softmax_backward(d_p: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``∂C/∂S = P ⊙ (∂C/∂P − Σ_j ∂C/∂P_j P_j)`` row-wise (equation ``ATT.softmax``).

    The softmax Jacobian is ``diag(p) − p pᵀ``; applied to a row ``g`` it is
    ``p ⊙ g − p (pᵀg)`` — never formed as a matrix.
    """
    return p * (d_p - (d_p * p).sum(axis=-1, keepdims=True))


def scaled_dot_product_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    causal: bool = False,
    scale: float | None = None,
) -> tuple[np.ndarray, AttentionCache]:
    """``out = softmax(s·q kᵀ + mask) v`` (equation ``ATT.sdpa``); ``(out, cache)``.

    Parameters
    ----------
    q : (..., L, d); k : (..., S, d); v : (..., S, d_v)
    mask : (..., L, S) bool (True = may attend) or float (added), broadcast over the batch axes
    causal : bool
    scale : float, default ``1/√d``
    """
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"q {q.shape}, k {k.shape}, v {v.shape} do not fit q kᵀ v")
    scale = 1.0 / float(np.sqrt(q.shape[-1])) if scale is None else float(scale)
    scores = scale * (q @ np.swapaxes(k, -1, -2))
    additive = additive_mask(mask, causal, scores.shape[-2:], scores.dtype)
    if additive is not None:
        scores = scores + additive
    peak = scores.max(axis=-1, keepdims=True)
    if np.isnan(peak).any() or np.isposinf(peak).any():
        raise ValueError("attention scores hold nan or +inf (check q, k and the mask)")
    # A row with no admissible key (all −inf): weights 0, not 0/0 (torch's safe softmax).
    peak = np.where(np.isneginf(peak), 0.0, peak)
    weights = np.exp(scores - peak)  # max-shifted: exp never overflows
    total = weights.sum(axis=-1, keepdims=True)
    weights /= np.where(total == 0.0, 1.0, total)
    return weights @ v, AttentionCache(q, k, v, weights, scale)


def sdpa_backward(
    d_out: np.ndarray, cache: AttentionCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(∂C/∂q, ∂C/∂k, ∂C/∂v)`` of :func:`scaled_dot_product_attention` (``ATT.sdpa``).

    ``∂v = Pᵀ δ``, ``∂P = δ vᵀ``, ``∂S`` by :func:`softmax_backward` (masked entries have
    ``P = 0`` and so receive none), ``∂q = s ∂S k``, ``∂k = s ∂Sᵀ q``.
    """
    p = cache.weights
    d_v = np.swapaxes(p, -1, -2) @ d_out
    d_scores = softmax_backward(d_out @ np.swapaxes(cache.v, -1, -2), p)
    d_q = cache.scale * (d_scores @ cache.k)
    d_k = cache.scale * (np.swapaxes(d_scores, -1, -2) @ cache.q)
    return d_q, d_k, d_v


@dataclass
class MHACache(Cache):
    """``input`` (the query), key and value inputs, projections and the SDPA cache."""

    key: np.ndarray
    value: np.ndarray
    attention: AttentionCache
    merged: np.ndarray


@register_layer
class MultiheadAttention(AttentionProducts, Layer):
    """``torch.nn.MultiheadAttention(E, heads, batch_first=True)``. Equation ``ATT.mha``.

    Parameters
    ----------
    embed_dim : int
    num_heads : int, dividing ``embed_dim``
    bias : bool
    causal : bool
        Self-attention as a layer: each position attends to itself and earlier ones.
    seed, dtype

    Attributes
    ----------
    key_padding_mask : (N, S) array or None
        Used by :meth:`forward` (the layer protocol), set by the caller for the batch
        (True = padding, ignored as a key), like a recurrent layer's ``initial_state``.

    The products on a V axis (``input_vjp`` … ``residual``, ``PROD.multihead-attention.*``)
    come from :class:`~manual_bp.layers.attention_products.AttentionProducts`.
    """

    name = "multihead_attention"
    aliases = ("mha",)
    equation = "ATT.mha"
    product_equations = (
        "PROD.multihead-attention.vjp",
        "PROD.multihead-attention.jvp",
        "PROD.multihead-attention.residual",
    )
    decay = ("in_proj_weight", "out_proj.weight")
    hyperparameters = ("embed_dim", "num_heads", "bias", "causal")

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        bias: bool = True,
        causal: bool = False,
        *,
        seed: int | np.random.Generator | None = None,
        dtype: np.dtype | type | str = np.float64,
    ) -> None:
        super().__init__()
        for label, value in (("embed_dim", embed_dim), ("num_heads", num_heads)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{label} must be a positive integer, got {value!r}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads = int(embed_dim), int(num_heads)
        self.has_bias, self.causal = bool(bias), bool(causal)
        self.key_padding_mask: np.ndarray | None = None
        E = self.embed_dim
        self.params["in_proj_weight"] = np.zeros((3 * E, E), dtype)
        if self.has_bias:
            self.params["in_proj_bias"] = np.zeros(3 * E, dtype)
        self.params["out_proj.weight"] = np.zeros((E, E), dtype)
        if self.has_bias:
            self.params["out_proj.bias"] = np.zeros(E, dtype)
        self.reset_parameters(np.random.default_rng(seed))

    def reset_parameters(self, rng: np.random.Generator) -> None:
        """torch's: Xavier-uniform ``in_proj_weight``, ``U(±1/√E)`` ``out_proj.weight``, 0 bias."""
        E = self.embed_dim
        bound = np.sqrt(6.0 / (E + 3 * E))  # xavier_uniform_ on the (3E, E) matrix
        self.params["in_proj_weight"][...] = rng.uniform(-bound, bound, (3 * E, E))
        self.params["out_proj.weight"][...] = rng.uniform(-1 / np.sqrt(E), 1 / np.sqrt(E), (E, E))
        for name in ("in_proj_bias", "out_proj.bias"):
            if name in self.params:
                self.params[name][...] = 0.0

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 2 or input_shape[-1] != self.embed_dim:
            raise ValueError(
                f"{self!r} takes per-sample sequences (L, {self.embed_dim}), got {input_shape}"
            )
        return tuple(input_shape)

    # ------------------------------------------------------------------ functional form
    def _heads(self, a: np.ndarray) -> np.ndarray:
        """``(N, L, E) -> (N, heads, L, E/heads)``."""
        n, length, _ = a.shape
        return a.reshape(n, length, self.num_heads, -1).transpose(0, 2, 1, 3)

    def _merge(self, a: np.ndarray) -> np.ndarray:
        n, _, length, _ = a.shape
        return a.transpose(0, 2, 1, 3).reshape(n, length, self.embed_dim)

    def _projection(self, part: int) -> tuple[np.ndarray, np.ndarray | None]:
        E, b = self.embed_dim, self.params.get("in_proj_bias")
        rows = slice(part * E, (part + 1) * E)
        return self.params["in_proj_weight"][rows], None if b is None else b[rows]

    def attend(
        self,
        query: np.ndarray,
        key: np.ndarray,
        value: np.ndarray,
        attn_mask: np.ndarray | None = None,
        key_padding_mask: np.ndarray | None = None,
    ) -> tuple[np.ndarray, MHACache]:
        """``(out (N, L, E), cache)`` for ``query (N, L, E)``, ``key, value (N, S, E)``.

        ``attn_mask`` ``(L, S)`` or ``(N·heads, L, S)`` and ``key_padding_mask`` ``(N, S)``
        as ``nn.MultiheadAttention``: bool True = NOT allowed, float = added to the scores
        (:func:`mha_mask`). The layer's ``causal`` flag adds the causal mask.
        """
        check_input(query, self, ndim=3, trailing=(self.embed_dim,), name="query")
        check_input(key, self, ndim=3, trailing=(self.embed_dim,), name="key")
        check_input(value, self, ndim=3, trailing=(self.embed_dim,), name="value")
        if key.shape != value.shape or key.shape[0] != query.shape[0]:
            raise ValueError(f"query {query.shape}, key {key.shape}, value {value.shape} differ")
        shape = (query.shape[0], self.num_heads, query.shape[1], key.shape[1])
        mask = mha_mask(attn_mask, key_padding_mask, self.causal, shape, query.dtype)
        projected = [
            self._heads(x @ W.T + (0 if b is None else b))
            for part, x in enumerate((query, key, value))
            for W, b in [self._projection(part)]
        ]
        heads, attention = scaled_dot_product_attention(*projected, mask)
        merged = self._merge(heads)
        out = merged @ self.params["out_proj.weight"].T
        if self.has_bias:
            out = out + self.params["out_proj.bias"]
        return out, MHACache(query, key, value, attention, merged)

    def attend_backward(
        self, d_out: np.ndarray, cache: MHACache
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """``(∂C/∂query, ∂C/∂key, ∂C/∂value, grads)`` (equation ``ATT.mha``)."""
        if not isinstance(d_out, np.ndarray) or d_out.shape != cache.input.shape:
            raise ValueError(
                f"{self!r}: d_out has shape {np.shape(d_out)}, expected {cache.input.shape}"
            )
        rows = d_out.reshape(-1, self.embed_dim)
        grads = {"out_proj.weight": rows.T @ cache.merged.reshape(-1, self.embed_dim)}
        d_heads = self._heads(d_out @ self.params["out_proj.weight"])
        d_projected = sdpa_backward(d_heads, cache.attention)
        d_inputs, d_w, d_b = [], [], []
        for part, (x, d) in enumerate(
            zip((cache.input, cache.key, cache.value), d_projected, strict=True)
        ):
            d = self._merge(d).reshape(-1, self.embed_dim)
            W, _ = self._projection(part)
            d_inputs.append((d @ W).reshape(x.shape))
            d_w.append(d.T @ x.reshape(-1, self.embed_dim))
            d_b.append(d.sum(axis=0))
        grads = {"in_proj_weight": np.concatenate(d_w), **grads}
        if self.has_bias:
            grads["in_proj_bias"] = np.concatenate(d_b)
            grads["out_proj.bias"] = rows.sum(axis=0)
        return (*d_inputs, {name: grads[name] for name in self.params})

    # ------------------------------------------------------------------ Layer protocol
    def forward(self, x: np.ndarray) -> tuple[np.ndarray, MHACache]:
        """Self-attention ``x (N, L, E) -> (N, L, E)`` (``key_padding_mask`` if set)."""
        return self.attend(x, x, x, key_padding_mask=self.key_padding_mask)

    def backward(self, d_out: np.ndarray, cache: MHACache) -> tuple[np.ndarray, dict]:
        """``∂C/∂x = ∂C/∂query + ∂C/∂key + ∂C/∂value`` (x feeds all three)."""
        d_q, d_k, d_v, grads = self.attend_backward(d_out, cache)
        return d_q + d_k + d_v, grads

    def fast_step(self) -> Any:
        """The fused self-attention step for training
        (:class:`~manual_bp.layers.attention_fast.AttentionStep`)."""

        return AttentionStep(self)

    @classmethod
    def from_shape(cls, input_shape, *args, n_outputs=None, **kwargs) -> MultiheadAttention:
        """``mha(heads)`` on sequences ``(L, E)`` -> ``MultiheadAttention(E, heads)``."""
        if len(input_shape) != 2:
            raise ValueError(f"multihead_attention needs sequences (L, E), got {input_shape}")
        return cls(input_shape[-1], *args, **kwargs)

    def __repr__(self) -> str:
        extra = ("" if self.has_bias else ", bias=False") + (", causal=True" if self.causal else "")
        return f"MultiheadAttention({self.embed_dim}, {self.num_heads}{extra})"
