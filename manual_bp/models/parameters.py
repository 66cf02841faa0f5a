"""Parameter storage of a :class:`~manual_bp.sequential.Sequential`: one flat buffer.

Every parameter of every leaf layer is moved into ``flat_parameters`` and the layers'
``params`` become views of it, so an optimizer's update of the buffer is seen by the layers
and plain SGD is one vector operation. Names are torch's state-dict names (``"0.weight"``,
``"1.0.running_mean"`` inside a container), in buffer order. Split from
:mod:`manual_bp.sequential` (the model's data, forward and backward).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

import numpy as np

from manual_bp.layers.base import Layer

__all__ = [
    "IncompatibleKeys",
    "ParameterList",
    "StackParameters",
    "StateDictError",
    "offset_in",
]


class StateDictError(ValueError, RuntimeError):
    """A state dict that does not fit the model (torch raises ``RuntimeError``; earlier
    releases of this library ``ValueError``: both catch it)."""


class IncompatibleKeys(NamedTuple):
    """``load_state_dict``'s result, torch's ``_IncompatibleKeys``."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def offset_in(buffer: np.ndarray, view: np.ndarray) -> int:
    """The element offset at which ``view`` (of ``buffer``'s memory, same dtype) starts."""
    address = view.__array_interface__["data"][0]
    return (address - buffer.__array_interface__["data"][0]) // buffer.itemsize


def _quoted(names: list[str]) -> str:
    return ", ".join(f'"{name}"' for name in names)


_Model = TypeVar("_Model", bound="StackParameters")


