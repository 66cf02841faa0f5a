"""Products of a chain of layers on the V axis, walked from its layers' own products.

For a chain ``h₀ = x``, ``hᵢ = fᵢ(hᵢ₋₁, θᵢ)``, ``out = h_L`` (a :class:`Residual`'s branch, a
model's stack) every product is a walk (``docs/products.md#PROD.residual.residual``):

* VJPs, top down: ``Mᵢ₋₁ = J_{x,i}ᵀ Mᵢ`` from ``M_L = M``; ``J_{θᵢ}ᵀ M = J_{θ,i}ᵀ Mᵢ``;
* JVPs, bottom up: ``Tᵢ = J_{x,i} Tᵢ₋₁ + J_{θ,i} T_{θᵢ}`` from ``T₀ = T``; ``J T = T_L``;
* the R-operator (Pearlmutter 1994), top down with the gradients ``gᵢ = ∂C/∂hᵢ`` and the
  tangents ``Tᵢ₋₁`` at each layer's input::

      R{gᵢ₋₁} = J_{x,i}ᵀ R{gᵢ} + residual_x,i(gᵢ, Tᵢ₋₁, T_θᵢ)
      R{∂θᵢ}  = J_{θ,i}ᵀ R{gᵢ} + residual_θ,i(gᵢ, Tᵢ₋₁, T_θᵢ)

  from ``R{g_L} = R_dout``; with ``R_dout = 0`` it is the chain's own second-order residual.

Parameters are named ``"<i>.<name>"`` for the i-th layer (:attr:`Residual.params`, torch's
``nn.Sequential`` state-dict names); a nested container's names nest (``"0.2.weight"``).
Zero terms are carried as ``None`` and never computed. Any list of layers works: a model's
Hessian-vector product is :func:`stack_residual` with ``R_dout`` the loss Hessian times the
output tangent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from manual_bp.layers.base import Layer, tangent_count

__all__ = [
    "split_named",
    "stack_gradients",
    "stack_input_jvp",
    "stack_input_vjp",
    "stack_param_jvp",
    "stack_param_vjp",
    "stack_residual",
    "stack_tangents",
    "stack_vjp",
]


def split_named(named: dict[str, Any] | None, count: int) -> list[dict[str, Any]]:
    """``{"<i>.<rest>": value}`` -> one ``{rest: value}`` per layer (``rest`` may nest)."""
    parts: list[dict[str, Any]] = [{} for _ in range(count)]
    for key, value in (named or {}).items():
        index, _, rest = key.partition(".")
        parts[int(index)][rest] = value
    return parts


def _add(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    """A sum whose ``None`` terms are zero (never in place: a term may alias a caller's M)."""
    if a is None:
        return b
    return a if b is None else a + b


def stack_vjp(
    layers: Sequence[Layer],
    caches: Sequence[Any],
    M: np.ndarray,
    *,
    sum_batch: bool = True,
    input_grad: bool = True,
) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    """``(J_xᵀ M, {"<i>.<name>": J_θᵀ M})`` of the chain, ``M`` ``(V, N, *out)``.

    ``Mᵢ₋₁ = J_{x,i}ᵀ Mᵢ`` top down, each layer's ``param_vjp`` at its own ``Mᵢ``. With
    ``input_grad=False`` the walk stops at the lowest layer with parameters (and returns
    ``None``). Per sample (``sum_batch=False``) every layer above it is asked for its own
    per-sample product too, so one that couples the samples (batch norm in training)
    raises :class:`~manual_bp.layers.base.BatchCouplingError`: below it, sample n's share
    is not the product of a per-sample cotangent.
    """
    trainable = [i for i, layer in enumerate(layers) if layer.params]
    lowest = 0 if input_grad else (trainable[0] if trainable else len(layers))
    named: dict[str, np.ndarray] = {}
    for i in range(len(layers) - 1, lowest - 1, -1):
        layer, cache = layers[i], caches[i]
        if layer.params or (not sum_batch and trainable and i >= trainable[0]):
            grads = layer.param_vjp(cache, M, sum_batch=sum_batch)
            named.update({f"{i}.{name}": value for name, value in grads.items()})
        if i > lowest or input_grad:
            M = layer.input_vjp(cache, M)
    return (M if input_grad else None), dict(sorted(named.items(), key=_order))


def _order(item: tuple[str, Any]) -> tuple[int, str]:
    index, _, rest = item[0].partition(".")
    return int(index), rest


def stack_input_vjp(layers: Sequence[Layer], caches: Sequence[Any], M: np.ndarray) -> np.ndarray:
    """``J_xᵀ M`` of the chain: ``J_{x,1}ᵀ ⋯ J_{x,L}ᵀ M`` (``(V, N, *in)``)."""
    for layer, cache in zip(reversed(layers), reversed(caches), strict=True):
        M = layer.input_vjp(cache, M)
    return M


def stack_param_vjp(
    layers: Sequence[Layer], caches: Sequence[Any], M: np.ndarray, sum_batch: bool = True
) -> dict[str, np.ndarray]:
    """``{"<i>.<name>": J_θᵢᵀ M}`` of the chain: ``(V, *p)``, per sample ``(V, N, *p)``."""
    return stack_vjp(layers, caches, M, sum_batch=sum_batch, input_grad=False)[1]


def stack_tangents(
    layers: Sequence[Layer],
    caches: Sequence[Any],
    T: np.ndarray | None,
    T_params: dict[str, np.ndarray] | None = None,
) -> list[np.ndarray | None]:
    """``[T₀, T₁, …, T_L]``: the tangent at every layer's input and, last, at the output.

    ``Tᵢ = J_{x,i} Tᵢ₋₁ + J_{θ,i} T_θᵢ`` from ``T₀ = T``; ``None`` is a zero tangent
    (no input tangent, and no parameter tangent at or below that layer).
    """
    own = split_named(T_params, len(layers))
    tangents = [T]
    for layer, cache, tangent_params in zip(layers, caches, own, strict=True):
        h = tangents[-1]
        moved = layer.input_jvp(cache, h) if h is not None else None
        if tangent_params:
            moved = _add(moved, layer.param_jvp(cache, tangent_params))
        tangents.append(moved)
    return tangents


def stack_input_jvp(layers: Sequence[Layer], caches: Sequence[Any], T: np.ndarray) -> np.ndarray:
    """``J_x T = J_{x,L} ⋯ J_{x,1} T`` of the chain (``(V, N, *out)``)."""
    for layer, cache in zip(layers, caches, strict=True):
        T = layer.input_jvp(cache, T)
    return T


def stack_param_jvp(
    layers: Sequence[Layer], caches: Sequence[Any], T_params: dict[str, np.ndarray]
) -> np.ndarray:
    """``Σᵢ J_{θᵢ} T_θᵢ`` of the chain, each term carried up by the layers above it."""
    tangent_count(None, T_params)  # at least one direction: V is read from it
    out = stack_tangents(layers, caches, None, T_params)[-1]
    assert out is not None
    return out


def stack_gradients(
    layers: Sequence[Layer], caches: Sequence[Any], dout: np.ndarray
) -> list[np.ndarray]:
    """``[g₀, …, g_{L−1}]``: ``gᵢ = ∂C/∂hᵢ`` at every layer's output (``g_{L−1} = dout``),
    by the layers' ``backward`` (the V = 1 VJP); nothing below the first layer."""
    gradients = [dout]
    for i in range(len(layers) - 1, 0, -1):
        gradients.append(layers[i].backward(gradients[-1], caches[i])[0])
    return gradients[::-1]


def stack_residual(
    layers: Sequence[Layer],
    caches: Sequence[Any],
    dout: np.ndarray,
    T: np.ndarray | None,
    T_params: dict[str, np.ndarray] | None = None,
    R_dout: np.ndarray | None = None,
    *,
    input_grad: bool = True,
    tangents: list[np.ndarray | None] | None = None,
    gradients: list[np.ndarray] | None = None,
) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    """The R-operator's backward pass through the chain: ``(R{∂C/∂x}, {"<i>.<name>": R{∂C/∂θᵢ}})``.

    ``dout`` ``(N, *out)`` is ``∂C/∂out`` (no V axis), ``(T, T_params)`` the V directions,
    ``R_dout`` ``(V, N, *out)`` the directional derivative of ``dout`` (``None``: zero, and
    the result is the chain's second-order residual ``Σ_o dout_o ∇²out_o·(T, T_θ)``). Per
    layer, top down: ``R{gᵢ₋₁} = J_{x,i}ᵀ R{gᵢ} + residual_x,i`` and
    ``R{∂θᵢ} = J_{θ,i}ᵀ R{gᵢ} + residual_θ,i``, each residual at the gradient ``gᵢ``
    reaching the layer and the tangent ``Tᵢ₋₁`` at its input (:func:`stack_gradients`,
    :func:`stack_tangents`; pass them when already computed). Every parameter gets an
    entry ``(V, *p)``; ``input_grad=False`` skips the input part (returned as ``None``).
    """
    V = tangent_count(T, T_params) if R_dout is None else R_dout.shape[0]
    own = split_named(T_params, len(layers))
    if tangents is None:
        tangents = stack_tangents(layers, caches, T, T_params)
    if gradients is None:
        gradients = stack_gradients(layers, caches, dout)
    R, named = R_dout, {}
    for i in range(len(layers) - 1, -1, -1):
        layer, cache = layers[i], caches[i]
        r_x, r_p = None, {}
        if tangents[i] is not None or own[i]:
            r_x, r_p = layer.residual(cache, gradients[i], tangents[i], own[i])
        if layer.params:
            from_above = layer.param_vjp(cache, R) if R is not None else {}
            for name, param in layer.params.items():
                total = _add(from_above.get(name), r_p.get(name))
                named[f"{i}.{name}"] = (
                    total if total is not None else np.zeros((V, *param.shape), param.dtype)
                )
        if i == 0 and (not input_grad or layer.index_input):
            return None, dict(sorted(named.items(), key=_order))
        R = _add(layer.input_vjp(cache, R) if R is not None else None, r_x)
    if R is None:  # no second-order term anywhere and no R{dout}: exactly zero
        x = caches[0].input
        R = np.zeros((V, *x.shape), dtype=np.result_type(x.dtype, np.float32))
    return R, dict(sorted(named.items(), key=_order))
