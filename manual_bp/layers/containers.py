"""Structure: stacks of layers, residual blocks, and the shape-only layers.

``stack_forward``/``stack_backward`` are backpropagation through a chain of layers —
the chain rule ``∂C/∂x = J₁ᵀ J₂ᵀ … J_Lᵀ ∂C/∂out`` evaluated right to left, one VJP per
layer (equation ``STACK.chain``). :class:`~manual_bp.models.sequential.Sequential` and
:class:`Residual` are both built on them. The products of a chain on the V axis are walks
of its layers' products (:mod:`~manual_bp.layers.containers_products`, re-exported here):
a residual block's are its branch's plus the skip path's identity. The shape-only layers
(Identity, Reshape, Flatten, Unflatten) live in :mod:`~manual_bp.layers.views`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from manual_bp.layers.base import Cache, Layer, register_layer
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
from manual_bp.layers.views import Flatten, Identity, Reshape, Unflatten
from manual_bp.layers.views import check_like as _check_like

__all__ = [
    "Flatten",
    "Identity",
    "Reshape",
    "Residual",
    "Unflatten",
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
