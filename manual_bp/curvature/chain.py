"""A model as a chain of dense maps and activations, the form every curvature sweep walks.

:class:`~manual_bp.models.network.Network` and a :class:`~manual_bp.models.sequential.Sequential` stack
of :class:`~manual_bp.layers.Dense` and :class:`~manual_bp.layers.ActivationLayer` both
become a :class:`Chain`: ``ops`` (dense or activation, in order), a ``head`` activation
absorbed into the loss, the cost, and where each weight and bias sits in the model's
``parameter_arrays()`` list (the order of every result of this package).

The GGN split (``CURV.ggn-split``, ``docs/curvature.md``): the network output ``f`` is the
output of the last op; the loss is ``ℓ(f, y) = C(head(f), y)``. The output activation is
taken into the loss (``head``) exactly when it and the cost form a *matching* pair whose
``ℓ`` is convex in ``f`` (softmax + log-likelihood, sigmoid + cross-entropy, log-softmax +
KL, Schraudolph 2002); otherwise ``head`` is the identity and the output activation stays
in the network (so e.g. sigmoid + quadratic has a GGN that keeps ``∇²ₐC = I``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from manual_bp.activations import Activation, Identity
from manual_bp.costs import Cost

__all__ = ["MATCHING_HEADS", "SUPPORTED_LAYERS", "ActOp", "Chain", "DenseOp", "as_chain"]

#: (cost name, output activation name) pairs whose loss is taken at the pre-activation.
MATCHING_HEADS = frozenset(
    {("log-likelihood", "softmax"), ("cross-entropy", "sigmoid"), ("kl-divergence", "log-softmax")}
)


@dataclass
class DenseOp:
    """``z = x Wᵀ + b``; ``iw``/``ib`` index the model's ``parameter_arrays()``."""

    W: np.ndarray
    b: np.ndarray | None
    iw: int
    ib: int | None


@dataclass
class ActOp:
    """``a = σ(z)``."""

    activation: Activation


