"""Structure: stacks of layers, residual blocks, and the shape-only layers.

``stack_forward``/``stack_backward`` are backpropagation through a chain of layers —
the chain rule ``∂C/∂x = J₁ᵀ J₂ᵀ … J_Lᵀ ∂C/∂out`` evaluated right to left, one VJP per
layer (equation ``STACK.chain``). :class:`~manual_bp.models.sequential.Sequential` and
:class:`Residual` are both built on them. The products of a chain on the V axis are walks
of its layers' products (:mod:`~manual_bp.layers.containers_products`, re-exported here):
a residual block's are its branch's plus the skip path's identity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from manual_bp.layers.base import Cache, Layer, check_input, register_layer, zero_residual
from manual_bp.layers.build import build_layer, get_layer
from manual_bp.layers.containers_products import (
    stack_gradients,
    stack_input_jvp,
    stack_input_vjp,
    stack_param_jvp,
    stack_param_vjp,
    stack_residual,
    stack_tangents,
    stack_vjp,
)

__all__ = [
    "Flatten",
    "Identity",
    "Reshape",
    "Residual",
    "stack_backward",
    "stack_forward",
    "stack_gradients",
    "stack_input_jvp",
    "stack_input_vjp",
    "stack_output_shape",
    "stack_param_jvp",
    "stack_param_vjp",
    "stack_residual",
    "stack_tangents",
    "stack_vjp",
]


def stack_forward(layers: Sequence[Layer], x: np.ndarray) -> tuple[np.ndarray, list[Any]]:
    """``out = f_L(… f_1(x))`` and every layer's cache, first layer first."""
    caches = []
    for layer in layers:
        x, cache = layer.forward(x)
        caches.append(cache)
    return x, caches


def stack_backward(
    layers: Sequence[Layer],
    dout: np.ndarray,
    caches: Sequence[Any],
    *,
    input_grad: bool = True,
    received: list | None = None,
) -> tuple[np.ndarray | None, list[dict[str, np.ndarray]]]:
    """The chain rule through a stack (``STACK.chain``): VJPs from the last layer down.

    Returns ``(∂C/∂x, grads)`` with ``grads[i]`` the parameter gradients of ``layers[i]``.
    With ``input_grad=False`` (a training step) the sweep stops at the lowest layer with
    parameters, which computes only its parameter gradients, and ``∂C/∂x`` is ``None``.
    ``received`` (a list as long as ``layers``, optional) gets the gradient reaching each
    visited layer's output (Nielsen's ``δˡ/n`` at a dense layer).
    """
    grads: list[dict[str, np.ndarray]] = [{} for _ in layers]
    lowest = 0
    if not input_grad:
        trainable = [i for i, layer in enumerate(layers) if layer.params]
        if not trainable:
            return None, grads
        lowest = trainable[0]
    for i in range(len(layers) - 1, lowest - 1, -1):
        if received is not None:
            received[i] = dout
        if i == lowest and not input_grad:
            grads[i] = layers[i].parameter_gradients(dout, caches[i])
            return None, grads
        dout, grads[i] = layers[i].backward(dout, caches[i])
    return dout, grads


