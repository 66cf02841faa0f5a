"""What the Transformer family shares: named children, layouts, the activation argument and
the attention steps that take masks (``docs/transformer.md``).

Every Transformer class is a container of the library's own layers under torch's attribute
names (``self_attn``, ``linear1``, ``norm1``, …; ``layers.0.…`` in a stack), so its
parameters carry torch's state-dict names. Internally everything is batch-first
``(N, L, E)``: the layout the caller chose (``batch_first=False`` time-major ``(L, N, E)``,
or unbatched ``(L, E)``) is converted at the boundary, once per call (:class:`Layout`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from manual_bp._validation import check_size
from manual_bp.layers._entry import layer_float_dtype, memory_limit
from manual_bp.layers.activation import ActivationLayer
from manual_bp.layers.attention_masks import _mha_part
from manual_bp.layers.base import Cache, Layer, check_input
from manual_bp.layers.steps import GenericStep

__all__ = [
    "CHAIN_NAMES",
    "TORCH_NAMES",
    "Layout",
    "NamedChildren",
    "SelfAttend",
    "activation_layer",
    "batch_first_of",
    "check_causal",
    "check_cross",
    "check_decoder",
    "check_like",
    "check_mask_kinds",
    "check_masks",
    "check_self_masks",
    "decoder_masks",
    "layout_of",
    "padding_mask",
    "reseed",
]

#: torch's activation strings (``"relu"``, ``"gelu"``) as the library's activation configs.
ACTIVATION_NAMES = {"relu": {"name": "relu"}, "gelu": {"name": "gelu", "approximate": "none"}}


def activation_layer(activation: Any, owner: str) -> tuple[ActivationLayer, Any]:
    """``(layer, config)`` for torch's ``activation`` argument: ``"relu"``/``"gelu"``, an
    activation config or :class:`ActivationLayer` of the library, or a callable/module of
    torch's (``F.relu``, ``F.gelu``, ``nn.ReLU()``, ``nn.GELU(approximate=…)``), recognised by
    name; ``config`` is JSON-serialisable (what :meth:`get_config` stores)."""
    if isinstance(activation, ActivationLayer):
        config = activation.activation.get_config()
        return ActivationLayer(config), config
    if isinstance(activation, dict):
        return ActivationLayer(dict(activation)), dict(activation)
    if isinstance(activation, str):
        if activation not in ACTIVATION_NAMES:
            raise ValueError(f"{owner}: activation must be 'relu' or 'gelu', got {activation!r}")
        return ActivationLayer(dict(ACTIVATION_NAMES[activation])), activation
    kind = getattr(activation, "__name__", None) or type(activation).__name__
    kind = str(kind).lower()
    if kind in ACTIVATION_NAMES:
        config = dict(ACTIVATION_NAMES[kind])
        if kind == "gelu" and isinstance(getattr(activation, "approximate", None), str):
            config["approximate"] = activation.approximate  # nn.GELU(approximate="tanh")
        return ActivationLayer(config), config if len(config) > 1 else kind
    raise ValueError(f"{owner}: activation {activation!r} has no counterpart (relu or gelu)")


@dataclass
class Layout:
    """Where the batch axis is: ``batched`` False for an unbatched ``(L, E)``; otherwise
    ``batch_first`` True ``(N, L, E)`` or False ``(L, N, E)``. :meth:`inward` gives the
    batch-first array, :meth:`outward` the caller's; ``v=True`` for a stack ``(V, …)``."""

    batched: bool
    batch_first: bool

    def inward(self, a: np.ndarray, v: bool = False) -> np.ndarray:
        lead = 1 if v else 0
        if not self.batched:
            return np.expand_dims(a, lead)
        return a if self.batch_first else np.swapaxes(a, lead, lead + 1)

    def outward(self, a: np.ndarray, v: bool = False) -> np.ndarray:
        lead = 1 if v else 0
        if not self.batched:
            return np.squeeze(a, lead)
        return a if self.batch_first else np.swapaxes(a, lead, lead + 1)


def layout_of(x: Any, batch_first: bool, d_model: int, owner: Any, name: str) -> Layout:
    """The layout of ``x`` (3 axes: batched, 2: unbatched), its last axis ``d_model``; every
    sequence argument of the family (``src``, ``tgt``, ``memory``, ``x``) is checked here, the
    layers' one dtype rule first (:func:`~manual_bp.layers.base.check_input`)."""
    check_input(x, owner, name=name)
    check_size(x, repr(owner), name, memory_limit())
    if x.ndim not in (2, 3) or x.shape[-1] != d_model:
        raise ValueError(
            f"{owner!r}: {name} has shape {x.shape}; expected (L, N, {d_model}), "
            f"(N, L, {d_model}) with batch_first=True, or unbatched (L, {d_model})"
        )
    return Layout(x.ndim == 3, bool(batch_first))


def batch_first_of(owner: Any, x: Any, name: str) -> np.ndarray:
    """``x`` as the batch-first chain methods (``encode``, ``decode``) take it:
    ``(N, L, d_model)`` of the layer's dtype."""
    check_input(x, owner, name=name)
    check_size(x, repr(owner), name, memory_limit())
    if x.ndim != 3 or x.shape[-1] != owner.d_model:
        raise ValueError(
            f"{owner!r}: {name} has shape {x.shape}; expected (N, L, {owner.d_model}) "
            f"(the batch-first chain's layout)"
        )
    return x


