"""The layer protocol: ``forward(x) -> (out, cache)``, ``backward(dout, cache) -> (dx, grads)``.

A layer is a differentiable map of a batch ``x`` of shape ``(batch, *in_shape)`` to
``out`` of shape ``(batch, *out_shape)``. Its contract, shared by every built-in layer,
by the :class:`~manual_bp.sequential.Sequential` model and by :mod:`manual_bp.gradcheck`:

* ``params`` — trainable arrays under torch's names and shapes (``weight``, ``bias``,
  ``weight_ih_l0``, ...), so they copy 1:1 to and from the torch module;
* ``buffers`` — non-trainable state (batch norm's running statistics), saved with the
  model but never touched by an optimizer;
* ``training`` — the train/eval mode (dropout and batch norm behave differently);
* ``forward`` stores nothing on the layer: everything the backward pass needs goes into
  the returned cache, a small dataclass whose first field is the layer's ``input``
  (so generic code — per-sample statistics, KFAC's input factor — can read it);
* ``backward(dout, cache)`` receives ``dout = ∂C/∂out`` for a scalar ``C`` and returns
  ``(∂C/∂x, {name: ∂C/∂param})``, every gradient summed over the batch and shaped like
  its parameter; it never stores gradients on the object (edunn's contract);
* ``output_shape(in_shape)`` — the per-sample output shape, so a stack is checked
  before any data flows through it;
* ``reset_parameters(rng)`` — (re)initialise parameters and any private generator.

Optional, for forward-mode and curvature code: ``jvp(cache, dx, dparams) -> dout``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from manual_bp._registry import Configurable, Registry

__all__ = [
    "LAYERS",
    "Cache",
    "Layer",
    "build_layer",
    "check_input",
    "get_layer",
    "register_layer",
]

Shape = tuple[int, ...]


@dataclass
class Cache:
    """What a layer's backward pass needs; subclasses add fields after ``input``."""

    input: np.ndarray


