"""``nn.MultiheadAttention`` as torch has it, every constructor option and forward form.

:class:`MultiheadAttention` takes torch's arguments — ``(embed_dim, num_heads, dropout=0.0,
bias=True, add_bias_kv=False, add_zero_attn=False, kdim=None, vdim=None,
batch_first=False, device=None, dtype=None)`` — and keeps torch's parameters under their
state-dict names: ``in_proj_weight`` ``(3E, E)`` (or ``q_proj_weight`` ``(E, E)``,
``k_proj_weight`` ``(E, kdim)``, ``v_proj_weight`` ``(E, vdim)`` when ``kdim``/``vdim``
differ from ``E``), ``in_proj_bias`` ``(3E,)``, ``bias_k``/``bias_v`` ``(1, 1, E)``,
``out_proj.weight`` ``(E, E)``, ``out_proj.bias`` ``(E,)``. Inputs are time-major
``(L, N, E)`` by default, as torch's; ``(N, L, E)`` with ``batch_first=True``; unbatched
``(L, E)``. The library's extension ``causal=True`` (keyword) adds the causal mask itself.

``forward(query, key=None, value=None, key_padding_mask=None, need_weights=None,
attn_mask=None, average_attn_weights=True, is_causal=False) -> (out, cache)``: torch's
forward with the layer protocol's return; ``key``/``value`` omitted (a layer in a stack)
is self-attention. ``layer(query, key, value, ...)`` returns ``(out, weights)`` as torch's
module. Masks as torch's (:func:`~manual_bp.layers.attention_masks.mha_mask`): boolean True
= NOT allowed, float added. A query left with no admissible key: with ``need_weights=True``
(torch's default in the three-input call) the textbook softmax gives NaN, as torch's module
does; with ``need_weights=False`` — the default of the one-input layer form, whose weights
nobody asked for — it attends to nothing (output ``out_proj.bias``), as torch's SDPA path.

Computation in :mod:`~manual_bp.layers.attention_core`; SDPA in
:mod:`~manual_bp.layers.attention_sdpa`; products in
:mod:`~manual_bp.layers.attention_products`; the fused training step in
:mod:`~manual_bp.layers.attention_fast`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from manual_bp.layers._entry import check_like, output_spec
from manual_bp.layers.attention_core import CoreCache, mha_backward, mha_forward, to_internal
from manual_bp.layers.attention_fast import AttentionStep
from manual_bp.layers.attention_masks import mha_mask
from manual_bp.layers.attention_products import AttentionProducts
from manual_bp.layers.attention_sdpa import (
    AttentionCache,
    scaled_dot_product_attention,
    sdpa_backward,
    softmax_backward,
)
from manual_bp.layers.base import Cache, Layer, layer_dtype, register_layer
from manual_bp.layers.steps import GenericStep

__all__ = [
    "AttentionCache",
    "MHACache",
    "MultiheadAttention",
    "mha_mask",
    "scaled_dot_product_attention",
    "sdpa_backward",
    "softmax_backward",
]


@dataclass
class MHACache(Cache):
    """``input`` (the query as given), ``key``/``value`` as given (None: self-attention),
    the batch-first computation's cache ``core``, the ``layout`` and the returned weights."""

    key: np.ndarray | None
    value: np.ndarray | None
    core: CoreCache
    layout: Any
    weights: np.ndarray | None

    @property
    def attention(self) -> AttentionCache:
        return self.core.attention

    @property
    def merged(self) -> np.ndarray:
        return self.core.merged

    @property
    def self_attention(self) -> bool:
        return self.key is None and self.value is None