def check_causal(owner: Any, is_causal: Any, mask: Any, name: str) -> None:
    if is_causal and mask is None:
        raise ValueError(f"{owner!r}: is_causal is torch's hint about {name}: pass {name}")


def check_like(owner: Any, dout: Any, shape: tuple[int, ...]) -> None:
    if not isinstance(dout, np.ndarray) or dout.shape != shape:
        raise ValueError(f"{owner!r}: dout has shape {np.shape(dout)}, expected {shape}")


def _heads(owner: Any) -> int:
    return owner.nhead if hasattr(owner, "nhead") else owner.layers[0].nhead


def check_masks(
    owner: Any,
    batched: bool,
    n: int,
    length: int,
    keys: int,
    attn: tuple = (),
    padding: tuple = (),
) -> None:
    """Each mask under the name its caller gives it (``src_mask``, ``memory_key_padding_mask``
    …), at the entry and before any work, by the attention's own rules (bool or float32/
    float64, exactly shaped, no NaN or +inf): ``attn`` pairs ``(name, mask)`` of ``(L, S)`` or
    ``(N·nhead, L, S)`` (unbatched: ``(nhead, L, S)``), ``padding`` pairs of ``(N, S)``
    (unbatched: ``(S,)``), with ``L = length`` and ``S = keys``."""
    dtype = layer_float_dtype(owner) or np.dtype(np.float64)
    heads, who = _heads(owner), repr(owner)
    for name, mask in attn:
        if isinstance(mask, np.ndarray) and mask.ndim == 3:
            shape = (n * heads if batched else heads, length, keys)
            layout = "(N·nhead, L, S)" if batched else "(nhead, L, S)"
        else:
            shape, layout = (length, keys), "(L, S)"
        _mha_part(mask, name, shape, dtype, who, layout)
    for name, mask in padding:
        shape, layout = ((n, keys), "(N, S)") if batched else ((keys,), "(S,)")
        _mha_part(mask, name, shape, dtype, who, layout)


def check_self_masks(owner: Any, x: np.ndarray, batched: bool, mask: tuple, padding: tuple) -> None:
    """Self-attention's ``(name, mask)`` and ``(name, padding mask)`` for the batch-first
    ``x`` (:func:`check_masks`)."""
    n, length = x.shape[:2]
    check_masks(owner, batched, n, length, length, (mask,), (padding,))


def check_cross(
    owner: Any, x: np.ndarray, memory: np.ndarray, batched: bool, names: tuple, masks: tuple
) -> None:
    """Cross-attention's inputs (batch-first ``x`` and ``memory``): the same batch, then
    ``names = (x's, memory's, mask's, padding mask's)`` and ``masks = (mask, padding mask)``
    (:func:`check_masks`)."""
    if memory.shape[0] != x.shape[0]:
        raise ValueError(
            f"{owner!r}: {names[1]} holds {memory.shape[0]} sequences and {names[0]} "
            f"{x.shape[0]}: the batch number of tgt and memory must be equal"
        )
    n, length, keys = x.shape[0], x.shape[1], memory.shape[1]
    check_masks(owner, batched, n, length, keys, ((names[2], masks[0]),), ((names[3], masks[1]),))


#: The decoder's input, memory and masks as ``decode`` names them, and as torch's ``forward``.
CHAIN_NAMES = ("x", "memory", "tgt_mask", "memory_mask", "tgt_padding", "memory_padding")
TORCH_NAMES = ("tgt", "memory", "tgt_mask", "memory_mask", "tgt_key_padding_mask",
               "memory_key_padding_mask")  # fmt: skip


def check_decoder(
    owner: Any, x: Any, memory: Any, batched: bool, masks: tuple, names: tuple = CHAIN_NAMES
) -> None:
    """A decoder's inputs at its entry, before any work: batch-first ``x`` and ``memory``
    (``(N, L, E)``, ``(N, S, E)``; checked here unless ``batched`` is False: unbatched input
    made batch-first by the caller, already checked), then ``masks = (tgt_mask, memory_mask,
    tgt padding, memory padding)`` under ``names`` (:data:`CHAIN_NAMES`' order)."""
    if batched:
        batch_first_of(owner, x, names[0])
        batch_first_of(owner, memory, names[1])
    check_self_masks(owner, x, batched, (names[2], masks[0]), (names[4], masks[2]))
    cross = (names[0], names[1], names[3], names[5])
    check_cross(owner, x, memory, batched, cross, (masks[1], masks[3]))


def decoder_masks(*masks: Any, names: tuple = CHAIN_NAMES) -> tuple[tuple, tuple]:
    """``(attention masks, padding masks)`` as ``(name, mask)`` pairs from a decoder's
    ``(tgt_mask, memory_mask, tgt padding, memory padding)``."""
    pairs = list(zip(names[2:], masks, strict=True))
    return (pairs[0], pairs[1]), (pairs[2], pairs[3])


