"""N-d convolution arithmetic: geometry, a readable and a fast (im2col + GEMM) form.

Layout ``(N, C, *S)`` with ``d = len(S)`` spatial axes (2-D: NCHW, 3-D: NCDHW), weight
``(C_out, C_in/groups, *k)`` as ``torch.nn.Conv2d``/``Conv3d``. With padding ``p``
(front/back per axis; they may differ for ``"same"``), stride ``s`` and dilation ``d`` on
each axis, output position ``y`` reads padded input positions ``y·s + i·d`` for kernel
offsets ``i = 0 … k−1`` on every axis (written here in 2-D; every axis alike)::

    out[n, o, y, x] = b[o] + Σ_{c, i, j} W[o, c, i, j] · xp[n, g·C_g + c, y·s + i·d, x·s + j·d]

(``g = o // (C_out/groups)``; ``xp`` the zero-padded input). Every function here comes
in two forms checked against each other by the tests: ``*_readable`` writes these sums
with a loop over kernel offsets, ``*_fast`` gathers all windows into one matrix
("im2col") and multiplies once. The number of spatial axes is ``len(geometry.kernel)``;
nothing here is written per dimension. Derivations: ``docs/convolution.md``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided

from manual_bp.layers._buffers import pooled_empty

__all__ = [
    "Geometry",
    "col2im",
    "conv_forward_fast",
    "conv_forward_readable",
    "conv_input_grad_fast",
    "conv_input_grad_readable",
    "conv_weight_grad_fast",
    "conv_weight_grad_readable",
    "pad",
    "unpad",
]

Pair = tuple[int, int]
#: Sizes of the spatial axes (any number of them).
Sizes = tuple[int, ...]


@dataclass(frozen=True)
class Geometry:
    """Kernel, stride, per-side padding ``((front, back), …)``, dilation (one entry per
    spatial axis: ``((top, bottom), (left, right))`` in 2-D), groups."""

    kernel: Sizes
    stride: Sizes = (1, 1)
    padding: tuple[Pair, ...] = ((0, 0), (0, 0))
    dilation: Sizes = (1, 1)
    groups: int = 1

    def output_size(self, size: Sizes) -> Sizes:
        """``⌊(H + p_front + p_back − d(k−1) − 1)/s⌋ + 1`` per axis (equation ``CONV.forward``)."""
        out = []
        for axis in range(len(self.kernel)):
            span = (
                size[axis] + sum(self.padding[axis]) - self.dilation[axis] * (self.kernel[axis] - 1)
            )
            out.append((span - 1) // self.stride[axis] + 1 if span >= 1 else 0)
        return tuple(out)

    def offsets(self) -> Iterator[tuple[int, ...]]:
        """Every kernel offset ``(i, j, …)``, in C order (the order of the weight's axes)."""
        return itertools.product(*(range(k) for k in self.kernel))

    def taps(self, offset: tuple[int, ...], out_size: Sizes) -> tuple[slice, ...]:
        """The padded positions ``y·s + i·d`` (``y = 0 … Ho−1``) kernel ``offset`` reads,
        per axis."""
        return tuple(
            slice(i * d, i * d + s * (o - 1) + 1, s)
            for i, d, s, o in zip(offset, self.dilation, self.stride, out_size, strict=True)
        )


def _interior(padding: tuple[Pair, ...], size: Sizes) -> tuple[slice, ...]:
    """The slices of the unpadded input inside a padded array, per spatial axis.

    (A slice ``[p:-p]`` would be empty for ``p = 0``; ``[p : p + H]`` never is.)
    """
    return tuple(slice(front, front + s) for (front, _), s in zip(padding, size, strict=True))


def pad(x: np.ndarray, padding: tuple[Pair, ...], value: float = 0.0) -> np.ndarray:
    """A padded copy of ``x (N, C, *S)``; the interior is written with explicit bounds."""
    size = x.shape[2:]
    padded = tuple(s + a + b for s, (a, b) in zip(size, padding, strict=True))
    out = np.full((*x.shape[:2], *padded), value, dtype=x.dtype)
    out[(slice(None), slice(None), *_interior(padding, size))] = x
    return out


def unpad(xp: np.ndarray, padding: tuple[Pair, ...], size: Sizes) -> np.ndarray:
    """The interior ``(N, C, *S)`` of a padded array (a view)."""
    return xp[(slice(None), slice(None), *_interior(padding, size))]


def windows(xp: np.ndarray, geometry: Geometry, out_size: Sizes) -> np.ndarray:
    """View ``(N, C, *k, *So)`` of ``xp``: ``[n, c, i, j, y, x] = xp[n, c, ys+id, xs+jd]``.

    A strided view, no copy: strides of the kernel axes are the dilation, of the output
    axes the stride.
    """
    sn, sc, *spatial = xp.strides
    shape = (*xp.shape[:2], *geometry.kernel, *out_size)
    kernel_strides = tuple(t * d for t, d in zip(spatial, geometry.dilation, strict=True))
    out_strides = tuple(t * s for t, s in zip(spatial, geometry.stride, strict=True))
    return as_strided(xp, shape, (sn, sc, *kernel_strides, *out_strides), writeable=False)


# --------------------------------------------------------------------------- readable form
def conv_forward_readable(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, geometry: Geometry
) -> np.ndarray:
    """Equation ``CONV.forward`` as written: one term per kernel offset ``(i, j, …)``.

    x (N, C_in, *S), weight (C_out, C_in/G, *k), bias (C_out,) -> (N, C_out, *So)
    """
    n = x.shape[0]
    c_out, c_group = weight.shape[:2]
    groups, o_group = geometry.groups, c_out // geometry.groups
    out_size = geometry.output_size(x.shape[2:])
    xp = pad(x, geometry.padding)
    out = np.zeros((n, c_out, *out_size), dtype=x.dtype)
    everything = (slice(None), slice(None))
    for g in range(groups):
        xg = xp[:, g * c_group : (g + 1) * c_group]
        wg = weight[g * o_group : (g + 1) * o_group]
        for offset in geometry.offsets():
            # positions y·s + i·d for y = 0 … Ho−1 on every axis
            patch = xg[(*everything, *geometry.taps(offset, out_size))]
            out[:, g * o_group : (g + 1) * o_group] += np.einsum(
                "oc,nc...->no...", wg[(*everything, *offset)], patch
            )
    if bias is not None:
        out += bias.reshape(-1, *(1,) * len(out_size))
    return out


def conv_weight_grad_readable(
    delta: np.ndarray, x: np.ndarray, weight_shape: tuple[int, ...], geometry: Geometry
) -> np.ndarray:
    """Equation ``CONV.weight``: ∂C/∂W[o,c,i,j] = Σ_{n,y,x} δ[n,o,y,x]·xp[n, c, ys+id, xs+jd].

    delta (N, C_out, *So), x (N, C_in, *S) -> (C_out, C_in/G, *k)
    """
    c_out, c_group = weight_shape[:2]
    groups, o_group = geometry.groups, c_out // geometry.groups
    out_size = delta.shape[2:]
    xp = pad(x, geometry.padding)
    grad = np.zeros(weight_shape, dtype=delta.dtype)
    everything = (slice(None), slice(None))
    for g in range(groups):
        xg = xp[:, g * c_group : (g + 1) * c_group]
        dg = delta[:, g * o_group : (g + 1) * o_group]
        for offset in geometry.offsets():
            patch = xg[(*everything, *geometry.taps(offset, out_size))]
            # Σ over n and every output position (flattened: einsum keeps "..." axes)
            grad[(slice(g * o_group, (g + 1) * o_group), slice(None), *offset)] = np.einsum(
                "noq,ncq->oc", dg.reshape(*dg.shape[:2], -1), patch.reshape(*patch.shape[:2], -1)
            )
    return grad


def conv_input_grad_readable(
    delta: np.ndarray, weight: np.ndarray, size: Sizes, geometry: Geometry
) -> np.ndarray:
    """Equation ``CONV.input``: full correlation of the stride-dilated δ with the flipped kernel.

    δ is spread onto the padded input grid (``D[u = y·s] = δ[y]``, zeros between), padded
    by ``d(k−1)`` zeros in front, and correlated, with dilation ``d``, with the kernel
    flipped in every spatial axis and transposed in its channel axes; cropping the padding
    gives ∂C/∂x.

    delta (N, C_out, *So), weight (C_out, C_in/G, *k), size S -> (N, C_in, *S)
    """
    n, c_out, *out_size = delta.shape
    c_group = weight.shape[1]
    groups, o_group = geometry.groups, c_out // geometry.groups
    padded = tuple(s + a + b for s, (a, b) in zip(size, geometry.padding, strict=True))
    fronts = tuple(d * (k - 1) for d, k in zip(geometry.dilation, geometry.kernel, strict=True))
    # D: δ dilated by the stride, with d(k−1) zeros in front and enough behind to give Hp rows.
    spread_size = tuple(p + f for p, f in zip(padded, fronts, strict=True))
    spread = np.zeros((n, c_out, *spread_size), dtype=delta.dtype)
    everything = (slice(None), slice(None))
    spread[
        (
            *everything,
            *(
                slice(f, f + s * (o - 1) + 1, s)
                for f, s, o in zip(fronts, geometry.stride, out_size, strict=True)
            ),
        )
    ] = delta
    flipped = weight[:, :, ::-1, ::-1]  # the kernel flipped in its first two spatial axes …
    for axis in range(4, weight.ndim):  # … and in any further one (3-D: the last)
        flipped = np.flip(flipped, axis)
    grad_p = np.zeros((n, c_group * groups, *padded), dtype=delta.dtype)
    for g in range(groups):
        dg = spread[:, g * o_group : (g + 1) * o_group]
        wg = flipped[g * o_group : (g + 1) * o_group]
        for offset in geometry.offsets():
            window = tuple(
                slice(i * d, i * d + p)
                for i, d, p in zip(offset, geometry.dilation, padded, strict=True)
            )
            grad_p[:, g * c_group : (g + 1) * c_group] += np.einsum(
                "oc,no...->nc...", wg[(*everything, *offset)], dg[(*everything, *window)]
            )
    return unpad(grad_p, geometry.padding, size).copy()


# --------------------------------------------------------------------------- fast form
def im2col(x: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, Sizes]:
    """Columns ``(G, C_g·Πk, ΠSo·N)`` (contiguous) of the windows of ``x (N, C, *S)``.

    Row ``(c, i, j)`` and column ``(y, x, n)`` of block ``g`` hold
    ``xp[n, g·C_g + c, ys+id, xs+jd]`` (2-D; every axis alike), so the convolution of group
    ``g`` is ONE product ``W_g (C_out/G, C_g·Πk) @ cols[g]``. The batch axis is innermost:
    with stride 1 a window row ``(x, n)`` is one contiguous run of ``Wo·N`` numbers, so the
    copy (and col2im's additions) run over long rows instead of ``Wo``-long snippets.
    """
    n, c, *size = x.shape
    out_size = geometry.output_size(tuple(size))
    padded = tuple(s + a + b for s, (a, b) in zip(size, geometry.padding, strict=True))
    # batch-last padded input (C, *Sp, N); the interior written with explicit bounds
    xp = pooled_empty((c, *padded, n), x.dtype)
    xp.fill(0)
    xp[(slice(None), *_interior(geometry.padding, tuple(size)), slice(None))] = np.moveaxis(
        x, 0, -1
    )
    sc, *spatial, sn = xp.strides
    kernel_strides = tuple(t * d for t, d in zip(spatial, geometry.dilation, strict=True))
    out_strides = tuple(t * s for t, s in zip(spatial, geometry.stride, strict=True))
    view = as_strided(
        xp,
        (c, *geometry.kernel, *out_size, n),
        (sc, *kernel_strides, *out_strides, sn),
        writeable=False,
    )
    cols = pooled_empty(view.shape, x.dtype)
    np.copyto(cols, view)  # the one copy: every window, in GEMM order
    return cols.reshape(geometry.groups, -1, math.prod(out_size) * n), out_size


def im2col_per_sample(x: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Columns ``(N, G, C_g·Πk, ΠSo)`` (contiguous) of ``x (N, C, *S)``, sample-major: the
    entries of :func:`im2col` (``[n, g, k, q] = cols[g, k, q·N + n]``) for a GEMM batched
    over samples. Read straight from x (runs of ``Wo`` numbers): several times cheaper than
    transposing ``cols``, whose batch axis is innermost."""
    n, c = x.shape[:2]
    out_size = geometry.output_size(x.shape[2:])
    padded = tuple(s + a + b for s, (a, b) in zip(x.shape[2:], geometry.padding, strict=True))
    if any(a or b for a, b in geometry.padding):
        xp = pooled_empty((n, c, *padded), x.dtype)
        xp.fill(0)
        xp[(slice(None), slice(None), *_interior(geometry.padding, x.shape[2:]))] = x
    else:
        xp = x
    view = windows(xp, geometry, out_size)  # (N, C, *k, *So)
    cols = pooled_empty(view.shape, x.dtype)
    np.copyto(cols, view)
    return cols.reshape(n, geometry.groups, -1, math.prod(out_size))


#: A GEMM of a small matrix (≤ SMALL_GEMM entries, e.g. LeNet's first layer: 6 × 25) with a
#: long panel of ``Ho·Wo·N`` columns runs at a fraction of OpenBLAS's rate (it streams the
#: panel through cache once per output row); cut into PANEL-column slices it runs 2–3×
#: faster (measured on LeNet's conv layers, float32, one thread). Larger GEMMs go whole.
SMALL_GEMM, PANEL = 1024, 4096


def _panel_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a (G, M, K) @ b (G, K, P)``, in column panels of ``b`` when ``a`` is small."""
    g, m, k = a.shape
    p = b.shape[2]
    dtype = np.result_type(a, b)
    out = pooled_empty((g, m, p), dtype)
    if m * k > SMALL_GEMM or p <= PANEL:
        return np.matmul(a, b, out=out)
    for start in range(0, p, PANEL):
        np.matmul(a, b[:, :, start : start + PANEL], out=out[:, :, start : start + PANEL])
    return out


def _panel_matmul_t(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a (G, M, P) @ b (G, K, P)ᵀ``: a long reduction, accumulated over panels of ``P``
    when the ``M × K`` result is small."""
    g, m, p = a.shape
    k = b.shape[1]
    if m * k > SMALL_GEMM or p <= PANEL:
        return np.matmul(a, b.transpose(0, 2, 1))
    out = np.zeros((g, m, k), dtype=np.result_type(a, b))
    for start in range(0, p, PANEL):
        part = slice(start, start + PANEL)
        out += np.matmul(a[:, :, part], b[:, :, part].transpose(0, 2, 1))
    return out


def conv_forward_fast(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, geometry: Geometry
) -> tuple[np.ndarray, np.ndarray]:
    """Equation ``CONV.fast``: im2col and one GEMM per group. Returns ``(out, cols)``.

    x (N, C_in, *S) -> out (N, C_out, *So); ``cols`` is kept for the weight gradient.
    """
    n = x.shape[0]
    c_out = weight.shape[0]
    groups = geometry.groups
    cols, out_size = im2col(x, geometry)
    w_mat = weight.reshape(groups, c_out // groups, -1)
    prod = _panel_matmul(w_mat, cols).reshape(c_out, *out_size, n)  # (C_out, *So, N)
    out = pooled_empty((n, c_out, *out_size), x.dtype)
    np.copyto(out, np.moveaxis(prod, -1, 0))
    if bias is not None:
        out += bias.reshape(-1, *(1,) * len(out_size))
    return out, cols


def _delta_rows(delta: np.ndarray, groups: int) -> np.ndarray:
    """δ ``(N, C_out, *So)`` as ``(G, C_out/G, ΠSo·N)``, the column order of ``cols``."""
    n, c_out, *out_size = delta.shape
    rows = pooled_empty((c_out, *out_size, n), delta.dtype)
    np.copyto(rows, np.moveaxis(delta, 0, -1))
    return rows.reshape(groups, c_out // groups, math.prod(out_size) * n)


def conv_weight_grad_fast(
    delta: np.ndarray, cols: np.ndarray, weight_shape: tuple[int, ...], geometry: Geometry
) -> np.ndarray:
    """Equation ``CONV.fast``: ``∂C/∂W_g = δ_g cols_gᵀ`` — one GEMM per group."""
    rows = _delta_rows(delta, geometry.groups)
    return _panel_matmul_t(rows, cols).reshape(weight_shape)


def conv_input_grad_fast(
    delta: np.ndarray, weight: np.ndarray, size: Sizes, geometry: Geometry
) -> np.ndarray:
    """Equation ``CONV.fast``: ``dcols_g = W_gᵀ δ_g`` then col2im (add back per kernel offset).

    delta (N, C_out, *So), weight (C_out, C_in/G, *k) -> (N, C_in, *S)
    """
    n, c_out, *out_size = delta.shape
    c_group = weight.shape[1]
    groups = geometry.groups
    rows = _delta_rows(delta, groups)
    w_mat = weight.reshape(groups, c_out // groups, -1)
    dcols = _panel_matmul(w_mat.transpose(0, 2, 1), rows)  # (G, C_g·Πk, ΠSo·N)
    shape = (groups * c_group, *geometry.kernel, *out_size, n)
    return col2im(dcols.reshape(shape), size, geometry)


def col2im(dcols: np.ndarray, size: Sizes, geometry: Geometry) -> np.ndarray:
    """The adjoint of :func:`im2col`: add every column entry back onto the input position
    it was read from, one kernel offset ``(i, j, …)`` at a time, and crop the padding.

    dcols (*lead, C, *k, *So, N) -> (*lead, N, C, *S); leading axes (a V axis of products)
    ride along.
    """
    d = len(geometry.kernel)
    shape = dcols.shape
    lead, c, out_size, n = shape[: -2 * d - 2], shape[-2 * d - 2], shape[-d - 1 : -1], shape[-1]
    padded = tuple(s + a + b for s, (a, b) in zip(size, geometry.padding, strict=True))
    grad_p = pooled_empty((*lead, c, *padded, n), dcols.dtype)  # batch-last, as cols
    grad_p.fill(0)
    for offset in geometry.offsets():
        spot = (Ellipsis, *geometry.taps(offset, out_size), slice(None))
        grad_p[spot] += dcols[(Ellipsis, *offset, *(slice(None),) * (d + 1))]
    grad = pooled_empty((*lead, n, c, *size), dcols.dtype)
    inner = grad_p[(Ellipsis, *_interior(geometry.padding, tuple(size)), slice(None))]
    np.copyto(grad, np.moveaxis(inner, -1, -d - 2))
    return grad
