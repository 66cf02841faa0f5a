"""The layer protocol shared by the built-in layers and :mod:`manual_bp.gradcheck`."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["Layer"]


@runtime_checkable
class Layer(Protocol):
    """A differentiable map ``x (batch, n_in) -> out (batch, n_out)`` with parameters.

    ``backward`` receives ``dout = ∂C/∂out`` for a scalar ``C`` and returns
    ``(∂C/∂x, {name: ∂C/∂param})`` with each gradient shaped like its
    parameter; it never stores gradients on the object (edunn's contract).
    """

    params: dict[str, np.ndarray]

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]: ...

    def backward(
        self, dout: np.ndarray, cache: Any
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]: ...
