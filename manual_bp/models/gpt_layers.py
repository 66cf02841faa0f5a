"""GPT-2's parts as containers of the library's own layers, under nanoGPT's names.

Each part is a container (:class:`~manual_bp.layers.transformer_base.NamedChildren`) whose
leaves are the library's layers — :class:`~manual_bp.layers.Embedding`,
:class:`~manual_bp.layers.LayerNorm`, :class:`~manual_bp.layers.MultiheadAttention`
(``causal=True``: its fused ``in_proj_weight`` (3E, E) is nanoGPT's ``c_attn.weight``),
:class:`~manual_bp.layers.Linear`, tanh-GELU and :class:`~manual_bp.layers.Dropout` — so the
model's flat buffer, state dict and optimizers see ordinary leaves; the backward passes
below are compositions of those leaves' VJPs (``GPT.block``, ``docs/gpt.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from manual_bp.layers.activation import ActivationLayer
from manual_bp.layers.attention import MultiheadAttention
from manual_bp.layers.base import Cache, Layer
from manual_bp.layers.containers import stack_backward, stack_forward
from manual_bp.layers.dense import Dense
from manual_bp.layers.dropout import Dropout
from manual_bp.layers.embedding import Embedding
from manual_bp.layers.normalisation import LayerNorm
from manual_bp.layers.transformer_base import NamedChildren

#: The target value a position is not counted under (nanoGPT's ``ignore_index=-1``).
IGNORE_INDEX = -1

__all__ = ["MLP", "Block", "CausalSelfAttention", "GPTEmbedding", "LMHead", "cross_entropy_fused"]

#: the attention's torch (MultiheadAttention) names -> nanoGPT's (the same layouts)
ATTENTION_NAMES = {
    "in_proj_weight": "c_attn.weight",
    "in_proj_bias": "c_attn.bias",
    "out_proj.weight": "c_proj.weight",
    "out_proj.bias": "c_proj.bias",
}


@dataclass
class PartCache(Cache):
    """``input`` and the caches of the part's steps."""

    steps: list[Any]


