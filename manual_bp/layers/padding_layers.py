"""torch's padding layers: ``ZeroPad``, ``ConstantPad``, ``ReflectionPad``, ``ReplicationPad``
and ``CircularPad``, each in 1, 2 and 3 dimensions (equation ``LAYER.pad``).

A padding layer is the index map of :mod:`manual_bp.layers.padding` on the last ``d`` axes:
``xp = x[..., π(u)]`` (a constant where ``π = −1``), linear in ``x``, so its backward is the
map's transpose, the scatter-add ``∂C/∂x[s] = Σ_{u: π(u)=s} ∂C/∂xp[u]`` — for reflection a
fold of each border back onto the input (``docs/padding.md``). The products on the V axis
are the same two maps on each of the V vectors (the tangent of the constant is 0); the
residual is zero.

torch's arguments: ``padding`` an int (every side) or a tuple of ``2d`` ints in torch's
order, **last axis first**: ``(left, right)``, ``(left, right, top, bottom)``, ``(left,
right, top, bottom, front, back)``; negative entries crop. ``ConstantPadNd(padding, value)``.
Inputs: ZeroPad/ConstantPad take any array of at least ``d`` axes; the others ``d + 1``
(unbatched) or ``d + 2`` axes (torch's limits: reflection padding smaller than the axis,
circular at most once round; reflection and replication want non-empty axes besides
the batch, circular takes an empty axis padded by 0).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from manual_bp.layers.base import Cache, Layer, register_layer, zero_residual
from manual_bp.layers.padding import SignedPadMap
from manual_bp.layers.padding_fast import PadStep

__all__ = [
    "CircularPad1d",
    "CircularPad2d",
    "CircularPad3d",
    "ConstantPad1d",
    "ConstantPad2d",
    "ConstantPad3d",
    "ReflectionPad1d",
    "ReflectionPad2d",
    "ReflectionPad3d",
    "ReplicationPad1d",
    "ReplicationPad2d",
    "ReplicationPad3d",
    "ZeroPad1d",
    "ZeroPad2d",
    "ZeroPad3d",
    "torch_padding",
]


def torch_padding(padding: Any, dims: int, owner: str) -> tuple[int, ...]:
    """torch's ``padding`` argument as its ``2·dims`` ints, last axis first."""
    values = (padding,) * (2 * dims) if not isinstance(padding, (tuple, list)) else padding
    if len(values) != 2 * dims or any(
        isinstance(p, bool) or not isinstance(p, (int, np.integer)) for p in values
    ):
        raise ValueError(
            f"{owner}: padding must be an int or a tuple of {2 * dims} ints "
            f"(last axis first), got {padding!r}"
        )
    return tuple(int(p) for p in values)


