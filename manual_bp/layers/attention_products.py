"""Multi-head self-attention's products on a V axis (``PROD.multihead-attention.*``).

As a layer, :class:`~manual_bp.layers.attention.MultiheadAttention` is self-attention: one
input ``x`` ``(N, L, E)`` feeds the query, the key and the value. Its forward pass is a chain
of five small steps (``h`` heads of width ``d = E/h``, ``s`` the scale)::

    1  u = x W_inᵀ + b_in         (N, L, 3E), split into q, k, v heads (N, h, L, d)
    2  S = s q kᵀ + mask          (N, h, L, L)
    3  P = softmax(S)             row-wise; a masked score has P = 0 exactly
    4  O = P v                    (N, h, L, d), heads merged into Z (N, L, E)
    5  out = Z W_oᵀ + b_o

Steps 1, 2, 4 and 5 are each a product of two factors (bilinear), step 3 is the softmax.
Every product below walks this chain: the JVP forwards a tangent through it, the VJP
backwards a cotangent, and the residual is the R-operator of the backward pass, which at
each bilinear step adds the two *mixed* terms (the cotangent of the step times the
tangent of the other factor) and at the softmax adds its second-order VJP
(``ACT2.softmax``, :meth:`Softmax.second_vjp`). The masks enter only through ``P``: a
masked score has weight 0 and no derivative, so every product vanishes there, as do
those of a query left with no key at all. Derivation: ``docs/products.md``.

Every function broadcasts over the leading V axis: no Python loop over directions.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from manual_bp.activations.normalising import Softmax
from manual_bp.layers.base import tangent_count

__all__ = ["AttentionProducts"]

#: The softmax of step 3: its JVP, VJP and second-order VJP (``ACT.softmax``, ``ACT2.softmax``).
SOFTMAX = Softmax()


def _t(a: np.ndarray) -> np.ndarray:
    """Transpose of the last two axes (of every matrix in a stack)."""
    return np.swapaxes(a, -1, -2)


def _heads(a: np.ndarray, heads: int) -> np.ndarray:
    """``(..., L, E) -> (..., heads, L, E/heads)`` for any leading axes."""
    *lead, length, width = a.shape
    return np.swapaxes(a.reshape(*lead, length, heads, width // heads), -2, -3)


def _merge(a: np.ndarray) -> np.ndarray:
    """``(..., heads, L, d) -> (..., L, heads·d)``, the inverse of :func:`_heads`."""
    *lead, heads, length, width = a.shape
    return np.swapaxes(a, -2, -3).reshape(*lead, length, heads * width)


def _split(u: np.ndarray, heads: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step 1's ``u`` ``(..., L, 3E)`` as its q, k and v heads."""
    q, k, v = np.split(u, 3, axis=-1)
    return _heads(q, heads), _heads(k, heads), _heads(v, heads)


