"""Convolution products on a leading axis of V vectors, in im2col form (``PROD.conv2d.*``,
``PROD.conv1d.*``, ``PROD.conv-transpose2d.*``; derivations in ``docs/products.md``).

A convolution ``K_W`` with weight ``W (C_out, C_in/G, kH, kW)`` is, per group ``g``, one
matrix product of ``W_g (C_out/G, C_g·kH·kW)`` with the unfolded input ``U_g(x)``
(:func:`~manual_bp.layers._im2col.im2col`: one column per output position ``(y, x, n)``,
one row per ``(c, i, j)``; stride, dilation and padding only decide which input entry a
column reads)::

    out_g = W_g U_g(x) (+ b),       U(x)ᵀ's adjoint is col2im (add back where read).

It is bilinear in ``(x, W)``; every product below is one GEMM per group with the V (and,
per sample, the batch) axis as a batch axis of ``np.matmul``, no loop over V or N.
Arrays are views with ``d`` spatial axes (``d = len(geometry.kernel)``): ``(V, N, C, *S)``
stacks, weights ``(V, C_out, C_g, *k)`` (a 1-D convolution is a 2-D one of height 1; 3-D
works on its own three axes). ``ConvTranspose{1,2,3}d`` is ``y = K_Wᵀ x̃ + b`` (``x̃`` is
``x`` zero-padded to the grid ``K_W`` maps onto), so its products are the same pieces with
the roles of ``U`` and col2im swapped.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from manual_bp.layers._buffers import contiguous, matmul, pooled_empty
from manual_bp.layers._im2col import (
    Geometry,
    col2im,
    conv_forward_fast,
    conv_input_grad_fast,
    im2col,
    im2col_per_sample,
)
from manual_bp.layers.base import tangent_count

__all__ = [
    "ConvProducts",
    "conv_input_jvp",
    "conv_input_vjp",
    "conv_param_jvp",
    "conv_param_vjp",
    "conv_residual",
    "crop",
    "transpose_input_jvp",
    "transpose_input_vjp",
    "transpose_param_jvp",
    "transpose_param_vjp",
    "transpose_residual",
]

Sizes = tuple[int, ...]


# --------------------------------------------------------------------------- layouts
def _fold(A: np.ndarray) -> np.ndarray:
    """``(V, N, *rest)`` as ``(V·N, *rest)``: V directions are V more samples of a linear map."""
    return A.reshape(A.shape[0] * A.shape[1], *A.shape[2:])


def _rows(A: np.ndarray, groups: int, d: int) -> np.ndarray:
    """``(*lead, N, C, *S)`` (``d`` spatial axes) as ``(*lead, G, C/G, ΠS·N)``: the column
    order of im2col."""
    lead, (n, c), size = A.shape[: -d - 2], A.shape[-d - 2 : -d], A.shape[-d:]
    batch_last = contiguous(np.moveaxis(A, -d - 2, -1))  # (*lead, C, *S, N)
    return batch_last.reshape(*lead, groups, c // groups, math.prod(size) * n)


def _images(rows: np.ndarray, n: int, size: Sizes) -> np.ndarray:
    """``(*lead, G, C/G, ΠS·N)`` back to ``(*lead, N, C, *S)`` (the inverse of _rows)."""
    *lead, g, c_group, _ = rows.shape
    batch_last = rows.reshape(*lead, g * c_group, *size, n)
    return contiguous(np.moveaxis(batch_last, -1, -len(size) - 2))


def _stack_cols(X: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, Sizes]:
    """``U`` of every direction of ``X (V, N, C, *S)``: the view ``(G, K, Q, V, N)``
    (``K = C_g·Πk`` rows, ``Q = ΠSo`` positions) of one im2col of the folded stack."""
    V, N = X.shape[:2]
    cols, out_size = im2col(_fold(X), geometry)  # (G, K, Q·V·N), columns (y, x, v, n)
    return cols.reshape(*cols.shape[:2], -1, V, N), out_size


def _weight_matrix(weight: np.ndarray, groups: int, d: int) -> np.ndarray:
    """``(*lead, C_a, C_b, *k)`` (``d`` kernel axes) as ``(*lead, G, C_a/G, C_b·Πk)``: W_g
    as a matrix."""
    lead = weight.shape[: -d - 2]
    return weight.reshape(*lead, groups, weight.shape[-d - 2] // groups, -1)


def crop(A: np.ndarray, size: Sizes) -> np.ndarray:
    """The first ``size`` entries of ``A``'s last ``len(size)`` axes (a view)."""
    return A[(Ellipsis, *(slice(0, s) for s in size))]


