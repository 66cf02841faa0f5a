"""A layer of a :class:`~manual_bp.curvature.chain.Chain`: the layer, where its parameters
sit in ``parameter_arrays()``, its products without their entry checks, and the squares of
parameter VJPs every diagonal and gradient statistic sums (``CURV.layer-walk``,
``docs/curvature.md``).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

from manual_bp.layers.base import PRODUCTS, unguarded

__all__ = ["Link"]  # put: internal (the walks' slots)


@dataclass
class Link:
    """A layer of the chain; ``index``: its parameter name -> position in
    ``parameter_arrays()``; ``one_output``: each parameter reaches one output per sample.

    ``one_output`` (a dense map on ``(batch, features)``: ``∂zₒ/∂Wₒᵢ = xᵢ`` is the only
    entry of ``Wₒᵢ``'s Jacobian column) makes squares of parameter VJPs cheap:
    ``Σ_c s_c (J_θᵀ m_c)² = (J_θ⊙J_θ)ᵀ Σ_c s_c m_c²``, and ``J_θ⊙J_θ`` is the layer's own
    Jacobian at the squared input (``x ↦ x²`` in its cache) — BackPACK's sqrt-GGN rule.
    It holds for a 2-D input only (on ``(N, T, D)`` the weight is shared by the positions:
    the square of a sum is not the sum of squares), so it is asked of the cache
    (:meth:`shortcut`). Without it the squares are taken of the per-sample ``param_vjp``.
    """

    layer: Any
    index: dict[str, int]
    one_output: bool = False
    ops: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # the layer's products without their entry check: the walks build every stack
        # from the layer's own outputs, and the public functions check the data once
        self.ops = SimpleNamespace(**{name: unguarded(self.layer, name) for name in PRODUCTS})

    def shortcut(self, cache: Any) -> bool:
        """The ``one_output`` rule applies at this cache (a dense map on a 2-D input)."""
        return self.one_output and cache.input.ndim == 2

    def tangents(self, v: list[np.ndarray]) -> dict[str, np.ndarray] | None:
        """The direction's share of this layer, ``{name: (1, *p)}`` (None: no parameters)."""
        if not self.index:
            return None
        return {name: v[i][None] for name, i in self.index.items()}

    def add(self, out: list, grads: dict[str, np.ndarray], v: int | None = 0) -> None:
        """``out[position] += grads[name]`` (``[v]``: one slice of the V axis; None: all)
        into the slots of :meth:`Chain.slots` (:func:`put`)."""
        for name, g in grads.items():
            put(out, self.index[name], g if v is None else g[v])

    def param_squares(
        self, cache: Any, V: np.ndarray, signs: np.ndarray | None, per_sample: bool | None
    ) -> dict[str, np.ndarray]:
        """``Σ_c s_c (J_θᵀ V[c])²`` per parameter, ``(n, *p)`` per sample or summed over the
        batch ``(*p)``, for factor columns ``V`` ``(c, n, *out)`` with signs ``(c, n)``
        (None: +1): the per-sample ``param_vjp`` of the columns, squared.

        ``per_sample=None``: the columns are whole-batch columns (a coupled chain, signs
        ``(c,)``): the square of each column's batch-summed ``param_vjp``.
        """
        if per_sample is None:
            grads = self.ops.param_vjp(cache, V, sum_batch=True)  # (c, *p)
            return {name: _squares_summed(g, signs, 1, False) for name, g in grads.items()}
        if self.shortcut(cache):
            V2 = V * V
            d = V2.sum(axis=0) if signs is None else np.einsum("cn,cni->ni", signs, V2)
            return self.param_diagonal(cache, d, per_sample)
        grads = self.ops.param_vjp(cache, V, sum_batch=False)  # (c, n, *p)
        return {name: _squares_summed(g, signs, 2, per_sample) for name, g in grads.items()}

    def param_diagonal(self, cache: Any, d: np.ndarray, per_sample: bool) -> dict[str, np.ndarray]:
        """``diag(J_θᵀ H J_θ)`` from ``d = diag H`` ``(n, m_out)`` at the output, for a link
        with ``one_output`` (where only ``H``'s diagonal reaches the parameters' diagonal):
        ``(J_θ⊙J_θ)ᵀ d``, the layer's ``param_vjp`` at the squared input."""
        grads = self.ops.param_vjp(_squared(cache), d[None], sum_batch=not per_sample)
        return {name: g[0] for name, g in grads.items()}

    def grad_norms(self, cache: Any, delta: np.ndarray) -> dict[str, np.ndarray]:
        """``‖J_θᵀ δₓ‖²`` per sample ``(n,)`` and parameter for per-sample errors ``δ``
        ``(n, *out)``; with ``one_output`` ``⟨δₓ², (J_θ⊙J_θ) 1⟩``, the layer's
        ``param_jvp`` of ones at the squared input."""
        n = delta.shape[0]
        norms = getattr(self.layer, "_param_vjp_norms", None)
        if norms is not None:  # the layer's own closed form (a dense map: ‖δ‖²‖x‖²)
            return norms(cache, delta)
        if self.shortcut(cache):
            # every parameter at once on the V axis: direction k is ones on parameter k
            names = tuple(self.index)
            shapes = tuple(tuple(self.layer.params[name].shape) for name in names)
            reach = self.ops.param_jvp(
                _squared(cache), _unit_tangents(names, shapes, delta.dtype.str)
            )
            norms = np.einsum("kni,ni->kn", reach, delta * delta)  # reach: (k, n, m_out)
            return {name: norms[k] for k, name in enumerate(names)}
        grads = self.ops.param_vjp(cache, delta[None], sum_batch=False)
        return {name: (g[0].reshape(n, -1) ** 2).sum(axis=1) for name, g in grads.items()}


def put(out: list[Any], i: int, value: np.ndarray) -> None:
    """``out[i] += value`` on a slot of :meth:`Chain.slots`: the first value is kept as it
    is, later ones are added into a new array (never in place: the first may be a view of
    an array a layer still uses)."""
    out[i] = value if out[i] is None else out[i] + value


def _squares_summed(g: np.ndarray, signs: np.ndarray | None, lead: int, keep_n: bool):
    """``Σ s·g²`` over ``g``'s ``lead`` leading axes (columns, and samples unless
    ``keep_n``, which needs ``lead`` 2), signs shaped like those axes (None: +1). One
    ``einsum`` pass reading ``g`` (no ``g²`` of ``g``'s size: for an LSTM's per-sample
    weight products, 16 columns × 32 samples × 256 × 96, 9 against 37 ms)."""
    axes, kept = "cn"[:lead], "n" if keep_n else ""
    if signs is None:  # on g as it is: a strided view (an LSTM's W_ih block) is not copied
        return np.einsum(f"{axes}...,{axes}...->{kept}...", g, g)
    return np.einsum(f"{axes}...,{axes}...,{axes}->{kept}...", g, g, signs)


@functools.lru_cache(maxsize=64)
def _unit_tangents(
    names: tuple[str, ...], shapes: tuple[tuple[int, ...], ...], dtype: str
) -> dict[str, np.ndarray]:
    """``{name: (k, *p)}`` with direction ``k`` all ones on the k-th parameter, zero on the
    others (read-only: shared between calls)."""
    tangents = {}
    for k, (name, shape) in enumerate(zip(names, shapes, strict=True)):
        t = np.zeros((len(names), *shape), dtype)
        t[k] = 1
        t.flags.writeable = False
        tangents[name] = t
    return tangents


def _squared(cache: Any) -> Any:
    """The cache at the squared input ``x ⊙ x`` (for a layer with ``one_output``)."""
    return dataclasses.replace(cache, input=cache.input * cache.input)
