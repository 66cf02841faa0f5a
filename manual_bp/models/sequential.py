"""A layer-stack model: an ordered stack of layers and a cost — backpropagation as a chain of VJPs.

:class:`Sequential` is the model; :class:`~manual_bp.models.network.Network` is Nielsen's
named form of it (``[Dense, σ, …]`` with his names ``weights``, ``biases``, ``deltas``),
not a second implementation. Every model has one parameter order, torch's state-dict order.

Backpropagation through the stack (``STACK.chain``)::

    forward:   a⁰ = x,  aᵏ, cacheᵏ = layerᵏ.forward(aᵏ⁻¹)               k = 1 … K
    seed:      gᴷ = ∂C/∂aᴷ = (1/n) ∇ₐC_x  (per-sample cost gradients of the mean cost)
    backward:  gᵏ⁻¹, ∂C/∂θᵏ = layerᵏ.backward(gᵏ, cacheᵏ)               k = K … 1

When the last layer is an activation with an exact shortcut for the cost (softmax +
log-likelihood, sigmoid + cross-entropy, identity + quadratic), the seed is taken at
``zᴷ`` as ``δᴷ/n`` (BP1's shortcut), exactly as ``Network`` does.

Parameters live in one flat buffer (``model.flat_parameters``) and every layer's
``params`` are views into it, so an optimizer's update of the buffer is seen by the
layers and plain SGD is one vector operation.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from manual_bp._validation import as_array, check_finite, check_nonempty, check_size
from manual_bp.activations import Identity
from manual_bp.costs import Cost
from manual_bp.layers._entry import memory_limit
from manual_bp.layers.activation import ActivationLayer
from manual_bp.layers.base import Layer
from manual_bp.layers.build import build_layer, get_layer
from manual_bp.layers.containers import stack_backward, stack_forward, stack_output_shape
from manual_bp.models.container import split_arguments
from manual_bp.models.evaluation import Evaluation
from manual_bp.models.loss_cost import LossCost, resolve_cost
from manual_bp.models.records import StackGradients
from manual_bp.models.targets import (
    check_ignore_index,
    output_seed,
    prepare_targets,
    rows,
)

__all__ = ["MODELS", "Sequential", "StackGradients", "model_from_config"]

LayerSpec = Layer | str | dict[str, Any]

#: model name -> class; ``model_from_config`` builds any model from its ``get_config()``.
MODELS: dict[str, type[Sequential]] = {}


def model_from_config(config: dict[str, Any]) -> Sequential:
    """The model a ``get_config()`` dict describes (parameters freshly initialised)."""
    name = config.get("name", "sequential") if isinstance(config, dict) else None
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid: {sorted(MODELS)}")
    return MODELS[name].from_config(config)


class Sequential(Evaluation):
    """An ordered stack of layers with a cost, trained by :func:`manual_bp.train`.

    Parameters
    ----------
    *layers : Layer, names or configs; or one list of them; or one ``OrderedDict``
        ``Sequential(Dense(64, 30), "relu", Dense(30, 10), "softmax")`` as torch's, or
        ``Sequential([Dense(64, 30), "relu", …])``; an activation's name stands for an
        :class:`~manual_bp.layers.ActivationLayer`. ``Sequential(OrderedDict([("fc1",
        Dense(64, 30)), …]))`` names the layers: the state-dict keys are ``"fc1.weight"``
        (else a layer's name is its position). The torch idioms (``seq[i]``, ``seq[i:j]``
        sharing memory, ``len``, iteration, ``append``): :mod:`manual_bp.models.container`.
    cost : name, Cost, Loss or config
        The per-sample cost; the model's cost is the mean over the mini-batch. After a list
        or an ``OrderedDict`` it may also be given by position (``Sequential([…], "quadratic")``).
        A torch-named :class:`~manual_bp.losses.Loss` (``CTCLoss()``, ``"loss:ctc"``, or a
        loss name no cost has, ``"ctc"``) is the model's cost as torch's criterion is: its
        value on the whole batch, its backward the seed (:mod:`manual_bp.models.loss_cost`).
    input_shape : tuple of int, optional
        Per-sample input shape, e.g. ``(64,)`` or ``(1, 28, 28)``. Checked through every
        layer's ``output_shape`` at construction, so a stack that cannot work fails here,
        before any data flows. Default: ``(in_features,)`` of a first dense layer.
    seed : int or Generator, optional
        Re-initialise every layer (and any layer's private generator) from this seed, in
        order, so a model is reproducible from ``(layers, seed)``. ``None`` keeps the
        layers' own initialisation.
    dtype : float64 (default) or float32
        Precision of parameters and computation.
    ignore_index : int, optional
        torch's ``cross_entropy(..., ignore_index=i)`` (equation ``SEQ.ignore_index``): a
        position whose label is ``i`` (padding) is left out of the cost, of its gradient
        and of the mean, which runs over the other positions only; ``accuracy`` skips it
        too. Prepared targets mark it as an all-zero row (see
        :mod:`manual_bp.sequential_targets`). Class-label costs only.

    Examples
    --------
    >>> from manual_bp import Dense, Sequential
    >>> model = Sequential([Dense(4, 3), "tanh", Dense(3, 2)], cost="quadratic", seed=0)
    >>> model.backprop(np.zeros((5, 4)), np.zeros((5, 2))).params["0.weight"].shape
    (3, 4)
    """

    name = "sequential"

    def __init__(
        self,
        *layers: Any,
        cost: str | Cost | dict[str, Any] | None = None,
        input_shape: Sequence[int] | None = None,
        seed: int | np.random.Generator | None = None,
        dtype: np.dtype | type | str = np.float64,
        ignore_index: int | None = None,
    ) -> None:
        specs, names, positional_cost = split_arguments(layers)
        if positional_cost is not None and cost is not None:
            raise ValueError("cost given twice: by position and as cost=")
        cost = positional_cost if cost is None else cost
        if not specs:
            raise ValueError("Sequential needs a non-empty list of layers")
        self.layers: list[Layer] = [get_layer(layer) for layer in specs]
        self.names = names if names is not None else [str(i) for i in range(len(self.layers))]
        self._construct(cost, input_shape, dtype, ignore_index)
        if seed is not None:
            self.reset_parameters(seed)
        self._allocate()

    def _construct(self, cost: Any, input_shape: Any, dtype: Any, ignore_index: Any) -> None:
        """Dtype, cost and shapes, checked: everything but the parameter buffer."""
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        for leaf in self._leaves():
            if getattr(leaf, "batch_first", True) is False:  # absent on most layers: no axis
                raise ValueError(
                    f"{leaf!r} is time-major (batch_first=False, torch's default) but a "
                    "Sequential's data is batch-major (N, ...): build it with batch_first=True"
                )
        self.cost: Cost | LossCost = resolve_cost("quadratic" if cost is None else cost)
        self.ignore_index = check_ignore_index(ignore_index, self.cost)
        last = self.layers[-1]
        self.cost.check_output_activation(
            last.activation if isinstance(last, ActivationLayer) else Identity()
        )
        self.input_shape = self._infer_input_shape(input_shape)
        self.output_shape = (
            stack_output_shape(self.layers, self.input_shape) if self.input_shape else None
        )
        self._check_folded_axis(last)

    def _check_folded_axis(self, last: Layer) -> None:
        """A cost that folds its output activation (softmax into log-likelihood: δ = a − y)
        does so along the last axis, the classes'; a softmax along another ``dim`` would
        make that δ wrong, so it is refused here rather than differentiated wrongly."""
        activation = getattr(last, "activation", None)
        dim = getattr(activation, "dim", -1)
        if dim == -1 or activation.name not in self.cost.folds:
            return
        ndim = None if self.output_shape is None else 1 + len(self.output_shape)
        given = f"dim={dim}"
        if dim is None and ndim is not None:  # torch's legacy implicit rule
            dim = 0 if ndim in (0, 1, 3) else 1
            given = f"dim=None (axis {dim} by torch's implicit rule)"
        if ndim is not None and dim is not None and dim % ndim != ndim - 1:
            raise ValueError(
                f"cost {self.cost.name!r} folds its output {activation.name} along the last "
                f"axis (the classes'), but the output layer normalises along {given}: "
                "use dim=-1"
            )

    def _sharing(self, named: OrderedDict, cost: Any, input_shape: Any) -> Sequential:
        """A ``Sequential`` of ``named``'s layer objects whose buffer is a view of this
        model's (:meth:`~manual_bp.models.container.ContainerIdioms.__getitem__`)."""
        model = Sequential.__new__(Sequential)
        model.layers, model.names = list(named.values()), list(named.keys())
        model._construct(cost, input_shape, self.dtype, None)
        model._share_buffer_of(self)
        return model

    # ------------------------------------------------------------------ construction
    def _infer_input_shape(self, input_shape: Sequence[int] | None) -> tuple[int, ...] | None:
        if input_shape is not None:
            shape = tuple(int(s) for s in input_shape)
            if not shape or any(s < 1 for s in shape):
                raise ValueError(f"input_shape must list positive sizes, got {input_shape!r}")
            return shape
        first = self.layers[0]
        in_features = getattr(first, "in_features", None)
        return (in_features,) if isinstance(in_features, int) else None

    @classmethod
    def from_network(cls, net: Sequential) -> Sequential:
        """A plain stack with ``net``'s layers, cost and parameters (copied).

        A :class:`~manual_bp.models.network.Network` already is the stack
        ``[Dense, σ¹, …, Dense, σᴸ]``; this gives it without Nielsen's names, e.g. to
        extend it with other layers. The state-dict names are the same.
        """
        model = cls(
            [get_layer(layer.get_config()) for layer in net.layers],
            cost=net.cost,
            input_shape=net.input_shape,
            dtype=net.dtype,
            ignore_index=net.ignore_index,
        )
        model.load_state_dict(net.state_dict())
        return model

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Sequential:
        """The model :meth:`get_config` describes (parameters freshly initialised)."""
        layers = [get_layer(layer) for layer in config["layers"]]
        names = config.get("names")
        if names is not None and (
            not isinstance(names, list)
            or len(names) != len(layers)
            or len(set(names)) != len(names)
        ):
            raise ValueError(f"names must list {len(layers)} distinct layer names, got {names!r}")
        return cls(
            OrderedDict(zip(names, layers, strict=True)) if names else layers,
            cost=config["cost"],
            input_shape=config.get("input_shape"),
            dtype=config.get("dtype", "float64"),
            ignore_index=config.get("ignore_index"),
        )

    @classmethod
    def from_spec(
        cls,
        spec: Sequence[Any],
        input_shape: Sequence[int],
        n_outputs: int | None = None,
        **kwargs: Any,
    ) -> Sequential:
        """Build from a spec whose sizes are inferred from the data's shape.

        Each item is a name (``"relu"``, ``"dense"``), a ``(name, args, kwargs)`` triple,
        or a config dict; a layer's ``from_shape`` fills in what depends on its input —
        ``("dense", (30,), {})`` on 64 features is ``Dense(64, 30)``; a bare ``"dense"``
        maps to ``n_outputs``. See :mod:`manual_bp.model_spec` for the text form.
        """
        shape = tuple(int(s) for s in input_shape)
        layers = []
        for index, item in enumerate(spec):
            try:
                layer = build_layer(item, shape, n_outputs)
                shape = tuple(layer.output_shape(shape))
            except (ValueError, TypeError) as error:
                raise ValueError(f"layer {index} ({_describe(item)}): {error}") from None
            layers.append(layer)
        return cls(layers, input_shape=input_shape, **kwargs)

    # ------------------------------------------------------------------ data
    def prepare_inputs(self, x: Any, name: str = "x") -> np.ndarray:
        """``x`` as a batch of ``dtype`` with the model's per-sample shape, finite."""
        x = as_array(x, name)  # real numbers: complex, bool, object and ragged input refused
        check_size(x, type(self).__name__, name, memory_limit())  # a view beyond memory
        if self.input_shape is not None and x.shape[1:] != self.input_shape:
            raise ValueError(
                f"{name} has shape {x.shape}; the model takes a batch of shape "
                f"(batch, {', '.join(map(str, self.input_shape))})"
            )
        if x.ndim < 2:
            raise ValueError(f"{name} has shape {x.shape}; expected a batch (samples first)")
        check_nonempty(x, name)
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is named below
            cast = x.astype(self.dtype, copy=False)
        check_finite(cast, name, source=x)
        return cast

    def prepare_targets(self, y: Any, batch: int, name: str = "y") -> np.ndarray:
        """Targets shaped like the output; integer labels are one-hot encoded on the last axis
        (a label equal to ``ignore_index`` becomes an all-zero row). The cost's target domain
        (e.g. [0, 1] for cross-entropy) is checked on the counted rows, as ``Network`` does.
        A torch-named loss's targets: :meth:`LossCost.prepare_targets`."""
        if isinstance(self.cost, LossCost):
            return self.cost.prepare_targets(y, batch, self.output_shape, self.dtype, name)
        y = prepare_targets(y, batch, self.output_shape, self.dtype, self.ignore_index, name)
        t = rows(y)
        if self.ignore_index is not None:
            t = t[t.any(axis=1)]  # ignored positions are zero rows, outside every class domain
        self.cost.check_targets(t)
        return y

    # ------------------------------------------------------------------ forward / backward
    def forward(self, x: np.ndarray) -> tuple[np.ndarray, list[Any]]:
        """``(output, caches)`` in the current mode (training mode updates running statistics)."""
        return self._stack_forward(self.check_batch_array(x))

    def _stack_forward(self, x: np.ndarray) -> tuple[np.ndarray, list[Any]]:
        return stack_forward(self.layers, x)

    def backward(
        self, dout: np.ndarray, caches: Sequence[Any]
    ) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
        """The chain of VJPs (``STACK.chain``): ``(∂C/∂x, per-layer parameter gradients)``."""
        return stack_backward(self.layers, dout, caches)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._stack_forward(self.check_batch_array(x))[0]

    def backprop(self, x: Any, y: Any, *, input_grad: bool = True) -> StackGradients:
        """Gradients of the mean cost on ``(x, y)`` through the stack (``STACK.chain``).

        Runs in the current mode: in training mode batch norm uses (and updates) batch
        statistics and dropout draws a mask, exactly as one training step does.
        ``input_grad=False`` (the training step) skips ``∂C/∂x``: the sweep stops at the
        lowest layer with parameters and ``input_grad`` is ``None``.
        """
        return self._backprop(x, y, input_grad=input_grad)

    def _backprop(
        self, x: Any, y: Any, *, input_grad: bool, received: list | None = None
    ) -> StackGradients:
        """:meth:`backprop`; ``received[k]`` gets the gradient reaching layer k's output (for
        every layer the backward pass visits: not the output activation when the seed is
        taken through BP1's shortcut at its input)."""
        x = self.prepare_inputs(x)
        y = self.prepare_targets(y, x.shape[0])
        out, caches = self._stack_forward(x)
        last = self.layers[-1]
        # the cost from zᴷ where the output activation has a stable logit form
        logits = (
            {"z": caches[-1].input, "activation": last.activation}
            if isinstance(last, ActivationLayer)
            else {}
        )
        if _shortcut(self.cost, last):
            # BP1's exact shortcut at zᴷ (e.g. softmax + log-likelihood: δᴷ = a − y).
            seed = output_seed(self.cost, out, y, self.ignore_index, shortcut=True, **logits)
            dx, grads = stack_backward(
                self.layers[:-1],
                seed.input_grad,
                caches[:-1],
                input_grad=input_grad,
                received=received,
            )
            grads.append({})
        else:
            seed = output_seed(self.cost, out, y, self.ignore_index, **logits)
            dx, grads = stack_backward(
                self.layers, seed.output_grad, caches, input_grad=input_grad, received=received
            )
        named = {
            f"{prefix}{name}": grad
            for prefix, layer_grads in zip(self._name_prefixes(), grads, strict=True)
            for name, grad in layer_grads.items()
        }
        return StackGradients(
            cost=seed.cost,
            params=named,
            layers=grads,
            input_grad=dx,
            output=out,
            caches=caches,
            targets=y,
            _seed=seed,
        )

    def loss_and_gradients(self, x: np.ndarray, y: np.ndarray) -> tuple[float, list[np.ndarray]]:
        """``(C, [∂C/∂θ in parameter_arrays() order])`` on validated arrays (the training step)."""
        result = self._backprop(x, y, input_grad=False)
        return result.cost, [result.params[name] for name in self._parameter_names]

    def output_accuracy(self, out: np.ndarray, targets: np.ndarray) -> float:
        """Accuracy of outputs against prepared targets (a loss's own rule with a loss)."""
        if isinstance(self.cost, LossCost):
            return self.cost.accuracy(out, targets)
        return super().output_accuracy(out, targets)

    # ------------------------------------------------------------------ misc
    def get_config(self) -> dict[str, Any]:
        """Architecture (no parameters), JSON-serialisable; :meth:`from_config` inverts it."""
        config = {
            "name": self.name,
            "layers": [layer.get_config() for layer in self.layers],
            "cost": self.cost.get_config(),
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "dtype": self.dtype.name,
        }
        if self.ignore_index is not None:
            config["ignore_index"] = self.ignore_index
        if self.names != [str(i) for i in range(len(self.layers))]:
            config["names"] = list(self.names)  # OrderedDict names (positions are implied)
        return config

    def copy(self) -> Sequential:
        """An independent model of the same class with the same architecture, parameters,
        buffers, extra state (generators) and mode."""
        clone = type(self).from_config(self.get_config())
        clone.load_state_dict(self.state_dict())
        for mine, theirs in zip(self._leaves(), clone._leaves(), strict=True):
            theirs.set_extra_state(mine.get_extra_state())
            theirs.training = mine.training
        return clone

    def __repr__(self) -> str:
        if self.names == [str(i) for i in range(len(self.layers))]:
            body = ",\n  ".join(repr(layer) for layer in self.layers)
        else:
            body = ",\n  ".join(f"({n!r}, {layer!r})" for n, layer in self.named_children())
            return f"Sequential(OrderedDict([\n  {body}\n]), cost={self.cost.name!r})"
        extra = "" if self.ignore_index is None else f", ignore_index={self.ignore_index}"
        cost = f"cost={self.cost.name!r}{extra}, dtype={self.dtype.name}"
        return f"Sequential([\n  {body}\n], {cost})"


MODELS[Sequential.name] = Sequential


def _shortcut(cost: Cost, last: Layer) -> bool:
    if not isinstance(last, ActivationLayer):
        return False
    entry = cost.shortcuts.get(last.activation.name)
    return entry is not None and cost.shortcut_applies(last.activation)


def _describe(item: Any) -> str:
    if isinstance(item, tuple) and len(item) == 3:
        return str(item[0])
    if isinstance(item, dict):
        return str(item.get("name"))
    return repr(item) if isinstance(item, Layer) else str(item)
