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

from manual_bp.layers.activation import ActivationLayer
from manual_bp.layers.base import Cache, Layer
from manual_bp.layers.steps import GenericStep

__all__ = [
    "Layout",
    "NamedChildren",
    "SelfAttend",
    "activation_layer",
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
    """The layout of ``x`` (3 axes: batched, 2: unbatched), its last axis ``d_model``."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{owner!r}: {name} must be a NumPy array, got {type(x).__name__}")
    if x.ndim not in (2, 3) or x.shape[-1] != d_model:
        raise ValueError(
            f"{owner!r}: {name} has shape {x.shape}; expected (L, N, {d_model}), "
            f"(N, L, {d_model}) with batch_first=True, or unbatched (L, {d_model})"
        )
    return Layout(x.ndim == 3, bool(batch_first))


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
