"""The shape-only layers: ``Identity``, ``Reshape``, and torch's ``Flatten``/``Unflatten``.

Each is a view: ``out = x.reshape(s(x.shape))`` for a shape rule ``s``, no arithmetic. Its
Jacobian is a permutation-free reshape, so the backward pass reshapes ``∂C/∂out`` back to
the input's shape (``LAYER.flatten``), and the V-axis products reshape each of the V vectors
(``PROD.reshape.*``, ``PROD.flatten.*``; the residual is zero: a
reshape is linear). :class:`_View` holds all of that once; a subclass gives the rule
:meth:`_View.full_shape` on the whole input shape (batch axis included, as torch's
modules see it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from manual_bp.layers.base import Cache, Layer, check_input, register_layer, zero_residual

__all__ = ["Flatten", "Identity", "Reshape", "Unflatten"]


def check_like(layer: Layer, dout: Any, shape: tuple[int, ...]) -> None:
    """Raise unless the upstream gradient ``dout`` has the output's ``shape``."""
    if not isinstance(dout, np.ndarray) or dout.shape != tuple(shape):
        raise ValueError(
            f"{layer!r}: upstream gradient has shape {np.shape(dout)}, expected {tuple(shape)}"
        )


def _axis(dim: int, ndim: int, owner: Layer, name: str) -> int:
    """``dim`` as a non-negative axis of an ``ndim``-d input (torch's range: a 0-d input
    has one axis, ``[-1, 0]``)."""
    size = max(ndim, 1)
    if not -size <= dim < size:
        raise ValueError(
            f"{owner!r}: {name}={dim} is out of range for a {ndim}-d input "
            f"(expected to be in range of [{-size}, {size - 1}])"
        )
    return dim % size


