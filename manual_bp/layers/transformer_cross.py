"""The decoder's cross-attention step and its V-axis products (``TF.cross-products``).

Cross-attention ``CA(x, m) = MHA(x, m, m)`` reads two inputs: the target's rows ``x``
``(N, Lq, E)`` (the query) and the memory ``m`` ``(N, Lk, E)`` (the key and the value). Its
products are the attention's own self-attention products at one point: the concatenation
``z = [x; m]`` ``(N, Lq + Lk, E)`` along the sequence with a block mask::

                  keys x      keys m
    queries x     −inf        memory_mask (+ memory padding)
    queries m     0           −inf

The target's queries see exactly the memory's keys, with the memory's masks, so rows
``:Lq`` of ``SA(z)`` are ``CA(x, m)``; the memory's rows see only the target's keys (never
an empty row) and are discarded: their cotangent is zero, their tangent unused. So

* ``J_{(x,m)}ᵀ M = J_zᵀ [M; 0]`` split into rows: the memory's part is
  ``∂k W_k + ∂v W_v`` on its rows (its query cotangent is exactly zero) — the memory's two
  uses summed by the self-attention's own ``∂q W_q + ∂k W_k + ∂v W_v``;
* ``J_{(x,m)} (T, T_m) = (J_z [T; T_m])[:Lq]``, ``J_θ`` likewise; the residual is the
  self-attention's at ``[dout; 0]`` and ``[T; T_m]``, split the same way.

The point ``z`` is not computed again: its cache is assembled from the cross-attention's
own (:meth:`CrossAttend._joint`), so the products are taken at the forward's own numbers.

Inside a decoder chain the step is a one-input layer in ``x``; the memory's tangent and
cotangent travel beside the chain on the step's cache (:class:`MemoryChannel`), set by the
decoder for the walk (:func:`memory_walk`). A parameter product of a block reads no input
tangent or cotangent, so :class:`CrossBlock` closes the channel around its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from manual_bp.layers.attention_sdpa import AttentionCache
from manual_bp.layers.containers import Residual, ResidualCache
from manual_bp.layers.steps import GenericStep
from manual_bp.layers.transformer_base import SelfAttend, StepCache

__all__ = [
    "CrossAttend",
    "CrossBlock",
    "MemoryChannel",
    "cross_caches",
    "memory_walk",
]


@dataclass
class MemoryChannel:
    """The memory's side of one walk: its ``tangent`` ``(V, N, Lk, E)`` (None: zero) and the
    cotangents ``collected`` from every cross-attention step the walk passes."""

    tangent: np.ndarray | None = None
    collected: list = field(default_factory=list)

    def total(self, like: np.ndarray) -> np.ndarray:
        """The memory's cotangent: the sum over the steps (zeros shaped ``like`` if none)."""
        if not self.collected:
            return np.zeros_like(like)
        total = self.collected[0]
        for part in self.collected[1:]:
            total = total + part
        return total


@dataclass
class CrossCache(StepCache):
    """A cross-attention step's cache: the self-attention cache of ``[x; m]`` (``joint``,
    built on the first product) and the walk's :class:`MemoryChannel` (``channel``, None
    outside a walk)."""

    joint: Any = None
    channel: MemoryChannel | None = None


def cross_caches(caches: list) -> list[CrossCache]:
    """The cross-attention steps' caches inside a decoder chain's caches."""
    found: list[CrossCache] = []
    for cache in caches:
        if isinstance(cache, ResidualCache):
            found += cross_caches(cache.branch)
        elif isinstance(cache, CrossCache):
            found.append(cache)
    return found


@contextlib.contextmanager
def memory_walk(caches: list, tangent: np.ndarray | None = None) -> Iterator[MemoryChannel]:
    """One channel open on every cross-attention step of ``caches`` for the walk inside."""
    channel, steps = MemoryChannel(tangent), cross_caches(caches)
    for step in steps:
        step.channel = channel
    try:
        yield channel
    finally:
        for step in steps:
            step.channel = None


@contextlib.contextmanager
def _closed(caches: list) -> Iterator[None]:
    """The channels of ``caches`` closed for a parameter product (reopened after it)."""
    steps = cross_caches(caches)
    saved = [step.channel for step in steps]
    for step in steps:
        step.channel = None
    try:
        yield
    finally:
        for step, channel in zip(steps, saved, strict=True):
            step.channel = channel


