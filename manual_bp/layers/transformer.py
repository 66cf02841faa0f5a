"""``nn.TransformerEncoderLayer`` and ``nn.TransformerDecoderLayer`` as compositions of the
library's layers (equations ``TF.encoder-layer``, ``TF.decoder-layer``; ``docs/transformer.md``).

Each is a container of :class:`~manual_bp.layers.attention.MultiheadAttention`,
:class:`~manual_bp.layers.dense.Dense` (``Linear``),
:class:`~manual_bp.layers.normalisation.LayerNorm`,
:class:`~manual_bp.layers.dropout.Dropout` and an activation layer under torch's names, with
torch's constructor signature and defaults and torch's forward arguments. The forward pass
is a chain of residual blocks and layer norms (:mod:`~manual_bp.layers.transformer_chain`);
the backward pass is that chain's, i.e. the composition of the children's VJPs, and so is
every V-axis product.

Stacks: :mod:`~manual_bp.layers.transformer_stacks`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from manual_bp.layers.attention import MultiheadAttention
from manual_bp.layers.base import Cache, Layer, layer_dtype, register_layer
from manual_bp.layers.containers import ResidualCache
from manual_bp.layers.dense import Dense
from manual_bp.layers.dropout import Dropout
from manual_bp.layers.normalisation import LayerNorm
from manual_bp.layers.steps import GenericStep
from manual_bp.layers.transformer_base import (
    TORCH_NAMES,
    Layout,
    NamedChildren,
    SelfAttend,
    StepCache,
    activation_layer,
    batch_first_of,
    check_causal,
    check_decoder,
    check_like,
    check_mask_kinds,
    check_self_masks,
    decoder_masks,
    layout_of,
    padding_mask,
)
from manual_bp.layers.transformer_chain import Chain, chain_fast_step
from manual_bp.layers.transformer_cross import CrossAttend, DecoderProducts

__all__ = [
    "TransformerDecoderLayer",
    "TransformerEncoderLayer",
    "TransformerLayerCache",
    "chain_backward_memory",
    "memory_caches",
]


@dataclass
class TransformerLayerCache(Cache):
    """``input`` as given, its ``layout``, the chain's ``caches`` (batch-first) and, for a
    decoder, how the memory came (``"given"``, ``"input"``: the layer's input itself,
    ``"attribute"``: :attr:`TransformerDecoderLayer.memory`)."""

    layout: Layout
    caches: list
    memory: str = ""


class _TransformerLayer(NamedChildren, Layer):
    """The children and products both Transformer layers share."""

    hyperparameters = ("d_model", "nhead", "dim_feedforward", "dropout", "activation",
                       "layer_norm_eps", "batch_first", "norm_first", "bias")  # fmt: skip
    stored_as = {"bias": "has_bias"}
    product_equations = ("PROD.transformer.vjp", "PROD.transformer.jvp",
                         "PROD.transformer.residual")  # fmt: skip
    n_norms = 2
    sa_step: SelfAttend
    ca_step: CrossAttend | None = None

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: Any = "relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
        *,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        owner = type(self).__name__
        dtype = layer_dtype(dtype, owner, device)
        for label, flag in (("batch_first", batch_first), ("norm_first", norm_first),
                            ("bias", bias)):  # fmt: skip
            if not isinstance(flag, (bool, np.bool_)):
                raise TypeError(f"{owner}: {label} must be True or False, got {flag!r}")
        super().__init__()
        act, self.activation = activation_layer(activation, owner)
        self.d_model, self.nhead = d_model, nhead
        self.dim_feedforward, self.layer_norm_eps = dim_feedforward, layer_norm_eps
        self.batch_first, self.norm_first, self.has_bias = (
            bool(batch_first), bool(norm_first), bool(bias))  # fmt: skip
        # internally batch-first: the layout is converted once at the layer's boundary
        make_attention = lambda: MultiheadAttention(  # noqa: E731
            d_model, nhead, dropout=dropout, bias=bias, batch_first=True, dtype=dtype
        )
        self.dropout = float(dropout)
        named: list[tuple[str, Layer]] = [("self_attn", make_attention())]
        if self.n_norms == 3:
            named.append(("multihead_attn", make_attention()))
        named += [
            ("linear1", Dense(d_model, dim_feedforward, bias=bias, dtype=dtype)),
            ("dropout", Dropout(self.dropout)),
            ("linear2", Dense(dim_feedforward, d_model, bias=bias, dtype=dtype)),
        ]
        for i in range(1, self.n_norms + 1):
            named.append(
                (f"norm{i}", LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype))
            )
        named += [(f"dropout{i}", Dropout(self.dropout)) for i in range(1, self.n_norms + 1)]
        named.append(("activation", act))
        self._named = named
        child = dict(named)
        self.sa_step = SelfAttend(child["self_attn"])
        if self.n_norms == 3:
            self.ca_step = CrossAttend(child["multihead_attn"])
        self.chain = Chain(self, self._plan(child))
        self.reset_parameters(np.random.default_rng(seed))

    def _plan(self, c: dict[str, Layer]) -> list[tuple[bool, list[Layer]]]:
        """The chain's blocks ``(is_residual, layers)`` (``TF.encoder-layer``/``decoder-layer``)."""
        last = f"dropout{self.n_norms}"
        feed = [c["linear1"], c["activation"], c["dropout"], c["linear2"], c[last]]
        blocks = [([self.sa_step, c["dropout1"]], c["norm1"])]
        if self.ca_step is not None:
            blocks.append(([self.ca_step, c["dropout2"]], c["norm2"]))
        blocks.append((feed, c[f"norm{self.n_norms}"]))
        if self.norm_first:
            return [(True, [norm, *branch]) for branch, norm in blocks]
        return [item for branch, norm in blocks for item in ((True, branch), (False, [norm]))]

    def __getattr__(self, name: str) -> Any:
        """torch's attribute access to the children: ``layer.linear1``, ``layer.norm1``."""
        for child_name, child in self.__dict__.get("_named", []):
            if child_name == name:
                return child
        return super().__getattr__(name)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 2 or input_shape[-1] != self.d_model:
            raise ValueError(
                f"{self!r} takes per-sample sequences (L, {self.d_model}), got {input_shape}"
            )
        return tuple(input_shape)

    @classmethod
    def from_shape(cls, input_shape, *args, n_outputs=None, **kwargs) -> Any:
        """``transformer_encoder_layer(nhead, …)`` or torch's ``(d_model, nhead, …)`` on
        sequences ``(L, E)``: batch-first, as a stack's data is (``batch_first=False`` is
        refused here)."""
        if len(input_shape) != 2:
            raise ValueError(f"{cls.name} needs sequences (L, E), got {input_shape}")
        if not kwargs.setdefault("batch_first", True):
            raise ValueError(f"{cls.name} in a stack is batch-first: drop batch_first")
        if len(args) >= 2 or "d_model" in kwargs:
            d_model = args[0] if args else kwargs["d_model"]
            if d_model != input_shape[-1]:
                raise ValueError(f"d_model {d_model} differs from the input's {input_shape[-1]}")
            return cls(*args, **kwargs)
        return cls(input_shape[-1], *args, **kwargs)

    # ------------------------------------------------------------------ products (V axis)
    def input_vjp(self, cache: TransformerLayerCache, M: np.ndarray) -> np.ndarray:
        """``J_xᵀ M``: the chain's, ``J_{x,1}ᵀ ⋯ J_{x,B}ᵀ M`` (``PROD.transformer.vjp``)."""
        layout = cache.layout
        return layout.outward(self.chain.input_vjp(cache.caches, layout.inward(M, True)), True)

    def param_vjp(self, cache, M, sum_batch: bool = True) -> dict[str, np.ndarray]:
        """``J_θᵀ M`` of every block under torch's names (``PROD.transformer.vjp``)."""
        M = cache.layout.inward(M, True)
        return self.chain.param_vjp(cache.caches, M, sum_batch)

    def input_jvp(self, cache: TransformerLayerCache, T: np.ndarray) -> np.ndarray:
        """``J_x T`` carried up the chain (``PROD.transformer.jvp``)."""
        layout = cache.layout
        return layout.outward(self.chain.input_jvp(cache.caches, layout.inward(T, True)), True)

    def param_jvp(self, cache, T_params: dict[str, np.ndarray]) -> np.ndarray:
        """``Σ_p J_p T_p``, each block's term carried up the blocks above
        (``PROD.transformer.jvp``)."""
        return cache.layout.outward(self.chain.param_jvp(cache.caches, T_params), True)

    def residual(self, cache, dout, T, T_params=None):
        """The chain's second-order residual (``PROD.transformer.residual``): the R-operator's
        pass down the blocks with ``R{dout} = 0``."""
        layout = cache.layout
        T = None if T is None else layout.inward(T, True)
        r_x, r_params = self.chain.residual(cache.caches, layout.inward(dout), T, T_params)
        return layout.outward(r_x, True), r_params

    def __repr__(self) -> str:
        options = [str(self.d_model), str(self.nhead)]
        defaults = {"dim_feedforward": 2048, "dropout": 0.1, "activation": "relu",
                    "layer_norm_eps": 1e-5, "batch_first": False, "norm_first": False,
                    "bias": True}  # fmt: skip
        for key, default in defaults.items():
            if self.hyperparameter(key) != default:
                options.append(f"{key}={self.hyperparameter(key)!r}")
        return f"{type(self).__name__}({', '.join(options)})"