class Layer(Configurable):
    """Base class of layers (see the module docstring for the contract).

    Subclasses set ``name`` (registry key), ``equation`` (ID of the backward pass),
    ``hyperparameters`` (keyword arguments of ``__init__`` stored as attributes, for
    :meth:`get_config`) and ``decay`` (the parameters weight decay and L2/L1 act on).
    """

    #: Equation ID of the layer's backward pass, e.g. ``"LAYER.dense"``.
    equation: ClassVar[str] = ""
    #: Names of the parameters regularisers act on (weights, not biases or BN's γ, β).
    decay: ClassVar[tuple[str, ...]] = ()

    params: dict[str, np.ndarray]
    buffers: dict[str, np.ndarray]
    training: bool

    def __init__(self) -> None:
        self.params = {}
        self.buffers = {}
        self.training = True

    # ------------------------------------------------------------------ protocol
    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        raise NotImplementedError

    def backward(self, dout: np.ndarray, cache: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        raise NotImplementedError

    def parameter_gradients(self, dout: np.ndarray, cache: Any) -> dict[str, np.ndarray]:
        """The parameter half of :meth:`backward`, for the lowest trainable layer of a stack.

        Nothing below that layer needs ``∂C/∂x``; layers whose input gradient is expensive
        (a convolution's col2im, a dense layer's ``dz W``) override this to skip it.
        """
        return self.backward(dout, cache)[1]

    def output_shape(self, input_shape: Shape) -> Shape:
        """Per-sample output shape for a per-sample input shape (default: unchanged)."""
        return tuple(input_shape)

    def reset_parameters(self, rng: np.random.Generator) -> None:
        """Initialise parameters (and any private generator) from ``rng``. Default: none."""

    def jvp(
        self, cache: Any, dx: np.ndarray | None, dparams: dict[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """Forward-mode product ``dout = J_x dx + Σ_p J_p dp`` at the cached point."""
        raise NotImplementedError(f"{type(self).__name__} has no forward-mode product (jvp)")

    # ------------------------------------------------------------------ structure
    def children(self) -> list[Layer]:
        """Sub-layers of a container (none for a plain layer)."""
        return []

    def named_parameters(self, prefix: str = "") -> list[tuple[str, np.ndarray]]:
        """``[(dotted name, array)]`` for this layer and its children, torch's state-dict names."""
        children = self.children()
        if not children:
            return [(prefix + name, array) for name, array in self.params.items()]
        named: list[tuple[str, np.ndarray]] = []  # a container's params are its children's
        for index, child in enumerate(children):
            named += child.named_parameters(f"{prefix}{index}.")
        return named

    def named_buffers(self, prefix: str = "") -> list[tuple[str, np.ndarray]]:
        named = [(prefix + name, array) for name, array in self.buffers.items()]
        for index, child in enumerate(self.children()):
            named += child.named_buffers(f"{prefix}{index}.")
        return named

    def train(self, mode: bool = True) -> Layer:
        """Set training mode (``False``: evaluation) here and in every child; returns self."""
        self.training = bool(mode)
        for child in self.children():
            child.train(mode)
        return self

    def eval(self) -> Layer:
        return self.train(False)

    def get_extra_state(self) -> dict[str, Any]:
        """JSON-serialisable state beyond parameters and buffers (e.g. a generator's state)."""
        return {}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} has no extra state, got {sorted(state)}")

    @classmethod
    def from_shape(
        cls, input_shape: Shape, *args: Any, n_outputs: int | None = None, **kwargs: Any
    ) -> Layer:
        """Build the layer for inputs of ``input_shape``, inferring sizes the spec left out.

        Used by :meth:`Sequential.from_spec`: ``dense(30)`` becomes ``Dense(n_in, 30)``.
        ``n_outputs`` is the model's output width (what a final ``dense`` maps to).
        """
        return cls(*args, **kwargs)

    # Layers hold arrays: equality and hashing by identity, not by configuration.
    __eq__ = object.__eq__
    __hash__ = object.__hash__


#: name -> layer class; also resolves every activation name to an activation layer.
LAYERS: Registry[Layer] = Registry("layer", Layer)
register_layer = LAYERS.register


def get_layer(spec: str | Layer | type[Layer] | dict[str, Any]) -> Layer:
    """A layer from a name, class, instance or config dict (activation names included)."""
    from manual_bp.layers.activation import ActivationLayer

    if isinstance(spec, str) and spec not in LAYERS:
        return ActivationLayer(spec)
    if isinstance(spec, dict) and isinstance(spec.get("name"), str) and spec["name"] not in LAYERS:
        return ActivationLayer(spec)
    return LAYERS.get(spec)


def build_layer(item: Any, input_shape: Shape, n_outputs: int | None = None) -> Layer:
    """A layer from a spec item, sizes inferred from the per-sample ``input_shape``.

    ``item`` is a :class:`Layer` (used as is), a name (``"relu"``, ``"flatten"``), a
    ``(name, args, kwargs)`` triple or a config dict (``{"name": "dense", "args": [30]}``
    or ``{"name": "dense", "out_features": 30}``). Layer names go through the class's
    ``from_shape``; any other name must be an activation (keyword options only).
    """
    from manual_bp.layers.activation import ActivationLayer

    if isinstance(item, Layer):
        return item
    if isinstance(item, tuple) and len(item) == 3:
        name, args, kwargs = item
    elif isinstance(item, str):
        name, args, kwargs = item, (), {}
    elif isinstance(item, dict):
        kwargs = dict(item)
        name = kwargs.pop("name", None)
        args = tuple(kwargs.pop("args", ()))
        if not isinstance(name, str):
            raise ValueError(f"layer config {item!r} has no 'name'")
    else:
        raise TypeError(f"a layer spec must be a name, a config dict or a Layer, got {item!r}")
    if name in LAYERS:
        cls = LAYERS.lookup(name)
        return cls.from_shape(tuple(input_shape), *args, n_outputs=n_outputs, **dict(kwargs))
    from manual_bp.activations import ACTIVATIONS

    if name not in ACTIVATIONS:
        raise ValueError(
            f"unknown layer {name!r}; layers: {', '.join(LAYERS.names())}; "
            f"activations: {', '.join(ACTIVATIONS.names())}"
        )
    if args:
        raise ValueError(f"activation {name!r} takes keyword options only, got {tuple(args)!r}")
    return ActivationLayer({"name": name, **kwargs})


def check_input(
    x: Any,
    layer: Layer,
    *,
    ndim: int | Sequence[int] | None = None,
    trailing: Sequence[int | None] = (),
    name: str = "input",
) -> None:
    """Raise ``ValueError`` naming ``layer`` unless ``x`` fits it.

    ``ndim``: accepted numbers of axes (batch axis included); ``trailing``: required
    sizes of the last axes (``None`` for any). One shared check, so every layer reports
    shape faults the same way and none broadcasts silently.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{layer!r}: {name} must be a NumPy array, got {type(x).__name__}")
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim or ())
    if allowed and x.ndim not in allowed:
        want = " or ".join(str(n) for n in allowed)
        raise ValueError(
            f"{layer!r}: {name} has shape {x.shape} ({x.ndim} axes); expected {want} axes "
            f"(batch first)"
        )
    if trailing:
        actual = x.shape[-len(trailing) :] if x.ndim >= len(trailing) else ()
        if len(actual) != len(trailing) or any(
            want is not None and got != want for got, want in zip(actual, trailing, strict=True)
        ):
            shown = ", ".join("*" if t is None else str(t) for t in trailing)
            raise ValueError(
                f"{layer!r}: {name} has shape {x.shape}; its last axes must be ({shown})"
            )
