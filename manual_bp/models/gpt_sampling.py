"""Sampling from a :class:`~manual_bp.models.gpt.GPT` (nanoGPT's ``generate``), split from
:mod:`manual_bp.models.gpt`: the scalar arguments checked in one line each, then
``max_new_tokens`` draws in evaluation mode."""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp.layers._entry import memory_limit

__all__ = ["generate"]


def generate(
    model: Any,
    idx: Any,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    rng: int | np.random.Generator | None = None,
) -> np.ndarray:
    """:meth:`GPT.generate <manual_bp.models.gpt.GPT.generate>` of ``model``."""
    from manual_bp._arguments import as_generator, check_count, check_number

    idx = model.check_batch_array(idx, "idx")  # B = 0: (0, T + max_new_tokens), as torch
    max_new_tokens = check_count(max_new_tokens, "GPT.generate: max_new_tokens", minimum=0)
    if idx.shape[0] * (idx.shape[1] + max_new_tokens) * 8 > memory_limit():
        raise ValueError(
            f"GPT.generate: max_new_tokens {max_new_tokens}: the int64 result would exceed "
            "this machine's memory"
        )
    temperature = check_number(temperature, "GPT.generate: temperature")
    if top_k is not None:  # above vocab_size: every token kept (nanoGPT's min(top_k, V))
        top_k = check_count(top_k, "GPT.generate: top_k", minimum=1)
    rng = as_generator(rng, "GPT.generate: rng")
    mode = model.training
    model.eval()
    try:
        for _ in range(max_new_tokens):
            logits = model(idx[:, -model.config.block_size :])[:, -1, :] / temperature
            if top_k is not None:
                k = min(top_k, logits.shape[-1])
                kth = np.sort(logits, axis=-1)[:, -k][:, None]
                logits = np.where(logits < kth, -np.inf, logits)
            logits = logits - logits.max(axis=-1, keepdims=True)
            probs = np.exp(logits)
            probs /= probs.sum(axis=-1, keepdims=True)
            draws = rng.random((idx.shape[0], 1))
            nxt = (probs.cumsum(axis=-1) < draws).sum(axis=-1, keepdims=True)
            idx = np.concatenate([idx, np.minimum(nxt, probs.shape[-1] - 1)], axis=1)
    finally:
        model.train(mode)
    return idx
