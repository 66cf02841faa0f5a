"""torch's unbatched inputs (``(C, L)``, ``(C, H, W)``) for layers written on batches.

torch's convolution and pooling modules take one sample without its batch axis; the
result is the batched map on a batch of one, with that axis dropped again (and the
gradient likewise). The class decorator :func:`unbatched` wraps every entry point of a
batched layer — forward, backward, parameter gradients and the V-axis products — so an
input with ``cls.batched_ndim − 1`` axes takes that route (``cache.input`` keeps the
unbatched ``x``; the batched cache rides along in ``inner``). The wrappers keep the
wrapped method's name, docstring and source (``functools.wraps``). A per-sample parameter
VJP of an unbatched input has no sample axis either: ``(V, *p)``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from manual_bp.layers.base import Cache

__all__ = ["UnbatchedCache", "unbatched"]


@dataclass
class UnbatchedCache(Cache):
    """``input``: the unbatched ``x``; ``inner``: the batched layer's cache of ``x[None]``."""

    inner: Any


def _batched(array: Any, layer: Any, axis: int) -> Any:
    """``array`` with a batch axis of one inserted at ``axis`` (checked: one clear line)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{layer!r}: expected a NumPy array, got {type(array).__name__}")
    return np.expand_dims(array, axis)


def _forward(method: Callable) -> Callable:
    def forward(self, x, *args, **kwargs):
        if isinstance(x, np.ndarray) and x.ndim == self.batched_ndim - 1:
            out, inner = method(self, x[None], *args, **kwargs)
            return out[0], UnbatchedCache(x, inner)
        if isinstance(x, np.ndarray) and x.ndim != self.batched_ndim:
            n = self.batched_ndim
            raise ValueError(
                f"{self!r}: x has shape {x.shape} ({x.ndim} axes); expected {n} axes "
                f"(batch first) or {n - 1} (one unbatched sample)"
            )
        return method(self, x, *args, **kwargs)

    return forward


def _backward(method: Callable) -> Callable:
    def backward(self, dout, cache):
        if isinstance(cache, UnbatchedCache):
            dx, grads = method(self, _batched(dout, self, 0), cache.inner)
            return dx[0], grads
        return method(self, dout, cache)

    return backward


def _parameter_gradients(method: Callable) -> Callable:
    def parameter_gradients(self, dout, cache):
        if isinstance(cache, UnbatchedCache):
            return method(self, _batched(dout, self, 0), cache.inner)
        return method(self, dout, cache)

    return parameter_gradients


def _on_stack(method: Callable) -> Callable:
    """``input_vjp`` / ``input_jvp``: a ``(V, *sample)`` stack, result ``(V, *sample)``."""

    def product(self, cache, A):
        if isinstance(cache, UnbatchedCache):
            return method(self, cache.inner, _batched(A, self, 1))[:, 0]
        return method(self, cache, A)

    return product


def _param_vjp(method: Callable) -> Callable:
    def param_vjp(self, cache, M, sum_batch=True):
        if isinstance(cache, UnbatchedCache):
            grads = method(self, cache.inner, _batched(M, self, 1), sum_batch)
            return grads if sum_batch else {name: g[:, 0] for name, g in grads.items()}
        return method(self, cache, M, sum_batch)

    return param_vjp


def _param_jvp(method: Callable) -> Callable:
    def param_jvp(self, cache, T_params):
        if isinstance(cache, UnbatchedCache):
            return method(self, cache.inner, T_params)[:, 0]
        return method(self, cache, T_params)

    return param_jvp


def _residual(method: Callable) -> Callable:
    def residual(self, cache, dout, T, T_params=None):
        if isinstance(cache, UnbatchedCache):
            T_b = None if T is None else _batched(T, self, 1)
            r_x, r_p = method(self, cache.inner, _batched(dout, self, 0), T_b, T_params)
            return r_x[:, 0], r_p
        return method(self, cache, dout, T, T_params)

    return residual


_WRAPPERS: dict[str, Callable[[Callable], Callable]] = {
    "forward": _forward,
    "backward": _backward,
    "parameter_gradients": _parameter_gradients,
    "input_vjp": _on_stack,
    "input_jvp": _on_stack,
    "param_vjp": _param_vjp,
    "param_jvp": _param_jvp,
    "residual": _residual,
}


def unbatched(cls: type) -> type:
    """Class decorator: ``cls`` takes inputs of ``cls.batched_ndim − 1`` axes as torch does."""
    for name, wrap in _WRAPPERS.items():
        method = getattr(cls, name)
        if getattr(method, "_unbatched", False):
            continue  # a base class was decorated already
        wrapper = functools.wraps(method)(wrap(method))
        wrapper._unbatched = True
        setattr(cls, name, wrapper)
    return cls