def stack_output_shape(layers: Sequence[Layer], input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Per-sample output shape of a stack; ``ValueError`` naming the layer that rejects it."""
    shape = tuple(input_shape)
    for index, layer in enumerate(layers):
        try:
            shape = tuple(layer.output_shape(shape))
        except ValueError as error:
            raise ValueError(f"layer {index} ({layer!r}): {error}") from None
    return shape


@register_layer
class Identity(Layer):
    """``out = x``; ``∂C/∂x = ∂C/∂out``."""

    name = "identity-layer"
    product_equations = ("PROD.identity.vjp", "PROD.identity.jvp", "PROD.identity.residual")
    hessian_is_zero = True

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        return x, Cache(x)

    def backward(self, dout: np.ndarray, cache: Cache) -> tuple[np.ndarray, dict]:
        _check_like(self, dout, cache.input.shape)
        return dout, {}

    def jvp(self, cache: Cache, dx, dparams=None) -> np.ndarray:
        return np.zeros_like(cache.input) if dx is None else dx

    # products (V axis): J = I, so every product hands its vector on (no copy)
    def input_vjp(self, cache: Cache, M: np.ndarray) -> np.ndarray:
        """``J_xᵀ M = M`` (``PROD.identity.vjp``)."""
        return M

    def input_jvp(self, cache: Cache, T: np.ndarray) -> np.ndarray:
        """``J_x T = T`` (``PROD.identity.jvp``)."""
        return T

    def param_jvp(self, cache: Cache, T_params: dict[str, np.ndarray]) -> np.ndarray:
        raise ValueError(f"{self!r} has no parameters to take a tangent of")

    def residual(self, cache, dout, T, T_params=None):
        """Zero (``PROD.identity.residual``): out = x is linear."""
        return zero_residual(self, cache, T, T_params)


@register_layer
class Reshape(Layer):
    """``torch.reshape`` of every sample to ``shape``; the backward reshapes back.

    One entry may be ``-1`` (inferred). ``Reshape(1, 28, 28)`` turns MNIST rows into
    ``(N, 1, 28, 28)`` images.
    """

    name = "reshape"
    hyperparameters = ("shape",)
    product_equations = ("PROD.reshape.vjp", "PROD.reshape.jvp", "PROD.reshape.residual")
    hessian_is_zero = True

    def __init__(self, *sizes: int, shape: Sequence[int] | None = None) -> None:
        super().__init__()
        # ``shape=`` as torch's ``nn.Unflatten(dim, sizes)`` keyword: what get_config writes.
        if shape is not None and sizes:
            raise ValueError(f"reshape: give the sizes or shape=, not both ({sizes}, {shape})")
        shape = sizes if shape is None else shape
        if not isinstance(shape, (list, tuple)):
            shape = (shape,)
        if len(shape) == 1 and isinstance(shape[0], (list, tuple)):
            shape = tuple(shape[0])
        if not shape or any(
            isinstance(s, bool) or not isinstance(s, (int, np.integer)) or (s < 1 and s != -1)
            for s in shape
        ):
            raise ValueError(f"reshape needs positive sizes (one may be -1), got {shape!r}")
        if list(shape).count(-1) > 1:
            raise ValueError(f"reshape: at most one size may be -1, got {shape!r}")
        self.shape = tuple(int(s) for s in shape)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        size = math.prod(input_shape)
        known = math.prod(s for s in self.shape if s != -1)
        if -1 in self.shape:
            if size % known:
                raise ValueError(f"{self!r} cannot reshape per-sample shape {input_shape}")
            return tuple(size // known if s == -1 else s for s in self.shape)
        if known != size:
            raise ValueError(f"{self!r} cannot reshape per-sample shape {tuple(input_shape)}")
        return self.shape

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        check_input(x, self, ndim=range(2, 33), name="x")
        out_shape = self.output_shape(x.shape[1:])
        return x.reshape(x.shape[0], *out_shape), Cache(x)

    def backward(self, dout: np.ndarray, cache: Cache) -> tuple[np.ndarray, dict]:
        _check_like(self, dout, (cache.input.shape[0], *self.output_shape(cache.input.shape[1:])))
        return dout.reshape(cache.input.shape), {}

    def jvp(self, cache: Cache, dx, dparams=None) -> np.ndarray:
        shape = (cache.input.shape[0], *self.output_shape(cache.input.shape[1:]))
        return np.zeros(shape, cache.input.dtype) if dx is None else dx.reshape(shape)

    # products (V axis): a reshape permutes nothing, so J and Jᵀ are reshapes of each sample
    def input_vjp(self, cache: Cache, M: np.ndarray) -> np.ndarray:
        """``J_xᵀ M``: each of the V cotangents reshaped back to the input's shape
        (``PROD.reshape.vjp``; Flatten's ``PROD.flatten.vjp`` is the same map)."""
        return M.reshape(*M.shape[: -self._out_ndim(cache)], *cache.input.shape)

    def input_jvp(self, cache: Cache, T: np.ndarray) -> np.ndarray:
        """``J_x T``: each tangent reshaped like the output, ``(V, N, *shape)``
        (``PROD.reshape.jvp``; ``PROD.flatten.jvp``)."""
        x = cache.input
        return T.reshape(*T.shape[: -x.ndim], x.shape[0], *self.output_shape(x.shape[1:]))

    def _out_ndim(self, cache: Cache) -> int:
        return 1 + len(self.output_shape(cache.input.shape[1:]))

    def param_jvp(self, cache: Cache, T_params: dict[str, np.ndarray]) -> np.ndarray:
        raise ValueError(f"{self!r} has no parameters to take a tangent of")

    def residual(self, cache, dout, T, T_params=None):
        """Zero (``PROD.reshape.residual``, ``PROD.flatten.residual``): a reshape is linear."""
        return zero_residual(self, cache, T, T_params)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape)}

    def __repr__(self) -> str:
        return f"Reshape{self.shape}"


