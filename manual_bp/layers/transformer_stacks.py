"""``nn.TransformerEncoder``, ``nn.TransformerDecoder`` and ``nn.Transformer``: stacks of
Transformer layers (equations ``TF.encoder``, ``TF.decoder``, ``TF.transformer``).

A stack is one long chain: the blocks of ``num_layers`` copies of a layer, then the optional
``norm`` (:meth:`Chain.joined`); its backward is that chain's. A decoder's memory feeds the
cross-attention of every layer, so ``∂C/∂memory`` is the sum over the layers; in
``nn.Transformer`` that sum is the cotangent the encoder's backward starts from.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from manual_bp.layers.base import Cache, Layer, register_layer
from manual_bp.layers.build import build_layer, get_layer
from manual_bp.layers.normalisation import LayerNorm
from manual_bp.layers.steps import GenericStep
from manual_bp.layers.transformer import (
    TransformerDecoderLayer,
    TransformerEncoderLayer,
    _TransformerLayer,
    chain_backward_memory,
)
from manual_bp.layers.transformer_base import (
    TORCH_NAMES,
    Layout,
    NamedChildren,
    batch_first_of,
    check_causal,
    check_decoder,
    check_like,
    check_self_masks,
    layout_of,
    padding_mask,
    reseed,
)
from manual_bp.layers.transformer_chain import Chain, chain_fast_step
from manual_bp.layers.transformer_cross import DecoderProducts

__all__ = ["TransformerDecoder", "TransformerEncoder"]


def _like_layer(obj: Any, cls: type, owner: str) -> Any:
    """``obj`` as a layer of ``cls``: the library's own, a config dict, or an object with
    torch's attributes (a torch module: its configuration is read, not its parameters)."""
    if isinstance(obj, (dict, str)):
        obj = get_layer(obj)
    if isinstance(obj, Layer):
        if not isinstance(obj, cls):
            raise TypeError(f"{owner}: expected a {cls.__name__}, got {obj!r}")
        return obj
    try:
        attention = obj.self_attn
        options = {
            "d_model": int(attention.embed_dim), "nhead": int(attention.num_heads),
            "dim_feedforward": int(obj.linear1.out_features), "dropout": float(obj.dropout.p),
            "activation": obj.activation, "layer_norm_eps": float(obj.norm1.eps),
            "batch_first": bool(attention.batch_first), "norm_first": bool(obj.norm_first),
            "bias": obj.linear1.bias is not None,
        }  # fmt: skip
    except AttributeError:
        raise TypeError(f"{owner}: expected a {cls.__name__}, got {type(obj).__name__}") from None
    return cls(**options)


def _like_norm(obj: Any, owner: str) -> LayerNorm | None:
    """``norm``: None, the library's :class:`LayerNorm`, a config, or torch's ``LayerNorm``."""
    if obj is None or isinstance(obj, LayerNorm):
        return obj
    if isinstance(obj, (dict, str)):
        return _like_norm(get_layer(obj), owner)
    try:
        return LayerNorm(
            tuple(int(s) for s in obj.normalized_shape), eps=float(obj.eps),
            elementwise_affine=bool(obj.elementwise_affine),
            bias=getattr(obj, "bias", None) is not None,
        )  # fmt: skip
    except AttributeError:
        raise TypeError(f"{owner}: norm must be a LayerNorm or None, got {obj!r}") from None


@dataclass
class StackCache(Cache):
    """``input`` as given, its ``layout``, the joined chain's ``caches``; ``memory`` as in
    :class:`~manual_bp.layers.transformer.TransformerLayerCache`."""

    layout: Layout
    caches: list
    memory: str = ""


