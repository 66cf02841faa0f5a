"""The fast training step of ConvTranspose1d/2d/3d (:mod:`manual_bp.layers.steps`): the
convolution step run backwards (ConvStep works on any number of spatial axes; the 2-D names
below stand for every axis alike).

A transposed convolution is the adjoint ``Kᵀ`` of a convolution ``K`` whose weight is the
layer's own (``LAYER.conv-transpose2d``), so each half of its step is a half of
:class:`~manual_bp.layers.convolution_fast.ConvStep` for ``K``, in ``K``'s buffers (keyed
by ``K``'s input shape, i.e. this layer's output shape)::

    forward    y = Kᵀx + b        ConvStep's ∂C/∂x path with δ = x: dU_g = W_gᵀ X_g into
                                  U's buffer, col2im (each of ConvStep's three forms:
                                  channel-major, batch-last, stride phases) into the
                                  output buffer, + b
    backward   ∂C/∂x = K δ        ConvStep's forward on δ (im2col of δ, per-sample GEMMs)
               ∂C/∂W_g = X_g U_gᵀ  ConvStep's weight gradient with the roles swapped: its
                                  "upstream gradient" is x, its columns are δ's windows
               ∂C/∂b = Σ δ        over the batch and positions, one GEMV

(the same arithmetic as the readable layer's ``implementation="fast"`` form, with the
GEMM operands laid out as ConvStep lays them). ``need_dx`` false skips ``K δ``'s GEMMs (the
im2col of δ is still needed by ∂C/∂W). The ∂C/∂x path of ConvStep is repeated here, not
called: ConvStep's backward computes ∂C/∂W first, which the forward here must not.

An ``output_padding`` not smaller than the stride on some axis (allowed when smaller than
the dilation) makes ``K`` map the output onto a grid larger than x: x is then laid in a
zero-bordered buffer of that grid (the border written once; its zeros add nothing to
``Kᵀx`` and nothing to ∂C/∂W, as the readable form's ``pad_to``) and ``Kδ`` is cropped
back to x's size.

Trains with the readable form instead (:class:`~manual_bp.layers.steps.GenericStep`), where
there is no fast arithmetic to run: ``implementation="readable"`` (the user asked for the
readable sums), an uninitialised lazy layer (no weight yet: its first forward makes it),
and, inside the step, an empty batch (nothing to compute; the readable form's empty output
and zero gradients).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp._threads import parallel_rows
from manual_bp.layers._im2col import _interior
from manual_bp.layers.convolution_fast import ConvStep
from manual_bp.layers.steps import GenericStep, shape_buffers

__all__ = ["ConvTransposeStep", "conv_transpose_fast_step"]


class _Adjoint:
    """The convolution ``K`` of a transposed convolution, as ConvStep reads a layer: the
    geometry, ``out_channels`` (K's: the transposed layer's input channels), the weight
    (no bias: the transposed layer's bias is added to ``Kᵀx``) and the 1-D views."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.geometry = layer.geometry
        self.out_channels = layer.in_channels
        self._as_view = layer._as_view
        self._from_view = layer._from_view

    @property
    def params(self) -> dict[str, np.ndarray]:
        return {"weight": self.layer.params["weight"]}  # the trainer may rebind the arrays


class ConvTransposeStep(ConvStep):
    """The fast form of :class:`~manual_bp.layers.convolution_transpose.ConvTranspose2d`,
    ``ConvTranspose1d`` (a 1-D input worked on as height 1) and ``ConvTranspose3d``."""

    def __init__(self, layer: Any) -> None:
        super().__init__(_Adjoint(layer))
        self.transposed = layer
        self.generic = GenericStep(layer)
        self.xt: np.ndarray | None = None
        self.empty = False

    def _make_for(self, shape: tuple[int, ...], x2: np.ndarray) -> dict:
        """ConvStep's buffers for K's input ``shape``; with ``output_padding ≥ stride`` also
        x's zero-bordered copy on K's output grid and the cropped ∂C/∂x."""
        buf = self._make(np.broadcast_to(np.zeros((), x2.dtype), shape))
        full, size = buf["out_size"], x2.shape[2:]
        buf["xfull"] = buf["xpart"] = None
        if tuple(full) != tuple(size):
            buf["xfull"] = np.zeros((*x2.shape[:2], *full), x2.dtype)
            buf["xpart"] = tuple(slice(0, s) for s in size)
            buf["dx_crop"] = np.empty(x2.shape, x2.dtype)
        return buf

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``LAYER.conv-transpose2d``: ``y = Kᵀx + b`` by ``dU_g = W_gᵀ X_g`` and col2im."""
        layer = self.transposed
        self.empty = x.shape[0] == 0
        if self.empty:  # the readable form's empty output
            return self.generic.forward(x)
        x2 = layer._as_view(x)
        n = x2.shape[0]
        shape = (n, layer.out_channels, *layer._size(x2.shape[2:]))  # K's input, as a view
        self.buf = shape_buffers(self._buffers, shape, lambda: self._make_for(shape, x2))
        buf, groups = self.buf, self.geometry.groups
        if buf["xfull"] is not None:  # output_padding ≥ stride: x on K's larger output grid
            buf["xfull"][(slice(None), slice(None), *buf["xpart"])] = x2
            x2 = buf["xfull"]
        self.xt = layer._from_view(x2)  # ∂C/∂W's "upstream gradient" (K's output form)
        c_in = x2.shape[1]  # K's output channels
        weight = layer._as_view(layer.params["weight"])
        o_g = c_in // groups
        w_mat = weight.reshape(groups, o_g, -1)
        k_g = w_mat.shape[2]
        out = buf["dx"]  # (N, C_out, H, W): K's input gradient buffer is our output
        if self.pointwise:
            x_g = x2.reshape(n, groups, o_g, -1)
            out_g = out.reshape(n, groups, k_g, -1)
            for g in range(groups):
                np.matmul(w_mat[g].T, x_g[:, g], out=out_g[:, g])
        elif buf["plan"] is not None:
            self._forward_phases(x2, w_mat)
        elif not buf["batch_last"]:
            d_all, u_mat = buf["delta"], buf["cols"].reshape(groups, k_g, -1)

            def lay_out(rows: slice) -> None:
                np.copyto(d_all[:, rows], x2[rows].swapaxes(0, 1))

            parallel_rows(lay_out, n, x2[0].size)
            np.matmul(w_mat.transpose(0, 2, 1), d_all.reshape(groups, o_g, -1), out=u_mat)
            sample = buf["cols"][(slice(None),) * (len(self.geometry.kernel) + 1) + (0,)]
            parallel_rows(self._col2im, n, sample.size + out[0].size)
        else:
            self._forward_batch_last(x2, w_mat)
        bias = layer.params.get("bias")
        if bias is not None:
            b = bias.reshape(-1, *(1,) * (out.ndim - 2))

            def add_bias(rows: slice) -> None:
                np.add(out[rows], b, out=out[rows])

            parallel_rows(add_bias, n, out[0].size)
        return layer._from_view(out)

    def _forward_phases(self, x2: np.ndarray, w_mat: np.ndarray) -> None:
        """A strided layer (ConvStep's ``PHASE_GROWTH``): x laid on the phase spans (zeros
        beyond written once), ``dU`` on them over U's storage, ConvStep's phase adds and
        the interleave into the output (ConvStep's stride-phase ∂C/∂x)."""
        buf, groups = self.buf, self.geometry.groups
        d_ph, dcols_ph, phases = buf["delta_ph"], buf["dcols_ph"], buf["phases"]
        inside = (slice(None),) * 2 + tuple(slice(0, o) for o in buf["out_size"])

        def lay_out(rows: slice) -> None:
            np.copyto(d_ph[inside][:, rows], x2[rows].swapaxes(0, 1))

        parallel_rows(lay_out, x2.shape[0], x2[0].size)
        np.matmul(
            w_mat.transpose(0, 2, 1),
            d_ph.reshape(groups, w_mat.shape[1], -1),
            out=dcols_ph.reshape(groups, w_mat.shape[2], -1),
        )
        parallel_rows(self._phase_adds, phases.shape[0], phases[0].size + dcols_ph[0].size)
        parallel_rows(self._interleave, x2.shape[0], buf["dx"][0].size)

    def _forward_batch_last(self, x2: np.ndarray, w_mat: np.ndarray) -> None:
        """Small outputs (``BATCH_LAST_SIZE``): x laid ``(C_in, H, W, N)``, col2im adding
        runs of N numbers (ConvStep's batch-last ∂C/∂x), the interior copied to NCHW."""
        buf, groups = self.buf, self.geometry.groups
        d_bl, dxp_bl, out = buf["delta_bl"], buf["dxp_bl"], buf["dx"]
        u_mat = buf["cols"].reshape(groups, w_mat.shape[2], -1)
        d = len(self.geometry.kernel)

        def lay_out_bl(channels: slice) -> None:
            np.copyto(d_bl[channels], x2[:, channels].transpose(*range(1, d + 2), 0))

        parallel_rows(lay_out_bl, x2.shape[1], x2[:, 0].size)
        np.matmul(w_mat.transpose(0, 2, 1), d_bl.reshape(groups, w_mat.shape[1], -1), out=u_mat)
        parallel_rows(self._col2im_bl, dxp_bl.shape[0], dxp_bl[0].size + buf["cols"][0].size)
        interior = _interior(self.geometry.padding, buf["size"])

        def crop(rows: slice) -> None:
            inner = dxp_bl[(slice(None), *interior, rows)]
            np.copyto(out[rows], inner.transpose(d + 1, *range(d + 1)))

        parallel_rows(crop, out.shape[0], out[0].size)

    def backward(
        self, dout: np.ndarray, grads: dict[str, np.ndarray], need_dx: bool
    ) -> np.ndarray | None:
        """``LAYER.conv-transpose2d``: ∂C/∂x = Kδ (ConvStep's forward), ∂C/∂W = ConvStep's
        weight gradient with x as its upstream gradient, ∂C/∂b = Σ δ."""
        if self.empty:
            return self.generic.backward(dout, grads, need_dx)
        layer = self.transposed
        delta = layer._as_view(dout)
        if "bias" in grads:  # the readable form's sum, so the same bits
            np.sum(delta, axis=(0, *range(2, delta.ndim)), out=grads["bias"])
        xpart = self.buf["xpart"]
        if need_dx:
            dx = super().forward(dout)
            if xpart is not None:  # K's larger grid cropped back to x's size
                crop = self.buf["dx_crop"]
                np.copyto(crop, layer._as_view(dx)[(slice(None), slice(None), *xpart)])
                dx = layer._from_view(crop)
        else:
            self.x, self.x2 = dout, delta
            if not self.pointwise:
                kernel = int(np.prod(self.geometry.kernel))
                parallel_rows(self._im2col, delta.shape[0], delta[0].size * kernel)
            dx = None
        super().backward(self.xt, {"weight": grads["weight"]}, need_dx=False)
        return dx


def conv_transpose_fast_step(layer: Any) -> Any:
    """``layer``'s training step: :class:`ConvTransposeStep`, or the readable form where the
    step does not apply (see the module docstring)."""
    if (
        layer.implementation != "fast"
        or getattr(layer, "has_uninitialized_params", lambda: False)()
    ):
        return GenericStep(layer)
    return ConvTransposeStep(layer)
