"""Local response normalisation — ``torch.nn.LocalResponseNorm`` (Krizhevsky et al. 2012).

Across channels (axis 1 of ``(N, C, *)``), with ``a = α/size`` and the window
``W(c) = [c − ⌊size/2⌋, c + ⌊(size−1)/2⌋] ∩ [0, C)`` (torch's zero padding, counted in the
average)::

    b_c = k + a·S(x²)_c,   S(u)_c = Σ_(c' ∈ W(c)) u_c',   y_c = x_c·b_c^(−β)

Backward through the windowed sum (``LAYER.lrn``, ``docs/layers.md``): ``x_j`` enters
``y_j`` directly and every ``b_c`` whose window holds ``j``; the adjoint of ``S`` is the
window sum with the two reaches swapped (``Sᵀ``)::

    ∂C/∂x = g ⊙ b^(−β) − 2aβ·x ⊙ Sᵀ(g ⊙ x ⊙ b^(−β−1))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from manual_bp.layers.base import Cache, Layer, check_input, register_layer, tangent_count
from manual_bp.layers.normalisation_steps import LRNStep

__all__ = ["LocalResponseNorm", "window_sum"]


def window_sum(u: np.ndarray, axis: int, before: int, after: int) -> np.ndarray:
    """``Σ_(j = c − before)^(c + after) u_j`` along ``axis`` (zeros beyond the ends).

    ``S`` is ``window_sum(·, before=⌊size/2⌋, after=⌊(size−1)/2⌋)``; its adjoint ``Sᵀ`` is
    the same sum with ``before`` and ``after`` swapped (``Σ_c v_c S(u)_c = Σ_j u_j Sᵀ(v)_j``).
    A plain sum of shifted slices: no cumulative sum, whose differences would cancel.
    """
    width = [(0, 0)] * u.ndim
    width[axis] = (before, after)
    padded = np.pad(u, width)
    size, out = u.shape[axis], np.zeros_like(u)
    for shift in range(before + after + 1):
        out += np.take(padded, range(shift, shift + size), axis=axis)
    return out


@dataclass
class LRNCache(Cache):
    """``input`` x; ``base`` ``b = k + a·S(x²)``; ``scale`` ``b^(−β)``."""

    base: np.ndarray
    scale: np.ndarray


@register_layer
class LocalResponseNorm(Layer):
    """``torch.nn.LocalResponseNorm(size, alpha=1e-4, beta=0.75, k=1.0)`` on ``(N, C, *)``
    (at least 3 axes, as torch). No parameters; training and evaluation agree."""

    name = "localresponsenorm"
    equation = "LAYER.lrn"
    product_equations = (
        "PROD.localresponsenorm.vjp",
        "PROD.localresponsenorm.jvp",
        "PROD.localresponsenorm.residual",
    )
    hyperparameters = ("size", "alpha", "beta", "k")

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
        super().__init__()
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        self.size = int(size)
        for name, value in (("alpha", alpha), ("beta", beta), ("k", k)):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
                raise TypeError(f"{name} must be a number, got {value!r}")
        # as torch, any k: b = k + a·S(x²) ≤ 0 gives torch's nan/inf, not a refusal
        self.alpha, self.beta, self.k = float(alpha), float(beta), float(k)

    def _reach(self) -> tuple[int, int]:
        return self.size // 2, (self.size - 1) // 2

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, LRNCache]:
        """``x (N, C, *) -> y = x ⊙ b^(−β)``, ``b = k + (α/size)·S(x²)`` over channels."""
        check_input(x, self, ndim=range(3, 33), name="x")
        base = self.k + (self.alpha / self.size) * window_sum(x * x, 1, *self._reach())
        scale = base**-self.beta
        return x * scale, LRNCache(x, base, scale)

    def fast_step(self) -> LRNStep:
        """Training's fast form: the same expressions in buffers
        (:mod:`~manual_bp.layers.normalisation_steps`)."""
        return LRNStep(self)

    def _vjp(self, cache: LRNCache, g: np.ndarray, axis: int) -> np.ndarray:
        """``g b^(−β) − 2aβ x Sᵀ(g x b^(−β−1))`` with the channel axis at ``axis``."""
        x, base, scale = cache.input, cache.base, cache.scale
        before, after = self._reach()
        back = window_sum(g * (x * scale / base), axis, after, before)  # Sᵀ: reaches swapped
        return g * scale - (2.0 * self.alpha * self.beta / self.size) * x * back

    def backward(self, dout: np.ndarray, cache: LRNCache) -> tuple[np.ndarray, dict]:
        """``LAYER.lrn``: the direct path minus the path through every window holding x_j."""
        x = cache.input
        if not isinstance(dout, np.ndarray) or dout.shape != x.shape:
            raise ValueError(f"{self!r}: dout has shape {np.shape(dout)}, expected {x.shape}")
        return self._vjp(cache, dout, 1), {}

    # ------------------------------------------------------------------ products (V axis)
    def input_vjp(self, cache: LRNCache, M: np.ndarray) -> np.ndarray:
        """``J_xᵀ M`` (``PROD.localresponsenorm.vjp``): the backward pass on each of V."""
        return self._vjp(cache, M, 2)

    def input_jvp(self, cache: LRNCache, T: np.ndarray) -> np.ndarray:
        """``J_x T = b^(−β) T − 2aβ x b^(−β−1) S(x T)`` (``PROD.localresponsenorm.jvp``)."""
        x, base, scale = cache.input, cache.base, cache.scale
        through = window_sum(x * T, 2, *self._reach())
        return scale * T - (2.0 * self.alpha * self.beta / self.size) * (x * scale / base) * through

    def param_jvp(self, cache: LRNCache, T_params: dict[str, np.ndarray]) -> np.ndarray:
        raise ValueError(f"{self!r} has no parameters to take a tangent of")

    def residual(self, cache, dout, T, T_params=None):
        """``d/dt J_xᵀ(x + tT) h`` (``PROD.localresponsenorm.residual``), ``h = dout``,
        ``q = b^(−β−1)``, ``db = 2a S(x T)``::

            −β q h db − 2aβ T Sᵀ(h x q) − 2aβ x Sᵀ(h T q − (β+1) h x q db / b)
        """
        V = tangent_count(T, T_params)
        x = cache.input
        if T is None:
            return np.zeros((V, *x.shape), x.dtype), {}
        a, beta = self.alpha / self.size, self.beta
        before, after = self._reach()
        q = cache.scale / cache.base
        h = dout
        db = 2.0 * a * window_sum(x * T, 2, before, after)
        first = -beta * q * h * db
        second = -2.0 * a * beta * T * window_sum(h * x * q, 1, after, before)
        inner = h * T * q - (beta + 1.0) * h * x * q * db / cache.base
        third = -2.0 * a * beta * x * window_sum(inner, 2, after, before)
        return first + second + third, {}

    @classmethod
    def from_shape(cls, input_shape, *args, n_outputs=None, **kwargs) -> LocalResponseNorm:
        """``localresponsenorm(size)`` in a spec (per-sample input ``(C, *)``, ≥ 2 axes)."""
        if len(input_shape) < 2:
            raise ValueError(
                f"localresponsenorm needs per-sample inputs (C, *) with at least 2 axes, got "
                f"{tuple(input_shape)}"
            )
        return cls(*args, **kwargs)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) < 2:
            raise ValueError(f"{self!r} needs per-sample inputs (C, *), got {input_shape}")
        return tuple(input_shape)

    def __repr__(self) -> str:
        return f"LocalResponseNorm({self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k})"