class _Stack(NamedChildren, Layer):
    """``num_layers`` copies of a layer and an optional ``norm``, as one chain."""

    layer_class: type = _TransformerLayer
    product_equations = _TransformerLayer.product_equations

    def _build(self, layer: Any, num_layers: Any, norm: Any, seed: Any) -> None:
        owner = type(self).__name__
        template = _like_layer(layer, self.layer_class, owner)
        if isinstance(num_layers, bool) or not isinstance(num_layers, (int, np.integer)):
            raise TypeError(f"{owner}: num_layers must be an integer, got {num_layers!r}")
        if num_layers < 1:
            raise ValueError(f"{owner}: num_layers must be at least 1, got {num_layers}")
        self.num_layers = int(num_layers)
        rng = np.random.default_rng(seed)
        self.layers = []
        for _ in range(self.num_layers):  # torch's deep copies: equal parameters
            clone = copy.deepcopy(template)
            reseed(clone, rng)  # but each copy's own dropout masks
            self.layers.append(clone)
        self.norm_layer = _like_norm(norm, owner)
        self._named = [(f"layers.{i}", layer) for i, layer in enumerate(self.layers)]
        if self.norm_layer is not None:
            self._named.append(("norm", self.norm_layer))
        tail = None if self.norm_layer is None else ("norm.", self.norm_layer)
        prefixes = [f"layers.{i}." for i in range(self.num_layers)]
        self.chain = Chain.joined([layer.chain for layer in self.layers], prefixes, tail)
        first = self.layers[0]
        self.d_model, self.batch_first = first.d_model, first.batch_first

    @property
    def norm(self) -> Any:
        """The final norm's config (a hyper-parameter) — the layer is ``norm_layer``."""
        return None if self.norm_layer is None else self.norm_layer.get_config()

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return self.layers[0].output_shape(input_shape)

    @classmethod
    def from_shape(cls, input_shape, layer=None, num_layers=1, norm=None, *, n_outputs=None,
                   **kwargs) -> Any:  # fmt: skip
        """``transformer_encoder([transformer_encoder_layer(2)], 2, layernorm)`` (the layer in
        a one-item list on the command line): the layer and the norm built for the
        per-sample shape (batch-first)."""
        if layer is None:
            raise ValueError(f"{cls.name} needs its layer, e.g. {cls.layer_class.name}(2, 32)")
        if isinstance(layer, (list, tuple)) and len(layer) == 1:
            layer = layer[0]  # the CLI's nested form: transformer_encoder([layer(...)], 2)
        if isinstance(norm, (list, tuple)) and len(norm) == 1:
            norm = norm[0]
        built = build_layer(layer, input_shape)
        norm = None if norm is None else build_layer(norm, input_shape)
        return cls(built, num_layers, norm, **kwargs)

    # products (V axis): the joined chain's
    def input_vjp(self, cache, M):
        """``J_xᵀ M`` of the joined chain (``PROD.transformer.vjp``)."""
        lay = cache.layout
        return lay.outward(self.chain.input_vjp(cache.caches, lay.inward(M, True)), True)

    def param_vjp(self, cache, M, sum_batch=True):
        """``J_θᵀ M`` of every block (``PROD.transformer.vjp``)."""
        return self.chain.param_vjp(cache.caches, cache.layout.inward(M, True), sum_batch)

    def input_jvp(self, cache, T):
        """``J_x T`` up the joined chain (``PROD.transformer.jvp``)."""
        lay = cache.layout
        return lay.outward(self.chain.input_jvp(cache.caches, lay.inward(T, True)), True)

    def param_jvp(self, cache, T_params):
        """``Σ_p J_p T_p`` (``PROD.transformer.jvp``)."""
        return cache.layout.outward(self.chain.param_jvp(cache.caches, T_params), True)

    def residual(self, cache, dout, T, T_params=None):
        """The joined chain's residual (``PROD.transformer.residual``)."""
        lay = cache.layout
        T = None if T is None else lay.inward(T, True)
        r_x, r_params = self.chain.residual(cache.caches, lay.inward(dout), T, T_params)
        return lay.outward(r_x, True), r_params

    def __repr__(self) -> str:
        norm = "" if self.norm_layer is None else f", norm={self.norm_layer!r}"
        return f"{type(self).__name__}({self.layers[0]!r}, {self.num_layers}{norm})"