class StackParameters:
    """Mixin of :class:`~manual_bp.sequential.Sequential`: ``layers`` and ``dtype`` given,
    the flat parameter buffer, named parameters and buffers, state dicts and modes."""

    layers: list[Layer]
    dtype: np.dtype
    flat_parameters: np.ndarray
    _parameter_names: list[str]

    @property
    def derived(self) -> dict[str, Any]:
        """Caches other parts of the package compute from this model and keep on it (the
        curvature gradient's fused trainer), keyed by their owner; copies start without."""
        found = self.__dict__.get("_derived")
        if found is None:
            found = self.__dict__["_derived"] = {}
        return found

    def __deepcopy__(self, memo: dict) -> StackParameters:
        """A deep copy whose layers' parameters are views of ITS flat buffer.

        ``ndarray``'s own deep copy copies a view alone, so a plain deep copy's parameters
        were separate arrays beside a separate flat buffer: its training updated the buffer
        and not the layers. The copy's buffer is allocated afresh from the copied values
        (:meth:`_allocate`); :attr:`derived` caches are not copied."""
        cls = type(self)
        new = cls.__new__(cls)
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            if key != "_derived":
                new.__dict__[key] = copy.deepcopy(value, memo)
        new._allocate()
        return new

    def _allocate(self) -> None:
        """Move every parameter into one flat buffer and make the layers' params views of it."""
        self._refuse_shared_layers()
        leaves = [layer for layer in self._leaves() if not layer.children()]
        total = sum(array.size for leaf in leaves for array in leaf.params.values())
        self.flat_parameters = np.zeros(total, dtype=self.dtype)
        offset = 0
        for leaf in leaves:
            for name, array in list(leaf.params.items()):
                view = self.flat_parameters[offset : offset + array.size].reshape(array.shape)
                view[...] = array
                leaf.params[name] = view
                offset += array.size
            for name, array in list(leaf.buffers.items()):
                if array.dtype.kind == "f":
                    leaf.buffers[name] = array.astype(self.dtype)
        # Names in buffer order, once: the training step maps gradients to them.
        self._parameter_names = [name for name, _ in self.named_parameters()]

    def _refuse_shared_layers(self) -> None:
        """One line naming both places when one layer object with parameters or buffers
        sits twice in the model. torch shares it (one parameter, gradients summed); here
        each place would get its own slot of the flat buffer while the layer keeps a view
        of one of them, so the fused update would drop one place's gradient
        (``docs/conventions.md``, "Where torch differs")."""
        seen: dict[int, str] = {}
        for path, layer in self.named_layers():
            if layer.children() or not (layer.params or layer.buffers):
                continue
            first = seen.setdefault(id(layer), path)
            if first != path:
                raise ValueError(
                    f"layer {layer!r} sits twice in the model (at {first!r} and {path!r}); a "
                    "shared layer (weight tying) is not supported: give each place its own "
                    "layer (copy.deepcopy(layer))"
                )

    def same_place(self, buffer: np.ndarray, parameter: np.ndarray) -> np.ndarray:
        """The view of ``buffer`` (laid out like ``flat_parameters``) where ``parameter``
        (a view of ``flat_parameters``) sits: a gradient buffer's slot for a parameter."""
        start = offset_in(self.flat_parameters, parameter)
        return buffer[start : start + parameter.size].reshape(parameter.shape)

    def named_layers(self) -> list[tuple[str, Layer]]:
        """``[("0", layer), ("1", residual), ("1.0", its first layer), ...]`` in pre-order."""
        named: list[tuple[str, Layer]] = []

        def visit(path: str, layer: Layer) -> None:
            named.append((path, layer))
            # torch's attribute names where a container has them (a Transformer's
            # "encoder.layers.0"), positions otherwise (a residual block's "0")
            children = getattr(layer, "named_children", None)
            pairs = children() if children else enumerate(layer.children())
            for name, child in pairs:
                visit(f"{path}.{name}", child)

        for prefix, layer in zip(self._name_prefixes(), self.layers, strict=True):
            visit(prefix[:-1], layer)
        return named

    def _name_prefixes(self) -> list[str]:
        """``"<name>."`` of every top-level layer (its position unless named)."""
        return [f"{index}." for index in range(len(self.layers))]

    def _leaves(self, layers: Sequence[Layer] | None = None) -> Iterator[Layer]:
        for layer in self.layers if layers is None else layers:
            yield layer
            yield from self._leaves(layer.children())

    def reset_parameters(self, seed: int | np.random.Generator | None) -> None:
        """Re-initialise every layer in order from one seeded generator."""
        rng = np.random.default_rng(seed)
        for layer in self.layers:
            layer.reset_parameters(rng)

    # ------------------------------------------------------------------ parameters
    def named_parameters(self) -> list[tuple[str, np.ndarray]]:
        """``[("0.weight", view), ...]`` in buffer order, torch's state-dict names."""
        named = []
        for prefix, layer in zip(self._name_prefixes(), self.layers, strict=True):
            named += layer.named_parameters(prefix)
        return named

    def named_buffers(self) -> list[tuple[str, np.ndarray]]:
        named = []
        for prefix, layer in zip(self._name_prefixes(), self.layers, strict=True):
            named += layer.named_buffers(prefix)
        return named

    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters and buffers under torch's names (copies), in torch's order: layer by
        layer in pre-order, each layer's parameters then its buffers (``"0.weight"``,
        ``"0.bias"``, ``"0.running_mean"``, …, ``"1.weight"``)."""
        state = {}
        for path, layer in self.named_layers():
            if not layer.children():  # a container's parameters are its children's
                state.update({f"{path}.{k}": v.copy() for k, v in layer.params.items()})
            state.update({f"{path}.{k}": v.copy() for k, v in layer.buffers.items()})
        return state

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Copy parameters and buffers in by name, shapes exactly, as ``torch``'s.

        ``strict=True``: every key must match, else one line in torch's wording (``Missing
        key(s) in state_dict: "0.weight".``) and nothing is loaded. ``strict=False`` loads the
        keys that match. Returns ``(missing_keys, unexpected_keys)`` as torch does.
        """
        targets = dict(self.named_parameters()) | dict(self.named_buffers())
        missing = [name for name in targets if name not in state]
        unexpected = [name for name in state if name not in targets]
        if strict and (missing or unexpected):
            parts = [f"Error(s) in loading state_dict for {type(self).__name__}:"]
            if missing:
                parts.append(f"Missing key(s) in state_dict: {_quoted(missing)}.")
            if unexpected:
                parts.append(f"Unexpected key(s) in state_dict: {_quoted(unexpected)}.")
            raise StateDictError(" ".join(parts))
        checked = {}
        for name, value in state.items():
            if name not in targets:
                continue
            value = np.asarray(value)
            if value.shape != targets[name].shape:
                raise StateDictError(
                    f"size mismatch for {name}: copying a param with shape {value.shape} from "
                    f"checkpoint, the shape in current model is {targets[name].shape}"
                )
            if value.dtype.kind not in "fiub":
                raise TypeError(f"{name} must be real numbers, got dtype {value.dtype}")
            checked[name] = value
        for name, value in checked.items():  # all checked first: an error loads nothing
            targets[name][...] = value
        return IncompatibleKeys(missing, unexpected)

    @property
    def n_parameters(self) -> int:
        return int(self.flat_parameters.size)

    def parameter_arrays(self) -> list[np.ndarray]:
        """Every parameter view, in buffer order (what optimizers update)."""
        return [array for _, array in self.named_parameters()]

    def regularized_indices(self) -> list[int]:
        """Positions in :meth:`parameter_arrays` of the parameters regularisers act on."""
        indices, position = [], 0
        for leaf in self._leaves():
            if leaf.children():
                continue  # a container's parameters are its children's
            for name in leaf.params:
                if name in leaf.decay:
                    indices.append(position)
                position += 1
        return indices

    # ------------------------------------------------------------------ modes
    def train(self: _Model, mode: bool = True) -> _Model:
        """Training mode (``False``: evaluation), as ``torch.nn.Module.train``; returns self."""
        for layer in self.layers:
            layer.train(mode)
        return self

    def eval(self: _Model) -> _Model:
        return self.train(False)

    @property
    def training(self) -> bool:
        return all(leaf.training for leaf in self._leaves())


