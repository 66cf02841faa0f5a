"""torch's unbatched inputs (``(C, L)``, ``(C, H, W)``) for layers written on batches.

torch's convolution and pooling modules take one sample without its batch axis; the
result is the batched map on a batch of one, with that axis dropped again (and the
gradient likewise). :class:`Unbatched` is mixed in FIRST so it wraps every entry point —
forward, backward, parameter gradients and the V-axis products — of the batched layer
(``cache.input`` keeps the unbatched ``x``; the batched cache rides along in ``inner``).
A per-sample parameter VJP of an unbatched input has no sample axis either: ``(V, *p)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from manual_bp.layers.base import Cache

__all__ = ["Unbatched", "UnbatchedCache"]


@dataclass
class UnbatchedCache(Cache):
    """``input``: the unbatched ``x``; ``inner``: the batched layer's cache of ``x[None]``."""

    inner: Any


class Unbatched:
    """Mixin: inputs with ``batched_ndim − 1`` axes are one sample without its batch axis."""

    #: Axes of a batched input (batch axis included).
    batched_ndim: int = 4

    def forward(self, x: np.ndarray, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        if isinstance(x, np.ndarray) and x.ndim == self.batched_ndim - 1:
            out, inner = super().forward(x[None], *args, **kwargs)
            return out[0], UnbatchedCache(x, inner)
        return super().forward(x, *args, **kwargs)

    def backward(self, dout: np.ndarray, cache: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        if isinstance(cache, UnbatchedCache):
            dx, grads = super().backward(_batched(dout, self, 0), cache.inner)
            return dx[0], grads
        return super().backward(dout, cache)

    def parameter_gradients(self, dout: np.ndarray, cache: Any) -> dict[str, np.ndarray]:
        if isinstance(cache, UnbatchedCache):
            return super().parameter_gradients(_batched(dout, self, 0), cache.inner)
        return super().parameter_gradients(dout, cache)

    def input_vjp(self, cache: Any, M: np.ndarray) -> np.ndarray:
        if isinstance(cache, UnbatchedCache):
            return super().input_vjp(cache.inner, _batched(M, self, 1))[:, 0]
        return super().input_vjp(cache, M)

    def param_vjp(self, cache: Any, M: np.ndarray, sum_batch: bool = True) -> dict[str, np.ndarray]:
        if isinstance(cache, UnbatchedCache):
            grads = super().param_vjp(cache.inner, _batched(M, self, 1), sum_batch)
            return grads if sum_batch else {name: g[:, 0] for name, g in grads.items()}
        return super().param_vjp(cache, M, sum_batch)

    def input_jvp(self, cache: Any, T: np.ndarray) -> np.ndarray:
        if isinstance(cache, UnbatchedCache):
            return super().input_jvp(cache.inner, _batched(T, self, 1))[:, 0]
        return super().input_jvp(cache, T)

    def param_jvp(self, cache: Any, T_params: dict[str, np.ndarray]) -> np.ndarray:
        if isinstance(cache, UnbatchedCache):
            return super().param_jvp(cache.inner, T_params)[:, 0]
        return super().param_jvp(cache, T_params)

    def residual(
        self,
        cache: Any,
        dout: np.ndarray,
        T: np.ndarray | None,
        T_params: dict[str, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        if isinstance(cache, UnbatchedCache):
            T_b = None if T is None else _batched(T, self, 1)
            r_x, r_p = super().residual(cache.inner, _batched(dout, self, 0), T_b, T_params)
            return r_x[:, 0], r_p
        return super().residual(cache, dout, T, T_params)


def _batched(array: Any, layer: Any, axis: int) -> Any:
    """``array`` with a batch axis of one inserted at ``axis`` (checked: one clear line)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{layer!r}: expected a NumPy array, got {type(array).__name__}")
    return np.expand_dims(array, axis)