@register_layer
class Flatten(Reshape):
    """``torch.nn.Flatten()``: every sample to one axis, ``(N, C, H, W) -> (N, C·H·W)``."""

    name = "flatten"
    hyperparameters = ()
    product_equations = ("PROD.flatten.vjp", "PROD.flatten.jvp", "PROD.flatten.residual")

    def __init__(self) -> None:
        super().__init__(-1)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name}

    def __repr__(self) -> str:
        return "Flatten()"


@dataclass
class ResidualCache(Cache):
    """``input`` x and the caches of the branch ``f``."""

    branch: list[Any]


@register_layer
class Residual(Layer):
    """A skip connection ``y = x + f(x)`` around a sub-stack ``f``. Equation ``LAYER.residual``.

    ``x`` is used twice, so its gradient is the sum over both uses (micrograd's ``+=``)::

        ∂C/∂x = ∂C/∂y + J_fᵀ ∂C/∂y

    ``f`` must map a sample to the same shape. Parameters are named ``"<i>.<name>"`` for
    the i-th layer of ``f`` (torch's ``nn.Sequential`` state-dict names).
    """

    name = "residual"
    equation = "LAYER.residual"
    hyperparameters = ("layers",)
    product_equations = ("PROD.residual.vjp", "PROD.residual.jvp", "PROD.residual.residual")

    def __init__(self, layers: Sequence[Layer | str | dict[str, Any]]) -> None:
        super().__init__()
        if isinstance(layers, (Layer, str, dict)):
            layers = [layers]
        self.layers = [get_layer(layer) for layer in layers]
        if not self.layers:
            raise ValueError("residual needs at least one layer in its branch")

    def children(self) -> list[Layer]:
        return self.layers

    @property
    def params(self) -> dict[str, np.ndarray]:  # type: ignore[override]
        """The branch's parameters under ``"<i>.<name>"`` (views: in-place edits reach them)."""
        if not hasattr(self, "layers"):
            return {}
        return dict(self.named_parameters())

    @params.setter
    def params(self, value: dict[str, np.ndarray]) -> None:
        if value:
            raise AttributeError("a residual block's parameters belong to its layers")

    @classmethod
    def from_shape(cls, input_shape, layers=(), *, n_outputs=None, **kwargs) -> Residual:
        """``residual([dense(30), relu, dense])``: the branch's sizes inferred in order; a bare
        ``dense`` at its end maps back to the input width (so that ``x + f(x)`` fits)."""
        if kwargs:
            raise ValueError(f"residual takes only its list of layers, got {sorted(kwargs)}")
        shape, built = tuple(input_shape), []
        for item in layers:
            layer = build_layer(item, shape, n_outputs=input_shape[-1] if input_shape else None)
            shape = tuple(layer.output_shape(shape))
            built.append(layer)
        return cls(built)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = stack_output_shape(self.layers, input_shape)
        if shape != tuple(input_shape):
            raise ValueError(
                f"the residual branch maps per-sample shape {tuple(input_shape)} to {shape}; "
                f"y = x + f(x) needs equal shapes"
            )
        return shape

    def reset_parameters(self, rng: np.random.Generator) -> None:
        for layer in self.layers:
            layer.reset_parameters(rng)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, ResidualCache]:
        fx, caches = stack_forward(self.layers, x)
        if fx.shape != x.shape:
            raise ValueError(f"{self!r}: branch output {fx.shape} differs from input {x.shape}")
        return x + fx, ResidualCache(x, caches)

    def backward(self, dout: np.ndarray, cache: ResidualCache) -> tuple[np.ndarray, dict]:
        _check_like(self, dout, cache.input.shape)
        d_branch, grads = stack_backward(self.layers, dout, cache.branch)
        named = {
            f"{i}.{k}": g for i, layer_grads in enumerate(grads) for k, g in layer_grads.items()
        }
        return dout + d_branch, named  # both uses of x: the skip path and the branch

    def fast_step(self) -> Any:
        """The fused form for training: the branch's own fast steps
        (:class:`~manual_bp.layers.containers_fast.ResidualStep`)."""
        from manual_bp.layers.containers_fast import ResidualStep  # it imports this module

        return ResidualStep(self)

    def jvp(self, cache: ResidualCache, dx, dparams=None) -> np.ndarray:
        dparams = dparams or {}
        tangent = dx
        for i, (layer, layer_cache) in enumerate(zip(self.layers, cache.branch, strict=True)):
            own = {
                k.split(".", 1)[1]: v for k, v in dparams.items() if k.split(".", 1)[0] == str(i)
            }
            tangent = layer.jvp(layer_cache, tangent, own)
        return tangent if dx is None else dx + tangent

    # products (V axis): the skip path is the identity, the branch a walk of its layers
    def input_vjp(self, cache: ResidualCache, M: np.ndarray) -> np.ndarray:
        """``J_xᵀ M = M + J_fᵀ M`` (``PROD.residual.vjp``): both uses of x."""
        return M + stack_input_vjp(self.layers, cache.branch, M)

    def param_vjp(
        self, cache: ResidualCache, M: np.ndarray, sum_batch: bool = True
    ) -> dict[str, np.ndarray]:
        """``J_θᵀ M`` of the branch, ``{"<i>.<name>": (V, *p)}`` (``(V, N, *p)`` per sample);
        the skip path has no parameters (``PROD.residual.vjp``)."""
        return stack_param_vjp(self.layers, cache.branch, M, sum_batch=sum_batch)

    def input_jvp(self, cache: ResidualCache, T: np.ndarray) -> np.ndarray:
        """``J_x T = T + J_f T`` (``PROD.residual.jvp``)."""
        return T + stack_input_jvp(self.layers, cache.branch, T)

    def param_jvp(self, cache: ResidualCache, T_params: dict[str, np.ndarray]) -> np.ndarray:
        """``Σᵢ J_θᵢ T_θᵢ`` of the branch, carried up its layers (``PROD.residual.jvp``)."""
        return stack_param_jvp(self.layers, cache.branch, T_params)

    def residual(self, cache, dout, T, T_params=None):
        """The branch's residual (``PROD.residual.residual``): the skip path x is linear, so
        ``∇²y_o = ∇²f_o``, and the residual of the composition f is the R-operator's pass
        down the branch with ``R{dout} = 0`` (:func:`stack_residual`)."""
        r_x, r_params = stack_residual(self.layers, cache.branch, dout, T, T_params)
        assert r_x is not None
        return r_x, r_params

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "layers": [layer.get_config() for layer in self.layers]}

    def __repr__(self) -> str:
        return f"Residual({self.layers!r})"


def _check_like(layer: Layer, dout: Any, shape: tuple[int, ...]) -> None:
    if not isinstance(dout, np.ndarray) or dout.shape != tuple(shape):
        raise ValueError(
            f"{layer!r}: upstream gradient has shape {np.shape(dout)}, expected {tuple(shape)}"
        )