@register_layer
class TransformerEncoder(_Stack):
    """``torch.nn.TransformerEncoder(encoder_layer, num_layers, norm=None,
    enable_nested_tensor=True, mask_check=True)``. Equation ``TF.encoder``.

    ``encoder_layer`` is copied ``num_layers`` times (torch's deep copies; each copy's
    dropout generator re-seeded from ``seed``); a torch ``TransformerEncoderLayer`` is read
    by its attributes. ``enable_nested_tensor``/``mask_check`` are torch's fast-path
    switches: accepted, the numbers are the same. Parameters ``layers.<i>.…``, ``norm.…``.
    ``forward(src, mask=None, src_key_padding_mask=None, is_causal=None)``.
    """

    name = "transformer_encoder"
    equation = "TF.encoder"
    layer_class = TransformerEncoderLayer
    hyperparameters = ("encoder_layer", "num_layers", "norm", "enable_nested_tensor", "mask_check")

    @property
    def encoder_layer(self) -> dict[str, Any]:
        """The copied layer's config (a hyper-parameter; the layers are ``layers``)."""
        return self.layers[0].get_config()

    def __init__(self, encoder_layer: Any, num_layers: int, norm: Any = None,
                 enable_nested_tensor: bool = True, mask_check: bool = True, *,
                 seed: int | np.random.Generator | None = None) -> None:  # fmt: skip
        super().__init__()
        self.enable_nested_tensor, self.mask_check = bool(enable_nested_tensor), bool(mask_check)
        self._build(encoder_layer, num_layers, norm, seed)

    @property
    def key_padding_mask(self) -> Any:
        """The one-input form's padding mask (every layer's self-attention attribute)."""
        return self.layers[0].key_padding_mask

    @key_padding_mask.setter
    def key_padding_mask(self, value: Any) -> None:
        for layer in self.layers:
            layer.key_padding_mask = value

    def encode(self, x: np.ndarray, mask: Any = None, padding: Any = None) -> tuple:
        """The batch-first joined chain ``(out, caches)`` (``TF.encoder``): ``x (N, L, E)``,
        ``mask`` ``(L, L)`` or ``(N·nhead, L, L)``, ``padding`` ``(N, L)``."""
        check_self_masks(self, batch_first_of(self, x, "x"), True, ("mask", mask),
                         ("padding", padding))  # fmt: skip
        for layer in self.layers:
            layer.set_masks(mask, padding)
        try:
            return self.chain.forward(x)
        finally:
            for layer in self.layers:
                layer.set_masks()

    def forward(self, src: np.ndarray, mask: Any = None, src_key_padding_mask: Any = None,
                is_causal: bool | None = None) -> tuple[np.ndarray, StackCache]:  # fmt: skip
        """``(out, cache)``: ``x ← layerᵢ(x)`` for i = 0 … num_layers−1, then ``norm``."""
        layout = layout_of(src, self.batch_first, self.d_model, self, "src")
        check_causal(self, is_causal, mask, "mask")
        x = layout.inward(src)
        check_self_masks(self, x, layout.batched, ("mask", mask),
                         ("src_key_padding_mask", src_key_padding_mask))  # fmt: skip
        padding = padding_mask(src_key_padding_mask, layout)
        out, caches = self.encode(x, mask, padding)
        return layout.outward(out), StackCache(src, layout, caches)

    def backward(self, dout: np.ndarray, cache: StackCache) -> tuple[np.ndarray, dict]:
        """``(∂C/∂src, grads)``: the joined chain's VJPs, norm first (``TF.encoder``)."""
        check_like(self, dout, cache.input.shape)
        dx, grads = self.chain.backward(cache.layout.inward(dout), cache.caches)
        return cache.layout.outward(dx), grads

    def fast_step(self) -> Any:
        """Every block's own fast step in order (``TF.layer-chain``)."""
        return chain_fast_step(self, self.chain)