class CrossAttend(SelfAttend):
    """Cross-attention ``MHA(x, memory, memory)`` as a one-input layer in ``x`` (the query).
    ``memory`` is set per call; its gradient ``∂key + ∂value`` is appended to the step's
    cache by :meth:`backward` (the one-input protocol has no place for a second input); its
    products are the attention's self-attention products on ``[x; memory]``
    (``TF.cross-products``, the module docstring)."""

    memory: Any = None

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, CrossCache]:
        memory, mask, padding = self.memory, self.attn_mask, self.key_padding_mask
        out, inner = self.attention.forward(x, memory, memory, padding, False, mask)
        return out, CrossCache(x, inner)

    def backward(self, dout: np.ndarray, cache: StepCache) -> tuple[np.ndarray, dict]:
        (d_query, d_key, d_value), grads = self.attention.backward(dout, cache.inner)
        cache.memory_grad.append(d_key + d_value)  # the memory feeds the key and the value
        return d_query, grads

    def fast_step(self) -> Any:
        return GenericStep(self)

    # ------------------------------------------------------------------ products (V axis)
    def _joint(self, cache: CrossCache) -> Any:
        """The self-attention cache of ``z = [x; m]`` under the block mask (built once),
        assembled from the cross-attention's own: the target's queries, the memory's keys
        and values, the weights ``P`` in the target-rows × memory-columns block and ``Z`` on
        the target's rows are the forward's own (bit for bit). What no product reads with a
        nonzero weight or cotangent — the memory's queries, the target's keys and values —
        is zero, consistent with uniform weights of the memory's rows on the target's keys
        (``softmax`` of zero scores)."""
        if cache.joint is None:
            if cache.inner.attention.keep is not None:
                raise NotImplementedError(
                    f"{self.attention!r}: no V-axis products for dropout in training "
                    f"(products are taken in eval mode)"
                )
            inner, att = cache.inner, cache.inner.attention
            x, m = inner.core.inputs[0], inner.core.inputs[1]
            (N, h, Lq, d), Lk = att.q.shape, att.k.shape[2]
            q = np.concatenate([att.q, np.zeros((N, h, Lk, d), att.q.dtype)], axis=2)
            k = np.concatenate([np.zeros((N, h, Lq, d), att.k.dtype), att.k], axis=2)
            v = np.concatenate([np.zeros((N, h, Lq, d), att.v.dtype), att.v], axis=2)
            weights = np.zeros((N, h, Lq + Lk, Lq + Lk), att.weights.dtype)
            weights[..., :Lq, Lq:] = att.weights
            weights[..., Lq:, :Lq] = 1.0 / Lq
            merged = inner.core.merged
            merged = np.concatenate([merged, np.zeros((N, Lk, merged.shape[-1]), merged.dtype)], 1)
            z = np.concatenate([x, m], axis=1)
            core = dataclasses.replace(
                inner.core, inputs=(z, z, z), merged=merged,
                attention=AttentionCache(q, k, v, weights, att.scale, None),
            )  # fmt: skip
            cache.joint = dataclasses.replace(
                inner, input=z, key=None, value=None, core=core, weights=None
            )
        return cache.joint

    @staticmethod
    def _rows(cache: CrossCache, a: np.ndarray) -> np.ndarray:
        """``a`` on the target's rows ``[x; 0]`` of ``z`` (axis −2; the memory's rows zero)."""
        m = cache.inner.key
        zeros = np.zeros((*a.shape[:-2], m.shape[1], a.shape[-1]), a.dtype)
        return np.concatenate([a, zeros], axis=-2)

    def _tangent(self, cache: CrossCache, T: np.ndarray | None) -> np.ndarray | None:
        """``[T; T_m]`` with the channel's memory tangent (zero outside a walk)."""
        tangent = None if cache.channel is None else cache.channel.tangent
        if T is None and tangent is None:
            return None
        if tangent is None:
            return self._rows(cache, T)
        if T is None:
            T = np.zeros((*tangent.shape[:-2], *cache.input.shape[1:]), tangent.dtype)
        return np.concatenate([T, tangent.astype(T.dtype, copy=False)], axis=-2)

    def _split(self, cache: CrossCache, dz: np.ndarray) -> np.ndarray:
        """The target's rows of ``dz``; the memory's go to the channel (when open)."""
        Lq = cache.input.shape[1]
        if cache.channel is not None:
            cache.channel.collected.append(dz[..., Lq:, :])
        return dz[..., :Lq, :]

    def input_vjp(self, cache, M):
        """``J_xᵀ M`` of the target; ``J_mᵀ M`` (key and value paths) to the channel."""
        return self._split(
            cache, self.attention.input_vjp(self._joint(cache), self._rows(cache, M))
        )

    def param_vjp(self, cache, M, sum_batch=True):
        return self.attention.param_vjp(self._joint(cache), self._rows(cache, M), sum_batch)

    def input_jvp(self, cache, T):
        """``J_x T + J_m T_m`` (the channel's memory tangent; zero outside a walk)."""
        out = self.attention.input_jvp(self._joint(cache), self._tangent(cache, T))
        return out[..., : cache.input.shape[1], :]

    def param_jvp(self, cache, T_params):
        out = self.attention.param_jvp(self._joint(cache), T_params)
        return out[..., : cache.input.shape[1], :]

    def residual(self, cache, dout, T, T_params=None):
        """The self-attention's residual at ``[dout; 0]`` and ``[T; T_m]``; the memory's
        part goes to the channel."""
        joint = self._joint(cache)
        r_z, r_params = self.attention.residual(
            joint, self._rows(cache, dout), self._tangent(cache, T), T_params
        )
        return self._split(cache, r_z), r_params