@register_layer
class TransformerEncoderLayer(_TransformerLayer):
    """``torch.nn.TransformerEncoderLayer``. Equation ``TF.encoder-layer``.

    ``(d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu",
    layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True, device=None,
    dtype=None)``; ``activation`` ``"relu"``/``"gelu"``, an activation of the library or
    torch's ``F.relu``/``F.gelu``/``nn.ReLU()``/``nn.GELU()``. ``seed`` (keyword) seeds the
    initialisation and the dropout generators.

    ``forward(src, src_mask=None, src_key_padding_mask=None, is_causal=False)``; masks as
    :class:`~manual_bp.layers.attention.MultiheadAttention`'s (bool True = not allowed,
    float added); ``is_causal`` is torch's hint that ``src_mask`` is causal (used as given).
    In a stack (``transformer_encoder_layer(nhead, …)``) it is batch-first and reads the
    :attr:`key_padding_mask` attribute, set by the caller per batch.
    """

    name = "transformer_encoder_layer"
    equation = "TF.encoder-layer"

    @property
    def key_padding_mask(self) -> Any:
        """The padding mask of the one-input form (its self-attention's attribute)."""
        return self.self_attn.key_padding_mask

    @key_padding_mask.setter
    def key_padding_mask(self, value: Any) -> None:
        self.self_attn.key_padding_mask = value

    def set_masks(self, mask: Any = None, padding: Any = None) -> None:
        """The masks of the next batch-first chain forward (``None``: cleared); their kinds
        are checked here, their sizes by that forward."""
        check_mask_kinds(self, (("mask", mask),), (("padding", padding),))
        self.sa_step.attn_mask, self.sa_step.key_padding_mask = mask, padding

    def encode(self, x: np.ndarray, mask: Any = None, padding: Any = None) -> tuple:
        """The batch-first chain: ``x (N, L, E) -> (out, caches)`` (``TF.encoder-layer``);
        ``mask`` ``(L, L)`` or ``(N·nhead, L, L)``, ``padding`` ``(N, L)``."""
        check_self_masks(self, batch_first_of(self, x, "x"), True, ("mask", mask),
                         ("padding", padding))  # fmt: skip
        self.set_masks(mask, padding)
        try:
            return self.chain.forward(x)
        finally:
            self.set_masks()

    def forward(
        self,
        src: np.ndarray,
        src_mask: Any = None,
        src_key_padding_mask: Any = None,
        is_causal: bool = False,
    ) -> tuple[np.ndarray, TransformerLayerCache]:
        """``(out, cache)``: post-norm ``x ← LN₁(x + Drop₁(SA(x)))``, ``x ← LN₂(x + FF(x))``;
        pre-norm ``x ← x + Drop₁(SA(LN₁(x)))``, ``x ← x + FF(LN₂(x))``."""
        layout = layout_of(src, self.batch_first, self.d_model, self, "src")
        check_causal(self, is_causal, src_mask, "src_mask")
        x = layout.inward(src)
        check_self_masks(self, x, layout.batched, ("src_mask", src_mask),
                         ("src_key_padding_mask", src_key_padding_mask))  # fmt: skip
        padding = padding_mask(src_key_padding_mask, layout)
        out, caches = self.encode(x, src_mask, padding)
        return layout.outward(out), TransformerLayerCache(src, layout, caches)

    def backward(self, dout: np.ndarray, cache: TransformerLayerCache) -> tuple[np.ndarray, dict]:
        """``(∂C/∂src, grads)``: the chain's VJPs from the top block down (``TF.encoder-layer``)."""
        check_like(self, dout, cache.input.shape)
        dx, grads = self.chain.backward(cache.layout.inward(dout), cache.caches)
        return cache.layout.outward(dx), grads

    def fast_step(self) -> Any:
        """Each block's own fast step (``TF.layer-chain``); time-major: the readable form."""
        return chain_fast_step(self, self.chain)