def _prefixed(prefix: str, grads: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {f"{prefix}.{name}": grad for name, grad in grads.items()}


class GPTEmbedding(NamedChildren, Layer):
    """``x = drop(wte[idx] + wpe[0:T])`` for token indices ``idx`` (B, T): nanoGPT's
    ``transformer.wte``/``wpe``/``drop``. The position rows are shared by the batch, so
    ``∂C/∂wpe`` is the scatter of ``Σ_b ∂C/∂x_b`` (``EMB.lookup``)."""

    index_input = True

    def __init__(self, vocab_size: int, block_size: int, n_embd: int, dropout: float, dtype):
        Layer.__init__(self)
        self.wte = Embedding(vocab_size, n_embd, dtype=dtype)
        self.wpe = Embedding(block_size, n_embd, dtype=dtype)
        self.drop = Dropout(dropout)
        self._named = [("wte", self.wte), ("wpe", self.wpe), ("drop", self.drop)]

    def forward(self, idx: np.ndarray) -> tuple[np.ndarray, PartCache]:
        tokens, token_cache = self.wte.forward(idx)
        positions, position_cache = self.wpe.forward(np.arange(idx.shape[1])[None])
        x, drop_cache = self.drop.forward(tokens + positions)
        return x, PartCache(idx, [token_cache, position_cache, drop_cache])

    def fast_step(self) -> Any:
        """Refused: a GPT's parts have no per-layer fused step (the tied weight's two uses
        share one gradient slot); the GPT fuses its whole step itself
        (``GPT.fast_training``, what ``train(..., fast=True)`` runs)."""
        raise ValueError(
            "GPT: its parts have no per-layer fused step; train(model, ...) fuses the GPT's "
            "whole step (GPT.fast_training)"
        )

    def backward(self, dout: np.ndarray, cache: PartCache) -> tuple[None, dict]:
        token_cache, position_cache, drop_cache = cache.steps
        dx, _ = self.drop.backward(dout, drop_cache)
        _, token = self.wte.backward(dx, token_cache)
        _, position = self.wpe.backward(dx.sum(axis=0, keepdims=True), position_cache)
        return None, {"wte.weight": token["weight"], "wpe.weight": position["weight"]}


class CausalSelfAttention(NamedChildren, Layer):
    """nanoGPT's ``attn``: ``resid_dropout(c_proj(causal SDPA(split(c_attn(x)))))``.

    The computation is the library's :class:`MultiheadAttention` with ``causal=True``
    (equations ``ATT.mha``, ``GPT.qkv``, ``GPT.causal``): one GEMM ``x W_attnᵀ`` gives
    ``[q | k | v]``; its VJP stacks the three projections' cotangents back into one
    ``(3E, E)`` gradient. Parameters are reported under nanoGPT's names."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool, dtype) -> None:
        Layer.__init__(self)
        self.attention = MultiheadAttention(
            n_embd, n_head, dropout, bias, batch_first=True, dtype=dtype, causal=True
        )
        self.resid_dropout = Dropout(dropout)
        self._named = [("attention", self.attention), ("resid_dropout", self.resid_dropout)]

    def named_parameters(self, prefix: str = "") -> list[tuple[str, np.ndarray]]:
        params = self.attention.params
        return [(prefix + ATTENTION_NAMES[name], params[name]) for name in params]

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, PartCache]:
        h, attention_cache = self.attention.forward(x)
        out, drop_cache = self.resid_dropout.forward(h)
        return out, PartCache(x, [attention_cache, drop_cache])

    def backward(self, dout: np.ndarray, cache: PartCache) -> tuple[np.ndarray, dict]:
        attention_cache, drop_cache = cache.steps
        dh, _ = self.resid_dropout.backward(dout, drop_cache)
        dx, grads = self.attention.backward(dh, attention_cache)
        return dx, {ATTENTION_NAMES[name]: grad for name, grad in grads.items()}


class MLP(NamedChildren, Layer):
    """nanoGPT's ``mlp``: ``dropout(c_proj(gelu_tanh(c_fc(x))))`` — a chain of leaves."""

    def __init__(self, n_embd: int, dropout: float, bias: bool, dtype) -> None:
        Layer.__init__(self)
        self.c_fc = Dense(n_embd, 4 * n_embd, bias, dtype=dtype)
        self.gelu = ActivationLayer({"name": "gelu", "approximate": "tanh"})
        self.c_proj = Dense(4 * n_embd, n_embd, bias, dtype=dtype)
        self.dropout = Dropout(dropout)
        self._named = [("c_fc", self.c_fc), ("gelu", self.gelu), ("c_proj", self.c_proj),
                       ("dropout", self.dropout)]  # fmt: skip

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, PartCache]:
        out, caches = stack_forward(self.children(), x)
        return out, PartCache(x, caches)

    def backward(self, dout: np.ndarray, cache: PartCache) -> tuple[np.ndarray, dict]:
        dx, grads = stack_backward(self.children(), dout, cache.steps)
        named: dict[str, np.ndarray] = {}
        for (name, _), layer_grads in zip(self._named, grads, strict=True):
            named |= _prefixed(name, layer_grads)
        return dx, named