class CrossBlock(Residual):
    """The residual block holding a cross-attention step: a :class:`Residual` whose
    parameter products close the memory channel (a parameter product takes no input tangent
    and gives no input cotangent, though its walk passes the step's input products)."""

    def param_vjp(self, cache, M, sum_batch=True):
        with _closed(cache.branch):
            return super().param_vjp(cache, M, sum_batch)

    def param_jvp(self, cache, T_params):
        with _closed(cache.branch):
            return super().param_jvp(cache, T_params)


# ---------------------------------------------------------------------- decoder walks
def _memory_like(caches: list, V: int) -> np.ndarray:
    """Zeros shaped like ``V`` memory cotangents (the memory every cross step reads)."""
    memory = cross_caches(caches)[0].inner.key
    return np.zeros((V, *memory.shape), memory.dtype)


def decoder_vjp(chain: Any, caches: list, M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(J_tᵀ M, J_mᵀ M)`` of a decoder chain (batch-first): the memory's cotangent is the
    sum over every cross-attention step (``TF.cross-products``, ``TF.decoder``)."""
    with memory_walk(caches) as channel:
        d_tgt = chain.input_vjp(caches, M)
    return d_tgt, channel.total(_memory_like(caches, M.shape[0]))


def decoder_tangent(chain: Any, caches: list, T, T_memory, T_params) -> np.ndarray:
    """``J_t T + J_m T_m + Σ_p J_p T_p`` of a decoder chain (any of them None: zero)."""
    if T is None and T_memory is not None:
        T = np.zeros((T_memory.shape[0], *cross_caches(caches)[0].input.shape), T_memory.dtype)
    with memory_walk(caches, T_memory):
        return chain.tangent(caches, T, T_params)


def decoder_residual(chain: Any, caches: list, dout, T, T_memory, T_params) -> tuple:
    """``(r_t, r_m, {name: r_θ})``: the R-operator's pass down a decoder chain with
    ``R{dout} = 0``; ``r_m`` sums every cross-attention step's share (its ``J_mᵀ R`` and
    its own second-order term)."""
    if T is None and T_memory is not None:
        T = np.zeros((T_memory.shape[0], *cross_caches(caches)[0].input.shape), T_memory.dtype)
    with memory_walk(caches, T_memory) as channel:
        r_t, r_params = chain.residual(caches, dout, T, T_params)
    return r_t, channel.total(_memory_like(caches, r_t.shape[0])), r_params


class DecoderProducts:
    """The products of a decoder layer or stack with respect to its inputs
    (``PROD.transformer.*``): ``(tgt, memory)`` when both were given (tangents and
    cotangents are pairs), the one input ``x`` when the memory was the input itself
    (``memory = tgt``: the two paths summed), ``tgt`` alone when the memory was the
    :attr:`memory` attribute (a constant). Parameter products are the chain's own."""

    chain: Any

    @staticmethod
    def _split_tangent(cache: Any, T: Any) -> tuple[Any, Any]:
        """``(T_tgt, T_memory)`` batch-first from the caller's form of ``T``."""
        if T is None:
            return None, None
        lay = cache.layout
        if cache.memory == "given":
            return lay.inward(T[0], True), lay.inward(T[1], True)
        inner = lay.inward(T, True)
        return inner, (inner if cache.memory == "input" else None)

    @staticmethod
    def _join(cache: Any, d_tgt: np.ndarray, d_memory: np.ndarray) -> Any:
        """The caller's form of an input cotangent (see the class docstring)."""
        d_tgt, d_memory = cache.layout.outward(d_tgt, True), cache.layout.outward(d_memory, True)
        if cache.memory == "given":
            return d_tgt, d_memory
        return d_tgt + d_memory if cache.memory == "input" else d_tgt

    def input_vjp(self, cache: Any, M: np.ndarray) -> Any:
        """``J_xᵀ M`` with ``x = (tgt, memory)`` (``PROD.transformer.vjp``): the target's
        through the chain, the memory's summed over every layer's key and value paths."""
        d_tgt, d_memory = decoder_vjp(self.chain, cache.caches, cache.layout.inward(M, True))
        return self._join(cache, d_tgt, d_memory)

    def input_jvp(self, cache: Any, T: Any) -> np.ndarray:
        """``J_t T_t + J_m T_m`` (``PROD.transformer.jvp``)."""
        T_tgt, T_memory = self._split_tangent(cache, T)
        out = decoder_tangent(self.chain, cache.caches, T_tgt, T_memory, None)
        return cache.layout.outward(out, True)

    def residual(self, cache: Any, dout: np.ndarray, T: Any, T_params: Any = None) -> tuple:
        """The chain's second-order residual with the memory's tangent and share
        (``PROD.transformer.residual``)."""
        T_tgt, T_memory = self._split_tangent(cache, T)
        r_t, r_m, r_params = decoder_residual(
            self.chain, cache.caches, cache.layout.inward(dout), T_tgt, T_memory, T_params
        )
        return self._join(cache, r_t, r_m), r_params
