"""The layer protocol: ``forward(x) -> (out, cache)``, ``backward(dout, cache) -> (dx, grads)``.

A layer is a differentiable map of a batch ``x`` of shape ``(batch, *in_shape)`` to
``out`` of shape ``(batch, *out_shape)``. Its contract, shared by every built-in layer,
by the :class:`~manual_bp.models.sequential.Sequential` model and by :mod:`manual_bp.gradcheck`:

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

Products on a leading axis of ``V`` vectors (``docs/products.md``; BackPACK's design): for a
stack ``M`` of ``V`` cotangents ``(V, N, *out)`` or tangents ``T`` ``(V, N, *in)`` at the
point a cache records, every layer provides

* ``input_vjp(cache, M) -> (V, N, *in)``: ``J_xᵀ M``;
* ``param_vjp(cache, M, sum_batch=True) -> {name: (V, *p)}`` (``(V, N, *p)`` per sample
  with ``sum_batch=False``): ``J_θᵀ M``, one sample's share each when not summed;
* ``input_jvp(cache, T) -> (V, N, *out)`` and ``param_jvp(cache, {name: (V, *p)})``:
  ``J_x T`` and ``Σ_p J_p T_p``;
* ``residual(cache, dout, T, T_params) -> ((V, N, *in), {name: (V, *p)})``: the
  second-order term ``Σ_o dout_o ∇²_{(x,θ)} out_o · (T, T_params)`` that the R-operator adds
  to the backward pass (zero for layers with ``hessian_is_zero``).

``backward(dout, cache)`` is the ``V = 1`` form; ``jvp(cache, dx, dparams)`` too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from manual_bp._registry import Configurable, Registry
from manual_bp._validation import check_layer_array
from manual_bp.layers._entry import guard, layer_float_dtype
from manual_bp.layers.steps import GenericStep

__all__ = [
    "LAYERS",
    "BatchCouplingError",
    "Cache",
    "ElementwiseLayer",
    "Layer",
    "check_input",
    "layer_dtype",
    "register_layer",
    "tangent_count",
    "unguarded",
    "zero_residual",
]

Shape = tuple[int, ...]

#: The floating dtypes a layer's parameters may have (torch's float32 and float64).
LAYER_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def layer_dtype(dtype: Any, owner: str, device: Any = None) -> np.dtype:
    """torch's ``device=`` and ``dtype=`` keywords of a layer constructor, checked in one place.

    ``dtype`` is float32 or float64 as a NumPy dtype, its name, or torch's ``torch.float32``
    / ``torch.float64`` (recognised by name: torch is not imported here); ``None`` is the
    library's default, float64 (torch's default is float32: ``docs/conventions.md``).
    ``device`` must be ``None`` or ``"cpu"``: the library computes with NumPy on the CPU.
    """
    if device is not None and str(device) != "cpu":
        raise ValueError(f"{owner}: device={device!r} has no meaning here (NumPy on the CPU)")
    if dtype is None:
        return np.dtype(np.float64)
    name = str(dtype)
    name = name.removeprefix("torch.") if name.startswith("torch.") else name
    try:
        found = np.dtype(name if isinstance(dtype, str) or name != str(dtype) else dtype)
    except TypeError:
        found = None
    if found is None or found not in LAYER_DTYPES:  # (np.dtype == None is float64's test)
        raise ValueError(f"{owner}: dtype must be float32 or float64, got {dtype!r}")
    return found


@dataclass
class Cache:
    """What a layer's backward pass needs; subclasses add fields after ``input``."""

    input: np.ndarray