@register_layer
class TransformerDecoder(DecoderProducts, _Stack):
    """``torch.nn.TransformerDecoder(decoder_layer, num_layers, norm=None)``. Equation
    ``TF.decoder``. ``forward(tgt, memory, tgt_mask=None, memory_mask=None,
    tgt_key_padding_mask=None, memory_key_padding_mask=None, tgt_is_causal=None,
    memory_is_causal=False)``; :meth:`backward` gives ``((∂C/∂tgt, ∂C/∂memory), grads)``,
    ``∂C/∂memory`` summed over the layers. One-input form: as
    :class:`~manual_bp.layers.transformer.TransformerDecoderLayer`'s (:attr:`memory`);
    products with respect to the same inputs (:class:`DecoderProducts`).
    """

    name = "transformer_decoder"
    equation = "TF.decoder"
    layer_class = TransformerDecoderLayer
    hyperparameters = ("decoder_layer", "num_layers", "norm")

    @property
    def decoder_layer(self) -> dict[str, Any]:
        """The copied layer's config (a hyper-parameter; the layers are ``layers``)."""
        return self.layers[0].get_config()

    def __init__(self, decoder_layer: Any, num_layers: int, norm: Any = None, *,
                 seed: int | np.random.Generator | None = None) -> None:  # fmt: skip
        self.memory: np.ndarray | None = None
        super().__init__()
        self._build(decoder_layer, num_layers, norm, seed)

    def decode(self, x: np.ndarray, memory: np.ndarray, tgt_mask: Any = None,
               memory_mask: Any = None, tgt_padding: Any = None,
               memory_padding: Any = None) -> tuple:  # fmt: skip
        """The batch-first joined chain ``(out, caches)`` (``TF.decoder``): ``x (N, L, E)``,
        ``memory (N, S, E)``, the masks as a layer's ``set_masks`` takes them."""
        masks = (tgt_mask, memory_mask, tgt_padding, memory_padding)
        check_decoder(self, x, memory, True, masks)
        for layer in self.layers:
            layer.set_masks(memory, *masks)
        try:
            return self.chain.forward(x)
        finally:
            for layer in self.layers:
                layer.set_masks()

    def forward(self, tgt, memory=None, tgt_mask=None, memory_mask=None,
                tgt_key_padding_mask=None, memory_key_padding_mask=None,
                tgt_is_causal=None, memory_is_causal=False) -> tuple:  # fmt: skip
        """``(out, cache)``: every decoder layer with the same memory, then ``norm``."""
        layout = layout_of(tgt, self.batch_first, self.d_model, self, "tgt")
        check_causal(self, tgt_is_causal, tgt_mask, "tgt_mask")
        check_causal(self, memory_is_causal, memory_mask, "memory_mask")
        kind = "given"
        if memory is None:
            kind, memory = ("input", tgt) if self.memory is None else ("attribute", self.memory)
        if layout_of(memory, self.batch_first, self.d_model, self, "memory").batched != (
            layout.batched
        ):
            raise ValueError(f"{self!r}: tgt {tgt.shape} and memory {memory.shape} differ")
        x, m = layout.inward(tgt), layout.inward(memory)
        masks = (tgt_mask, memory_mask, tgt_key_padding_mask, memory_key_padding_mask)
        check_decoder(self, x, m, layout.batched, masks, TORCH_NAMES)
        out, caches = self.decode(
            x, m, tgt_mask, memory_mask, padding_mask(tgt_key_padding_mask, layout),
            padding_mask(memory_key_padding_mask, layout),
        )  # fmt: skip
        return layout.outward(out), StackCache(tgt, layout, caches, kind)

    def backward(self, dout: np.ndarray, cache: StackCache) -> tuple[Any, dict]:
        """``((∂C/∂tgt, ∂C/∂memory), grads)`` (``TF.decoder``); one-input form ``∂C/∂x``."""
        check_like(self, dout, cache.input.shape)
        lay = cache.layout
        dx, grads, d_memory = chain_backward_memory(self.chain, lay.inward(dout), cache.caches)
        d_tgt, d_memory = lay.outward(dx), lay.outward(d_memory)
        if cache.memory == "input":
            return d_tgt + d_memory, grads
        return (d_tgt, d_memory) if cache.memory == "given" else d_tgt, grads

    def fast_step(self) -> Any:
        return GenericStep(self)
