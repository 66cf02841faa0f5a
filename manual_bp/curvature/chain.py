"""A model as the chain of its own layers, the form every curvature sweep walks.

Every model is a :class:`~manual_bp.models.sequential.Sequential` (``Network`` included):
its layers, less those that are the identity (``Identity``, ``Flatten``, inactive
``Dropout``), become a :class:`Chain` of :class:`Link` (a layer and where each of its
parameters sits in the model's ``parameter_arrays()`` list, the order of every result of
this package), a ``head`` activation absorbed into the loss, and the cost. The sweeps call
only the layers' products on a leading ``V`` axis (``docs/products.md``: ``input_vjp``,
``param_vjp``, ``input_jvp``, ``param_jvp``, ``residual``), so every layer that provides
them — convolution, pooling, normalisation, embedding, recurrent, attention, containers —
is a link, with no code of its own here (``CURV.layer-walk``).

The GGN split (``CURV.ggn-split``, ``docs/curvature.md``): the network output ``f`` is the
output of the last link; the loss is ``ℓ(f, y) = C(head(f), y)``. The output activation is
taken into the loss (``head``) exactly when the cost's :class:`~manual_bp.costs.Fold` row
for it says so (``head``: ``ℓ`` convex in ``f`` — softmax + log-likelihood, sigmoid +
cross-entropy, log-softmax + KL, Schraudolph 2002); otherwise ``head`` is the identity and
the output activation stays in the network (so e.g. sigmoid + quadratic has a GGN that
keeps ``∇²ₐC = I``).

Outputs of any rank (``CURV.rows``): the cost acts on the rows of ``f`` (its last axis;
a sequence's positions, an image's pixels are rows), ``C = Σ_r w_r ℓ(f_r, y_r)`` with
``w_r = 1/R`` over the ``R`` counted rows (``ignore_index``: 0 on ignored rows), as the
model's own loss. The sweeps carry ``n·w_r`` (``n`` the batch size), so a per-sample
quantity is ``n`` times the sample's share of ``C`` and the batch quantity is their mean,
as on ``(batch, features)``.

Coupled batches (``CURV.coupled-batch``): a link is *separable* when its output rows along
axis 0 depend on that sample's input rows only. Batch norm with batch statistics (training
mode, or without running statistics) couples the samples (a time-major layer cannot occur:
a ``Sequential`` refuses ``batch_first=False``, its data being batch-major). In a chain
with such a link the factor columns are one output row at a time (a column is nonzero
in one sample's rows), squared after the whole-batch ``param_vjp``; every
per-sample quantity is refused (:meth:`Chain.per_sample`), naming the layer and why.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from manual_bp._arguments import as_real_array
from manual_bp._validation import check_finite
from manual_bp.activations import Activation, Identity
from manual_bp.costs import Cost
from manual_bp.curvature._checks import as_direction
from manual_bp.curvature.link import Link
from manual_bp.layers.base import Layer
from manual_bp.layers.containers import Identity as IdentityLayer
from manual_bp.layers.dense import Dense
from manual_bp.layers.dropout import Dropout
from manual_bp.models.loss_cost import LossCost
from manual_bp.models.sequential import Sequential
from manual_bp.models.targets import counted_rows, rows

__all__ = ["SUPPORTED_LAYERS", "Chain", "Link", "as_chain", "flatten"]  # put, restored: internal


@contextlib.contextmanager
def restored(buffers: Iterable[np.ndarray]) -> Iterator[None]:
    """Run the block, then put ``buffers`` back as they were (the running statistics a
    training-mode pass moves): a curvature query does not move the model."""
    saved = [(b, b.copy()) for b in buffers]
    try:
        yield
    finally:
        for buffer, value in saved:
            np.copyto(buffer, value)


@dataclass
class Chain:
    """``links``, the ``head`` absorbed into the loss, the cost and the parameter layout;
    ``coupling``: why the chain is not separable (``None``: it is; see the module)."""

    links: list[Link]
    head: Activation
    cost: Cost
    shapes: list[tuple[int, ...]]
    dtype: np.dtype
    prepare: Any = field(repr=False)
    coupling: str | None = None
    ignore_index: int | None = None

    def forward(self, x: np.ndarray) -> tuple[list[Any], np.ndarray]:
        """``(cache of every link, output f)``; ``x`` is ``(batch, *in)``. Running
        statistics a training-mode forward pass updates are restored: a curvature query
        does not move the model."""
        caches = []
        with restored(b for link in self.links for _, b in link.layer.named_buffers()):
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
        """Validated ``(x, y)`` arrays (targets output-shaped; labels one-hot encoded).

        Inputs of any rank with the model's per-sample shape; integer indices when the first
        link takes them (an embedding: its input needs no tangent). Targets are checked
        against the cost's domain here, once, so that every quantity rejects the same
        inputs (the exact diagonal GGN never calls the cost's gradient).
        """
        first = self.links[0].layer if self.links else None
        if getattr(first, "index_input", False):
            x = self.prepare.check_batch_array(np.asarray(x), "x")
            if x.ndim < 2 or x.shape[0] == 0:
                raise ValueError(f"x has shape {x.shape}; expected a non-empty batch of indices")
        else:  # nested lists are made arrays here so that ragged nesting is named in one line
            x = self.prepare.prepare_inputs(as_real_array(x, "x"))
        y = self.prepare.prepare_targets(as_real_array(y, "y"), x.shape[0])
        t = rows(y)
        if self.ignore_index is not None:
            mask = counted_rows(t, self.ignore_index, "y")
            t = t if mask is None else t[mask]
        self.cost.check_targets(t)
        return x, y

    def per_sample(self, what: str = "per-sample quantities") -> None:
        """Refuse ``what`` in one line when the chain couples the samples."""
        if self.coupling is not None:
            raise ValueError(f"curvature: {what} are not defined here: {self.coupling}")

    def slots(self) -> list[Any]:
        """One empty slot per parameter, ``parameter_arrays()`` order: a walk puts each
        layer's share in (:func:`put`) and :meth:`results` fills what none reached. No
        zeros to add into: a fresh zero array of every parameter's size on every call
        costs page faults (2 MB on the MLP of ``docs/curvature.md``: ~1.4 ms, a third of
        its gradient), and ``0 + g`` is ``g`` exactly."""
        return [None] * len(self.shapes)

    def results(self, out: list[Any], n: int | None = None) -> list[np.ndarray]:
        """The slots as the result: each in the chain's dtype, writable and contiguous (a
        copy only of a layer's read-only or strided view), zeros ``(*lead, *shape)`` where
        no layer put anything (``(n, *shape)`` per sample when ``n`` is given)."""
        lead = () if n is None else (n,)
        found = []
        for a, shape in zip(out, self.shapes, strict=True):
            if a is None:
                a = np.zeros((*lead, *shape), self.dtype)
            else:
                a = np.asarray(a, self.dtype)
                if not (a.flags.writeable and a.flags.c_contiguous):
                    a = a.copy()
            found.append(a)
        return found

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
    "Dense, activations and every other layer with V-axis products (docs/products.md: "
    "convolution, pooling, padding, normalisation, embedding, recurrent, attention, "
    "transformer layers, containers); Dropout only with p = 0 or in eval mode"
)


def _is_dropout(layer: Any) -> bool:
    return type(layer) is Dropout


def _is_identity(layer: Any) -> bool:
    """The layer is ``out = x``: no curvature of its own (Flatten is a link: a reshape)."""
    if type(layer) is IdentityLayer:
        return True
    return _is_dropout(layer) and (layer.p == 0.0 or not layer.training)


def _leaves(layer: Any) -> list[Any]:
    children = layer.children()
    return [layer] if not children else [leaf for c in children for leaf in _leaves(c)]


def _random(layer: Any) -> bool:
    """A leaf that draws random numbers in its forward pass (dropout in training mode)."""
    return (
        "dropout" in type(layer).__name__.lower()
        and layer.training
        and float(getattr(layer, "p", 0.0)) > 0.0
    )


def _coupling(layer: Any) -> str | None:
    """Why ``layer`` is not separable along axis 0 (see the module), or None."""
    for leaf in [*_leaves(layer), layer]:
        if getattr(leaf, "_couples_batch", False) and (
            leaf.training or not getattr(leaf, "track_running_stats", True)
        ):
            return (
                f"{leaf!r} uses batch statistics (training mode): each sample's output "
                "depends on the whole batch (call model.eval() for running statistics)"
            )
    return None


def _has_products(layer: Any) -> bool:
    return type(layer).input_vjp is not Layer.input_vjp and not layer.products_refusal


def _supported(layer: Any) -> tuple[bool, bool]:
    """``(supported, one_output)``: every layer with V-axis products (each checked against
    torch in ``tests/test_products_*.py``), no random one; and those whose parameters each
    reach one output per sample (:class:`Link`; an optional speed-up, exact either way)."""
    ok = _has_products(layer) and not any(_random(leaf) for leaf in _leaves(layer))
    return ok, type(layer) is Dense


def as_chain(model: Any) -> Chain:
    """The :class:`Chain` of a model (a ``Sequential``; ``Network`` is one): every quantity
    is a walk of its links' products (``CURV.layer-walk``).

    Layers that are the identity (``Identity``, ``Flatten``, ``Dropout`` when it drops
    nothing) are skipped; every other layer is one link through its products (a container
    too). A layer without products, or one drawing random numbers (dropout in training
    mode: a random function has no Hessian), raises naming the layer.

    Raises
    ------
    TypeError
        Another model type, a torch-named loss as the cost, or an unsupported layer.
    ValueError
        A parameter of the model holds a NaN or ±inf (every result would be NaN).
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a Network or a Sequential, got {type(model).__name__}")
    if isinstance(model.cost, LossCost):
        raise TypeError(
            f"curvature: the cost {model.cost!r} is a torch-named loss without a Hessian "
            "factor; build the model with a cost name (e.g. 'log-likelihood', 'quadratic')"
        )
    named = model.named_parameters()
    position = {name: i for i, (name, _) in enumerate(named)}
    links: list[Link] = []
    coupling = None
    for k, (layer_name, layer) in enumerate(model.named_children()):  # torch's state-dict keys
        if _is_identity(layer):
            continue
        supported, one_output = _supported(layer)
        if not supported:
            mode = (
                " in training mode (call model.eval())"
                if any(_random(leaf) for leaf in _leaves(layer))
                else " (no V-axis products)"
            )
            raise TypeError(
                f"curvature: model layer {k} ({layer!r}){mode} is not supported; supported: "
                f"{SUPPORTED_LAYERS}"
            )
        index = {name: position[f"{layer_name}.{name}"] for name in layer.params}
        links.append(Link(layer, index, one_output))
        coupling = coupling or _coupling(layer)
    if not any(link.index for link in links):
        raise TypeError(
            f"curvature: the model has no layer with parameters; supported: {SUPPORTED_LAYERS}"
        )
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
    ignore = getattr(model, "ignore_index", None)
    return Chain(links, head, model.cost, shapes, np.dtype(model.dtype), model, coupling, ignore)