class BatchCouplingError(ValueError):
    """A per-sample quantity asked of a layer whose output couples the samples of a batch
    (batch norm in training mode): one sample's share of a gradient is not a gradient."""


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
    #: Equation IDs of the layer's products on the V axis (``PROD.<layer>.*``).
    product_equations: ClassVar[tuple[str, ...]] = ()
    #: True when ``out`` is affine in ``(x, θ)`` jointly: the second-order residual is 0.
    hessian_is_zero: ClassVar[bool] = False
    #: True when the input holds indices (an embedding's): no input products exist.
    index_input: ClassVar[bool] = False
    #: Why this class has no V-axis products (they raise NotImplementedError saying so), or
    #: None: a declared gap the shared product tests check is refused, not skip silently.
    products_refusal: ClassVar[str | None] = None
    #: ``bias`` is torch's bias array (``None`` when absent); the flag is ``has_bias``.
    stored_as: ClassVar[dict[str, str]] = {"bias": "has_bias"}

    params: dict[str, np.ndarray]
    buffers: dict[str, np.ndarray]
    training: bool

    def __init__(self) -> None:
        self.params = {}
        self.buffers = {}
        self.training = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every entry a subclass defines (forward, backward, the products) runs its
        arguments through the one check of :mod:`manual_bp.layers._entry` first."""
        super().__init_subclass__(**kwargs)
        guard(cls)

    def __getattr__(self, name: str) -> Any:
        """torch's attribute access to parameters: ``layer.weight`` is ``params["weight"]``
        (the array itself, so in-place writes update the layer); ``layer.bias`` is ``None``
        on a layer built with ``bias=False``, as torch's."""
        # Only reached when ordinary lookup fails; ``params`` itself must not recurse.
        params = self.__dict__.get("params")
        if params is not None and name in params:
            return params[name]
        if name == "bias" and self.__dict__.get("has_bias") is False:
            return None
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

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
        """Forward-mode product ``dout = J_x dx + Σ_p J_p dp`` at the cached point (``V = 1``).

        Built on :meth:`input_jvp` and :meth:`param_jvp`; ``None``/missing terms are zero.
        """
        stacked = {k: v[None] for k, v in (dparams or {}).items() if k in self.params}
        terms = [self.param_jvp(cache, stacked)[0]] if stacked else []
        if dx is not None:
            terms.append(self.input_jvp(cache, dx[None])[0])
        if not terms:  # no direction at all: J·0 = 0, shaped like the output
            x = cache.input
            return np.zeros((x.shape[0], *self.output_shape(x.shape[1:])), x.dtype)
        return terms[0] if len(terms) == 1 else terms[0] + terms[1]

    def fast_step(self) -> Any:
        """The layer's fast form for training (:mod:`manual_bp.layers.steps`): by default
        its readable ``forward``/``backward`` (:class:`~manual_bp.layers.steps.GenericStep`);
        layers with a fused form override this."""
        return GenericStep(self)

    # ------------------------------------------------------------------ products (V axis)
    def input_vjp(self, cache: Any, M: np.ndarray) -> np.ndarray:
        """``J_xᵀ M`` for ``V`` cotangents ``M`` ``(V, N, *out)``: ``(V, N, *in)``."""
        raise NotImplementedError(f"{type(self).__name__} has no input_vjp")

    def param_vjp(self, cache: Any, M: np.ndarray, sum_batch: bool = True) -> dict[str, np.ndarray]:
        """``J_θᵀ M`` per parameter: ``(V, *p)``, or ``(V, N, *p)`` (one per sample) when
        ``sum_batch=False``. A layer without parameters returns ``{}``."""
        if not self.params:
            return {}
        raise NotImplementedError(f"{type(self).__name__} has no param_vjp")

    def input_jvp(self, cache: Any, T: np.ndarray) -> np.ndarray:
        """``J_x T`` for ``V`` input tangents ``T`` ``(V, N, *in)``: ``(V, N, *out)``."""
        raise NotImplementedError(f"{type(self).__name__} has no input_jvp")

    def param_jvp(self, cache: Any, T_params: dict[str, np.ndarray]) -> np.ndarray:
        """``Σ_p J_p T_p`` for parameter tangents ``{name: (V, *p)}`` (missing names are
        zero; ``V`` read from the first given): ``(V, N, *out)``."""
        raise NotImplementedError(f"{type(self).__name__} has no param_jvp")

    def residual(
        self,
        cache: Any,
        dout: np.ndarray,
        T: np.ndarray | None,
        T_params: dict[str, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Second-order residual ``Σ_o dout_o ∇²out_o · (T, T_params)``, split into its input
        part ``(V, N, *in)`` and parameter parts ``{name: (V, *p)}``.

        ``dout`` ``(N, *out)`` is the gradient reaching the layer's output (no V axis: the
        same for every direction). The R-operator's backward pass through the layer is
        ``R{∂x} = J_xᵀ R{dout} + residual_x``, ``R{∂θ} = J_θᵀ R{dout} + residual_θ``
        (Pearlmutter 1994). Layers with ``hessian_is_zero`` return zeros.
        """
        if not self.hessian_is_zero:
            raise NotImplementedError(f"{type(self).__name__} has no residual product")
        return zero_residual(self, cache, T, T_params)

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


class ElementwiseLayer(Layer):
    """A parameter-free ``out = φ(x)`` acting on each entry: every product from φ′ and φ″.

    Subclasses implement :meth:`derivative` (``φ′`` at the cached point, broadcastable to
    the input) and, unless ``φ`` is linear, :meth:`second_derivative`; the Jacobian is
    diagonal, so ``J_xᵀ M = J_x M = φ′ ⊙ M`` and the residual is ``dout ⊙ φ″ ⊙ T``
    (``PROD.elementwise`` in docs/products.md; BackPACK's ``df``/``d2f``).
    """

    def derivative(self, cache: Any) -> np.ndarray:
        raise NotImplementedError

    def second_derivative(self, cache: Any) -> np.ndarray | None:
        """``φ″`` at the cached point; ``None`` when ``φ`` is linear (``hessian_is_zero``)."""
        return None

    def input_vjp(self, cache: Any, M: np.ndarray) -> np.ndarray:
        return M * self.derivative(cache)

    def input_jvp(self, cache: Any, T: np.ndarray) -> np.ndarray:
        return T * self.derivative(cache)

    def param_jvp(self, cache: Any, T_params: dict[str, np.ndarray]) -> np.ndarray:
        raise ValueError(f"{type(self).__name__} has no parameters to take a tangent of")

    def residual(self, cache, dout, T, T_params=None):
        second = None if self.hessian_is_zero else self.second_derivative(cache)
        if second is None or T is None:
            return zero_residual(self, cache, T, T_params)
        return dout * second * T, {}


#: The V-axis products (``docs/products.md``) :func:`unguarded` hands out.
PRODUCTS = ("input_vjp", "param_vjp", "input_jvp", "param_jvp", "residual")


def unguarded(layer: Layer, product: str) -> Any:
    """``layer.<product>`` bound WITHOUT the entry check of :mod:`manual_bp.layers._entry`
    (shapes, dtypes and an O(size) finiteness scan of every stack: 0.1 ms on a
    ``(10, 128, 256)`` factor, a tenth of the product). For internal walks that build
    every stack from the layer's own forward pass and products (the curvature package:
    its public functions check their data once and silence NumPy's warnings
    themselves); a user's call goes through the checked entry."""
    if product not in PRODUCTS:
        raise ValueError(f"product must be one of {PRODUCTS}, got {product!r}")
    method = getattr(type(layer), product)
    # every wrapper down to the layer's own method: the entry check and, on a convolution
    # or pooling layer, the unbatched-input route around it (the walks' caches are batched)
    while getattr(method, "_guarded", False) and hasattr(method, "__wrapped__"):
        method = method.__wrapped__
    return method.__get__(layer)


def tangent_count(T: np.ndarray | None, T_params: dict[str, np.ndarray] | None) -> int:
    """``V``, the number of directions, from whichever tangent is given."""
    if T is not None:
        return T.shape[0]
    for value in (T_params or {}).values():
        return value.shape[0]
    raise ValueError("residual needs at least one tangent (T or T_params)")


def zero_residual(
    layer: Layer, cache: Any, T: np.ndarray | None, T_params: dict[str, np.ndarray] | None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The residual of a layer whose Hessian is zero: zeros shaped like its input and params."""
    V, x = tangent_count(T, T_params), cache.input
    zeros_x = np.zeros((V, *x.shape), dtype=np.result_type(x.dtype, np.float32))
    params = layer.params
    return zeros_x, {name: np.zeros((V, *p.shape), p.dtype) for name, p in params.items()}


guard(Layer)  # its default products (param_vjp of no parameters, a zero residual) too

#: name -> layer class; also resolves every activation name to an activation layer.
LAYERS: Registry[Layer] = Registry("layer", Layer)
register_layer = LAYERS.register


def check_input(
    x: Any,
    layer: Layer,
    *,
    ndim: int | Sequence[int] | None = None,
    trailing: Sequence[int | None] = (),
    name: str = "input",
) -> None:
    """Raise ``TypeError``/``ValueError`` naming ``layer`` and ``name`` unless ``x`` fits it.

    Dtype first (torch's rules, :func:`~manual_bp._validation.check_layer_array`): a NumPy
    array of float32/float64 — the layer's dtype when it has parameters or a ``dtype`` —
    or integers for a layer whose input holds indices; then the shape: ``ndim`` the accepted
    numbers of axes (batch axis included), ``trailing`` the required sizes of the last axes
    (``None`` for any). One shared check, so every layer reports faults the same way and none
    casts or broadcasts silently.
    """
    dtype = None if layer.index_input else layer_float_dtype(layer)
    check_layer_array(x, repr(layer), name, dtype, indices=layer.index_input)
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim or ())
    if allowed and x.ndim not in allowed:
        want = _axes(allowed)
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


def _axes(allowed: tuple[int, ...]) -> str:
    """``2 or 3``; a long run of counts as ``2 or more`` (``range(2, 33)``)."""
    ordered = sorted(allowed)
    if len(ordered) > 3 and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{ordered[0]} or more"
    return " or ".join(str(n) for n in ordered)