class Block(NamedChildren, Layer):
    """A pre-norm block ``h = x + attn(ln_1(x))``, ``y = h + mlp(ln_2(h))`` (``GPT.block``).

    Backward, the two residuals' sums of both uses::

        ∂h = ∂y + J_ln₂ᵀ J_mlpᵀ ∂y,      ∂x = ∂h + J_ln₁ᵀ J_attnᵀ ∂h
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool, dtype) -> None:
        Layer.__init__(self)
        self.ln_1 = LayerNorm(n_embd, bias=bias, dtype=dtype)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias, dtype)
        self.ln_2 = LayerNorm(n_embd, bias=bias, dtype=dtype)
        self.mlp = MLP(n_embd, dropout, bias, dtype)
        self._named = [("ln_1", self.ln_1), ("attn", self.attn), ("ln_2", self.ln_2),
                       ("mlp", self.mlp)]  # fmt: skip

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, PartCache]:
        a, ln_1 = self.ln_1.forward(x)
        a, attn = self.attn.forward(a)
        h = x + a
        m, ln_2 = self.ln_2.forward(h)
        m, mlp = self.mlp.forward(m)
        return h + m, PartCache(x, [ln_1, attn, ln_2, mlp])

    def backward(self, dout: np.ndarray, cache: PartCache) -> tuple[np.ndarray, dict]:
        ln_1, attn, ln_2, mlp = cache.steps
        dm, g_mlp = self.mlp.backward(dout, mlp)
        dm, g_ln_2 = self.ln_2.backward(dm, ln_2)
        dh = dout + dm  # GPT.block: both uses of h (the skip path and the MLP branch)
        da, g_attn = self.attn.backward(dh, attn)
        da, g_ln_1 = self.ln_1.backward(da, ln_1)
        grads = {}
        for name, layer_grads in (("ln_1", g_ln_1), ("attn", g_attn), ("ln_2", g_ln_2),
                                  ("mlp", g_mlp)):  # fmt: skip
            grads |= _prefixed(name, layer_grads)
        return dh + da, grads


class LMHead(Layer):
    """``logits = x Wᵀ`` (nanoGPT's ``lm_head``, no bias). Tied (``GPT.tied``): ``W`` is the
    token embedding's ``weight`` — one parameter, owned by ``wte``; this layer has no
    parameter of its own and its backward reports ``∂C/∂W`` under ``"weight"`` for the
    model to add to ``wte``'s gradient (the two uses' sum)."""

    def __init__(self, n_embd: int, vocab_size: int, tied_to: Embedding | None, dtype) -> None:
        super().__init__()
        self.tied_to = tied_to
        if tied_to is None:
            self.params["weight"] = np.zeros((vocab_size, n_embd), dtype)

    @property
    def weight(self) -> np.ndarray:
        return self.tied_to.params["weight"] if self.tied_to is not None else self.params["weight"]

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        return x @ self.weight.T, Cache(x)

    def backward(self, dout: np.ndarray, cache: Cache) -> tuple[np.ndarray, dict]:
        x, weight = cache.input, self.weight
        rows = dout.reshape(-1, weight.shape[0])
        d_weight = rows.T @ x.reshape(-1, weight.shape[1])
        return dout @ weight, {"weight": d_weight}


def cross_entropy_fused(
    logits: np.ndarray, targets: np.ndarray, ignore_index: int = IGNORE_INDEX
) -> tuple[float, np.ndarray]:
    """``(mean cross-entropy, ∂C/∂logits)`` with ``∂C/∂logits`` written over ``logits``
    (``GPT.lm-ce``): ``p = softmax(z)`` row by row, ``C = −(1/n) Σ log p_{y}``, and
    ``∂C/∂z = (p − onehot(y)) / n`` on the ``n`` counted rows, 0 on ignored ones."""
    z = logits.reshape(-1, logits.shape[-1])
    y = targets.reshape(-1)
    counted = y != ignore_index
    n = int(counted.sum())
    if n == 0:  # torch's mean over no element is NaN; nanoGPT never asks for it
        raise ValueError("targets: every position is ignore_index; the mean loss is undefined")
    rows = np.flatnonzero(counted)
    z -= z.max(axis=1, keepdims=True)  # the stable form: softmax is shift-invariant
    picked = z[rows, y[rows]]
    np.exp(z, out=z)
    total = z.sum(axis=1, keepdims=True)
    loss = float((np.log(total[rows, 0]) - picked).sum() / n)
    z /= total
    z[rows, y[rows]] -= 1.0
    z[~counted] = 0.0
    z /= n
    return loss, logits