class _PadNd(Layer):
    """A padding layer of ``dims`` trailing axes in ``mode`` (see the module docstring)."""

    equation = "LAYER.pad"
    product_equations = ("PROD.pad.vjp", "PROD.pad.jvp", "PROD.pad.residual")
    hessian_is_zero = True
    hyperparameters = ("padding",)
    dims: ClassVar[int] = 1
    mode: ClassVar[str] = "zeros"
    value: float = 0.0

    def __init__(self, padding: Any) -> None:
        super().__init__()
        self.padding = torch_padding(padding, self.dims, type(self).__name__)

    @property
    def pads(self) -> tuple[tuple[int, int], ...]:
        """``((a, b), …)`` per padded axis in axis order (torch's tuple read backwards)."""
        p = self.padding
        return tuple((p[2 * i], p[2 * i + 1]) for i in reversed(range(self.dims)))

    def pad_map(self, x: np.ndarray) -> SignedPadMap:
        """The layer's map for ``x`` after torch's input checks (one line naming ``x``)."""
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{self!r}: x must be a NumPy array, got {type(x).__name__}")
        d = self.dims
        if self.mode == "zeros":
            if x.ndim < d:
                raise ValueError(f"{self!r}: x has {x.ndim} axes; expected at least {d}")
        else:
            if x.ndim not in (d + 1, d + 2):
                raise ValueError(
                    f"{self!r}: x has shape {x.shape} ({x.ndim} axes); expected {d + 2} "
                    f"(batch first) or {d + 1} (one unbatched sample)"
                )
            # torch's reflect/replicate kernels want every axis but the batch non-empty; its
            # circular pad (a cat of slices) takes empty axes, checking only the wrap below
            empty = 0 in x.shape[x.ndim - d - 1 :] or (x.ndim == d + 1 and x.size == 0)
            if empty and self.mode != "circular":
                raise ValueError(
                    f"{self!r}: x has shape {x.shape}; only the batch axis may be empty"
                )
        pad_map = SignedPadMap(self.pads, self.mode, self.value)
        if d == 1 and self.mode in ("reflect", "replicate") and x.shape[-1] + sum(self.pads[0]) < 1:
            raise ValueError(  # torch's 1-d check (its 2-d and 3-d layers return empty)
                f"{self!r}: padding {self.padding} leaves nothing of x's last axis "
                f"(size {x.shape[-1]})"
            )
        return pad_map

    # ------------------------------------------------------------------ protocol
    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        """``LAYER.pad``: ``xp = x[..., π(u)]``, ``value`` where ``π = −1``."""
        return self.pad_map(x).forward(x), Cache(x)

    def backward(self, dout: np.ndarray, cache: Cache) -> tuple[np.ndarray, dict]:
        """``LAYER.pad``: ``∂C/∂x[s] = Σ_{u: π(u)=s} ∂C/∂xp[u]`` (the map's transpose)."""
        x = cache.input
        self._check_like(dout, x)
        return self.pad_map(x).vjp(dout, x.shape[x.ndim - self.dims :]), {}

    def _check_like(self, dout: Any, x: np.ndarray, lead: int = 0) -> None:
        want = self._out_shape(x.shape)
        if not isinstance(dout, np.ndarray) or dout.shape[lead:] != want:
            raise ValueError(
                f"{self!r}: upstream gradient has shape {np.shape(dout)}, expected {want}"
            )

    def _out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        d = len(shape) - self.dims
        return (*shape[:d], *SignedPadMap(self.pads, self.mode).padded_size(shape[d:]))

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The per-sample output shape (each padded axis grows by its two sides)."""
        return self._out_shape(tuple(input_shape))

    def fast_step(self) -> PadStep:
        """The in-place pad and its fold (:class:`~manual_bp.layers.padding_fast.PadStep`)."""
        return PadStep(self)

    # ------------------------------------------------------------------ products (V axis)
    def input_vjp(self, cache: Cache, M: np.ndarray) -> np.ndarray:
        """``J_xᵀ M`` (``PROD.pad.vjp``): each of the V cotangents scattered back."""
        x = cache.input
        self._check_like(M, x, 1)
        return self.pad_map(x).vjp(M, x.shape[x.ndim - self.dims :])

    def input_jvp(self, cache: Cache, T: np.ndarray) -> np.ndarray:
        """``J_x T`` (``PROD.pad.jvp``): each tangent padded with 0 (the constant's tangent)."""
        x = cache.input
        if not isinstance(T, np.ndarray) or T.shape[1:] != x.shape:
            raise ValueError(f"{self!r}: tangent has shape {np.shape(T)}, expected (V, *{x.shape})")
        self.pad_map(x)
        return SignedPadMap(self.pads, self.mode).forward(T)

    def param_jvp(self, cache: Cache, T_params: dict[str, np.ndarray]) -> np.ndarray:
        raise ValueError(f"{self!r} has no parameters to take a tangent of")

    def residual(self, cache, dout, T, T_params=None):
        """Zero (``PROD.pad.residual``): padding is linear in ``x``."""
        return zero_residual(self, cache, T, T_params)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.padding})"


class _ConstantPadNd(_PadNd):
    hyperparameters = ("padding", "value")

    def __init__(self, padding: Any, value: float) -> None:
        super().__init__(padding)
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise ValueError(f"{type(self).__name__}: value must be a number, got {value!r}")
        self.value = value

    def __repr__(self) -> str:
        return f"{type(self).__name__}(padding={self.padding}, value={self.value})"


def _define(kind: str, mode: str, dims: int, base: type = _PadNd) -> type:
    """Register torch's ``{kind}Pad{dims}d``."""
    name = f"{kind}Pad{dims}d"
    doc = (
        f"``torch.nn.{name}``: padding of the last {dims} axes, mode {mode!r} "
        f"(``LAYER.pad``; the V-axis products ``PROD.pad.*``)."
    )
    attrs = {"__doc__": doc, "dims": dims, "mode": mode, "__module__": __name__}
    attrs["name"] = name.lower()
    attrs["__qualname__"] = name
    return register_layer(type(name, (base,), attrs))


ZeroPad1d = _define("Zero", "zeros", 1)
ZeroPad2d = _define("Zero", "zeros", 2)
ZeroPad3d = _define("Zero", "zeros", 3)
ConstantPad1d = _define("Constant", "zeros", 1, _ConstantPadNd)
ConstantPad2d = _define("Constant", "zeros", 2, _ConstantPadNd)
ConstantPad3d = _define("Constant", "zeros", 3, _ConstantPadNd)
ReflectionPad1d = _define("Reflection", "reflect", 1)
ReflectionPad2d = _define("Reflection", "reflect", 2)
ReflectionPad3d = _define("Reflection", "reflect", 3)
ReplicationPad1d = _define("Replication", "replicate", 1)
ReplicationPad2d = _define("Replication", "replicate", 2)
ReplicationPad3d = _define("Replication", "replicate", 3)
CircularPad1d = _define("Circular", "circular", 1)
CircularPad2d = _define("Circular", "circular", 2)
CircularPad3d = _define("Circular", "circular", 3)
