"""``nn.Transformer``: an encoder stack whose output is the memory of a decoder stack
(equation ``TF.transformer``; ``docs/transformer.md``).

``memory = Enc(src)``, ``out = Dec(tgt, memory)``. Backward: the decoder's chain gives
``∂C/∂tgt`` and ``∂C/∂memory`` (summed over its layers' cross-attentions); the encoder's
chain starts from that ``∂C/∂memory`` and gives ``∂C/∂src``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from manual_bp.layers.base import Cache, Layer, layer_dtype, register_layer
from manual_bp.layers.normalisation import LayerNorm
from manual_bp.layers.steps import GenericStep
from manual_bp.layers.transformer import (
    TransformerDecoderLayer,
    TransformerEncoderLayer,
    chain_backward_memory,
)
from manual_bp.layers.transformer_base import (
    Layout,
    NamedChildren,
    check_causal,
    check_like,
    check_masks,
    check_self_masks,
    layout_of,
    padding_mask,
)
from manual_bp.layers.transformer_cross import decoder_residual, decoder_tangent, decoder_vjp
from manual_bp.layers.transformer_stacks import TransformerDecoder, TransformerEncoder

__all__ = ["Transformer"]


@dataclass
class TransformerCache(Cache):
    """``input`` (src), ``tgt``, the ``layout``, both chains' caches, how ``tgt`` came."""

    tgt: np.ndarray
    layout: Layout
    encoder: list
    decoder: list
    tgt_kind: str