@dataclass
class Chain:
    """``ops``, the ``head`` absorbed into the loss, the cost and the parameter layout."""

    ops: list[DenseOp | ActOp]
    head: Activation
    cost: Cost
    shapes: list[tuple[int, ...]]
    dtype: np.dtype
    prepare: Any = field(repr=False)

    @property
    def dense(self) -> list[DenseOp]:
        return [op for op in self.ops if isinstance(op, DenseOp)]

    def forward(self, x: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """``(inputs of every op, output f)``; ``x`` is ``(batch, n_in)``."""
        inputs = []
        for op in self.ops:
            inputs.append(x)
            if isinstance(op, DenseOp):
                x = x @ op.W.T + (0.0 if op.b is None else op.b)
            else:
                x = op.activation.forward(x)
        return inputs, x

    def data(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Validated ``(x, y)`` arrays (targets as rows; labels one-hot encoded).

        Targets are checked against the cost's domain here, once, so that every quantity
        rejects the same inputs (the exact diagonal GGN never calls the cost's gradient,
        which is where the gradient path checks them).
        """
        x = self.prepare.prepare_inputs(x)
        if x.ndim != 2:
            raise ValueError(f"curvature needs 2-D inputs (batch, features), got {x.shape}")
        y = self.prepare.prepare_targets(y, x.shape[0])
        self.cost.check_targets(y)
        return x, y

    def zeros(self) -> list[np.ndarray]:
        """A zero array for every parameter, in ``parameter_arrays()`` order."""
        return [np.zeros(shape, self.dtype) for shape in self.shapes]

    def check_direction(self, v: Any) -> list[np.ndarray]:
        """``v`` as a list of arrays shaped like the parameters (a flat vector is split)."""
        if isinstance(v, np.ndarray) and v.ndim == 1:
            sizes = [int(np.prod(s)) for s in self.shapes]
            if v.size != sum(sizes):
                raise ValueError(f"direction has {v.size} entries, the model {sum(sizes)}")
            pieces = np.split(v, np.cumsum(sizes)[:-1])
            return [p.reshape(s) for p, s in zip(pieces, self.shapes, strict=True)]
        v = list(v)
        if len(v) != len(self.shapes):
            raise ValueError(f"direction has {len(v)} arrays, the model {len(self.shapes)}")
        for i, (vi, s) in enumerate(zip(v, self.shapes, strict=True)):
            if np.shape(vi) != s:
                raise ValueError(f"direction array {i} has shape {np.shape(vi)}, expected {s}")
        return [np.asarray(vi, dtype=self.dtype) for vi in v]


def flatten(arrays: list[np.ndarray]) -> np.ndarray:
    """Concatenate parameter-shaped arrays into one vector (``parameter_arrays()`` order)."""
    return np.concatenate([np.ravel(a) for a in arrays])


#: What :func:`as_chain` accepts in a ``Sequential``, named in its error message.
SUPPORTED_LAYERS = (
    "Dense, ActivationLayer (every activation), and layers that are the identity on the "
    "(batch, features) inputs curvature takes: Identity, Flatten, Dropout with p = 0 or in "
    "eval mode"
)


def _is_dropout(layer: Any) -> bool:
    from manual_bp.layers.dropout import Dropout

    return type(layer) is Dropout


def _is_identity(layer: Any) -> bool:
    """The layer is ``out = x`` on (batch, features) inputs: no curvature of its own."""
    from manual_bp.layers.containers import Flatten, Identity

    if type(layer) in (Identity, Flatten):
        return True
    return _is_dropout(layer) and (layer.p == 0.0 or not layer.training)


def as_chain(model: Any) -> Chain:
    """The :class:`Chain` of a ``Network`` or a ``Sequential`` of Dense + activation layers.

    Layers that are the identity on 2-D inputs (``Identity``, ``Flatten``, ``Dropout`` when
    it drops nothing) are skipped. Anything else — convolution, pooling, normalisation,
    recurrent, attention, embedding, residual blocks, dropout in training mode (a random
    function has no Hessian) — raises, naming the layer and :data:`SUPPORTED_LAYERS`.

    Raises
    ------
    TypeError
        Another model type, or a stack with a layer outside :data:`SUPPORTED_LAYERS`.
    """
    from manual_bp.layers.activation import ActivationLayer
    from manual_bp.layers.dense import Dense
    from manual_bp.models.network import Network
    from manual_bp.models.sequential import Sequential

    ops: list[DenseOp | ActOp] = []
    if isinstance(model, Network):
        L = len(model.weights)
        for l, (W, b, act) in enumerate(
            zip(model.weights, model.biases, model.activations, strict=True)
        ):
            ops += [DenseOp(W, b, l, L + l), ActOp(act)]
    elif isinstance(model, Sequential):
        if getattr(model, "ignore_index", None) is not None:
            # the curvature rules average over every row; masked rows would be counted
            raise TypeError(
                f"curvature: a model with ignore_index={model.ignore_index} is not supported "
                "(its mean runs over the counted positions only); build it without ignore_index"
            )
        index = {name: i for i, (name, _) in enumerate(model.named_parameters())}
        for k, layer in enumerate(model.layers):
            if type(layer) is Dense:
                ib = index.get(f"{k}.bias")
                ops.append(DenseOp(layer.W, layer.b, index[f"{k}.weight"], ib))
            elif type(layer) is ActivationLayer:
                ops.append(ActOp(layer.activation))
            elif not _is_identity(layer):
                mode = " in training mode (call model.eval())" if _is_dropout(layer) else ""
                raise TypeError(
                    f"curvature: layer {k} ({layer!r}){mode} is not supported; supported: "
                    f"{SUPPORTED_LAYERS}"
                )
        if not any(isinstance(op, DenseOp) for op in ops):
            raise TypeError(
                f"curvature: the stack has no Dense layer; supported: {SUPPORTED_LAYERS}"
            )
    else:
        raise TypeError(f"curvature needs a Network or a Sequential, got {type(model).__name__}")
    head: Activation = Identity()
    last = ops[-1]
    if isinstance(last, ActOp) and (model.cost.name, last.activation.name) in MATCHING_HEADS:
        head = last.activation
        ops = ops[:-1]
    shapes = [tuple(p.shape) for p in model.parameter_arrays()]
    return Chain(ops, head, model.cost, shapes, np.dtype(model.dtype), model)
