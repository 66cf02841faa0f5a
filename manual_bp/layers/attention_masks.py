"""Attention masks as one additive array of 0 and −inf (torch's conventions).

SDPA's masks (``torch.nn.functional.scaled_dot_product_attention``: boolean True = MAY
attend, float added, ``causal`` = ``j ≤ i``) and ``nn.MultiheadAttention``'s (boolean True =
NOT allowed, the opposite; ``attn_mask`` ``(L, S)`` or ``(N·heads, L, S)``,
``key_padding_mask`` ``(N, S)``) become one additive array built in the model's dtype. Split
from :mod:`manual_bp.layers.attention` so its readable and fast forms share them.
"""

from __future__ import annotations

import numpy as np

__all__ = ["additive_mask", "mha_mask"]


def _zero_or_minus_inf(keep: np.ndarray, dtype) -> np.ndarray:
    """``0`` where ``keep``, ``−inf`` elsewhere, built in ``dtype``: ``np.where`` of two
    Python floats would make a float64 array of the mask's size (``(N·H, L, S)`` at most) to
    cast down in a float32 model."""
    dtype = np.dtype(dtype)
    return np.where(keep, dtype.type(0.0), dtype.type(-np.inf))


def additive_mask(mask: np.ndarray | None, causal: bool, shape: tuple[int, int], dtype):
    """SDPA's masks as one additive ``(…, L, S)`` array of 0 and −inf (None: no mask)."""
    total = None
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype == np.bool_:
            total = _zero_or_minus_inf(mask, dtype)
        elif mask.dtype.kind == "f":
            if np.isnan(mask).any() or np.isposinf(mask).any():  # as _mha_part's rule
                raise ValueError("attention mask holds nan or +inf; it adds finite values or −inf")
            total = mask.astype(dtype)
        else:
            raise TypeError(f"attention mask must be boolean or float, got dtype {mask.dtype}")
        if mask.shape[-2:] != shape:
            raise ValueError(
                f"attention mask has shape {mask.shape}; its last axes must be {shape}"
            )
    if causal:
        tril = _zero_or_minus_inf(np.tri(*shape, dtype=bool), dtype)
        total = tril if total is None else total + tril
    return total


def _mha_part(
    mask,
    name: str,
    shape: tuple[int, ...],
    dtype,
    owner: str = "MultiheadAttention",
    layout: str = "its shape",
) -> np.ndarray | None:
    """One ``nn.MultiheadAttention`` mask as floats: bool True -> −inf, float as given.

    torch's rules: a NumPy array, bool or float ("only bool and floating types of masks are
    supported"), of exactly ``shape`` (named with its ``layout``), never broadcast. A float
    mask of the other float dtype is taken in the query's (torch's SDPA refuses it; a mask is
    constants, 0 and −inf most often, not data a gradient flows to).
    """
    if mask is None:
        return None
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"{owner}: {name} must be a NumPy array or None, got {type(mask).__name__}")
    if mask.dtype != np.bool_ and mask.dtype not in (np.float32, np.float64):
        raise TypeError(
            f"{owner}: {name} must be boolean or float (float32 or float64), got dtype {mask.dtype}"
        )
    if mask.shape != shape:
        raise ValueError(f"{owner}: {name} has shape {mask.shape}; expected {layout} = {shape}")
    if mask.dtype == np.bool_:
        return _zero_or_minus_inf(~mask, dtype)
    if np.isnan(mask).any() or np.isposinf(mask).any():
        raise ValueError(f"{name} holds nan or +inf; a float mask adds finite values or −inf")
    return mask.astype(dtype)


def mha_mask(
    attn_mask: np.ndarray | None,
    key_padding_mask: np.ndarray | None,
    causal: bool,
    shape: tuple[int, int, int, int],
    dtype,
    *,
    extra: int = 0,
    owner: str = "MultiheadAttention",
) -> np.ndarray | None:
    """``nn.MultiheadAttention``'s masks as one additive array broadcasting to ``(N, h, L, S)``.

    ``attn_mask`` ``(L, S)`` or ``(N·h, L, S)``, ``key_padding_mask`` ``(N, S)``; bool True
    = NOT allowed (−inf), float added; ``causal`` adds −inf above the diagonal. ``extra``
    keys appended after the ``S`` given ones (``add_bias_kv``, ``add_zero_attn``) get 0
    columns, always visible, as torch's ``pad(mask, (0, 1))``. A query
    left with no key: see :func:`~manual_bp.layers.attention_sdpa.attention_weights`.
    """
    n, heads, length, keys = shape
    total = None
    both = "(L, S) or (N·num_heads, L, S)"
    if isinstance(attn_mask, np.ndarray) and attn_mask.ndim == 3:
        part = _mha_part(attn_mask, "attn_mask", (n * heads, length, keys), dtype, owner, both)
        total = part.reshape(n, heads, length, keys)
    else:
        total = _mha_part(attn_mask, "attn_mask", (length, keys), dtype, owner, both)
    padding = _mha_part(key_padding_mask, "key_padding_mask", (n, keys), dtype, owner, "(N, S)")
    if padding is not None:
        padding = padding[:, None, None, :]
        total = padding if total is None else total + padding
    if causal:
        tril = _zero_or_minus_inf(np.tri(length, keys, dtype=bool), dtype)
        total = tril if total is None else total + tril
    if total is not None:
        total = total + np.zeros((length, keys), dtype)  # SDPA wants (…, L, S) last axes
        if extra:
            total = np.concatenate([total, np.zeros((*total.shape[:-1], extra), dtype)], -1)
    return total