def _positive(label: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{label} must be a positive integer, got {value!r}")
    return int(value)


@register_layer
class MultiheadAttention(AttentionProducts, Layer):
    """``torch.nn.MultiheadAttention``. Equations ``ATT.mha``, ``ATT.bias-kv``, ``ATT.dropout``.

    Parameters (torch's, in torch's order)
    ----------
    embed_dim, num_heads : int (``num_heads`` divides ``embed_dim``)
    dropout : float in [0, 1] — on the attention weights in training (own seeded generator)
    bias, add_bias_kv, add_zero_attn : bool
    kdim, vdim : int or None (``embed_dim``)
    batch_first : bool — False (torch's default): time-major ``(L, N, E)``
    device, dtype : torch's keywords (:func:`~manual_bp.layers.base.layer_dtype`)
    causal : bool, keyword — the library's extension: each query sees itself and earlier keys
    seed : int or Generator, keyword

    Attributes
    ----------
    key_padding_mask : array or None
        Used by the one-input :meth:`forward` (a layer in a stack) when none is passed:
        set by the caller for the batch (True = padding), like a recurrent layer's
        ``initial_state``.
    """

    name = "multihead_attention"
    aliases = ("mha",)
    equation = "ATT.mha"
    product_equations = (
        "PROD.multihead-attention.vjp",
        "PROD.multihead-attention.jvp",
        "PROD.multihead-attention.residual",
    )
    decay = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight",
             "out_proj.weight")  # fmt: skip
    hyperparameters = ("embed_dim", "num_heads", "dropout", "bias", "add_bias_kv",
                       "add_zero_attn", "kdim", "vdim", "batch_first", "causal")  # fmt: skip

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        device: Any = None,
        dtype: Any = None,
        *,
        causal: bool = False,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        dtype = layer_dtype(dtype, "MultiheadAttention", device)
        self.embed_dim = _positive("embed_dim", embed_dim)
        self.num_heads = _positive("num_heads", num_heads)
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.floating)):
            raise TypeError(f"dropout must be a number, got {dropout!r}")
        if not (math.isfinite(dropout) and 0.0 <= dropout <= 1.0):
            raise ValueError(f"dropout must be in [0, 1], got {dropout!r}")
        self.dropout = float(dropout)
        self.kdim = self.embed_dim if kdim is None else _positive("kdim", kdim)
        self.vdim = self.embed_dim if vdim is None else _positive("vdim", vdim)
        self.has_bias, self.causal = bool(bias), bool(causal)
        self.add_bias_kv, self.add_zero_attn = bool(add_bias_kv), bool(add_zero_attn)
        self.batch_first = bool(batch_first)
        self.key_padding_mask: np.ndarray | None = None
        E = self.embed_dim
        if self.kdim == E and self.vdim == E:  # torch's _qkv_same_embed_dim: packed
            self.params["in_proj_weight"] = np.zeros((3 * E, E), dtype)
        else:
            for name, width in (("q", E), ("k", self.kdim), ("v", self.vdim)):
                self.params[f"{name}_proj_weight"] = np.zeros((E, width), dtype)
        if self.has_bias:
            self.params["in_proj_bias"] = np.zeros(3 * E, dtype)
        if self.add_bias_kv:
            self.params["bias_k"] = np.zeros((1, 1, E), dtype)
            self.params["bias_v"] = np.zeros((1, 1, E), dtype)
        self.params["out_proj.weight"] = np.zeros((E, E), dtype)
        if self.has_bias:
            self.params["out_proj.bias"] = np.zeros(E, dtype)
        self._generator = np.random.default_rng(seed)
        self.reset_parameters(np.random.default_rng(seed))

    def reset_parameters(self, rng: np.random.Generator) -> None:
        """torch's: Xavier-uniform ``in_proj_weight`` (or each separate projection), Xavier-
        normal ``bias_k``/``bias_v``, ``U(±1/√E)`` ``out_proj.weight``, zero biases. The
        dropout generator is re-seeded from ``rng`` only when there is dropout (so a
        dropout-free model draws exactly what it drew before the option existed)."""
        E, p = self.embed_dim, self.params
        for name in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
            if name in p:
                bound = np.sqrt(6.0 / sum(p[name].shape))  # xavier_uniform_ on (out, in)
                p[name][...] = rng.uniform(-bound, bound, p[name].shape)
        p["out_proj.weight"][...] = rng.uniform(-1 / np.sqrt(E), 1 / np.sqrt(E), (E, E))
        for name in ("in_proj_bias", "out_proj.bias"):
            if name in p:
                p[name][...] = 0.0
        for name in ("bias_k", "bias_v"):
            if name in p:  # xavier_normal_ on (1, 1, E): fan_in = fan_out = E
                p[name][...] = rng.normal(0.0, np.sqrt(2.0 / (2 * E)), (1, 1, E))
        if self.dropout > 0.0:
            self._generator = np.random.default_rng(int(rng.integers(0, 2**63 - 1)))

    def get_extra_state(self) -> dict[str, Any]:
        """The dropout generator's state when there is dropout (a reload draws the same)."""
        return {"generator": self._generator.bit_generator.state} if self.dropout else {}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if not state:
            return
        if set(state) != {"generator"}:
            raise ValueError(f"{self!r}: extra state has keys {sorted(state)}, not 'generator'")
        kind = getattr(np.random, str(state["generator"].get("bit_generator")), None)
        if kind is None:
            raise ValueError(f"{self!r}: unknown bit generator in {state['generator']!r}")
        bit_generator = kind()
        bit_generator.state = state["generator"]
        self._generator = np.random.Generator(bit_generator)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 2 or input_shape[-1] != self.embed_dim:
            raise ValueError(
                f"{self!r} takes per-sample sequences (L, {self.embed_dim}), got {input_shape}"
            )
        return tuple(input_shape)

    # ------------------------------------------------------------------ torch's forward
    def forward(
        self,
        query: np.ndarray,
        key: np.ndarray | None = None,
        value: np.ndarray | None = None,
        key_padding_mask: np.ndarray | None = None,
        need_weights: bool | None = None,
        attn_mask: np.ndarray | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[np.ndarray, MHACache]:
        """``(out, cache)``; torch's arguments (see the module). ``key``/``value`` omitted:
        self-attention with :attr:`key_padding_mask`. ``need_weights`` None: True when
        ``key`` or ``value`` is given (torch's call), False in the one-input form.
        ``is_causal`` is torch's hint that ``attn_mask`` is causal: it needs ``attn_mask``
        and the mask is used as given. The weights torch would return are ``cache.weights``
        (``(N, L, S')``, ``(N, h, L, S')`` with ``average_attn_weights=False``, no ``N``
        unbatched; after dropout, as torch's; None unless ``need_weights``)."""
        given = key is not None or value is not None
        if need_weights is None:
            need_weights = given
        if is_causal and attn_mask is None:
            raise ValueError(f"{self!r}: is_causal is torch's hint about attn_mask: pass attn_mask")
        if not given and key_padding_mask is None:
            key_padding_mask = self.key_padding_mask
        key = query if key is None else key
        value = key if value is None else value
        layout, inputs = to_internal(self, query, key, value)
        unbatched_mask = isinstance(key_padding_mask, np.ndarray) and key_padding_mask.ndim == 1
        if not layout.batched and unbatched_mask:  # unbatched (S,), torch's
            key_padding_mask = key_padding_mask[None]
        out, core = mha_forward(self, inputs, attn_mask, key_padding_mask, safe=not need_weights)
        weights = None
        if need_weights:
            weights = core.attention.dropped
            weights = weights.mean(axis=1) if average_attn_weights else weights
            weights = weights if layout.batched else weights[0]
        cache = MHACache(query, None if not given else key, None if not given else value,
                         core, layout, weights)  # fmt: skip
        return layout.outward(out), cache

    def __call__(self, query: np.ndarray, *args: Any, **kwargs: Any) -> tuple:
        """torch's module call: ``(out, weights)`` (``weights`` None unless asked)."""
        out, cache = self.forward(query, *args, **kwargs)
        return out, cache.weights

    def backward(self, d_out: np.ndarray, cache: MHACache) -> tuple[Any, dict]:
        """``(∂C/∂x, grads)`` for self-attention (``∂query + ∂key + ∂value``: x feeds all
        three); ``((∂query, ∂key, ∂value), grads)``, torch's argument order, when ``key``
        or ``value`` was given."""
        if not isinstance(d_out, np.ndarray) or d_out.shape != self._out_shape(cache):
            raise ValueError(
                f"{self!r}: d_out has shape {np.shape(d_out)}, expected {self._out_shape(cache)}"
            )
        layout = cache.layout
        d_inputs, grads = mha_backward(self, layout.inward(d_out), cache.core)
        d_q, d_k, d_v = (layout.outward(d) for d in d_inputs)
        if cache.self_attention:
            return d_q + d_k + d_v, grads
        return (d_q, d_k, d_v), grads

    def _out_shape(self, cache: MHACache) -> tuple[int, ...]:
        return (*cache.input.shape[:-1], self.embed_dim)

    # ------------------------------------------------------------------ the old two-call form
    def attend(self, query, key, value, attn_mask=None, key_padding_mask=None):
        """``forward(query, key, value, …, need_weights=False)``: ``(out, cache)``."""
        return self.forward(query, key, value, key_padding_mask, False, attn_mask)

    def attend_backward(self, d_out: np.ndarray, cache: MHACache) -> tuple:
        """``(∂C/∂query, ∂C/∂key, ∂C/∂value, grads)`` (equation ``ATT.mha``)."""
        check_like(self, d_out, "d_out", output_spec(cache), stacked=False, what="output")
        layout = cache.layout
        d_inputs, grads = mha_backward(self, layout.inward(d_out), cache.core)
        return (*(layout.outward(d) for d in d_inputs), grads)

    def fast_step(self) -> Any:
        """The fused self-attention step (:class:`~manual_bp.layers.attention_fast.AttentionStep`)
        for the measured configuration — batch-first, packed, no extra keys, no dropout; any
        other configuration trains through its readable form (``GenericStep``)."""
        plain = not (self.add_bias_kv or self.add_zero_attn or self.dropout)
        if self.batch_first and plain and "in_proj_weight" in self.params:
            return AttentionStep(self)
        return GenericStep(self)

    @classmethod
    def from_shape(cls, input_shape, *args, n_outputs=None, **kwargs) -> MultiheadAttention:
        """``mha(heads)`` or torch's ``mha(E, heads, …)`` on sequences ``(L, E)``: batch-first,
        as a stack's data is (``batch_first=False`` is refused here)."""
        if len(input_shape) != 2:
            raise ValueError(f"multihead_attention needs sequences (L, E), got {input_shape}")
        if not kwargs.setdefault("batch_first", True):
            raise ValueError("multihead_attention in a stack is batch-first: drop batch_first")
        if len(args) >= 2:  # torch's order: embed_dim given
            if args[0] != input_shape[-1]:
                raise ValueError(f"embed_dim {args[0]} differs from the input's {input_shape[-1]}")
            return cls(*args, **kwargs)
        return cls(input_shape[-1], *args, **kwargs)

    def __repr__(self) -> str:
        options = [f"{self.embed_dim}", f"{self.num_heads}"]
        defaults = {"dropout": 0.0, "bias": True, "add_bias_kv": False, "add_zero_attn": False,
                    "kdim": self.embed_dim, "vdim": self.embed_dim, "batch_first": False,
                    "causal": False}  # fmt: skip
        for key, default in defaults.items():
            if self.hyperparameter(key) != default:
                options.append(f"{key}={self.hyperparameter(key)!r}")
        return f"MultiheadAttention({', '.join(options)})"
