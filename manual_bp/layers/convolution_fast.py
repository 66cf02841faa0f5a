"""The fast training step of Conv1d/Conv2d/Conv3d (:mod:`manual_bp.layers.steps`): the same
``CONV.fast`` arithmetic as :mod:`manual_bp.layers._im2col`, in preallocated buffers, with
the GEMM operands laid out so that no product needs a transposed copy. Written for any
number of spatial axes (below in 2-D: ``(kH, kW)``, ``(Ho, Wo)`` stand for every axis).

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

Threads: im2col (with the padded copy of x), the copies of δ (and x) and col2im are
per-sample work, run over slices of the batch by :func:`~manual_bp._threads.parallel_rows`
(bit-identical on any slicing: each output element is written by its own sample's pass in a
fixed kernel-offset order). The GEMMs stay whole for BLAS; the weight and bias gradients
are one call each, never split. A small layer's forward (:data:`SMALL_SAMPLE_FLOPS`) is the
exception: each thread runs its samples' im2col, per-sample products (BLAS on one thread,
so a sample's product has the same bits on whichever thread runs it) and bias in one
hand-off.

The price of the layout: im2col's and col2im's innermost runs are ``Wo`` numbers long (a
batch-last layout, :func:`~manual_bp.layers._im2col.im2col`, has runs of ``Wo·N`` at stride
1), so on LeNet's small layers these copies cost 2–3× the batch-last ones; the transposed
copies the batch-last layout needs (the output into NCHW, δ into it) cost more on cnn-bn.
col2im adds into a channel-major ``(C, N, Hp, Wp)`` buffer, the order of ``dU``. For small
inputs (:data:`BATCH_LAST_SIZE`, LeNet's) ∂C/∂x goes batch-last instead: δ is copied once
more as ``(C_out, Ho, Wo, N)``, ``dU = W_gᵀ D_g`` comes out ``(C, kH, kW, Ho, Wo, N)`` into
U's buffer, col2im adds runs of N numbers into ``(C, Hp, Wp, N)`` (split over channels: each
element still added by one thread in a fixed order) and the interior is copied back to NCHW
(split over samples). A strided layer (:data:`PHASE_GROWTH`) adds by stride phases instead
(:mod:`~manual_bp.layers.convolution_phases`): δ is copied a second time onto the phase
spans, ``dU`` comes out on them (over U's storage), each kernel offset adds one shifted
contiguous run per channel (split over channels) and one copy per phase interleaves ∂C/∂x
(split over samples).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from manual_bp._threads import one_blas_thread, parallel_rows
from manual_bp.layers._im2col import _interior
from manual_bp.layers.convolution_phases import phase_plan
from manual_bp.layers.steps import shape_buffers

__all__ = ["BATCH_LAST_SIZE", "PHASE_GROWTH", "SMALL_SAMPLE_FLOPS", "ConvStep"]

#: FLOPs of one sample's forward product ``W_g U_g[:, n]`` below which each thread runs its
#: samples' im2col, products and bias in one hand-off on one BLAS thread (LeNet's layers,
#: cnn-bn's first: 0.2–1.8 MFLOP; cnn-bn's first forward 1.31 ms against 1.47, LeNet's
#: second 0.50 against 0.84, two threads, same process). Above it (cnn-bn's second layer,
#: 8.3 MFLOP) im2col is split and the products go whole to BLAS's threads: 6.0–6.4 ms
#: against 8.0–8.5 split over our threads (float32, two threads, busy machine).
SMALL_SAMPLE_FLOPS = 1 << 22

#: Input elements per sample up to which ∂C/∂x's col2im runs batch-last (runs of N numbers
#: instead of Wo): LeNet's second layer (6·14·14) 1.48 → 0.97 ms a backward on one thread,
#: 1.79 → 1.01 on two (float32; float64 2.29 → 1.86); cnn-bn's second (32·32·32) gains
#: nothing (13.3 against 13.1 ms: its crop back to NCHW costs what the adds save).
BATCH_LAST_SIZE = 8192

#: A strided layer's ∂C/∂x goes through the stride-phase col2im
#: (:mod:`~manual_bp.layers.convolution_phases`) when its product ``W_gᵀ D_g`` grows by at
#: most this factor on the phase spans (cnn-bn's second layer: 1.14; col2im 3.5 → 0.7 ms
#: for +0.5 ms of GEMM, float32, one thread).
PHASE_GROWTH = 1.5


class ConvStep:
    """The fast form of :class:`~manual_bp.layers.convolution.Conv2d`, ``Conv1d`` (a 1-D
    input ``(N, C, L)`` is worked on as ``(N, C, 1, L)``) and ``Conv3d``: written for any
    number ``d`` of spatial axes (the 2-D names below stand for every axis alike)."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.geometry = g = layer.geometry
        self.pointwise = (
            all(k == 1 for k in g.kernel)
            and all(s == 1 for s in g.stride)
            and not any(map(any, g.padding))
        )
        self._buffers: dict[tuple, dict[str, Any]] = {}
        self.x: np.ndarray | None = None
        self.buf: dict[str, Any] = {}

    # ------------------------------------------------------------------ buffers
    def _make(self, x2: np.ndarray) -> dict[str, Any]:
        g = self.geometry
        n, c, *size = x2.shape
        size = tuple(size)
        out_size = g.output_size(size)
        padded = tuple(s + a + b for s, (a, b) in zip(size, g.padding, strict=True))
        dt = x2.dtype
        c_out = self.layer.out_channels
        taps = math.prod(g.kernel)
        batch_last = math.prod(x2.shape[1:]) <= BATCH_LAST_SIZE and not self.pointwise
        plan = None
        if not (batch_last or self.pointwise) and max(g.stride) > 1:
            plan = phase_plan(g, size, out_size)
            if plan.growth > PHASE_GROWTH:
                plan = None
        # U (and dU over it); the phase path's wider dU shares the storage (U is spent)
        n_cols = n * math.prod(out_size)
        n_span = n * math.prod(plan.span) if plan else 0
        storage = np.empty(c * taps * max(n_cols, n_span), dt)
        return {
            "size": size,
            "out_size": out_size,
            # every kernel offset with the padded positions it reads (C order), made once
            "taps": [(offset, g.taps(offset, out_size)) for offset in g.offsets()],
            # zero borders written once; each step copies the interior
            "xp": np.zeros((n, c, *padded), dt) if any(map(any, g.padding)) else None,
            "cols": storage[: c * taps * n_cols].reshape(c, *g.kernel, n, *out_size),
            "out": np.empty((n, c_out, *out_size), dt),
            "delta": np.empty((c_out, n, *out_size), dt),
            # channel-major like dU, so col2im's additions read and write in one order
            "batch_last": batch_last,
            "dxp": None if batch_last or plan else np.empty((c, n, *padded), dt),
            # the batch-last col2im: δ laid (C_out, Ho, Wo, N), ∂C/∂x padded (C, Hp, Wp, N)
            "delta_bl": np.empty((c_out, *out_size, n), dt) if batch_last else None,
            "dxp_bl": np.empty((c, *padded, n), dt) if batch_last else None,
            # the stride-phase col2im: δ on the phase spans (zeros beyond Ho written once),
            # dU (C, Πk, N·ΠA) over U's storage, ∂C/∂x phase-major (C, Πs, N·ΠA)
            "plan": plan,
            "delta_ph": np.zeros((c_out, n, *plan.span), dt) if plan else None,
            "dcols_ph": storage[: c * taps * n_span].reshape(c, taps, n_span) if plan else None,
            "phases": np.empty((c, math.prod(g.stride), n_span), dt) if plan else None,
            "dx": np.empty((n, c, *size), dt),
            "ones": np.ones(n_cols, dt),
        }

    # ------------------------------------------------------------------ forward
    def forward(self, x: np.ndarray) -> np.ndarray:
        """``CONV.fast``: im2col into ``U``, then ``out[n]_g = W_g U_g[:, n] + b``."""
        layer = self.layer
        x2 = layer._as_view(x)
        if x is not self.x and (self.x is None or self.x.shape != x.shape):
            self.buf = shape_buffers(self._buffers, x2.shape, lambda: self._make(x2))
        self.x, self.x2 = x, x2
        buf, groups = self.buf, self.geometry.groups
        n = x2.shape[0]
        weight = layer._as_view(layer.params["weight"])
        w_mat = weight.reshape(groups, weight.shape[0] // groups, -1)  # (G, O_g, K_g)
        out, bias = buf["out"], layer.params.get("bias")
        out_g = out.reshape(n, groups, w_mat.shape[1], -1)  # (N, G, O_g, Ho·Wo)
        if self.pointwise:
            x_g = x2.reshape(n, groups, w_mat.shape[2], -1)  # (N, G, C_g, H·W)
            for g in range(groups):
                np.matmul(w_mat[g], x_g[:, g], out=out_g[:, g])
        else:
            cols_g = buf["cols"].reshape(groups, w_mat.shape[2], n, -1)  # (G, K_g, N, Ho·Wo)
            if 2 * w_mat.size * cols_g.shape[3] < SMALL_SAMPLE_FLOPS:
                self._forward_split(w_mat, cols_g, out_g, bias)
                return layer._from_view(out)
            parallel_rows(self._im2col, n, x2[0].size * math.prod(self.geometry.kernel))
            for g in range(groups):
                np.matmul(w_mat[g], cols_g[g].transpose(1, 0, 2), out=out_g[:, g])
        if bias is not None:
            b = bias.reshape(-1, *(1,) * (out.ndim - 2))

            def add_bias(rows: slice) -> None:
                np.add(out[rows], b, out=out[rows])

            parallel_rows(add_bias, n, out[0].size)
        return layer._from_view(out)

    def _forward_split(
        self, w_mat: np.ndarray, cols_g: np.ndarray, out_g: np.ndarray, bias: np.ndarray | None
    ) -> None:
        """A small layer's forward, per slice of samples in one hand-off: im2col, the
        per-sample products on one BLAS thread (the same bits on any thread), the bias."""
        out = self.buf["out"]
        b = None if bias is None else bias.reshape(-1, *(1,) * (out.ndim - 2))

        def forward_rows(rows: slice) -> None:
            self._im2col(rows)
            for g in range(cols_g.shape[0]):
                np.matmul(w_mat[g], cols_g[g][:, rows].transpose(1, 0, 2), out=out_g[rows, g])
            if b is not None:
                np.add(out[rows], b, out=out[rows])

        with one_blas_thread():
            parallel_rows(forward_rows, out.shape[0], cols_g[:, :, 0].size + out[0].size)

    def _im2col(self, rows: slice) -> None:
        """Sample rows ``rows`` of ``U``: the padded copy of x, then ONE strided copy of all
        their windows (``[c, i, j, n, y, x] = xp[n, c, y·s + i·d, x·s + j·d]``)."""
        g, buf = self.geometry, self.buf
        xp = buf["xp"]
        if xp is None:
            src = self.x2[rows]
        else:
            src = xp[rows]
            src[(slice(None), slice(None), *_interior(g.padding, buf["size"]))] = self.x2[rows]
        sn, sc, *spatial = src.strides
        cols = buf["cols"][(slice(None), *(slice(None),) * len(g.kernel), rows)]
        kernel_strides = (t * d for t, d in zip(spatial, g.dilation, strict=True))
        out_strides = (t * s for t, s in zip(spatial, g.stride, strict=True))
        view = as_strided(src, cols.shape, (sc, *kernel_strides, sn, *out_strides), writeable=False)
        np.copyto(cols, view)

    # ------------------------------------------------------------------ backward
    def backward(
        self, dout: np.ndarray, grads: dict[str, np.ndarray], need_dx: bool
    ) -> np.ndarray | None:
        """``LAYER.conv2d`` / ``LAYER.conv1d`` / ``LAYER.conv3d``: ∂C/∂W and ∂C/∂b as one
        GEMM and one GEMV over the batch, ∂C/∂x by ``W_gᵀ D_g`` and col2im (``CONV.fast``)."""
        layer, buf, groups = self.layer, self.buf, self.geometry.groups
        delta = layer._as_view(dout)  # (N, C_out, Ho, Wo)
        x2 = self.x2
        n, c_out = delta.shape[:2]
        weight = layer._as_view(layer.params["weight"])
        o_g = c_out // groups
        w_mat = weight.reshape(groups, o_g, -1)
        k_g = w_mat.shape[2]
        d_all = buf["delta"]  # (C_out, N, Ho, Wo)
        cols = buf["cols"]
        d = len(self.geometry.kernel)
        plan = buf["plan"] if need_dx else None
        d_ph = None if plan is None else buf["delta_ph"]
        inside = (slice(None),) * 2 + tuple(slice(0, o) for o in buf["out_size"])

        def lay_out(rows: slice) -> None:
            np.copyto(d_all[:, rows], delta[rows].swapaxes(0, 1))
            if self.pointwise:  # U = x laid (C, N, H, W)
                np.copyto(cols[(slice(None), *(0,) * d, rows)], x2[rows].swapaxes(0, 1))
            if d_ph is not None:  # δ on the phase spans, for the phase col2im
                np.copyto(d_ph[inside][:, rows], delta[rows].swapaxes(0, 1))

        row_size = delta[0].size * (1 if d_ph is None else 2)
        parallel_rows(lay_out, n, row_size + (x2[0].size if self.pointwise else 0))
        d_mat = d_all.reshape(groups, o_g, -1)  # (G, O_g, N·Ho·Wo)
        u_mat = cols.reshape(groups, k_g, -1)  # (G, K_g, N·Ho·Wo)
        np.matmul(d_mat, u_mat.transpose(0, 2, 1), out=grads["weight"].reshape(groups, o_g, k_g))
        if "bias" in grads:
            np.dot(d_all.reshape(c_out, -1), buf["ones"], out=grads["bias"])
        if not need_dx:
            return None
        dx = buf["dx"]
        if self.pointwise:
            d_g = delta.reshape(n, groups, o_g, -1)
            dx_g = dx.reshape(n, groups, k_g, -1)
            for g in range(groups):
                np.matmul(w_mat[g].T, d_g[:, g], out=dx_g[:, g])
            return layer._from_view(dx)
        if plan is not None:
            dcols_ph = buf["dcols_ph"]
            # dU on the phase spans, over U's storage (U is spent)
            np.matmul(
                w_mat.transpose(0, 2, 1),
                d_ph.reshape(groups, o_g, -1),
                out=dcols_ph.reshape(groups, k_g, -1),
            )
            phases = buf["phases"]
            parallel_rows(self._phase_adds, phases.shape[0], phases[0].size + dcols_ph[0].size)
            parallel_rows(self._interleave, n, x2[0].size)
            return layer._from_view(dx)
        if not buf["batch_last"]:
            np.matmul(w_mat.transpose(0, 2, 1), d_mat, out=u_mat)  # dU, over U's buffer
            parallel_rows(self._col2im, n, cols[(slice(None),) * (d + 1) + (0,)].size + x2[0].size)
            return layer._from_view(dx)
        d_bl, dxp_bl = buf["delta_bl"], buf["dxp_bl"]

        def lay_out_bl(out_channels: slice) -> None:
            np.copyto(d_bl[out_channels], delta[:, out_channels].transpose(*range(1, d + 2), 0))

        parallel_rows(lay_out_bl, c_out, delta[:, 0].size)
        # dU with columns (Ho, Wo, N), over U's buffer (U is spent)
        np.matmul(w_mat.transpose(0, 2, 1), d_bl.reshape(groups, o_g, -1), out=u_mat)
        parallel_rows(self._col2im_bl, dxp_bl.shape[0], dxp_bl[0].size + cols[0].size)
        interior = _interior(self.geometry.padding, buf["size"])

        def crop(rows: slice) -> None:
            np.copyto(
                dx[rows], dxp_bl[(slice(None), *interior, rows)].transpose(d + 1, *range(d + 1))
            )

        parallel_rows(crop, n, x2[0].size)
        return layer._from_view(dx)

    def _phase_adds(self, channels: slice) -> None:
        """Input channels ``channels`` of the phase-major ∂C/∂x
        (:mod:`~manual_bp.layers.convolution_phases`): each kernel offset's slice of ``dU``
        added, as one shifted run per channel, onto its phase, in the kernel's C order."""
        buf = self.buf
        part, dcols = buf["phases"][channels], buf["dcols_ph"][channels]
        part.fill(0)
        length = part.shape[2]
        for t, (phase, shift) in enumerate(buf["plan"].taps):
            spot = part[:, phase, shift:]
            np.add(spot, dcols[:, t, : length - shift], out=spot)

    def _interleave(self, rows: slice) -> None:
        """Sample rows ``rows`` of ∂C/∂x: each phase's grid copied onto its input positions
        ``x = s·a + r − front`` (the padding cropped)."""
        buf = self.buf
        plan, dx = buf["plan"], buf["dx"]
        c, n_phases = buf["phases"].shape[:2]
        grids = buf["phases"].reshape(c, n_phases, -1, *plan.span)
        every = slice(None)
        for phase, dst, src in plan.copies:
            np.copyto(dx[(rows, every, *dst)], grids[(every, phase, rows, *src)].swapaxes(0, 1))

    def _col2im_bl(self, channels: slice) -> None:
        """Input channels ``channels`` of the batch-last ∂C/∂x: every entry of ``dU``
        ``(C, kH, kW, Ho, Wo, N)`` added onto the padded ``(C, Hp, Wp, N)`` position it was
        read from, one kernel offset at a time (a fixed order): runs of N numbers."""
        g, buf = self.geometry, self.buf
        out_size = buf["out_size"]
        n = buf["dxp_bl"].shape[-1]
        dcols = buf["cols"].reshape(-1, *g.kernel, *out_size, n)[channels]
        part = buf["dxp_bl"][channels]
        part.fill(0)
        for offset, taps in buf["taps"]:
            spot = part[(slice(None), *taps)]
            np.add(spot, dcols[(slice(None), *offset)], out=spot)

    def _col2im(self, rows: slice) -> None:
        """Sample rows ``rows`` of ∂C/∂x: every entry of ``dU`` added back onto the padded
        position it was read from, one kernel offset at a time (a fixed order), then the
        interior copied out (sample-major)."""
        g, buf = self.geometry, self.buf
        dcols = buf["cols"]
        part = buf["dxp"][:, rows]  # (C, n, Hp, Wp)
        part.fill(0)
        every = slice(None)
        for offset, taps in buf["taps"]:
            spot = part[(every, every, *taps)]
            np.add(spot, dcols[(every, *offset, rows)], out=spot)
        inner = part[(every, every, *_interior(g.padding, buf["size"]))]
        np.copyto(buf["dx"][rows], inner.swapaxes(0, 1))
