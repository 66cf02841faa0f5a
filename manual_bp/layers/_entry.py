"""Every entry point of every layer through one check (issue 24): torch's dtype rules and
exact shapes for inputs, upstream gradients, cotangent and tangent stacks.

:class:`~manual_bp.layers.base.Layer` applies :func:`guard` to each subclass it defines, so a
new layer is covered without a line of its own: each of :data:`ENTRIES` defined in the class
body is wrapped once. The checks are O(1) in the data (dtype, shape, never the values, so NaN
and ±inf propagate as in torch) and run before any work; each fault is one line naming the
layer, the argument and what was expected:

* ``forward(x, …)``: ``x`` a NumPy array of float32/float64 — the layer's dtype when it has
  one (its parameters' or buffers'), integers where indices are meant
  (``index_input``) — and no larger than the machine's memory; the output's shape and dtype
  are recorded on the cache (``cache.output_spec``) for the checks below;
* ``backward(dout, cache)``, ``parameter_gradients``: ``dout`` exactly the output's shape and
  dtype (torch's ``Mismatch in shape/dtype: grad_output``);
* ``input_vjp(cache, M)``, ``param_vjp``: ``M`` ``(V, *out.shape)`` in the output's dtype;
  ``input_jvp(cache, T)``: ``T`` ``(V, *x.shape)`` in the input's dtype; ``param_jvp``,
  ``residual``: ``T_params`` a dict of the layer's parameter names, ``(V, *p.shape)`` each.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from manual_bp._validation import check_layer_array, check_size

__all__ = ["ENTRIES", "check_like", "guard", "layer_float_dtype", "memory_limit", "output_spec"]

#: The layer methods every subclass's definitions are checked through.
ENTRIES = (
    "forward",
    "jvp",
    "backward",
    "parameter_gradients",
    "input_vjp",
    "param_vjp",
    "input_jvp",
    "param_jvp",
    "residual",
)


@functools.cache
def memory_limit() -> int:
    """The machine's physical memory in bytes (an input above it is a view: refused)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: 1 TiB
        return 2**40


def layer_float_dtype(layer: Any) -> np.dtype | None:
    """The dtype a layer computes in: its ``dtype`` attribute, else its parameters' or
    buffers' (a child's for a container); ``None`` for a layer without any (pooling, views,
    activations: they take either float dtype and keep it, as torch's)."""
    state = vars(layer)  # parameters first: a model casts them, a ``dtype`` attribute stays
    for array in (*state.get("params", {}).values(), *state.get("buffers", {}).values()):
        if isinstance(array, np.ndarray) and array.dtype.kind == "f":
            return array.dtype
    for child in layer.children():
        found = layer_float_dtype(child)
        if found is not None:
            return found
    dtype = state.get("dtype")
    return dtype if isinstance(dtype, np.dtype) else None


def output_spec(cache: Any) -> tuple | None:
    """``(shape, dtype, non-finite input)`` of the output ``forward`` recorded, or None."""
    return getattr(cache, "output_spec", None) if cache is not None else None


def _input_spec(layer: Any, cache: Any) -> tuple[tuple[int, ...], np.dtype] | None:
    x = getattr(cache, "input", None)
    if layer.index_input or not isinstance(x, np.ndarray):
        return None
    return x.shape, x.dtype


def _check_cache(layer: Any, cache: Any) -> None:
    if not hasattr(cache, "input"):
        raise TypeError(
            f"{layer!r}: cache must be the one forward returned, got {type(cache).__name__}"
        )


def check_like(
    layer: Any,
    value: Any,
    name: str,
    spec: tuple[tuple[int, ...], np.dtype] | None,
    *,
    stacked: bool,
    what: str,
) -> None:
    """``value`` is ``spec``'s shape (behind a ``V`` axis when ``stacked``) and dtype."""
    owner = repr(layer)
    label = "upstream gradient" if name in _ALIASED else name
    # the layer's dtype (torch's rule); a layer without one (dropout, pooling) takes either
    check_layer_array(value, owner, label, layer_float_dtype(layer), widen=True)
    value = np.asarray(value)  # a NumPy scalar (one entry of a stack) as 0-d
    check_size(value, owner, label, memory_limit())
    if spec is None:
        return
    shape = spec[0]
    got = value.shape[1:] if stacked else value.shape
    if got != tuple(shape) or (stacked and value.ndim == 0):
        layout = f"(V, {', '.join(map(str, shape))})" if stacked else str(tuple(shape))
        raise ValueError(
            f"{owner}: {label} has shape {value.shape}, expected {layout}: "
            + (
                f"the {what}'s shape behind a V axis of directions"
                if stacked
                else "the upstream gradient has the output's shape"
            )
        )


#: Upstream-gradient argument names a user never sees (``dz``, ``grad_a``): called what they
#: are, "upstream gradient"; other names (``dout``, ``M``, ``h0``) are shown as they are.
_ALIASED = ("dz", "grad_a", "g", "grad", "delta", "d_a", "da")


def check_tangent_params(
    layer: Any, T_params: Any, name: str = "T_params", *, stacked: bool = True
) -> None:
    """``T_params`` a dict ``{parameter name: (V, *p.shape)}`` (``p.shape`` when not
    ``stacked``: ``jvp``'s ``dparams``) of the parameters' dtype."""
    owner = repr(layer)
    if not isinstance(T_params, Mapping):
        raise TypeError(f"{owner}: {name} must be a dict {{parameter name: (V, *shape)}}, "
                        f"got {type(T_params).__name__}")  # fmt: skip
    params = layer.params
    for key, value in T_params.items():
        if key not in params:
            raise ValueError(f"{owner}: {name} names {key!r}, not a parameter "
                             f"(parameters: {', '.join(params) or 'none'})")  # fmt: skip
        p = params[key]
        check_like(layer, value, f"{name}[{key!r}]", (p.shape, p.dtype), stacked=stacked,
                   what="parameter")  # fmt: skip


