"""A model as the chain of its own layers, the form every curvature sweep walks.

Every model is a :class:`~manual_bp.models.sequential.Sequential` (``Network`` included):
its layers, less those that are the identity on ``(batch, features)`` inputs, become a
:class:`Chain` of :class:`Link` (a layer and where each of its parameters sits in the
model's ``parameter_arrays()`` list, the order of every result of this package), a ``head``
activation absorbed into the loss, and the cost. The sweeps call only the layers' products
on a leading ``V`` axis (``docs/products.md``: ``input_vjp``, ``param_vjp``, ``input_jvp``,
``param_jvp``, ``residual``), so a layer providing them is all a sweep needs.

The GGN split (``CURV.ggn-split``, ``docs/curvature.md``): the network output ``f`` is the
output of the last link; the loss is ``ℓ(f, y) = C(head(f), y)``. The output activation is
taken into the loss (``head``) exactly when the cost's :class:`~manual_bp.costs.Fold` row
for it says so (``head``: ``ℓ`` convex in ``f`` — softmax + log-likelihood, sigmoid +
cross-entropy, log-softmax + KL, Schraudolph 2002); otherwise ``head`` is the identity and
the output activation stays in the network (so e.g. sigmoid + quadratic has a GGN that
keeps ``∇²ₐC = I``).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from manual_bp._arguments import as_real_array
from manual_bp._validation import check_finite
from manual_bp.activations import Activation, Identity
from manual_bp.costs import Cost
from manual_bp.curvature._checks import as_direction
from manual_bp.layers.activation import ActivationLayer
from manual_bp.layers.containers import Flatten
from manual_bp.layers.containers import Identity as IdentityLayer
from manual_bp.layers.dense import Dense
from manual_bp.layers.dropout import Dropout
from manual_bp.models.sequential import Sequential

__all__ = ["SUPPORTED_LAYERS", "Chain", "Link", "as_chain", "flatten"]


@dataclass
class Link:
    """A layer of the chain; ``index``: its parameter name -> position in
    ``parameter_arrays()``; ``one_output``: each parameter reaches one output per sample.

    ``one_output`` (a dense map on ``(batch, features)``: ``∂zₒ/∂Wₒᵢ = xᵢ`` is the only
    entry of ``Wₒᵢ``'s Jacobian column) makes squares of parameter VJPs cheap:
    ``Σ_c s_c (J_θᵀ m_c)² = (J_θ⊙J_θ)ᵀ Σ_c s_c m_c²``, and ``J_θ⊙J_θ`` is the layer's own
    Jacobian at the squared input (``x ↦ x²`` in its cache) — BackPACK's sqrt-GGN rule.
    Without it the squares are taken of the per-sample ``param_vjp`` of every column.
    """

    layer: Any
    index: dict[str, int]
    one_output: bool = False

    def tangents(self, v: list[np.ndarray]) -> dict[str, np.ndarray] | None:
        """The direction's share of this layer, ``{name: (1, *p)}`` (None: no parameters)."""
        if not self.index:
            return None
        return {name: v[i][None] for name, i in self.index.items()}

    def add(self, out: list[np.ndarray], grads: dict[str, np.ndarray], v: int | None = 0) -> None:
        """``out[position] += grads[name]`` (``[v]``: one slice of the V axis; None: all)."""
        for name, g in grads.items():
            out[self.index[name]] += g if v is None else g[v]

    def param_squares(
        self, cache: Any, V: np.ndarray, signs: np.ndarray | None, per_sample: bool
    ) -> dict[str, np.ndarray]:
        """``Σ_c s_c (J_θᵀ V[c])²`` per parameter, ``(n, *p)`` per sample or summed over the
        batch ``(*p)``, for factor columns ``V`` ``(c, n, m_out)`` with signs ``(c, n)``
        (None: +1): the per-sample ``param_vjp`` of the columns, squared."""
        if self.one_output:
            V2 = V * V
            d = V2.sum(axis=0) if signs is None else np.einsum("cn,cni->ni", signs, V2)
            return self.param_diagonal(cache, d, per_sample)
        out = {}
        for name, g in self.layer.param_vjp(cache, V, sum_batch=False).items():  # (c, n, *p)
            g = g * g
            if signs is not None:
                g *= signs.reshape(*signs.shape, *([1] * (g.ndim - 2)))
            out[name] = g.sum(axis=0) if per_sample else g.sum(axis=(0, 1))
        return out

    def param_diagonal(self, cache: Any, d: np.ndarray, per_sample: bool) -> dict[str, np.ndarray]:
        """``diag(J_θᵀ H J_θ)`` from ``d = diag H`` ``(n, m_out)`` at the output, for a link
        with ``one_output`` (where only ``H``'s diagonal reaches the parameters' diagonal):
        ``(J_θ⊙J_θ)ᵀ d``, the layer's ``param_vjp`` at the squared input."""
        grads = self.layer.param_vjp(_squared(cache), d[None], sum_batch=not per_sample)
        return {name: g[0] for name, g in grads.items()}

    def grad_norms(self, cache: Any, delta: np.ndarray) -> dict[str, np.ndarray]:
        """``‖J_θᵀ δₓ‖²`` per sample ``(n,)`` and parameter for per-sample errors ``δ``
        ``(n, m_out)``; with ``one_output`` ``⟨δₓ², (J_θ⊙J_θ) 1⟩``, the layer's
        ``param_jvp`` of ones at the squared input."""
        n = delta.shape[0]
        if self.one_output:
            # every parameter at once on the V axis: direction k is ones on parameter k
            names = tuple(self.index)
            shapes = tuple(tuple(self.layer.params[name].shape) for name in names)
            reach = self.layer.param_jvp(
                _squared(cache), _unit_tangents(names, shapes, delta.dtype.str)
            )
            norms = np.einsum("kni,ni->kn", reach, delta * delta)  # reach: (k, n, m_out)
            return {name: norms[k] for k, name in enumerate(names)}
        grads = self.layer.param_vjp(cache, delta[None], sum_batch=False)
        return {name: (g[0].reshape(n, -1) ** 2).sum(axis=1) for name, g in grads.items()}


@functools.lru_cache(maxsize=64)
def _unit_tangents(
    names: tuple[str, ...], shapes: tuple[tuple[int, ...], ...], dtype: str
) -> dict[str, np.ndarray]:
    """``{name: (k, *p)}`` with direction ``k`` all ones on the k-th parameter, zero on the
    others (read-only: shared between calls)."""
    tangents = {}
    for k, (name, shape) in enumerate(zip(names, shapes, strict=True)):
        t = np.zeros((len(names), *shape), dtype)
        t[k] = 1
        t.flags.writeable = False
        tangents[name] = t
    return tangents


def _squared(cache: Any) -> Any:
    """The cache at the squared input ``x ⊙ x`` (for a layer with ``one_output``)."""
    return dataclasses.replace(cache, input=cache.input * cache.input)


@dataclass
class Chain:
    """``links``, the ``head`` absorbed into the loss, the cost and the parameter layout."""

    links: list[Link]
    head: Activation
    cost: Cost
    shapes: list[tuple[int, ...]]
    dtype: np.dtype
    prepare: Any = field(repr=False)

    def forward(self, x: np.ndarray) -> tuple[list[Any], np.ndarray]:
        """``(cache of every link, output f)``; ``x`` is ``(batch, n_in)``."""
        caches = []
        for link in self.links:
            x, cache = link.layer.forward(x)
            caches.append(cache)
        return caches, x

    def backwards(self, caches: list[Any], *rest: list[Any]):
        """``(link, cache, *rest entries, below)`` from the last link to the first;
        ``below`` is False at the first link, where no input gradient is needed."""
        for k in range(len(self.links) - 1, -1, -1):
            yield self.links[k], caches[k], *(r[k] for r in rest), k > 0

    def data(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Validated ``(x, y)`` arrays (targets as rows; labels one-hot encoded).

        Targets are checked against the cost's domain here, once, so that every quantity
        rejects the same inputs (the exact diagonal GGN never calls the cost's gradient,
        which is where the gradient path checks them).
        """
        # nested lists are made arrays here so that ragged nesting is named in one line
        x = self.prepare.prepare_inputs(as_real_array(x, "x"))
        if x.ndim != 2:
            raise ValueError(f"curvature needs 2-D inputs (batch, features), got {x.shape}")
        y = self.prepare.prepare_targets(as_real_array(y, "y"), x.shape[0])
        self.cost.check_targets(y)
        return x, y

    def zeros(self, n: int | None = None) -> list[np.ndarray]:
        """A zero array for every parameter, in ``parameter_arrays()`` order (``(n, *shape)``
        per sample when ``n`` is given)."""
        lead = () if n is None else (n,)
        return [np.zeros((*lead, *shape), self.dtype) for shape in self.shapes]

    def check_direction(self, v: Any, name: str = "v") -> list[np.ndarray]:
        """``v`` as a list of finite arrays shaped like the parameters (a flat vector is
        split), refused in one line naming ``v`` otherwise
        (:func:`~manual_bp.curvature._checks.as_direction`)."""
        return as_direction(v, self.shapes, self.dtype, name)


def flatten(arrays: list[np.ndarray]) -> np.ndarray:
    """Concatenate parameter-shaped arrays into one vector (``parameter_arrays()`` order).

    Raises ``TypeError`` unless ``arrays`` is a non-empty list or tuple of arrays of real
    numbers (``arrays[i]`` named).
    """
    if not isinstance(arrays, (list, tuple)) or not arrays:
        raise TypeError(f"arrays must be a non-empty list of arrays, got {arrays!r:.60}")
    return np.concatenate(
        [np.ravel(as_real_array(a, f"arrays[{i}]")) for i, a in enumerate(arrays)]
    )


#: What :func:`as_chain` accepts in a ``Sequential``, named in its error message.
SUPPORTED_LAYERS = (
    "Dense, ActivationLayer (every activation), and layers that are the identity on the "
    "(batch, features) inputs curvature takes: Identity, Flatten, Dropout with p = 0 or in "
    "eval mode"
)


def _is_dropout(layer: Any) -> bool:
    return type(layer) is Dropout


def _is_identity(layer: Any) -> bool:
    """The layer is ``out = x`` on (batch, features) inputs: no curvature of its own."""
    if type(layer) in (IdentityLayer, Flatten):
        return True
    return _is_dropout(layer) and (layer.p == 0.0 or not layer.training)


def _supported(layer: Any) -> tuple[bool, bool]:
    """``(supported, one_output)``: the layers whose products (and their use here) are
    checked against torch — widening this set is all a new layer needs once it provides
    the V-axis products — and those whose parameters each reach one output per sample
    (:class:`Link`; an optional speed-up, exact either way)."""
    return type(layer) in (Dense, ActivationLayer), type(layer) is Dense


def as_chain(model: Any) -> Chain:
    """The :class:`Chain` of a model (a ``Sequential``; ``Network`` is one).

    Layers that are the identity on 2-D inputs (``Identity``, ``Flatten``, ``Dropout`` when
    it drops nothing) are skipped. Anything else — convolution, pooling, normalisation,
    recurrent, attention, embedding, residual blocks, dropout in training mode (a random
    function has no Hessian) — raises, naming the layer and :data:`SUPPORTED_LAYERS`.

    Raises
    ------
    TypeError
        Another model type, or a stack with a layer outside :data:`SUPPORTED_LAYERS`.
    ValueError
        A parameter of the model holds a NaN or ±inf (every result would be NaN).
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a Network or a Sequential, got {type(model).__name__}")
    if getattr(model, "ignore_index", None) is not None:
        # the curvature rules average over every row; masked rows would be counted
        raise TypeError(
            f"curvature: model with ignore_index={model.ignore_index} is not supported "
            "(its mean runs over the counted positions only); build it without ignore_index"
        )
    named = model.named_parameters()
    position = {name: i for i, (name, _) in enumerate(named)}
    links: list[Link] = []
    for k, (layer_name, layer) in enumerate(model.named_children()):  # torch's state-dict keys
        supported, one_output = _supported(layer)
        if supported:
            index = {name: position[f"{layer_name}.{name}"] for name in layer.params}
            links.append(Link(layer, index, one_output))
        elif not _is_identity(layer):
            mode = " in training mode (call model.eval())" if _is_dropout(layer) else ""
            raise TypeError(
                f"curvature: model layer {k} ({layer!r}){mode} is not supported; supported: "
                f"{SUPPORTED_LAYERS}"
            )
    if not any(link.index for link in links):
        raise TypeError(f"curvature: the model has no Dense layer; supported: {SUPPORTED_LAYERS}")
    for name, p in named:  # a NaN weight would make every result NaN
        check_finite(p, f"model parameter {name!r}")
    head: Activation = Identity()
    last = links[-1].layer
    activation = getattr(last, "activation", None)
    if not last.params and isinstance(activation, Activation):
        fold = model.cost.fold(activation)
        if fold is not None and fold.head:
            head, links = activation, links[:-1]
    shapes = [tuple(p.shape) for _, p in named]  # parameter_arrays() is this order
    return Chain(links, head, model.cost, shapes, np.dtype(model.dtype), model)
