"""Parameter storage: one flat buffer per network, exposed as per-layer views.

All weights and biases of a :class:`~manual_bp.network.Network` live in one
contiguous 1-D array (weights of every layer first, then biases), so that an
optimizer can update everything with one vectorised call. ``net.weights`` and
``net.biases`` are :class:`ParameterList` objects: lists of views into that
buffer whose item assignment *copies into* the view after checking the shape,
so ``net.weights[0] = W`` and ``net.weights = [...]`` both keep the buffer
consistent, and a wrong shape is an error instead of silent broadcasting.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import pairwise

import numpy as np

__all__ = ["ParameterList", "allocate_views", "parameter_shapes"]


def parameter_shapes(sizes: Sequence[int]) -> tuple[list[tuple[int, int]], list[tuple[int]]]:
    """Shapes of ``Wˡ`` ``(n_l, n_{l−1})`` and ``bˡ`` ``(n_l,)`` for layers 1..L."""
    weight_shapes = [(n_out, n_in) for n_in, n_out in pairwise(sizes)]
    bias_shapes = [(n_out,) for n_out in sizes[1:]]
    return weight_shapes, bias_shapes


def allocate_views(
    sizes: Sequence[int], dtype: np.dtype
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """A zeroed flat buffer and the weight and bias views into it (weights first)."""
    weight_shapes, bias_shapes = parameter_shapes(sizes)
    shapes = weight_shapes + bias_shapes
    flat = np.zeros(sum(int(np.prod(s)) for s in shapes), dtype=dtype)
    views, offset = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        views.append(flat[offset : offset + size].reshape(shape))
        offset += size
    n = len(weight_shapes)
    return flat, views[:n], views[n:]


class ParameterList(list):
    """A fixed-length list of parameter views; assignment copies into the view.

    Parameters
    ----------
    views : list of ndarray
        Views into the network's flat parameter buffer.
    kind : str
        ``"weights"`` or ``"biases"``, used in error messages.
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