def _join(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The inverse of :func:`_split`: three head stacks as one ``(..., L, 3E)``."""
    return np.concatenate([_merge(q), _merge(k), _merge(v)], axis=-1)


def _row_outer(a: np.ndarray, b: np.ndarray, sum_batch: bool = True) -> np.ndarray:
    """``Σ_rows a_rᵀ b_r`` of ``a`` ``(..., N, L, p)`` and ``b`` ``(..., N, L, q)`` (either may
    carry the V axis): ``(V, p, q)``, or per sample ``(V, N, p, q)`` summing its own rows."""
    if not sum_batch:
        return _t(a) @ b
    rows_a = a.reshape(*a.shape[:-3], -1, a.shape[-1])
    return _t(rows_a) @ b.reshape(*b.shape[:-3], -1, b.shape[-1])


def _row_sum(a: np.ndarray, sum_batch: bool = True) -> np.ndarray:
    """``Σ_rows a`` of ``a`` ``(V, N, L, p)``: ``(V, p)``, or ``(V, N, p)`` per sample."""
    return a.sum(axis=(1, 2) if sum_batch else 2)


def _total(terms: list[np.ndarray], shape: tuple[int, ...], dtype) -> np.ndarray:
    """The sum of the terms present (zeros of ``shape`` when there is none), of ``shape``
    unless it is ``()`` (a bias tangent alone broadcasts over the batch and positions; the
    products below split and multiply it by shape, so it is materialised)."""
    if not terms:
        return np.zeros(shape, dtype)
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    if not shape or total.shape == shape:  # () : the terms' own shape
        return total
    return np.broadcast_to(total, shape).copy()


class Tangents(NamedTuple):
    """The forward tangents ``dq, dk, dv, dS, dP, dZ, dout`` of the chain, each ``(V, ...)``."""

    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    scores: np.ndarray
    weights: np.ndarray
    merged: np.ndarray
    out: np.ndarray


class Cotangents(NamedTuple):
    """The backward cotangents ``∂u, ∂O, ∂P, ∂S`` of the chain (leading axes of the input)."""

    u: np.ndarray
    heads: np.ndarray
    weights: np.ndarray
    scores: np.ndarray


class AttentionProducts:
    """The five products of :class:`MultiheadAttention` as a layer (``PROD.multihead-attention.*``).

    A mixin: it reads ``num_heads``, ``embed_dim``, ``has_bias`` and ``params`` of the layer
    and the :class:`MHACache` of its forward pass (the batch-first input x, ``attention``
    with the q, k, v heads, the weights ``P`` and the scale ``s``, ``merged`` Z, and the
    ``layout``: every product takes and returns the caller's layout — time-major, batch-first
    or unbatched — and computes batch-first). Self-attention with packed projections, no
    extra keys and no dropout in training; any other configuration is refused in one line.
    """

    num_heads: int
    embed_dim: int
    has_bias: bool
    add_bias_kv: bool
    add_zero_attn: bool
    params: dict[str, np.ndarray]

    # ------------------------------------------------------------------ the point
    def _point(self, cache: Any) -> np.ndarray:
        """The batch-first input ``x`` of a self-attention cache these products cover; a
        clear refusal for the configurations they do not (cross-attention, extra keys,
        dropout in training, separate projection weights)."""
        reason = None
        if not cache.self_attention:
            reason = "cross-attention (key/value given): products cover self-attention"
        elif self.add_bias_kv or self.add_zero_attn:
            reason = "add_bias_kv/add_zero_attn"
        elif cache.attention.keep is not None:
            reason = "dropout in training (products are taken in eval mode)"
        elif "in_proj_weight" not in self.params:
            reason = "separate q/k/v projection weights (kdim/vdim)"
        if reason is not None:
            raise NotImplementedError(f"{self!r}: no V-axis products for {reason}")
        return cache.core.inputs[0]

    # ------------------------------------------------------------------ the chain
    def _tangents(self, cache: Any, T: np.ndarray | None, T_params: dict) -> Tangents:
        """Forward tangents through steps 1–5 (``PROD.multihead-attention.jvp``)::

            du   = T W_inᵀ + x T_Winᵀ + T_bin            step 1 (bilinear in x, W_in)
            dS   = s (dq kᵀ + q dkᵀ)                     step 2 (bilinear in q, k)
            dP   = P ⊙ (dS − ⟨P, dS⟩)                    step 3 (softmax JVP)
            dO   = dP v + P dv                           step 4 (bilinear in P, v)
            dout = dZ W_oᵀ + Z T_Woᵀ + T_bo              step 5 (bilinear in Z, W_o)

        ``T`` ``(V, N, L, E)`` or None, ``T_params`` ``{name: (V, *p)}`` (missing: zero).
        """
        x, att, Z = self._point(cache), cache.attention, cache.merged
        W_in, W_o = self.params["in_proj_weight"], self.params["out_proj.weight"]
        V, E = tangent_count(T, T_params), self.embed_dim
        T_Win, T_bin = T_params.get("in_proj_weight"), T_params.get("in_proj_bias")
        T_Wo, T_bo = T_params.get("out_proj.weight"), T_params.get("out_proj.bias")
        terms = [] if T is None else [T @ W_in.T]
        if T_Win is not None:
            terms.append(x @ _t(T_Win)[:, None])  # (N, L, E) @ (V, 1, E, 3E)
        if self.has_bias and T_bin is not None:
            terms.append(T_bin[:, None, None, :])
        du = _total(terms, (V, *x.shape[:-1], 3 * E), x.dtype)
        dq, dk, dv = _split(du, self.num_heads)
        dS = att.scale * (dq @ _t(att.k) + att.q @ _t(dk))
        dP = SOFTMAX.jvp(dS, None, att.weights)  # 0 wherever P is: the masked scores
        dZ = _merge(dP @ att.v + att.weights @ dv)
        terms = [dZ @ W_o.T]
        if T_Wo is not None:
            terms.append(Z @ _t(T_Wo)[:, None])
        if self.has_bias and T_bo is not None:
            terms.append(T_bo[:, None, None, :])
        return Tangents(dq, dk, dv, dS, dP, dZ, _total(terms, (), x.dtype))

    def _cotangents(self, cache: Any, M: np.ndarray) -> Cotangents:
        """Backward cotangents through steps 5–1 (``PROD.multihead-attention.vjp``)::

            ∂Z = M W_o;  ∂P = ∂O vᵀ,  ∂v = Pᵀ ∂O;  ∂S = P ⊙ (∂P − ⟨∂P, P⟩);
            ∂q = s ∂S k,  ∂k = s ∂Sᵀ q;  ∂u = [∂q, ∂k, ∂v] merged

        ``M`` ``(..., N, L, E)``: with or without the V axis (the residual's ``dout``).
        """
        att = cache.attention
        dO = _heads(M @ self.params["out_proj.weight"], self.num_heads)
        dP = dO @ _t(att.v)
        dv = _t(att.weights) @ dO
        dS = SOFTMAX.backward(dP, None, att.weights)
        dq, dk = att.scale * (dS @ att.k), att.scale * (_t(dS) @ att.q)
        return Cotangents(_join(dq, dk, dv), dO, dP, dS)

    # ------------------------------------------------------------------ products (V axis)
    def input_vjp(self, cache: Any, M: np.ndarray) -> np.ndarray:
        """``J_xᵀ M = ∂u W_in`` ``(V, N, L, E)`` (``PROD.multihead-attention.vjp``).

        ``∂u`` stacks the query, key and value cotangents and ``W_in`` their projections,
        so the product sums the three paths from ``x``: ``∂q W_q + ∂k W_k + ∂v W_v``.
        """
        self._point(cache)
        lay = cache.layout
        du = self._cotangents(cache, lay.inward(M, 1)).u
        return lay.outward(du @ self.params["in_proj_weight"], 1)

    def param_vjp(self, cache: Any, M: np.ndarray, sum_batch: bool = True) -> dict:
        """``J_θᵀ M`` (``PROD.multihead-attention.vjp``), each a sum over rows (positions)::

            ∂W_in = Σ ∂uᵀ x,  ∂b_in = Σ ∂u,  ∂W_o = Σ Mᵀ Z,  ∂b_o = Σ M

        ``sum_batch=False``: sample n's share sums its own L positions only, ``(V, N, *p)``.
        """
        x, M = self._point(cache), cache.layout.inward(M, 1)
        du = self._cotangents(cache, M).u
        grads = {"in_proj_weight": _row_outer(du, x, sum_batch)}
        if self.has_bias:
            grads["in_proj_bias"] = _row_sum(du, sum_batch)
        grads["out_proj.weight"] = _row_outer(M, cache.merged, sum_batch)
        if self.has_bias:
            grads["out_proj.bias"] = _row_sum(M, sum_batch)
        return {name: grads[name] for name in self.params}

    def input_jvp(self, cache: Any, T: np.ndarray) -> np.ndarray:
        """``J_x T`` ``(V, N, L, E)``: the chain of :meth:`_tangents` with only ``T``
        (``PROD.multihead-attention.jvp``); x feeds q, k and v, so ``du = T W_inᵀ``
        carries a tangent into all three."""
        lay = cache.layout
        return lay.outward(self._tangents(cache, lay.inward(T, 1), {}).out, 1)

    def param_jvp(self, cache: Any, T_params: dict[str, np.ndarray]) -> np.ndarray:
        """``Σ_p J_p T_p`` ``(V, N, L, E)``: the chain with only the parameter tangents
        (``PROD.multihead-attention.jvp``): ``du = x T_Winᵀ + T_bin``, ``+ Z T_Woᵀ + T_bo``."""
        return cache.layout.outward(self._tangents(cache, None, T_params).out, 1)

    def residual(
        self,
        cache: Any,
        dout: np.ndarray,
        T: np.ndarray | None,
        T_params: dict[str, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``Σ_o dout_o ∇²out_o · (T, T_θ)`` (``PROD.multihead-attention.residual``).

        The R-operator of the backward pass with ``dout`` held fixed (``R{dout} = 0``),
        step by step from the top; ``g·`` are the cotangents of ``dout`` (no V axis),
        ``d·`` the forward tangents of :meth:`_tangents`::

            5  R∂Z = dout T_Wo                    R∂W_o = Σ doutᵀ dZ,   R∂b_o = 0
            4  R∂P = R∂O vᵀ + gO dvᵀ              R∂v = Pᵀ R∂O + dPᵀ gO
            3  R∂S = J_softmax R∂P + Σ_k gP_k ∇²P_k dS          (ACT2.softmax)
            2  R∂q = s (R∂S k + gS dk)            R∂k = s (R∂Sᵀ q + gSᵀ dq)
            1  R∂x = R∂u W_in + gu T_Win          R∂W_in = Σ R∂uᵀ x + Σ guᵀ T,  R∂b_in = Σ R∂u

        Each second term is a step's mixed term; softmax has its own second derivative.
        """
        T_params = T_params or {}
        x, att, lay = self._point(cache), cache.attention, cache.layout
        dout = lay.inward(dout)
        T = None if T is None else lay.inward(T, 1)
        P, heads = att.weights, self.num_heads
        V = tangent_count(T, T_params)
        W_in = self.params["in_proj_weight"]
        T_Win, T_Wo = T_params.get("in_proj_weight"), T_params.get("out_proj.weight")
        d = self._tangents(cache, T, T_params)
        g = self._cotangents(cache, dout)
        # step 5, out = Z W_oᵀ + b_o: mixed terms of (Z, W_o)
        R_Z = _total([] if T_Wo is None else [dout @ T_Wo[:, None]], (V, *x.shape), x.dtype)
        r_Wo = _row_outer(dout, d.merged)
        # step 4, O = P v: the VJP of R∂O plus the mixed terms of (P, v)
        R_O = _heads(R_Z, heads)
        R_P = R_O @ _t(att.v) + g.heads @ _t(d.v)
        R_v = _t(P) @ R_O + _t(d.weights) @ g.heads
        # step 3, P = softmax(S): the VJP of R∂P plus softmax's second-order VJP
        R_S = SOFTMAX.backward(R_P, None, P) + SOFTMAX.second_vjp(g.weights, d.scores, None, P)
        # step 2, S = s q kᵀ: the VJP of R∂S plus the mixed terms of (q, k)
        R_q = att.scale * (R_S @ att.k + g.scores @ d.k)
        R_k = att.scale * (_t(R_S) @ att.q + _t(g.scores) @ d.q)
        R_u = _join(R_q, R_k, R_v)
        # step 1, u = x W_inᵀ + b_in: the VJP of R∂u plus the mixed terms of (x, W_in)
        r_x = R_u @ W_in
        if T_Win is not None:
            r_x = r_x + g.u @ T_Win[:, None]  # (N, L, 3E) @ (V, 1, 3E, E)
        r_Win = _row_outer(R_u, x)
        if T is not None:
            r_Win = r_Win + _row_outer(g.u, T)
        grads = {"in_proj_weight": r_Win, "out_proj.weight": r_Wo}
        if self.has_bias:
            grads["in_proj_bias"] = _row_sum(R_u)
            grads["out_proj.bias"] = np.zeros((V, self.embed_dim), x.dtype)
        return lay.outward(r_x, 1), {name: grads[name] for name in self.params}