def _quiet(cache: Any, *arrays: Any) -> contextlib.AbstractContextManager:
    """IEEE arithmetic without NumPy's warnings when a NaN or ±inf came in (the input, then
    recorded on the cache, or an upstream gradient): it propagates as in torch, which never
    warns. Finite data keeps the caller's ``np.errstate`` (an overflow there is a bug)."""
    spec = output_spec(cache)
    if (spec is not None and len(spec) > 2 and spec[2]) or any(
        isinstance(a, np.ndarray) and a.dtype.kind == "f" and not np.isfinite(a).all()
        for a in arrays
    ):
        return np.errstate(all="ignore")
    return contextlib.nullcontext()


def _first_names(method: Callable) -> list[str]:
    return [p for p in inspect.signature(method).parameters if p != "self"]


def _argument(args: tuple, kwargs: dict, index: int, name: str, default: Any = None) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _forward(method: Callable) -> Callable:
    name = _first_names(method)[0]

    def forward(self, *args, **kwargs):
        x = _argument(args, kwargs, 0, name)
        dtype = None if self.index_input else layer_float_dtype(self)
        check_layer_array(x, repr(self), name, dtype, indices=self.index_input)
        check_size(x, repr(self), name, memory_limit())
        quiet = _quiet(None, x)
        with quiet:
            out, cache = method(self, *args, **kwargs)
        if isinstance(out, np.ndarray):
            # the output's shape and dtype, for the checks of the gradients coming back, and
            # whether a NaN/inf came in (a cache without attributes records nothing)
            with contextlib.suppress(AttributeError):
                cache.output_spec = (out.shape, out.dtype, isinstance(quiet, np.errstate))
        return out, cache

    return forward


def _backward(method: Callable) -> Callable:
    name = _first_names(method)[0]

    def backward(self, dout, cache, *args, **kwargs):
        _check_cache(self, cache)
        check_like(self, dout, name, output_spec(cache), stacked=False, what="output")
        with _quiet(cache, dout):
            return method(self, dout, cache, *args, **kwargs)

    return backward


def _cotangents(method: Callable) -> Callable:
    name = _first_names(method)[1]

    def product(self, cache, M, *args, **kwargs):
        _check_cache(self, cache)
        check_like(self, M, name, output_spec(cache), stacked=True, what="output")
        with _quiet(cache, M):
            return method(self, cache, M, *args, **kwargs)

    return product


def _tangents(method: Callable) -> Callable:
    name = _first_names(method)[1]

    def product(self, cache, T, *args, **kwargs):
        _check_cache(self, cache)
        if isinstance(T, tuple):  # one tangent stack per input (Bilinear's two inputs)
            for i, part in enumerate(T):
                check_like(self, part, f"{name}[{i}]", None, stacked=True, what="input")
            return method(self, cache, T, *args, **kwargs)
        check_like(self, T, name, _input_spec(self, cache), stacked=True, what="input")
        with _quiet(cache, T):
            return method(self, cache, T, *args, **kwargs)

    return product


def _param_tangents(method: Callable) -> Callable:
    name = _first_names(method)[1]

    def product(self, cache, T_params, *args, **kwargs):
        _check_cache(self, cache)
        check_tangent_params(self, T_params, name)
        with _quiet(cache, *T_params.values()):
            return method(self, cache, T_params, *args, **kwargs)

    return product


def _residual(method: Callable) -> Callable:
    def residual(self, cache, dout, T, T_params=None):
        _check_cache(self, cache)
        check_like(self, dout, "dout", output_spec(cache), stacked=False, what="output")
        if isinstance(T, tuple):  # one tangent stack per input (Bilinear's two inputs)
            for i, part in enumerate(T):
                check_like(self, part, f"T[{i}]", None, stacked=True, what="input")
        elif T is not None:
            check_like(self, T, "T", _input_spec(self, cache), stacked=True, what="input")
        if T_params is not None:
            check_tangent_params(self, T_params)
        if isinstance(T, tuple):
            return method(self, cache, dout, T, T_params)
        with _quiet(cache, dout, T, *(T_params or {}).values()):
            return method(self, cache, dout, T, T_params)

    return residual


def _jvp(method: Callable) -> Callable:
    def jvp(self, cache, dx, dparams=None):
        _check_cache(self, cache)
        if dx is not None:
            check_like(self, dx, "dx", _input_spec(self, cache), stacked=False, what="input")
        if dparams is not None:
            check_tangent_params(self, dparams, "dparams", stacked=False)
        with _quiet(cache, dx, *(dparams or {}).values()):
            return method(self, cache, dx, dparams)

    return jvp


_WRAPPERS: dict[str, Callable[[Callable], Callable]] = {
    "jvp": _jvp,
    "forward": _forward,
    "backward": _backward,
    "parameter_gradients": _backward,
    "input_vjp": _cotangents,
    "param_vjp": _cotangents,
    "input_jvp": _tangents,
    "param_jvp": _param_tangents,
    "residual": _residual,
}


def guard(cls: type) -> None:
    """Wrap each entry ``cls`` has — defined in its body or taken from a mixin of products
    that is no layer itself — with its check, once (an entry inherited from a guarded layer
    class is guarded already); the wrapper keeps name, docstring and signature."""
    for entry, wrap in _WRAPPERS.items():
        method = getattr(cls, entry, None)
        if method is None or not callable(method) or getattr(method, "_guarded", False):
            continue
        wrapper = functools.wraps(method)(wrap(method))
        wrapper._guarded = True
        setattr(cls, entry, wrapper)