# ---------------------------------------------------------------------- Nielsen's lists
class ParameterList(list):
    """A fixed-length list of parameter views; assignment copies into the view.

    ``net.weights[0] = W`` and ``net.weights = [...]`` both write into the model's flat
    buffer after checking the shape, so a wrong shape is an error instead of silent
    broadcasting.
    """

    def __init__(self, views: Iterable[np.ndarray], kind: str) -> None:
        super().__init__(views)
        self.kind = kind

    def __setitem__(self, index, value) -> None:  # type: ignore[override]
        if isinstance(index, slice):
            targets = list.__getitem__(self, index)
            values = list(value)
            if len(values) != len(targets):
                raise ValueError(
                    f"cannot assign {len(values)} arrays to {len(targets)} {self.kind} slots"
                )
            for target, item in zip(targets, values, strict=True):
                _copy_checked(target, item, self.kind)
            return
        position = range(len(self))[index]  # IndexError for out-of-range, like a list
        _copy_checked(list.__getitem__(self, position), value, f"{self.kind}[{position}]")

    def assign(self, values: Sequence[np.ndarray]) -> None:
        """Replace every entry (``net.weights = values``), checking count and shapes."""
        values = list(values)
        if len(values) != len(self):
            raise ValueError(f"expected {len(self)} {self.kind} arrays, got {len(values)}")
        for i, value in enumerate(values):
            self[i] = value

    def _fixed(self, *args, **kwargs):
        raise TypeError(f"the number of {self.kind} arrays is fixed by the network's sizes")

    append = extend = insert = pop = remove = clear = __delitem__ = __iadd__ = _fixed  # type: ignore[assignment]
    sort = reverse = _fixed  # type: ignore[assignment]


def _copy_checked(target: np.ndarray, value, what: str) -> None:
    value = np.asarray(value)
    if value.shape != target.shape:
        raise ValueError(
            f"{what} must have shape {target.shape}, got {value.shape} (no broadcasting)"
        )
    if not np.issubdtype(value.dtype, np.number) or np.issubdtype(value.dtype, np.complexfloating):
        raise TypeError(f"{what} must be a real numeric array, got dtype {value.dtype}")
    target[...] = value
