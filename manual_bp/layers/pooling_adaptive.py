"""``torch.nn.AdaptiveAvgPool2d(output_size)``: averages over torch's adaptive windows.

Output row ``y`` of ``H_o`` averages input rows ``[⌊y·H/H_o⌋, ⌈(y+1)·H/H_o⌉)`` (columns alike;
torch's ``start_index``/``end_index``), so the windows may overlap and differ in size. With
``B_H (H_o, H)`` the 0/1 matrix of the row windows, ``B_W`` the column one, and
``D[y, x] = |rows(y)|·|cols(x)|`` (equation ``LAYER.adaptive-avgpool2d``)::

    out = (B_H x B_Wᵀ) / D,     ∂C/∂x = B_Hᵀ (δ / D) B_W

— a linear map, so its JVP is the forward on the tangent, its VJP the backward on each
cotangent and its second-order residual zero (``PROD.adaptive-avgpool2d.*``). The 0/1
matrices make the window sums exact sums (as torch's loop), divided once by ``D``.
``output_size`` is an int or a pair; ``None`` keeps that axis's input size.
``AdaptiveAvgPool2d(1)`` is :class:`~manual_bp.layers.pooling.GlobalAvgPool2d`'s map.
Derivation: ``docs/convolution.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp.layers._unbatched import unbatched
from manual_bp.layers.base import Cache, Layer, check_input, register_layer, zero_residual

__all__ = ["AdaptiveAvgPool2d", "adaptive_windows"]


def adaptive_windows(size: int, out: int) -> np.ndarray:
    """``B (out, size)``: ``B[y, u] = 1`` for ``⌊y·size/out⌋ ≤ u < ⌈(y+1)·size/out⌉``."""
    y = np.arange(out)
    start = (y * size) // out
    end = -((-(y + 1) * size) // out)  # ceil in integers
    u = np.arange(size)
    return ((u >= start[:, None]) & (u < end[:, None])).astype(np.float64)


@register_layer
@unbatched
class AdaptiveAvgPool2d(Layer):
    """``torch.nn.AdaptiveAvgPool2d``. Equation ``LAYER.adaptive-avgpool2d``.

    Parameters
    ----------
    output_size : int, or a pair of ints / ``None`` (``None``: that axis keeps its size)
    """

    name = "adaptive-avgpool2d"
    aliases = ("adaptiveavgpool2d",)
    equation = "LAYER.adaptive-avgpool2d"
    product_equations = (
        "PROD.adaptive-avgpool2d.vjp",
        "PROD.adaptive-avgpool2d.jvp",
        "PROD.adaptive-avgpool2d.residual",
    )
    hessian_is_zero = True
    hyperparameters = ("output_size",)
    batched_ndim = 4

    def __init__(self, output_size: int | tuple[int | None, int | None]) -> None:
        super().__init__()
        items = output_size if isinstance(output_size, (tuple, list)) else (output_size,) * 2
        if len(items) != 2 or any(
            v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0)
            for v in items
        ):
            raise ValueError(
                f"output_size must be an integer ≥ 0 or two of them (or None), got {output_size!r}"
            )
        # a pair as a tuple, as torch keeps it (and as a JSON list comes back)
        self.output_size = tuple(items) if isinstance(output_size, (tuple, list)) else output_size
        self.sizes = tuple(None if v is None else int(v) for v in items)

    def _out(self, size: tuple[int, ...]) -> tuple[int, int]:
        out = [size[a] if self.sizes[a] is None else self.sizes[a] for a in range(2)]
        return out[0], out[1]

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = tuple(input_shape)
        if len(shape) != 3:
            raise ValueError(f"{self!r} needs per-sample inputs (C, H, W), got {shape}")
        if min(shape[1:]) < 1:
            raise ValueError(f"{self!r}: input {shape} has an empty spatial axis (as torch)")
        return (shape[0], *self._out(shape[1:]))

    def _maps(self, size: tuple[int, ...], dtype: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``B_H``, ``B_W`` and ``D`` for input size ``(H, W)``, in ``dtype``."""
        out = self._out(size)
        rows, cols = adaptive_windows(size[0], out[0]), adaptive_windows(size[1], out[1])
        divisor = np.outer(rows.sum(axis=1), cols.sum(axis=1))
        return rows.astype(dtype), cols.astype(dtype), divisor.astype(dtype)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        """``LAYER.adaptive-avgpool2d``: ``(B_H x B_Wᵀ) / D``,
        ``(N, C, H, W) -> (N, C, Ho, Wo)``."""
        check_input(x, self, ndim=4, name="x")
        self.output_shape(x.shape[1:])
        return self._apply(x, x.shape[2:], x.dtype), Cache(x)

    def _apply(self, A: np.ndarray, size: tuple[int, ...], dtype: Any) -> np.ndarray:
        rows, cols, divisor = self._maps(size, dtype)
        return (rows @ A @ cols.T) / divisor

    def _transpose(self, A: np.ndarray, size: tuple[int, ...], dtype: Any) -> np.ndarray:
        rows, cols, divisor = self._maps(size, dtype)
        return rows.T @ (A / divisor) @ cols

    def backward(self, dout: np.ndarray, cache: Cache) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``LAYER.adaptive-avgpool2d``: ``∂C/∂x = B_Hᵀ (δ / D) B_W`` (each window spreads
        its ``δ/D`` over its rows × columns; overlapping windows add)."""
        x = cache.input
        expected = (x.shape[0], *self.output_shape(x.shape[1:]))
        if not isinstance(dout, np.ndarray) or dout.shape != expected:
            raise ValueError(
                f"{self!r}: upstream gradient has shape {np.shape(dout)}, expected {expected}"
            )
        return self._transpose(dout, x.shape[2:], x.dtype).astype(x.dtype, copy=False), {}

    # ------------------------------------------------------------------ products (V axis)
    def input_vjp(self, cache: Cache, M: np.ndarray) -> np.ndarray:
        """``J_xᵀ M = B_Hᵀ (M / D) B_W`` per cotangent (``PROD.adaptive-avgpool2d.vjp``)."""
        x = cache.input
        return self._transpose(M, x.shape[2:], np.result_type(M, x))

    def input_jvp(self, cache: Cache, T: np.ndarray) -> np.ndarray:
        """``J_x T = (B_H T B_Wᵀ) / D``, the forward on each tangent
        (``PROD.adaptive-avgpool2d.jvp``)."""
        x = cache.input
        return self._apply(T, x.shape[2:], np.result_type(T, x))

    def param_jvp(self, cache: Cache, T_params: dict[str, np.ndarray]) -> np.ndarray:
        raise ValueError(f"{self!r} has no parameters to take a tangent of")

    def residual(self, cache, dout, T, T_params=None):
        """Zero (``PROD.adaptive-avgpool2d.residual``): the map is linear in x."""
        return zero_residual(self, cache, T, T_params)

    @classmethod
    def from_shape(cls, input_shape, *args, n_outputs=None, **kwargs) -> AdaptiveAvgPool2d:
        if len(input_shape) != 3:
            raise ValueError(
                f"adaptive-avgpool2d needs per-sample inputs (C, H, W), got {tuple(input_shape)}"
            )
        return cls(*args, **kwargs)

    def __repr__(self) -> str:
        return f"AdaptiveAvgPool2d({self.output_size!r})"