def _integer(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    return int(value)


class _View(Layer):
    """A reshape of the whole input by the rule :meth:`full_shape` (see the module)."""

    hessian_is_zero = True

    def full_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The output's shape for an input of shape ``shape`` (batch axis included)."""
        raise NotImplementedError

    def _check(self, x: Any) -> None:
        check_input(x, self, name="x")

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        self._check(x)
        return x.reshape(self.full_shape(x.shape)), Cache(x)

    def backward(self, dout: np.ndarray, cache: Cache) -> tuple[np.ndarray, dict]:
        check_like(self, dout, self.full_shape(cache.input.shape))
        return dout.reshape(cache.input.shape), {}

    def jvp(self, cache: Cache, dx, dparams=None) -> np.ndarray:
        shape = self.full_shape(cache.input.shape)
        return np.zeros(shape, cache.input.dtype) if dx is None else dx.reshape(shape)

    def fast_step(self) -> _ViewStep:
        """The trainer's form: the same reshapes, the output shape kept per input shape."""
        return _ViewStep(self)

    # products (V axis): a reshape permutes nothing, so J and Jᵀ are reshapes of each vector
    def input_vjp(self, cache: Cache, M: np.ndarray) -> np.ndarray:
        """``J_xᵀ M``: each of the V cotangents reshaped back to the input's shape
        (``PROD.reshape.vjp``, ``PROD.flatten.vjp``)."""
        out_ndim = len(self.full_shape(cache.input.shape))
        return M.reshape(*M.shape[: M.ndim - out_ndim], *cache.input.shape)

    def input_jvp(self, cache: Cache, T: np.ndarray) -> np.ndarray:
        """``J_x T``: each tangent reshaped like the output (``PROD.reshape.jvp``,
        ``PROD.flatten.jvp``)."""
        x = cache.input
        return T.reshape(*T.shape[: T.ndim - x.ndim], *self.full_shape(x.shape))

    def param_jvp(self, cache: Cache, T_params: dict[str, np.ndarray]) -> np.ndarray:
        raise ValueError(f"{self!r} has no parameters to take a tangent of")

    def residual(self, cache, dout, T, T_params=None):
        """Zero (``PROD.reshape.residual``, ``PROD.flatten.residual``,
        ``PROD.identity.residual``): a reshape is linear."""
        return zero_residual(self, cache, T, T_params)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The per-sample output shape (batch axis left out) for a stack spec."""
        return self.full_shape((1, *input_shape))[1:]


@register_layer
class Identity(_View):
    """``out = x``; ``∂C/∂x = ∂C/∂out`` (``torch.nn.Identity``, which ignores any
    constructor argument: so does this one)."""

    name = "identity-layer"
    product_equations = ("PROD.identity.vjp", "PROD.identity.jvp", "PROD.identity.residual")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()  # torch's nn.Identity(*args, **kwargs): arguments unused

    def full_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(shape)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        return x, Cache(x)

    def backward(self, dout: np.ndarray, cache: Cache) -> tuple[np.ndarray, dict]:
        check_like(self, dout, cache.input.shape)
        return dout, {}

    def jvp(self, cache: Cache, dx, dparams=None) -> np.ndarray:
        return np.zeros_like(cache.input) if dx is None else dx

    # J = I, so every product hands its vector on (no copy)
    def input_vjp(self, cache: Cache, M: np.ndarray) -> np.ndarray:
        """``J_xᵀ M = M`` (``PROD.identity.vjp``)."""
        return M

    def input_jvp(self, cache: Cache, T: np.ndarray) -> np.ndarray:
        """``J_x T = T`` (``PROD.identity.jvp``)."""
        return T

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name}

    def __repr__(self) -> str:
        return "Identity()"


class _ViewStep:
    """A view's fast step: ``forward`` reshapes by :meth:`_View.full_shape` (computed once
    per input shape, no entry check: the trainer checked the batch), ``backward`` reshapes
    the upstream gradient back. Profiled in LeNet's parts: the readable form's checks and
    shape rule were 2–3 % of the step."""

    def __init__(self, layer: _View) -> None:
        self.layer = layer
        self.shapes: dict[tuple[int, ...], tuple[int, ...]] = {}
        self.input_shape: tuple[int, ...] = ()

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.input_shape = shape = x.shape
        out_shape = self.shapes.get(shape)
        if out_shape is None:
            out_shape = self.shapes[shape] = self.layer.full_shape(shape)
        return x.reshape(out_shape)

    def backward(
        self, dout: np.ndarray, grads: dict[str, np.ndarray], need_dx: bool
    ) -> np.ndarray | None:
        return dout.reshape(self.input_shape) if need_dx else None


@register_layer
class Reshape(_View):
    """``torch.reshape`` of every sample to ``shape``; the backward reshapes back.

    One entry may be ``-1`` (inferred). ``Reshape(1, 28, 28)`` turns MNIST rows into
    ``(N, 1, 28, 28)`` images.
    """

    name = "reshape"
    hyperparameters = ("shape",)
    product_equations = ("PROD.reshape.vjp", "PROD.reshape.jvp", "PROD.reshape.residual")

    def __init__(self, *sizes: int, shape: Sequence[int] | None = None) -> None:
        super().__init__()
        # ``shape=``: what get_config writes.
        if shape is not None and sizes:
            raise ValueError(f"reshape: give the sizes or shape=, not both ({sizes}, {shape})")
        self.shape = _sizes(sizes if shape is None else shape, "reshape")

    def _check(self, x: Any) -> None:
        check_input(x, self, ndim=range(2, 33), name="x")

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        size = math.prod(input_shape)
        known = math.prod(s for s in self.shape if s != -1)
        if -1 in self.shape:
            if known == 0 or size % known:
                raise ValueError(f"{self!r} cannot reshape per-sample shape {input_shape}")
            return tuple(size // known if s == -1 else s for s in self.shape)
        if known != size:
            raise ValueError(f"{self!r} cannot reshape per-sample shape {tuple(input_shape)}")
        return self.shape

    def full_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (shape[0], *self.output_shape(tuple(shape[1:])))

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape)}

    def __repr__(self) -> str:
        return f"Reshape{self.shape}"


def _sizes(shape: Any, owner: str) -> tuple[int, ...]:
    """Positive sizes, at most one ``-1`` (inferred); one nested sequence is unpacked."""
    if not isinstance(shape, (list, tuple)):
        shape = (shape,)
    if len(shape) == 1 and isinstance(shape[0], (list, tuple)):
        shape = tuple(shape[0])
    if not shape or any(
        isinstance(s, bool) or not isinstance(s, (int, np.integer)) or (s < 1 and s != -1)
        for s in shape
    ):
        raise ValueError(f"{owner} needs positive sizes (one may be -1), got {shape!r}")
    if list(shape).count(-1) > 1:
        raise ValueError(f"{owner}: at most one size may be -1, got {shape!r}")
    return tuple(int(s) for s in shape)


@register_layer
class Flatten(Reshape):
    """``torch.nn.Flatten(start_dim=1, end_dim=-1)``: axes ``start_dim..end_dim`` (of the
    whole input, batch axis 0 included) merged into one; ``(N, C, H, W) -> (N, C·H·W)`` by
    default. A 0-d input is one axis (torch's ``flatten``: ``() -> (1,)``). A per-sample
    reshape when ``start_dim`` is not the batch axis, hence a :class:`Reshape`.
    """

    name = "flatten"
    hyperparameters = ("start_dim", "end_dim")
    product_equations = ("PROD.flatten.vjp", "PROD.flatten.jvp", "PROD.flatten.residual")

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        _View.__init__(self)  # no Reshape sizes: the rule is full_shape's
        self.start_dim = _integer(start_dim, "start_dim")
        self.end_dim = _integer(end_dim, "end_dim")

    def full_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        start = _axis(self.start_dim, len(shape), self, "start_dim")
        end = _axis(self.end_dim, len(shape), self, "end_dim")
        if start > end:
            raise ValueError(f"{self!r}: start_dim cannot come after end_dim for shape {shape}")
        if not shape:
            return (1,)
        return (*shape[:start], math.prod(shape[start : end + 1]), *shape[end + 1 :])

    def _check(self, x: Any) -> None:
        check_input(x, self, name="x")  # any number of axes, as torch

    @property
    def shape(self) -> tuple[int, ...] | None:  # type: ignore[override]
        """The :class:`Reshape` sizes of the default ``Flatten()``, ``(-1,)``; None for other
        axes (no fixed per-sample reshape)."""
        return (-1,) if (self.start_dim, self.end_dim) == (1, -1) else None

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = (1, *input_shape)
        if _axis(self.start_dim, len(shape), self, "start_dim") == 0:
            raise ValueError(f"{self!r} merges the batch axis: no per-sample output shape")
        return self.full_shape(shape)[1:]

    def get_config(self) -> dict[str, Any]:
        # torch's defaults are left out: a default Flatten is saved as before
        config: dict[str, Any] = {"name": self.name}
        if (self.start_dim, self.end_dim) != (1, -1):
            config.update(start_dim=self.start_dim, end_dim=self.end_dim)
        return config

    def __repr__(self) -> str:
        if (self.start_dim, self.end_dim) == (1, -1):
            return "Flatten()"
        return f"Flatten(start_dim={self.start_dim}, end_dim={self.end_dim})"


@register_layer
class Unflatten(Reshape):
    """``torch.nn.Unflatten(dim, unflattened_size)``: axis ``dim`` of the whole input (batch
    axis 0 included) split into ``unflattened_size`` (one entry may be ``-1``), the inverse
    of :class:`Flatten`; ``Unflatten(1, (C, H, W))`` turns rows into images. A per-sample
    reshape when ``dim`` is not the batch axis, hence a :class:`Reshape`.
    """

    name = "unflatten"
    hyperparameters = ("dim", "unflattened_size")
    # a reshape of the whole input: the Reshape products, equation for equation
    product_equations = ("PROD.reshape.vjp", "PROD.reshape.jvp", "PROD.reshape.residual")

    def __init__(self, dim: int, unflattened_size: Sequence[int]) -> None:
        _View.__init__(self)  # no Reshape sizes: the rule is full_shape's
        self.dim = _integer(dim, "dim")
        if not isinstance(unflattened_size, (list, tuple)):
            raise TypeError(
                f"unflattened_size must be a sequence of sizes, got {unflattened_size!r}"
            )
        self.unflattened_size = _sizes(tuple(unflattened_size), "unflatten")

    def full_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if not shape:
            raise ValueError(f"{self!r}: a 0-d input has no axis to unflatten")
        dim = _axis(self.dim, len(shape), self, "dim")
        sizes, size = self.unflattened_size, shape[dim]
        known = math.prod(s for s in sizes if s != -1)
        if -1 in sizes and known and size % known == 0:
            sizes = tuple(size // known if s == -1 else s for s in sizes)
        if math.prod(sizes) != size:
            raise ValueError(
                f"{self!r}: sizes {list(self.unflattened_size)} don't multiply up to the size "
                f"of dim {self.dim} ({size}) of an input of shape {shape}"
            )
        return (*shape[:dim], *sizes, *shape[dim + 1 :])

    def _check(self, x: Any) -> None:
        check_input(x, self, name="x")  # any number of axes, as torch

    @property
    def shape(self) -> None:  # type: ignore[override]
        """No fixed per-sample :class:`Reshape` sizes (they follow the input)."""
        return None

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = (1, *input_shape)
        if _axis(self.dim, len(shape), self, "dim") == 0:
            raise ValueError(f"{self!r} splits the batch axis: no per-sample output shape")
        return self.full_shape(shape)[1:]

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "dim": self.dim, "unflattened_size": list(self.unflattened_size)}

    def __repr__(self) -> str:
        return f"Unflatten(dim={self.dim}, unflattened_size={self.unflattened_size})"
