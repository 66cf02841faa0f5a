"""The fast training step of Conv1d/Conv2d (:mod:`manual_bp.layers.steps`): the same
``CONV.fast`` arithmetic as :mod:`manual_bp.layers._im2col`, in preallocated buffers, with
the GEMM operands laid out so that no product needs a transposed copy.

Layout. The columns ``U`` are ``(C_in, kH, kW, N, Ho, Wo)``, i.e. per group a matrix
``U_g (C_g·kH·kW, N·Ho·Wo)`` whose column ``(n, y, x)`` is sample n's window at ``(y, x)``.
Sample n's block ``U_g[:, n]`` is a ``(C_g·kH·kW, Ho·Wo)`` matrix with a leading dimension
``N·Ho·Wo``, which BLAS takes as it is::

    forward    out[n]_g = W_g U_g[:, n]          per-sample GEMMs written straight into NCHW
    backward   D_g = δ as (C_out/G, N·Ho·Wo)     one copy of δ (contiguous Ho·Wo runs)
               ∂C/∂W_g = D_g U_gᵀ                ONE GEMM over the whole batch (CONV.weight)
               ∂C/∂b = D 1                       one GEMV (a reduction over the batch)
               dU_g = W_gᵀ D_g                   ONE GEMM, into U's buffer (U is spent)
               ∂C/∂x = col2im(dU)                per sample: add back per kernel offset

(measured on LeNet's and cnn-bn's layers, float32, one thread: the per-sample forward is as
fast as one long GEMM plus the copy into NCHW it would need; column panels bought nothing in
this layout). A 1×1 stride-1 unpadded convolution skips im2col: ``U`` is x itself, the
forward and ∂C/∂x are per-sample GEMMs on x's and δ's own memory, and only the weight
gradient needs x laid ``(C, N·H·W)`` (one copy, beside δ's).

Threads. The forward is per-sample work end to end: each thread takes a slice of the batch
and runs its im2col (with the padded copy of x), its per-sample products ``W_g U_g[:, n]``
and its bias additions in one hand-off, with BLAS on one thread (one_blas_thread): a
per-sample product gives the same bits whichever thread runs it. The backward runs
:data:`UNITS` shape-fixed chunks of samples (``fixed_slices``), each chunk's copy of δ,
partial weight/bias gradients and ``dU`` product in one hand-off on one BLAS thread; the
partials are summed in chunk order (a reduction over a slicing fixed by N alone), col2im
follows per sample. Nothing depends on the thread count: 1 and 2 threads give the same bits.
Measured (float32, two busy cores): BLAS's two threads on the first layer's weight gradient
``(32 × 65536)·(65536 × 27)`` took 3.9 ms against 1.7 on one; split over our threads each
chunk is ~0.4 ms. A 1×1 convolution keeps whole products (BLAS's threads).

The price of the layout: im2col's and col2im's innermost runs are ``Wo`` numbers long (a
batch-last layout, :func:`~manual_bp.layers._im2col.im2col`, has runs of ``Wo·N`` at stride
1), so on LeNet's small layers these copies cost 2–3× the batch-last ones; the transposed
copies the batch-last layout needs (the output into NCHW, δ into it) cost more on cnn-bn.
col2im adds into a channel-major ``(C, N, Hp, Wp)`` buffer, the order of ``dU``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from manual_bp._threads import MIN_ELEMENTS, fixed_slices, one_blas_thread, parallel_rows
from manual_bp.layers.steps import shape_buffers

__all__ = ["UNITS", "ConvStep"]

#: The backward's work units: the batch cut into this many chunks of ``⌈N/UNITS⌉`` samples,
#: a slicing fixed by the batch size alone (see :meth:`ConvStep._backward_chunks`).
UNITS = 4


class ConvStep:
    """The fast form of :class:`~manual_bp.layers.convolution.Conv2d` and ``Conv1d``
    (a 1-D input ``(N, C, L)`` is worked on as ``(N, C, 1, L)``)."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.geometry = g = layer.geometry
        self.pointwise = g.kernel == (1, 1) and g.stride == (1, 1) and not any(map(any, g.padding))
        self._buffers: dict[tuple, dict[str, Any]] = {}
        self.x: np.ndarray | None = None
        self.buf: dict[str, Any] = {}

    # ------------------------------------------------------------------ buffers
    def _make(self, x2: np.ndarray) -> dict[str, Any]:
        g = self.geometry
        n, c, h, w = x2.shape
        ho, wo = g.output_size((h, w))
        (top, bottom), (left, right) = g.padding
        kh, kw = g.kernel
        dt = x2.dtype
        c_out = self.layer.out_channels
        padded = any(map(any, g.padding))
        chunks = fixed_slices(n, max(1, -(-n // UNITS)))
        return {
            "size": (h, w),
            "out_size": (ho, wo),
            # zero borders written once; each step copies the interior
            "xp": np.zeros((n, c, h + top + bottom, w + left + right), dt) if padded else None,
            "cols": np.empty((c, kh, kw, n, ho, wo), dt),
            "out": np.empty((n, c_out, ho, wo), dt),
            "delta": np.empty((c_out, n, ho, wo), dt),
            # channel-major like dU, so col2im's additions read and write in one order
            "dxp": np.empty((c, n, h + top + bottom, w + left + right), dt),
            "dx": np.empty((n, c, h, w), dt),
            "ones": np.ones(n * ho * wo, dt),
            # per-chunk partial gradients, summed in chunk order (a shape-fixed reduction)
            "chunks": chunks,
            "gw_parts": np.empty((len(chunks), *self.layer.params["weight"].shape), dt),
            "gb_parts": np.empty((len(chunks), c_out), dt),
        }

    # ------------------------------------------------------------------ forward
    def forward(self, x: np.ndarray) -> np.ndarray:
        """``CONV.fast``: im2col into ``U``, then ``out[n]_g = W_g U_g[:, n] + b``, per slice
        of samples (one hand-off each, products on one BLAS thread)."""
        layer = self.layer
        x2 = layer._as_2d(x)
        if x is not self.x and (self.x is None or self.x.shape != x.shape):
            self.buf = shape_buffers(self._buffers, x2.shape, lambda: self._make(x2))
        self.x, self.x2 = x, x2
        buf, groups = self.buf, self.geometry.groups
        n = x2.shape[0]
        weight = layer._as_2d(layer.params["weight"])
        w_mat = weight.reshape(groups, weight.shape[0] // groups, -1)  # (G, O_g, K_g)
        out, bias = buf["out"], layer.params.get("bias")
        out_g = out.reshape(n, groups, w_mat.shape[1], -1)  # (N, G, O_g, Ho·Wo)
        if self.pointwise:
            x_g = x2.reshape(n, groups, w_mat.shape[2], -1)  # (N, G, C_g, H·W)
            for g in range(groups):
                np.matmul(w_mat[g], x_g[:, g], out=out_g[:, g])
        else:
            cols_g = buf["cols"].reshape(groups, w_mat.shape[2], n, -1)  # (G, K_g, N, Ho·Wo)
            b = None if bias is None else bias[:, None, None]

            def forward_rows(rows: slice) -> None:
                self._im2col(rows)
                for g in range(groups):
                    u = cols_g[g][:, rows].transpose(1, 0, 2)
                    np.matmul(w_mat[g], u, out=out_g[rows, g])
                if b is not None:
                    np.add(out[rows], b, out=out[rows])

            with one_blas_thread():
                parallel_rows(forward_rows, n, cols_g[0, :, 0].size + out[0].size)
            return layer._from_2d(out)
        if bias is not None:
            b = bias[:, None, None]

            def add_bias(rows: slice) -> None:
                np.add(out[rows], b, out=out[rows])

            parallel_rows(add_bias, n, out[0].size)
        return layer._from_2d(out)

    def _im2col(self, rows: slice) -> None:
        """Sample rows ``rows`` of ``U``: the padded copy of x, then ONE strided copy of all
        their windows (``[c, i, j, n, y, x] = xp[n, c, y·s + i·d, x·s + j·d]``)."""
        g, buf = self.geometry, self.buf
        xp = buf["xp"]
        if xp is None:
            src = self.x2[rows]
        else:
            (h, w), (top, _), (left, _) = buf["size"], *g.padding
            src = xp[rows]
            src[:, :, top : top + h, left : left + w] = self.x2[rows]
        sn, sc, sh, sw = src.strides
        (dh, dw), (th, tw) = g.dilation, g.stride
        cols = buf["cols"][:, :, :, rows]
        view = as_strided(
            src, cols.shape, (sc, sh * dh, sw * dw, sn, sh * th, sw * tw), writeable=False
        )
        np.copyto(cols, view)

    # ------------------------------------------------------------------ backward
    def backward(
        self, dout: np.ndarray, grads: dict[str, np.ndarray], need_dx: bool
    ) -> np.ndarray | None:
        """``LAYER.conv2d`` / ``LAYER.conv1d``: ∂C/∂W and ∂C/∂b as one GEMM and one GEMV
        over the batch, ∂C/∂x by ``W_gᵀ D_g`` and col2im (``CONV.fast``)."""
        layer, buf, groups = self.layer, self.buf, self.geometry.groups
        delta = layer._as_2d(dout)  # (N, C_out, Ho, Wo)
        x2 = self.x2
        n, c_out = delta.shape[:2]
        weight = layer._as_2d(layer.params["weight"])
        o_g = c_out // groups
        w_mat = weight.reshape(groups, o_g, -1)
        k_g = w_mat.shape[2]
        d_all = buf["delta"]  # (C_out, N, Ho, Wo)
        cols = buf["cols"]

        if not self.pointwise:
            self._backward_chunks(delta, w_mat, grads, need_dx)
            return layer._from_2d(buf["dx"]) if need_dx else None

        def lay_out(rows: slice) -> None:  # U = x laid (C, N, H, W), δ as (C_out, N, H, W)
            np.copyto(d_all[:, rows], delta[rows].transpose(1, 0, 2, 3))
            np.copyto(cols[:, 0, 0, rows], x2[rows].transpose(1, 0, 2, 3))

        parallel_rows(lay_out, n, delta[0].size + x2[0].size)
        d_mat = d_all.reshape(groups, o_g, -1)  # (G, O_g, N·H·W)
        u_mat = cols.reshape(groups, k_g, -1)  # (G, K_g, N·H·W)
        np.matmul(d_mat, u_mat.transpose(0, 2, 1), out=grads["weight"].reshape(groups, o_g, k_g))
        if "bias" in grads:
            np.dot(d_all.reshape(c_out, -1), buf["ones"], out=grads["bias"])
        if not need_dx:
            return None
        dx = buf["dx"]
        d_g = delta.reshape(n, groups, o_g, -1)
        dx_g = dx.reshape(n, groups, k_g, -1)
        for g in range(groups):
            np.matmul(w_mat[g].T, d_g[:, g], out=dx_g[:, g])
        return layer._from_2d(dx)

    def _backward_chunks(
        self, delta: np.ndarray, w_mat: np.ndarray, grads: dict[str, np.ndarray], need_dx: bool
    ) -> None:
        """The im2col backward in :data:`UNITS` chunks of samples, all of a chunk's passes
        in one hand-off, its products on one BLAS thread: δ laid ``(C_out, n, Ho, Wo)``; the
        chunk's partial ``∂C/∂W_g = D_g U_gᵀ`` and ``∂C/∂b = D 1``; ``dU_g = W_gᵀ D_g`` over
        U's columns (U is spent); then col2im over the thread's whole run of samples (its
        calls are one per kernel offset: fewer, longer ones). The partials are summed in
        chunk order: the slicing and every product's shape depend on the batch size alone,
        never on the thread count, so 1 and 2 threads give the same bits."""
        buf, groups = self.buf, self.geometry.groups
        n, c_out = delta.shape[:2]
        o_g, k_g = w_mat.shape[1:]
        d_all = buf["delta"]  # (C_out, N, Ho, Wo)
        d_g = d_all.reshape(groups, o_g, n, -1)  # (G, O_g, N, Ho·Wo)
        u_g = buf["cols"].reshape(groups, k_g, n, -1)  # (G, K_g, N, Ho·Wo)
        gw_parts = buf["gw_parts"].reshape(-1, groups, o_g, k_g)
        gb_parts, ones = buf["gb_parts"], buf["ones"]
        has_bias = "bias" in grads
        chunks = buf["chunks"]

        def backward_chunks(part: slice) -> None:
            if part.stop <= part.start:
                return
            for c in range(len(chunks))[part]:
                rows = chunks[c]
                size = rows.stop - rows.start
                np.copyto(d_all[:, rows], delta[rows].transpose(1, 0, 2, 3))
                for g in range(groups):
                    d = d_g[g][:, rows].reshape(o_g, -1)
                    u = u_g[g][:, rows].reshape(k_g, -1)
                    np.matmul(d, u.T, out=gw_parts[c, g])
                    if need_dx:
                        np.matmul(w_mat[g].T, d, out=u)  # dU over U's buffer
                if has_bias:
                    np.dot(d_all[:, rows].reshape(c_out, -1), ones[: size * d_g.shape[3]],
                           out=gb_parts[c])  # fmt: skip
            if need_dx:  # over the whole run of samples: col2im's calls are per kernel offset
                self._col2im(slice(chunks[part.start].start, chunks[part.stop - 1].stop))

        with one_blas_thread():
            parallel_rows(backward_chunks, len(chunks), MIN_ELEMENTS)
        np.sum(buf["gw_parts"], axis=0, out=grads["weight"])
        if has_bias:
            np.sum(gb_parts, axis=0, out=grads["bias"])

    def _col2im(self, rows: slice) -> None:
        """Sample rows ``rows`` of ∂C/∂x: every entry of ``dU`` added back onto the padded
        position it was read from, one kernel offset at a time (a fixed order), then the
        interior copied out (sample-major)."""
        g, buf = self.geometry, self.buf
        (h, w), (ho, wo) = buf["size"], buf["out_size"]
        (sh, sw), (dh, dw) = g.stride, g.dilation
        (top, _), (left, _) = g.padding
        dcols = buf["cols"]
        part = buf["dxp"][:, rows]  # (C, n, Hp, Wp)
        part.fill(0)
        for i in range(g.kernel[0]):
            rows_i = slice(i * dh, i * dh + sh * (ho - 1) + 1, sh)
            for j in range(g.kernel[1]):
                cols_j = slice(j * dw, j * dw + sw * (wo - 1) + 1, sw)
                spot = part[:, :, rows_i, cols_j]
                np.add(spot, dcols[:, i, j, rows], out=spot)
        inner = part[:, :, top : top + h, left : left + w]
        np.copyto(buf["dx"][rows], inner.transpose(1, 0, 2, 3))