def check_mask_kinds(owner: Any, attn: tuple = (), padding: tuple = ()) -> None:
    """:func:`check_masks` without the sizes (``set_masks``: the next forward's input is not
    known yet; the chain's attention checks the shapes): a NumPy array or None, bool or
    float32/float64, no NaN or +inf; attention masks of 2 or 3 axes, padding masks of 2."""
    dtype = layer_float_dtype(owner) or np.dtype(np.float64)
    who = repr(owner)
    for ranks, pairs, layout in (((2, 3), attn, "(L, S) or (N·nhead, L, S)"),
                                 ((2,), padding, "(N, S)")):  # fmt: skip
        for name, mask in pairs:
            if isinstance(mask, np.ndarray) and mask.ndim not in ranks:
                raise ValueError(f"{who}: {name} has shape {mask.shape}; expected {layout}")
            shape = mask.shape if isinstance(mask, np.ndarray) else ()
            _mha_part(mask, name, shape, dtype, who, layout)


def padding_mask(mask: Any, layout: Layout) -> Any:
    """A key padding mask for the batch-first computation: unbatched ``(S,)`` -> ``(1, S)``."""
    if mask is not None and not layout.batched and np.ndim(mask) == 1:
        return np.asarray(mask)[None]
    return mask


def reseed(layer: Layer, rng: np.random.Generator) -> None:
    """New dropout generators (seeded from ``rng``) in ``layer`` and its children: a copy of a
    layer must not draw the same dropout masks as the original."""
    if "_generator" in layer.__dict__:
        layer._generator = np.random.default_rng(int(rng.integers(0, 2**63 - 1)))
    for child in layer.children():
        reseed(child, rng)


class NamedChildren:
    """A container whose children have torch's attribute names: ``_named`` lists
    ``(name, layer)`` in torch's registration order, which is also the parameter order."""

    _named: list[tuple[str, Layer]]

    def children(self) -> list[Layer]:
        return [layer for _, layer in self.__dict__.get("_named", [])]

    def named_children(self) -> list[tuple[str, Layer]]:
        return list(self.__dict__.get("_named", []))

    def named_parameters(self, prefix: str = "") -> list[tuple[str, np.ndarray]]:
        named: list[tuple[str, np.ndarray]] = []
        for name, child in self.named_children():
            named += child.named_parameters(f"{prefix}{name}.")
        return named

    def named_buffers(self, prefix: str = "") -> list[tuple[str, np.ndarray]]:
        named: list[tuple[str, np.ndarray]] = []
        for name, child in self.named_children():
            named += child.named_buffers(f"{prefix}{name}.")
        return named

    @property
    def params(self) -> dict[str, np.ndarray]:
        """The children's parameters under torch's dotted names (the arrays themselves)."""
        return dict(self.named_parameters())

    @params.setter
    def params(self, value: dict[str, np.ndarray]) -> None:
        if value:
            raise AttributeError(f"{type(self).__name__}'s parameters belong to its children")

    def reset_parameters(self, rng: np.random.Generator) -> None:
        for child in self.children():
            child.reset_parameters(rng)

    def __deepcopy__(self, memo: dict) -> Any:
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            setattr(new, key, copy.deepcopy(value, memo))
        return new


@dataclass
class StepCache(Cache):
    """The cache of an attention step: ``input`` and the attention's own cache ``inner``;
    ``memory_grad`` collects ``∂C/∂memory`` of a cross-attention step during backward."""

    inner: Any
    memory_grad: list = field(default_factory=list)


class SelfAttend(Layer):
    """Self-attention ``MHA(x, x, x)`` with the masks of one call, as a one-input layer (an
    internal step of a Transformer layer, not registered). Every product is the wrapped
    :class:`~manual_bp.layers.attention.MultiheadAttention`'s own."""

    def __init__(self, attention: Layer) -> None:
        super().__init__()
        self.attention = attention
        self.params = attention.params  # the same dict: updates and views are shared
        self.attn_mask: Any = None
        self.key_padding_mask: Any = None

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        mask, padding = self.attn_mask, self.key_padding_mask
        return self.attention.forward(x, key_padding_mask=padding, attn_mask=mask)

    def backward(self, dout: np.ndarray, cache: Any) -> tuple[np.ndarray, dict]:
        return self.attention.backward(dout, cache)

    def fast_step(self) -> Any:
        if self.attn_mask is None and self.key_padding_mask is None:
            return self.attention.fast_step()  # its key_padding_mask attribute still applies
        return GenericStep(self)

    def input_vjp(self, cache, M):
        return self.attention.input_vjp(cache, M)

    def param_vjp(self, cache, M, sum_batch=True):
        return self.attention.param_vjp(cache, M, sum_batch)

    def input_jvp(self, cache, T):
        return self.attention.input_jvp(cache, T)

    def param_jvp(self, cache, T_params):
        return self.attention.param_jvp(cache, T_params)

    def residual(self, cache, dout, T, T_params=None):
        return self.attention.residual(cache, dout, T, T_params)

    def __repr__(self) -> str:
        return f"SelfAttend({self.attention!r})"