@register_layer
class Transformer(NamedChildren, Layer):
    """``torch.nn.Transformer``. Equation ``TF.transformer``.

    ``(d_model=512, nhead=8, num_encoder_layers=6, num_decoder_layers=6, dim_feedforward=2048,
    dropout=0.1, activation="relu", custom_encoder=None, custom_decoder=None,
    layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True, device=None,
    dtype=None)``: an encoder and a decoder stack, each with a final ``LayerNorm``
    (parameters ``encoder.layers.<i>.…``, ``encoder.norm.…``, ``decoder.…``); every matrix
    Xavier-uniform, as torch's ``_reset_parameters``. ``forward(src, tgt, src_mask=None,
    tgt_mask=None, memory_mask=None, src_key_padding_mask=None, tgt_key_padding_mask=None,
    memory_key_padding_mask=None, src_is_causal=None, tgt_is_causal=None,
    memory_is_causal=False)``; :meth:`backward` gives ``((∂C/∂src, ∂C/∂tgt), grads)``.
    One-input form (a stack): ``tgt`` is the :attr:`tgt` attribute when set, else the input.
    Products (``PROD.transformer.*``) with respect to the same inputs: ``(src, tgt)`` pairs
    when both were given, the one input when ``tgt`` was the input, ``src`` alone when
    ``tgt`` was the attribute.
    """

    name = "transformer"
    equation = "TF.transformer"
    hyperparameters = ("d_model", "nhead", "num_encoder_layers", "num_decoder_layers",
                       "dim_feedforward", "dropout", "activation", "layer_norm_eps",
                       "batch_first", "norm_first", "bias")  # fmt: skip
    stored_as = {"bias": "has_bias"}
    product_equations = ("PROD.transformer.vjp", "PROD.transformer.jvp",
                         "PROD.transformer.residual")  # fmt: skip

    def __init__(
        self,
        d_model: int = 512,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: Any = "relu",
        custom_encoder: Any = None,
        custom_decoder: Any = None,
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
        *,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        dtype = layer_dtype(dtype, "Transformer", device)
        self.tgt: np.ndarray | None = None
        super().__init__()
        options = dict(dim_feedforward=dim_feedforward, dropout=dropout, activation=activation,
                       layer_norm_eps=layer_norm_eps, batch_first=batch_first,
                       norm_first=norm_first, bias=bias, dtype=dtype)  # fmt: skip
        norm = lambda: LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)  # noqa: E731
        if custom_encoder is not None or custom_decoder is not None:
            raise ValueError("Transformer: custom_encoder/custom_decoder are not supported")
        rng = np.random.default_rng(seed)
        layer = TransformerEncoderLayer(d_model, nhead, **options)
        self.encoder = TransformerEncoder(layer, num_encoder_layers, norm(), seed=rng)
        layer = TransformerDecoderLayer(d_model, nhead, **options)
        self.decoder = TransformerDecoder(layer, num_decoder_layers, norm(), seed=rng)
        self._named = [("encoder", self.encoder), ("decoder", self.decoder)]
        self.d_model, self.nhead = d_model, nhead
        self.num_encoder_layers, self.num_decoder_layers = num_encoder_layers, num_decoder_layers
        self.dim_feedforward, self.dropout = dim_feedforward, float(dropout)
        self.activation = layer.activation
        self.layer_norm_eps, self.batch_first = layer_norm_eps, bool(batch_first)
        self.norm_first, self.has_bias = bool(norm_first), bool(bias)
        self.reset_parameters(rng)

    def reset_parameters(self, rng: np.random.Generator) -> None:
        """The children's initialisation, then every matrix Xavier-uniform (torch's
        ``Transformer._reset_parameters``: ``U(±√(6/(fan_in + fan_out)))``)."""
        super().reset_parameters(rng)
        for _, p in self.named_parameters():
            if p.ndim > 1:
                bound = np.sqrt(6.0 / (p.shape[0] + p.shape[1]))
                p[...] = rng.uniform(-bound, bound, p.shape)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return self.encoder.output_shape(input_shape)

    @classmethod
    def from_shape(cls, input_shape, *args, n_outputs=None, **kwargs) -> Transformer:
        """``transformer(nhead, num_encoder_layers, …)`` on sequences ``(L, E)``: batch-first;
        ``d_model`` is the input's width."""
        if len(input_shape) != 2:
            raise ValueError(f"transformer needs sequences (L, E), got {input_shape}")
        if not kwargs.setdefault("batch_first", True):
            raise ValueError("transformer in a stack is batch-first: drop batch_first")
        kwargs.setdefault("d_model", input_shape[-1])
        if kwargs["d_model"] != input_shape[-1]:
            raise ValueError(f"d_model {kwargs['d_model']} differs from the input's width")
        return cls(kwargs.pop("d_model"), *args, **kwargs)

    def forward(self, src, tgt=None, src_mask=None, tgt_mask=None, memory_mask=None,
                src_key_padding_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, src_is_causal=None, tgt_is_causal=None,
                memory_is_causal=False) -> tuple[np.ndarray, TransformerCache]:  # fmt: skip
        """``(out, cache)``: ``memory = Enc(src)``, ``out = Dec(tgt, memory)``."""
        layout = layout_of(src, self.batch_first, self.d_model, self, "src")
        kind = "given"
        if tgt is None:
            kind, tgt = ("input", src) if self.tgt is None else ("attribute", self.tgt)
        if layout_of(tgt, self.batch_first, self.d_model, self, "tgt").batched != layout.batched:
            raise ValueError(f"{self!r}: src {src.shape} and tgt {tgt.shape} differ in batching")
        x, y = layout.inward(src), layout.inward(tgt)
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{self!r}: the batch number of src and tgt must be equal")
        for name, flag, mask in (("src_mask", src_is_causal, src_mask),
                                 ("tgt_mask", tgt_is_causal, tgt_mask),
                                 ("memory_mask", memory_is_causal, memory_mask)):  # fmt: skip
            check_causal(self, flag, mask, name)
        # every mask before the encoder's work (the memory is (N, S, E), S the source's)
        check_self_masks(self, x, layout.batched, ("src_mask", src_mask),
                         ("src_key_padding_mask", src_key_padding_mask))  # fmt: skip
        check_self_masks(self, y, layout.batched, ("tgt_mask", tgt_mask),
                         ("tgt_key_padding_mask", tgt_key_padding_mask))  # fmt: skip
        check_masks(self, layout.batched, y.shape[0], y.shape[1], x.shape[1],
                    (("memory_mask", memory_mask),),
                    (("memory_key_padding_mask", memory_key_padding_mask),))  # fmt: skip
        memory, enc = self.encoder.encode(x, src_mask, padding_mask(src_key_padding_mask, layout))
        out, dec = self.decoder.decode(
            y, memory, tgt_mask, memory_mask, padding_mask(tgt_key_padding_mask, layout),
            padding_mask(memory_key_padding_mask, layout),
        )  # fmt: skip
        return layout.outward(out), TransformerCache(src, tgt, layout, enc, dec, kind)

    def backward(self, dout: np.ndarray, cache: TransformerCache) -> tuple[Any, dict]:
        """``((∂C/∂src, ∂C/∂tgt), grads)`` (``TF.transformer``): the decoder's chain, then the
        encoder's from ``∂C/∂memory``; one-input form ``∂C/∂x``."""
        check_like(self, dout, cache.tgt.shape)
        lay = cache.layout
        d_tgt, dec_grads, d_memory = chain_backward_memory(
            self.decoder.chain, lay.inward(dout), cache.decoder
        )
        d_src, enc_grads = self.encoder.chain.backward(d_memory, cache.encoder)
        grads = {f"encoder.{k}": g for k, g in enc_grads.items()}
        grads.update({f"decoder.{k}": g for k, g in dec_grads.items()})
        d_src, d_tgt = lay.outward(d_src), lay.outward(d_tgt)
        if cache.tgt_kind == "input":
            return d_src + d_tgt, grads
        return (d_src, d_tgt) if cache.tgt_kind == "given" else d_src, grads

    def fast_step(self) -> Any:
        return GenericStep(self)

    # ------------------------------------------------------------------ products (V axis)
    def _split_tangent(self, cache: TransformerCache, T: Any) -> tuple[Any, Any]:
        """``(T_src, T_tgt)`` batch-first from the caller's form of ``T``."""
        if T is None:
            return None, None
        lay = cache.layout
        if cache.tgt_kind == "given":
            return lay.inward(T[0], True), lay.inward(T[1], True)
        inner = lay.inward(T, True)
        return inner, (inner if cache.tgt_kind == "input" else None)

    @staticmethod
    def _join(cache: TransformerCache, d_src: np.ndarray, d_tgt: np.ndarray) -> Any:
        d_src, d_tgt = cache.layout.outward(d_src, True), cache.layout.outward(d_tgt, True)
        if cache.tgt_kind == "given":
            return d_src, d_tgt
        return d_src + d_tgt if cache.tgt_kind == "input" else d_src

    @staticmethod
    def _halves(named: dict | None) -> tuple[dict, dict]:
        """Torch-named tangents as the encoder's and the decoder's own names."""
        halves: tuple[dict, dict] = ({}, {})
        for name, value in (named or {}).items():
            part, _, rest = name.partition(".")
            if part not in ("encoder", "decoder"):
                raise ValueError(f"Transformer: unknown parameter {name!r}")
            halves[part == "decoder"][rest] = value
        return halves

    def input_vjp(self, cache: TransformerCache, M: np.ndarray) -> Any:
        """``(J_srcᵀ M, J_tgtᵀ M)`` (``PROD.transformer.vjp``): the decoder's walk gives the
        target's and the memory's cotangents, the encoder's chain carries the memory's down."""
        d_tgt, d_memory = decoder_vjp(
            self.decoder.chain, cache.decoder, cache.layout.inward(M, True)
        )
        return self._join(cache, self.encoder.chain.input_vjp(cache.encoder, d_memory), d_tgt)

    def param_vjp(self, cache: TransformerCache, M: np.ndarray, sum_batch: bool = True) -> dict:
        """``J_θᵀ M`` (``PROD.transformer.vjp``): the decoder's at ``M``, the encoder's at the
        memory's cotangent ``J_mᵀ M`` (per sample: sample n's, from M's sample n alone)."""
        M = cache.layout.inward(M, True)
        _, d_memory = decoder_vjp(self.decoder.chain, cache.decoder, M)
        enc = self.encoder.chain.param_vjp(cache.encoder, d_memory, sum_batch)
        grads = {f"encoder.{k}": g for k, g in enc.items()}
        for k, g in self.decoder.chain.param_vjp(cache.decoder, M, sum_batch).items():
            grads[f"decoder.{k}"] = g
        return {name: grads[name] for name, _ in self.named_parameters()}

    def _tangent(self, cache: TransformerCache, T: Any, T_params: Any) -> np.ndarray:
        """``J_x T + Σ_p J_p T_p``: the memory's tangent from the encoder, then the decoder."""
        T_src, T_tgt = self._split_tangent(cache, T)
        own_enc, own_dec = self._halves(T_params)
        T_memory = None
        if T_src is not None or own_enc:
            T_memory = self.encoder.chain.tangent(cache.encoder, T_src, own_enc)
        out = decoder_tangent(self.decoder.chain, cache.decoder, T_tgt, T_memory, own_dec)
        return cache.layout.outward(out, True)

    def input_jvp(self, cache: TransformerCache, T: Any) -> np.ndarray:
        """``J_src T_src + J_tgt T_tgt`` (``PROD.transformer.jvp``)."""
        return self._tangent(cache, T, None)

    def param_jvp(self, cache: TransformerCache, T_params: dict) -> np.ndarray:
        """``Σ_p J_p T_p`` (``PROD.transformer.jvp``): the encoder's terms reach the output
        through the memory."""
        return self._tangent(cache, None, T_params)

    def residual(self, cache: TransformerCache, dout, T, T_params=None) -> tuple:
        """``PROD.transformer.residual``: the decoder's R-pass (``R{dout} = 0``) gives
        ``R{∂m}``; the encoder's R-pass starts from it, at the gradient ``∂C/∂m``."""
        T_src, T_tgt = self._split_tangent(cache, T)
        own_enc, own_dec = self._halves(T_params)
        enc, dec, dout = self.encoder.chain, self.decoder.chain, cache.layout.inward(dout)
        T_memory = None
        if T_src is not None or own_enc:
            T_memory = enc.tangent(cache.encoder, T_src, own_enc)
        _, _, g_memory = chain_backward_memory(dec, dout, cache.decoder)
        r_tgt, R_memory, r_dec = decoder_residual(dec, cache.decoder, dout, T_tgt, T_memory,
                                                  own_dec)  # fmt: skip
        r_src, r_enc = enc.residual(cache.encoder, g_memory, T_src, own_enc, R_dout=R_memory)
        grads = {f"encoder.{k}": g for k, g in r_enc.items()}
        grads.update({f"decoder.{k}": g for k, g in r_dec.items()})
        order = [name for name, _ in self.named_parameters()]
        return self._join(cache, r_src, r_tgt), {name: grads[name] for name in order}

    def __repr__(self) -> str:
        return (
            f"Transformer({self.d_model}, {self.nhead}, {self.num_encoder_layers}, "
            f"{self.num_decoder_layers}, dim_feedforward={self.dim_feedforward})"
        )