def memory_caches(caches: list) -> list[StepCache]:
    """The cross-attention steps' caches inside a decoder chain's caches."""
    found = []
    for cache in caches:
        if isinstance(cache, ResidualCache):
            found += memory_caches(cache.branch)
        elif isinstance(cache, StepCache):
            found.append(cache)
    return found


def chain_backward_memory(chain: Chain, dout: np.ndarray, caches: list) -> tuple:
    """``(∂C/∂x, grads, ∂C/∂memory)`` of a decoder chain: the memory's gradient is the sum
    over every cross-attention step that read it."""
    steps = memory_caches(caches)
    for step in steps:
        step.memory_grad.clear()
    dx, grads = chain.backward(dout, caches)
    return dx, grads, sum(g for step in steps for g in step.memory_grad)


@register_layer
class TransformerDecoderLayer(DecoderProducts, _TransformerLayer):
    """``torch.nn.TransformerDecoderLayer``. Equation ``TF.decoder-layer``.

    torch's constructor (as :class:`TransformerEncoderLayer`'s). ``forward(tgt, memory,
    tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None, memory_key_padding_mask=None,
    tgt_is_causal=False, memory_is_causal=False)``; :meth:`backward` returns
    ``((∂C/∂tgt, ∂C/∂memory), grads)``: the memory feeds the cross-attention's key and value.

    Two inputs in a one-input stack (``transformer_decoder_layer(nhead, …)``): the memory is
    the :attr:`memory` attribute when the caller set it (its gradient is not the stack's),
    else the layer's input itself (``memory = tgt``: ``∂C/∂x = ∂tgt + ∂memory``). The
    products (``PROD.transformer.*``) take the same inputs: ``(tgt, memory)`` pairs of
    tangents and cotangents when both were given (:class:`DecoderProducts`).
    """

    name = "transformer_decoder_layer"
    equation = "TF.decoder-layer"
    n_norms = 3

    #: The memory of the one-input form (set by the caller; None: the input itself).
    memory: np.ndarray | None = None

    def set_masks(self, memory=None, tgt_mask=None, memory_mask=None, tgt_padding=None,
                  memory_padding=None) -> None:  # fmt: skip
        """The memory and masks of the next batch-first chain forward (none: cleared); their
        kinds are checked here, their sizes by that forward."""
        check_mask_kinds(self, *decoder_masks(tgt_mask, memory_mask, tgt_padding, memory_padding))
        if memory is not None:
            batch_first_of(self, memory, "memory")
        sa, ca = self.sa_step, self.ca_step
        assert ca is not None
        sa.attn_mask, sa.key_padding_mask = tgt_mask, tgt_padding
        ca.attn_mask, ca.key_padding_mask, ca.memory = memory_mask, memory_padding, memory

    def decode(self, x, memory, tgt_mask=None, memory_mask=None, tgt_padding=None,
               memory_padding=None) -> tuple:  # fmt: skip
        """The batch-first chain ``(out, caches)`` (``TF.decoder-layer``): ``x (N, L, E)``,
        ``memory (N, S, E)``, the masks as :meth:`set_masks` takes them."""
        check_decoder(self, x, memory, True, (tgt_mask, memory_mask, tgt_padding, memory_padding))
        self.set_masks(memory, tgt_mask, memory_mask, tgt_padding, memory_padding)
        try:
            return self.chain.forward(x)
        finally:
            self.set_masks()

    def forward(
        self,
        tgt: np.ndarray,
        memory: np.ndarray | None = None,
        tgt_mask: Any = None,
        memory_mask: Any = None,
        tgt_key_padding_mask: Any = None,
        memory_key_padding_mask: Any = None,
        tgt_is_causal: bool = False,
        memory_is_causal: bool = False,
    ) -> tuple[np.ndarray, TransformerLayerCache]:
        """``(out, cache)``: the encoder layer's chain with the cross-attention block
        ``x ← LN₂(x + Drop₂(CA(x, m)))`` (pre-norm ``x ← x + Drop₂(CA(LN₂(x), m))``) between
        the self-attention and the feed-forward blocks."""
        layout = layout_of(tgt, self.batch_first, self.d_model, self, "tgt")
        check_causal(self, tgt_is_causal, tgt_mask, "tgt_mask")
        check_causal(self, memory_is_causal, memory_mask, "memory_mask")
        kind = "given"
        if memory is None:
            kind, memory = ("input", tgt) if self.memory is None else ("attribute", self.memory)
        if layout_of(memory, self.batch_first, self.d_model, self, "memory").batched != (
            layout.batched
        ):
            raise ValueError(
                f"{self!r}: tgt {tgt.shape} and memory {memory.shape} differ in batching"
            )
        x, m = layout.inward(tgt), layout.inward(memory)
        masks = (tgt_mask, memory_mask, tgt_key_padding_mask, memory_key_padding_mask)
        check_decoder(self, x, m, layout.batched, masks, TORCH_NAMES)
        out, caches = self.decode(
            x, m, tgt_mask, memory_mask, padding_mask(tgt_key_padding_mask, layout),
            padding_mask(memory_key_padding_mask, layout),
        )  # fmt: skip
        return layout.outward(out), TransformerLayerCache(tgt, layout, caches, kind)

    def backward(self, dout: np.ndarray, cache: TransformerLayerCache) -> tuple[Any, dict]:
        """``((∂C/∂tgt, ∂C/∂memory), grads)`` (``TF.decoder-layer``); one-input form: ``∂C/∂x``."""
        check_like(self, dout, cache.input.shape)
        dx, grads, d_memory = chain_backward_memory(
            self.chain, cache.layout.inward(dout), cache.caches
        )
        d_tgt, d_memory = cache.layout.outward(dx), cache.layout.outward(d_memory)
        if cache.memory == "input":
            return d_tgt + d_memory, grads
        if cache.memory == "attribute":
            return d_tgt, grads
        return (d_tgt, d_memory), grads

    def fast_step(self) -> Any:
        """The readable form (the memory is a second input)."""
        return GenericStep(self)
