"""2-D convolution arithmetic: geometry, a readable and a fast (im2col + GEMM) form.

Layout NCHW, weight ``(C_out, C_in/groups, kH, kW)`` as ``torch.nn.Conv2d``. With
padding ``p`` (top/left; bottom/right may differ for ``"same"``), stride ``s`` and
dilation ``d`` on each axis, output position ``y`` reads padded input rows
``y·s + i·d`` for kernel rows ``i = 0 … k−1``::

    out[n, o, y, x] = b[o] + Σ_{c, i, j} W[o, c, i, j] · xp[n, g·C_g + c, y·s + i·d, x·s + j·d]

(``g = o // (C_out/groups)``; ``xp`` the zero-padded input). Every function here comes
in two forms checked against each other by the tests: ``*_readable`` writes these sums
with a loop over kernel offsets, ``*_fast`` gathers all windows into one matrix
("im2col") and multiplies once. Derivations: ``docs/convolution.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided

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


@dataclass(frozen=True)
class Geometry:
    """Kernel, stride, per-side padding ``((top, bottom), (left, right))``, dilation, groups."""

    kernel: Pair
    stride: Pair = (1, 1)
    padding: tuple[Pair, Pair] = ((0, 0), (0, 0))
    dilation: Pair = (1, 1)
    groups: int = 1

    def output_size(self, size: Pair) -> Pair:
        """``⌊(H + p_top + p_bottom − d(k−1) − 1)/s⌋ + 1`` per axis (equation ``CONV.forward``)."""
        out = []
        for axis in range(2):
            span = (
                size[axis] + sum(self.padding[axis]) - self.dilation[axis] * (self.kernel[axis] - 1)
            )
            out.append((span - 1) // self.stride[axis] + 1 if span >= 1 else 0)
        return out[0], out[1]


def pad(x: np.ndarray, padding: tuple[Pair, Pair], value: float = 0.0) -> np.ndarray:
    """A padded copy of ``x (N, C, H, W)``; the interior is written with explicit bounds.

    (A slice ``[p:-p]`` would be empty for ``p = 0``; ``[p : p + H]`` never is.)
    """
    (top, bottom), (left, right) = padding
    n, c, h, w = x.shape
    out = np.full((n, c, h + top + bottom, w + left + right), value, dtype=x.dtype)
    out[:, :, top : top + h, left : left + w] = x
    return out


def unpad(xp: np.ndarray, padding: tuple[Pair, Pair], size: Pair) -> np.ndarray:
    """The interior ``(N, C, H, W)`` of a padded array (a view)."""
    (top, _), (left, _) = padding
    return xp[:, :, top : top + size[0], left : left + size[1]]


def windows(xp: np.ndarray, geometry: Geometry, out_size: Pair) -> np.ndarray:
    """View ``(N, C, kH, kW, Ho, Wo)`` of ``xp``: ``[n, c, i, j, y, x] = xp[n, c, ys+id, xs+jd]``.

    A strided view, no copy: strides of the kernel axes are the dilation, of the output
    axes the stride.
    """
    sn, sc, sh, sw = xp.strides
    (dh, dw), (th, tw) = geometry.dilation, geometry.stride
    shape = (*xp.shape[:2], *geometry.kernel, *out_size)
    return as_strided(xp, shape, (sn, sc, sh * dh, sw * dw, sh * th, sw * tw), writeable=False)


# --------------------------------------------------------------------------- readable form
def conv_forward_readable(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, geometry: Geometry
) -> np.ndarray:
    """Equation ``CONV.forward`` as written: one term per kernel offset ``(i, j)``.

    x (N, C_in, H, W), weight (C_out, C_in/G, kH, kW), bias (C_out,) -> (N, C_out, Ho, Wo)
    """
    n, _, h, w = x.shape
    c_out, c_group, kh, kw = weight.shape
    groups, o_group = geometry.groups, c_out // geometry.groups
    ho, wo = geometry.output_size((h, w))
    (sh, sw), (dh, dw) = geometry.stride, geometry.dilation
    xp = pad(x, geometry.padding)
    out = np.zeros((n, c_out, ho, wo), dtype=x.dtype)
    for g in range(groups):
        xg = xp[:, g * c_group : (g + 1) * c_group]
        wg = weight[g * o_group : (g + 1) * o_group]
        for i in range(kh):
            for j in range(kw):
                # rows y·s + i·d for y = 0 … Ho−1
                patch = xg[:, :, i * dh : i * dh + sh * (ho - 1) + 1 : sh][
                    :, :, :, j * dw : j * dw + sw * (wo - 1) + 1 : sw
                ]
                out[:, g * o_group : (g + 1) * o_group] += np.einsum(
                    "oc,ncyx->noyx", wg[:, :, i, j], patch
                )
    if bias is not None:
        out += bias[:, None, None]
    return out


def conv_weight_grad_readable(
    delta: np.ndarray, x: np.ndarray, weight_shape: tuple[int, ...], geometry: Geometry
) -> np.ndarray:
    """Equation ``CONV.weight``: ∂C/∂W[o,c,i,j] = Σ_{n,y,x} δ[n,o,y,x]·xp[n, c, ys+id, xs+jd].

    delta (N, C_out, Ho, Wo), x (N, C_in, H, W) -> (C_out, C_in/G, kH, kW)
    """
    c_out, c_group, kh, kw = weight_shape
    groups, o_group = geometry.groups, c_out // geometry.groups
    _, _, ho, wo = delta.shape
    (sh, sw), (dh, dw) = geometry.stride, geometry.dilation
    xp = pad(x, geometry.padding)
    grad = np.zeros(weight_shape, dtype=delta.dtype)
    for g in range(groups):
        xg = xp[:, g * c_group : (g + 1) * c_group]
        dg = delta[:, g * o_group : (g + 1) * o_group]
        for i in range(kh):
            for j in range(kw):
                patch = xg[:, :, i * dh : i * dh + sh * (ho - 1) + 1 : sh][
                    :, :, :, j * dw : j * dw + sw * (wo - 1) + 1 : sw
                ]
                grad[g * o_group : (g + 1) * o_group, :, i, j] = np.einsum(
                    "noyx,ncyx->oc", dg, patch
                )
    return grad


def conv_input_grad_readable(
    delta: np.ndarray, weight: np.ndarray, size: Pair, geometry: Geometry
) -> np.ndarray:
    """Equation ``CONV.input``: full correlation of the stride-dilated δ with the flipped kernel.

    δ is spread onto the padded input grid (``D[u = y·s] = δ[y]``, zeros between), padded
    by ``d(k−1)`` zeros in front, and correlated, with dilation ``d``, with the kernel
    flipped in both spatial axes and transposed in its channel axes; cropping the padding
    gives ∂C/∂x.

    delta (N, C_out, Ho, Wo), weight (C_out, C_in/G, kH, kW), size (H, W) -> (N, C_in, H, W)
    """
    n, c_out, ho, wo = delta.shape
    _, c_group, kh, kw = weight.shape
    groups, o_group = geometry.groups, c_out // geometry.groups
    (sh, sw), (dh, dw) = geometry.stride, geometry.dilation
    (top, bottom), (left, right) = geometry.padding
    hp, wp = size[0] + top + bottom, size[1] + left + right
    front_h, front_w = dh * (kh - 1), dw * (kw - 1)
    # D: δ dilated by the stride, with d(k−1) zeros in front and enough behind to give Hp rows.
    spread = np.zeros((n, c_out, hp + front_h, wp + front_w), dtype=delta.dtype)
    spread[
        :, :, front_h : front_h + sh * (ho - 1) + 1 : sh, front_w : front_w + sw * (wo - 1) + 1 : sw
    ] = delta
    flipped = weight[:, :, ::-1, ::-1]
    grad_p = np.zeros((n, c_group * groups, hp, wp), dtype=delta.dtype)
    for g in range(groups):
        dg = spread[:, g * o_group : (g + 1) * o_group]
        wg = flipped[g * o_group : (g + 1) * o_group]
        for i in range(kh):
            for j in range(kw):
                patch = dg[:, :, i * dh : i * dh + hp, j * dw : j * dw + wp]
                grad_p[:, g * c_group : (g + 1) * c_group] += np.einsum(
                    "oc,noyx->ncyx", wg[:, :, i, j], patch
                )
    return unpad(grad_p, geometry.padding, size).copy()


# --------------------------------------------------------------------------- fast form
def im2col(x: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, Pair]:
    """Columns ``(G, C_g·kH·kW, Ho·Wo·N)`` (contiguous) of the windows of ``x (N, C, H, W)``.

    Row ``(c, i, j)`` and column ``(y, x, n)`` of block ``g`` hold
    ``xp[n, g·C_g + c, ys+id, xs+jd]``, so the convolution of group ``g`` is ONE product
    ``W_g (C_out/G, C_g·kH·kW) @ cols[g]``. The batch axis is innermost: with stride 1 a
    window row ``(x, n)`` is one contiguous run of ``Wo·N`` numbers, so the copy (and
    col2im's additions) run over long rows instead of ``Wo``-long snippets.
    """
    n, c, h, w = x.shape
    out_size = geometry.output_size((h, w))
    (top, bottom), (left, right) = geometry.padding
    # batch-last padded input (C, Hp, Wp, N); the interior written with explicit bounds
    xp = np.zeros((c, h + top + bottom, w + left + right, n), dtype=x.dtype)
    xp[:, top : top + h, left : left + w, :] = x.transpose(1, 2, 3, 0)
    sc, sh, sw, sn = xp.strides
    (dh, dw), (th, tw) = geometry.dilation, geometry.stride
    view = as_strided(
        xp,
        (c, *geometry.kernel, *out_size, n),
        (sc, sh * dh, sw * dw, sh * th, sw * tw, sn),
        writeable=False,
    )
    cols = np.empty(view.shape, dtype=x.dtype)
    np.copyto(cols, view)  # the one copy: every window, in GEMM order
    return cols.reshape(geometry.groups, -1, out_size[0] * out_size[1] * n), out_size


#: A GEMM of a small matrix (≤ SMALL_GEMM entries, e.g. LeNet's first layer: 6 × 25) with a
#: long panel of ``Ho·Wo·N`` columns runs at a fraction of OpenBLAS's rate (it streams the
#: panel through cache once per output row); cut into PANEL-column slices it runs 2–3×
#: faster (measured on LeNet's conv layers, float32, one thread). Larger GEMMs go whole.
SMALL_GEMM, PANEL = 1024, 4096


def _panel_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a (G, M, K) @ b (G, K, P)``, in column panels of ``b`` when ``a`` is small."""
    g, m, k = a.shape
    p = b.shape[2]
    if m * k > SMALL_GEMM or p <= PANEL:
        return np.matmul(a, b)
    out = np.empty((g, m, p), dtype=np.result_type(a, b))
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

    x (N, C_in, H, W) -> out (N, C_out, Ho, Wo); ``cols`` is kept for the weight gradient.
    """
    n = x.shape[0]
    c_out = weight.shape[0]
    groups = geometry.groups
    cols, (ho, wo) = im2col(x, geometry)
    w_mat = weight.reshape(groups, c_out // groups, -1)
    prod = _panel_matmul(w_mat, cols).reshape(c_out, ho, wo, n)  # (C_out, Ho, Wo, N)
    out = np.empty((n, c_out, ho, wo), dtype=x.dtype)
    np.copyto(out, prod.transpose(3, 0, 1, 2))
    if bias is not None:
        out += bias[:, None, None]
    return out, cols


def _delta_rows(delta: np.ndarray, groups: int) -> np.ndarray:
    """δ ``(N, C_out, Ho, Wo)`` as ``(G, C_out/G, Ho·Wo·N)``, the column order of ``cols``."""
    n, c_out, ho, wo = delta.shape
    rows = np.empty((c_out, ho, wo, n), dtype=delta.dtype)
    np.copyto(rows, delta.transpose(1, 2, 3, 0))
    return rows.reshape(groups, c_out // groups, ho * wo * n)


def conv_weight_grad_fast(
    delta: np.ndarray, cols: np.ndarray, weight_shape: tuple[int, ...], geometry: Geometry
) -> np.ndarray:
    """Equation ``CONV.fast``: ``∂C/∂W_g = δ_g cols_gᵀ`` — one GEMM per group."""
    rows = _delta_rows(delta, geometry.groups)
    return _panel_matmul_t(rows, cols).reshape(weight_shape)


def conv_input_grad_fast(
    delta: np.ndarray, weight: np.ndarray, size: Pair, geometry: Geometry
) -> np.ndarray:
    """Equation ``CONV.fast``: ``dcols_g = W_gᵀ δ_g`` then col2im (add back per kernel offset).

    delta (N, C_out, Ho, Wo), weight (C_out, C_in/G, kH, kW) -> (N, C_in, H, W)
    """
    n, c_out, ho, wo = delta.shape
    _, c_group, kh, kw = weight.shape
    groups = geometry.groups
    rows = _delta_rows(delta, groups)
    w_mat = weight.reshape(groups, c_out // groups, -1)
    dcols = _panel_matmul(w_mat.transpose(0, 2, 1), rows)  # (G, C_g·kH·kW, Ho·Wo·N)
    return col2im(dcols.reshape(groups * c_group, kh, kw, ho, wo, n), size, geometry)


def col2im(dcols: np.ndarray, size: Pair, geometry: Geometry) -> np.ndarray:
    """The adjoint of :func:`im2col`: add every column entry back onto the input position
    it was read from, one kernel offset ``(i, j)`` at a time, and crop the padding.

    dcols (*lead, C, kH, kW, Ho, Wo, N) -> (*lead, N, C, H, W); leading axes (a V axis of
    products) ride along.
    """
    *lead, c, kh, kw, ho, wo, n = dcols.shape
    (sh, sw), (dh, dw) = geometry.stride, geometry.dilation
    (top, bottom), (left, right) = geometry.padding
    hp, wp = size[0] + top + bottom, size[1] + left + right
    grad_p = np.zeros((*lead, c, hp, wp, n), dtype=dcols.dtype)  # batch-last, as cols
    for i in range(kh):
        for j in range(kw):
            rows_i = slice(i * dh, i * dh + sh * (ho - 1) + 1, sh)
            cols_j = slice(j * dw, j * dw + sw * (wo - 1) + 1, sw)
            grad_p[..., rows_i, cols_j, :] += dcols[..., i, j, :, :, :]
    grad = np.empty((*lead, n, c, *size), dtype=dcols.dtype)
    inner = grad_p[..., top : top + size[0], left : left + size[1], :]
    np.copyto(grad, np.moveaxis(inner, -1, -4))
    return grad