def _spatial(A: np.ndarray, d: int) -> tuple[int, ...]:
    """The ``d`` trailing (spatial) axes of ``A``, for sums over positions."""
    return tuple(range(A.ndim - d, A.ndim))


# --------------------------------------------------------------------------- convolution
def conv_input_vjp(M: np.ndarray, weight: np.ndarray, size: Sizes, geometry: Geometry):
    """``J_xᵀ M = col2im(W_gᵀ M_g)`` for each of the V cotangents ``(V, N, C_out, Ho, Wo)``:
    the input gradient of the V·N folded samples. Returns ``(V, N, C_in, H, W)``."""
    dx = conv_input_grad_fast(_fold(M), weight, size, geometry)
    return dx.reshape(*M.shape[:2], *dx.shape[1:])


def conv_input_jvp(T: np.ndarray, weight: np.ndarray, geometry: Geometry) -> np.ndarray:
    """``J_x T = W_g U_g(T)`` (the convolution without bias) of ``T (V, N, C_in, H, W)``."""
    out, _ = conv_forward_fast(_fold(T), weight, None, geometry)
    return out.reshape(*T.shape[:2], *out.shape[1:])


def conv_param_vjp(
    M: np.ndarray, cols: np.ndarray, weight_shape: tuple[int, ...], groups: int, sum_batch: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``J_Wᵀ M = M_g U_gᵀ`` and ``J_bᵀ M = Σ_{n,y,x} M`` for ``M (V, N, C_out, Ho, Wo)``.

    Summed: ``cols`` is the cached ``U (G, K, Q·N)``; one GEMM per ``(v, g)`` over all
    ``Q·N`` columns -> ``(V, *W)``, ``(V, C_out)``.
    Per sample: ``cols`` is sample-major ``(N, G, K, Q)``
    (:func:`~manual_bp.layers._im2col.im2col_per_sample`); the same GEMM batched over
    ``(v, n, g)``, each over sample n's ``Q`` columns only -> ``(V, N, *W)``, ``(V, N, C_out)``.
    """
    V, N = M.shape[:2]
    d = len(weight_shape) - 2
    if sum_batch:
        grad = matmul(_rows(M, groups, d), cols.swapaxes(-1, -2))  # (V, G, C_out/G, K)
        return grad.reshape(V, *weight_shape), M.sum(axis=(1, *_spatial(M, d)))
    per_sample = M.reshape(V, N, groups, M.shape[2] // groups, -1)  # (V, N, G, C_out/G, Q)
    grad = matmul(per_sample, cols.swapaxes(-1, -2))  # (V, N, G, C_out/G, K)
    return grad.reshape(V, N, *weight_shape), M.sum(axis=_spatial(M, d))


def conv_param_jvp(
    cols: np.ndarray,
    out_shape: tuple[int, ...],
    groups: int,
    T_weight: np.ndarray | None,
    T_bias: np.ndarray | None,
) -> np.ndarray:
    """``J_W T_W + J_b T_b = (T_W)_g U_g(x) + T_b`` for weight tangents ``(V, *W)`` and bias
    tangents ``(V, C_out)`` (either may be None); ``out_shape = (V, N, C_out, Ho, Wo)``."""
    _, n, _, *out_size = out_shape
    if T_weight is not None:
        w_mat = _weight_matrix(T_weight, groups, len(out_size))
        out = _images(matmul(w_mat, cols), n, tuple(out_size))
    else:
        out = None
    return _plus_bias(out, out_shape, cols.dtype, T_bias)


def conv_residual(
    g: np.ndarray,
    T: np.ndarray | None,
    T_weight: np.ndarray | None,
    size: Sizes,
    weight_shape: tuple[int, ...],
    geometry: Geometry,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The mixed second-order terms of ``⟨g, K_W x⟩`` (bilinear: no ``xx`` or ``WW`` block)::

        residual_x = col2im((T_W)_gᵀ g_g)   (V, N, C_in, H, W)  — J_xᵀ g with W -> T_W
        residual_W = g_g U_g(T_x)ᵀ          (V, *W)             — J_Wᵀ g with x -> T_x

    ``None`` where the tangent that would drive the term is missing.
    """
    groups, d = geometry.groups, len(geometry.kernel)
    g_rows = _rows(g, groups, d)  # (G, C_out/G, Q·N)
    r_x = r_w = None
    if T_weight is not None:
        w_t = _weight_matrix(T_weight, groups, d).swapaxes(-1, -2)
        dcols = matmul(w_t, g_rows)  # (V, G, K, Q·N)
        V, (n, _, *out_size) = T_weight.shape[0], g.shape
        r_x = col2im(dcols.reshape(V, -1, *geometry.kernel, *out_size, n), size, geometry)
    if T is not None:
        cols, _ = _stack_cols(T, geometry)  # (G, K, Q, V, N)
        cols_v = contiguous(cols.transpose(3, 0, 1, 2, 4))  # (V, G, K, Q, N)
        cols_v = cols_v.reshape(*cols_v.shape[:3], -1)
        r_w = matmul(g_rows, cols_v.swapaxes(-1, -2)).reshape(T.shape[0], *weight_shape)
    return r_x, r_w


# --------------------------------------------------------------------------- transposed
def pad_to(x: np.ndarray, full: Sizes) -> np.ndarray:
    """``x (..., *S)`` zero-padded at the end to ``full``: the grid ``K_W`` maps onto (larger
    than x when ``output_padding ≥ stride``; the forward never reads the extra rows)."""
    d = len(full)
    if tuple(x.shape[-d:]) == tuple(full):
        return x
    padded = np.zeros((*x.shape[:-d], *full), dtype=x.dtype)
    crop(padded, x.shape[-d:])[...] = x
    return padded


def transpose_input_jvp(
    T: np.ndarray, weight: np.ndarray, out_size: Sizes, geometry: Geometry
) -> np.ndarray:
    """``J_x T = K_Wᵀ T = col2im(W_gᵀ T_g)`` for ``T (V, N, C_in, H, W)``: ``(V, N, C_out, …)``."""
    out = conv_input_grad_fast(_fold(T), weight, out_size, geometry)
    return out.reshape(*T.shape[:2], *out.shape[1:])


def transpose_input_vjp(
    M: np.ndarray, weight: np.ndarray, size: Sizes, geometry: Geometry
) -> np.ndarray:
    """``J_xᵀ M = K_W M = W_g U_g(M)``, cropped to x's grid ``size``: ``(V, N, C_in, H, W)``."""
    out, _ = conv_forward_fast(_fold(M), weight, None, geometry)
    out = crop(out, size)
    return contiguous(out).reshape(*M.shape[:2], *out.shape[1:])


def transpose_param_vjp(
    M: np.ndarray, x: np.ndarray, weight_shape: tuple[int, ...], geometry: Geometry, sum_batch: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``J_Wᵀ M = x̃_g U_g(M)ᵀ`` (the weight gradient of ``K_W`` with input ``M`` and upstream
    gradient ``x̃``) and ``J_bᵀ M = Σ_{n,y,x} M``; per sample batched over ``(v, n, g)``."""
    V, N = M.shape[:2]
    groups, d = geometry.groups, len(geometry.kernel)
    cols, full = _stack_cols(M, geometry)  # (G, K, Q, V, N)
    x_full = pad_to(x, full)
    if sum_batch:
        cols_v = contiguous(cols.transpose(3, 0, 1, 2, 4))  # (V, G, K, Q, N)
        cols_v = cols_v.reshape(*cols_v.shape[:3], -1)
        grad = _rows(x_full, groups, d) @ cols_v.swapaxes(-1, -2)  # (V, G, C_in/G, K)
        return grad.reshape(V, *weight_shape), M.sum(axis=(1, *_spatial(M, d)))
    cols_n = contiguous(cols.transpose(3, 4, 0, 1, 2))  # (V, N, G, K, Q)
    x_n = x_full.reshape(N, groups, x.shape[1] // groups, -1)  # (N, G, C_in/G, Q)
    grad = x_n @ cols_n.swapaxes(-1, -2)  # (V, N, G, C_in/G, K)
    return grad.reshape(V, N, *weight_shape), M.sum(axis=_spatial(M, d))


def transpose_param_jvp(
    x: np.ndarray,
    out_shape: tuple[int, ...],
    geometry: Geometry,
    T_weight: np.ndarray | None,
    T_bias: np.ndarray | None,
) -> np.ndarray:
    """``J_W T_W + J_b T_b = K_{T_W}ᵀ x + T_b = col2im((T_W)_gᵀ x_g) + T_b`` with
    ``out_shape = (V, N, C_out, Ho, Wo)``."""
    V, (n, _, *size), out_size = out_shape[0], x.shape, out_shape[3:]
    d = len(out_size)
    if T_weight is not None:
        w_t = _weight_matrix(T_weight, geometry.groups, d).swapaxes(-1, -2)  # (V, G, K, C_in/G)
        dcols = w_t @ _rows(x, geometry.groups, d)  # (V, G, K, ΠS·N)
        out = col2im(dcols.reshape(V, -1, *geometry.kernel, *size, n), out_size, geometry)
    else:
        out = None
    return _plus_bias(out, out_shape, x.dtype, T_bias)


def transpose_residual(
    g: np.ndarray,
    T: np.ndarray | None,
    T_weight: np.ndarray | None,
    size: Sizes,
    weight_shape: tuple[int, ...],
    geometry: Geometry,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The mixed second-order terms of ``⟨g, K_Wᵀ x̃⟩ = ⟨K_W g, x̃⟩``::

    residual_x = K_{T_W} g, cropped = (T_W)_g U_g(g)   (V, N, C_in, H, W)
    residual_W = T̃_x,g U_g(g)ᵀ                          (V, *W)
    """
    groups, d = geometry.groups, len(geometry.kernel)
    cols, full = im2col(g, geometry)  # (G, K, Q·N) on K_W's output grid
    r_x = r_w = None
    if T_weight is not None:
        out = _images(_weight_matrix(T_weight, groups, d) @ cols, g.shape[0], full)
        r_x = contiguous(crop(out, size))
    if T is not None:
        grad = _rows(pad_to(T, full), groups, d) @ cols.swapaxes(-1, -2)  # (V, G, C_in/G, K)
        r_w = grad.reshape(T.shape[0], *weight_shape)
    return r_x, r_w


def _plus_bias(
    out: np.ndarray | None, out_shape: tuple[int, ...], dtype: np.dtype, T_bias: np.ndarray | None
) -> np.ndarray:
    """``out + T_b`` per output channel (``out`` None: no weight tangent, zeros), the bias
    half of both convolutions' parameter JVPs."""
    if out is None:
        out = np.zeros(out_shape, dtype if T_bias is None else np.result_type(dtype, T_bias))
    if T_bias is not None:
        out += T_bias.reshape(*T_bias.shape, *(1,) * (len(out_shape) - 3))[:, None]
    return out


class ConvProducts:
    """The V-axis products of Conv1d/2d/3d (mixed into ``_ConvNd``): the geometry's views
    of V-stacks (``[..., None, :]`` in 1-D, as they are in 2-D and 3-D) through the
    functions above, composed with the padding mode's index map (``PAD.map``: tangents
    padded, cotangents scattered back).
    Derivations: docs/products.md."""

    def input_vjp(self, cache: Any, M: np.ndarray) -> np.ndarray:
        """``J_xᵀ M = col2im(W_gᵀ M_g)`` ``(V, N, C_in, *size)`` (``PROD.conv2d.vjp``,
        ``PROD.conv1d.vjp``, ``PROD.conv3d.vjp``): BP2 through the convolution, the V·N
        cotangents as one batch."""
        size = self._as_view(cache.input).shape[2:]
        w2, padded = self._as_view(cache.weight), self._padded_size(size)
        dx = conv_input_vjp(self._as_view(M), w2, padded, self.geometry)
        return self._from_view(self._pad_vjp(dx, size))

    def param_vjp(self, cache: Any, M: np.ndarray, sum_batch: bool = True) -> dict[str, np.ndarray]:
        """``J_Wᵀ M = M_g U_gᵀ`` (``CONV.weight`` per direction), ``J_bᵀ M = Σ_{n,y,x} M``
        (``PROD.conv2d.vjp``, ``PROD.conv1d.vjp``, ``PROD.conv3d.vjp``); ``sum_batch=False``:
        sample n's columns only, ``(V, N, *p)``, one GEMM batched over ``(v, n, g)``."""
        if sum_batch:
            cols = self._cols(cache)
        else:
            cols = im2col_per_sample(self._padded2(cache), self.geometry)
        dw, db = conv_param_vjp(
            self._as_view(M),
            cols,
            self._as_view(cache.weight).shape,
            self.geometry.groups,
            sum_batch,
        )
        grads = {"weight": dw.reshape(*dw.shape[: 1 if sum_batch else 2], *cache.weight.shape)}
        if self.has_bias:
            grads["bias"] = db
        return grads

    def input_jvp(self, cache: Any, T: np.ndarray) -> np.ndarray:
        """``J_x T = W_g U_g(T)``, the convolution of each tangent without bias
        (``PROD.conv2d.jvp``, ``PROD.conv1d.jvp``, ``PROD.conv3d.jvp``)."""
        T2 = self._pad(self._as_view(T))
        out = conv_input_jvp(T2, self._as_view(cache.weight), self.geometry)
        return self._from_view(out)

    def param_jvp(self, cache: Any, T_params: dict[str, np.ndarray]) -> np.ndarray:
        """``J_W T_W + J_b T_b = (T_W)_g U_g(x) + T_b`` (``PROD.conv2d.jvp``,
        ``PROD.conv1d.jvp``, ``PROD.conv3d.jvp``): the convolution of x with each weight tangent."""
        x2 = self._padded2(cache)
        V = tangent_count(None, T_params)
        out_shape = (V, x2.shape[0], *self._view_out_shape(x2.shape[1:]))
        T_weight = T_params.get("weight")
        out = conv_param_jvp(
            self._cols(cache),
            out_shape,
            self.geometry.groups,
            None if T_weight is None else self._as_view(T_weight),
            T_params.get("bias") if self.has_bias else None,
        )
        return self._from_view(out)

    def residual(
        self,
        cache: Any,
        dout: np.ndarray,
        T: np.ndarray | None,
        T_params: dict[str, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Bilinear in ``(x, W)``: only the mixed terms (``PROD.conv2d.residual``,
        ``PROD.conv1d.residual``, ``PROD.conv3d.residual``)::

            residual_x = col2im((T_W)_gᵀ dout_g)   — R{W} in BP2's col2im(W_gᵀ δ_g)
            residual_W = dout_g U_g(T_x)ᵀ          — R{x} in CONV.weight's δ_g U_gᵀ
            residual_b = 0
        """
        x, weight = cache.input, cache.weight
        V = tangent_count(T, T_params)
        T_weight = (T_params or {}).get("weight")
        size = self._as_view(x).shape[2:]
        r_x, r_w = conv_residual(
            self._as_view(dout),
            None if T is None else self._pad(self._as_view(T)),
            None if T_weight is None else self._as_view(T_weight),
            self._padded_size(size),
            self._as_view(weight).shape,
            self.geometry,
        )
        dtype = np.result_type(x, weight)
        if r_x is None:
            r_x = pooled_empty((V, *x.shape), dtype)
            r_x.fill(0)
        else:
            r_x = self._from_view(self._pad_vjp(r_x, size))
        r_w = np.zeros((V, *weight.shape), dtype) if r_w is None else r_w.reshape(V, *weight.shape)
        grads = {"weight": r_w}
        if self.has_bias:
            grads["bias"] = np.zeros((V, self.out_channels), dtype)
        return r_x, grads

    def _cols(self, cache: Any) -> np.ndarray:
        """``U(x) (G, C_g·kH·kW, Ho·Wo·N)``: the fast forward's, or unfolded now (readable)."""
        if cache.cols is not None:
            return cache.cols
        return im2col(self._padded2(cache), self.geometry)[0]

    def _view_out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (self.out_channels, *self.geometry.output_size(shape[1:]))
