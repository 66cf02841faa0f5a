"""torch's container idioms for :class:`~manual_bp.models.sequential.Sequential`.

``Sequential(*layers)``, ``Sequential([layers])`` and ``Sequential(OrderedDict)`` (names kept:
they are the first component of every state-dict key, ``"fc1.weight"``), ``seq[i]``,
``seq[i:j]``, ``len``, iteration, ``append``, ``parameters()``, ``modules()``,
``children()`` — as ``torch.nn.Sequential`` has them.

Memory, with the flat buffer (``docs/stack.md``, "Containers"):

* A **slice** shares the layer objects and their parameter memory, as in torch: the layers
  of ``seq[i:j]`` are consecutive in ``seq``'s buffer order, so the slice's
  ``flat_parameters`` is the view ``seq.flat_parameters[a:b]`` of that range, and an update
  through either model is seen by the other. Its names are the parent's (torch keeps the
  keys: ``seq[1:]``'s first key is ``"1"``).
* **append** re-allocates the flat buffer (one buffer per model holds every parameter):
  the values are kept, but arrays held from before (``parameters()``, an optimizer's
  state, a slice of this model) no longer alias the model's parameters; take them again.
  A slice (a view of another model's buffer) refuses ``append``: moving the shared layers
  to a new buffer would detach them from the model it was sliced from.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import numpy as np

from manual_bp.layers.base import Layer
from manual_bp.layers.containers import stack_output_shape
from manual_bp.models.parameters import StackParameters, offset_in

__all__ = ["ContainerIdioms", "split_arguments"]


def split_arguments(args: tuple[Any, ...]) -> tuple[list[Any], list[str] | None, Any]:
    """``(layers, names or None, positional cost or None)`` from ``Sequential``'s arguments.

    ``Sequential(l1, l2, …)`` — every argument a layer; ``Sequential([l1, l2], cost)`` and
    ``Sequential(OrderedDict([("a", l1), …]), cost)`` — one container then, optionally, the
    cost (the library's earlier positional form, kept).
    """
    if not args:
        raise ValueError("Sequential needs a non-empty list of layers")
    first = args[0]
    if isinstance(first, OrderedDict):
        if len(args) > 2:
            raise ValueError("Sequential(OrderedDict) takes no further layers (cost= by keyword)")
        names = list(first.keys())
        for name in names:
            if not isinstance(name, str) or not name or "." in name:
                raise ValueError(f"layer names must be non-empty strings without '.', got {name!r}")
        return list(first.values()), names, args[1] if len(args) == 2 else None
    if isinstance(first, (list, tuple)):
        if len(args) > 2:
            raise ValueError("Sequential([layers]) takes no further layers (cost= by keyword)")
        return list(first), None, args[1] if len(args) == 2 else None
    return list(args), None, None


class ContainerIdioms(StackParameters):
    """Mixin: names, indexing, slicing, iteration and ``append`` (see the module docstring)."""

    names: list[str]

    def _name_prefixes(self) -> list[str]:
        return [f"{name}." for name in self.names]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __getitem__(self, index: int | slice) -> Any:
        """``seq[i]``: the layer (negative indices count from the end); ``seq[i:j]``: a
        ``Sequential`` of the same layer objects sharing their parameter memory."""
        if isinstance(index, slice):
            return self._slice(index)
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an int or a slice, got {type(index).__name__}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} layers")
        return self.layers[int(index)]

    def _slice(self, index: slice) -> ContainerIdioms:
        positions = range(len(self))[index]
        if len(positions) == 0:
            raise ValueError(f"the slice {index} selects no layer")
        if index.step not in (None, 1):
            raise ValueError("a slice of a model must be contiguous (step 1): it shares memory")
        start, stop = positions[0], positions[-1] + 1
        shape = self.input_shape
        if shape is not None and start:
            shape = tuple(stack_output_shape(self.layers[:start], shape))
        # the cost belongs to the whole model's output: kept only if the slice ends there
        cost = self.cost if stop == len(self) else "quadratic"
        named = OrderedDict(zip(self.names[start:stop], self.layers[start:stop], strict=True))
        return self._sharing(named, cost, shape)

    def _sharing(self, named: OrderedDict, cost: Any, input_shape: Any) -> ContainerIdioms:
        """A plain stack of ``named``'s layers whose buffer is a view of this one's (the
        model class gives it: this module does not import it)."""
        raise NotImplementedError

    def _share_buffer_of(self, parent: StackParameters) -> None:
        """Make ``flat_parameters`` the view of ``parent``'s buffer these layers occupy."""
        arrays = [array for _, array in self.named_parameters()]
        buffer = parent.flat_parameters
        start = 0
        if arrays:  # the layers' first parameter sits at this offset of the parent's buffer
            start = offset_in(buffer, arrays[0])
        self.flat_parameters = buffer[start : start + sum(array.size for array in arrays)]
        self._parameter_names = [name for name, _ in self.named_parameters()]

    def append(self, layer: Layer | str | dict[str, Any]) -> ContainerIdioms:
        """Add ``layer`` at the end under the name ``str(len(self))`` (torch's); returns self.

        Re-allocates the flat buffer (values kept): arrays taken before no longer alias the
        parameters. The new stack is checked as at construction (shapes, cost).
        """
        from manual_bp.layers.build import get_layer

        if self.flat_parameters.base is not None:
            raise ValueError(
                "append on a slice would move the layers it shares with the model it was "
                "sliced from to a new buffer; append to slice.copy() instead"
            )
        layer = get_layer(layer)
        name = str(len(self))
        if name in self.names:
            raise ValueError(f"a layer is already named {name!r}")
        output_shape = self.output_shape
        if self.input_shape is not None:
            output_shape = tuple(layer.output_shape(self.output_shape))
        self.cost.check_output_activation(_output_activation(layer))
        self.layers.append(layer)
        self.names.append(name)
        try:
            self._refuse_shared_layers()
        except ValueError:  # refused: the model stays as it was
            self.layers.pop()
            self.names.pop()
            raise
        self.output_shape = output_shape
        self._allocate()
        return self

    # ------------------------------------------------------------------ torch's iterators
    def parameters(self) -> list[np.ndarray]:
        """Every parameter array (views of the buffer) in state-dict order, as torch's."""
        return self.parameter_arrays()

    def children(self) -> list[Layer]:
        """The top-level layers, in order."""
        return list(self.layers)

    def named_children(self) -> list[tuple[str, Layer]]:
        return list(zip(self.names, self.layers, strict=True))

    def modules(self) -> list[Any]:
        """The model, then every layer and sub-layer in pre-order (torch's ``modules()``)."""
        return [self, *(layer for _, layer in self.named_layers())]

    def named_modules(self) -> list[tuple[str, Any]]:
        return [("", self), *self.named_layers()]


def _output_activation(layer: Layer) -> Any:
    from manual_bp.activations import Identity
    from manual_bp.layers.activation import ActivationLayer

    return layer.activation if isinstance(layer, ActivationLayer) else Identity()
