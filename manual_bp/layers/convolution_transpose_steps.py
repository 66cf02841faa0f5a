"""The fast training step of ConvTranspose1d/2d (:mod:`manual_bp.layers.steps`): the
convolution step run backwards.

A transposed convolution is the adjoint ``Kᵀ`` of a convolution ``K`` whose weight is the
layer's own (``LAYER.conv-transpose2d``), so each half of its step is a half of
:class:`~manual_bp.layers.convolution_fast.ConvStep` for ``K``, in ``K``'s buffers (keyed
by ``K``'s input shape, i.e. this layer's output shape)::

    forward    y = Kᵀx + b        ConvStep's ∂C/∂x path with δ = x: dU_g = W_gᵀ X_g into
                                  U's buffer, col2im into the output buffer, + b
    backward   ∂C/∂x = K δ        ConvStep's forward on δ (im2col of δ, per-sample GEMMs)
               ∂C/∂W_g = X_g U_gᵀ  ConvStep's weight gradient with the roles swapped: its
                                  "upstream gradient" is x, its columns are δ's windows
               ∂C/∂b = Σ δ        over the batch and positions, one GEMV

(the same arithmetic as the readable layer's ``implementation="fast"`` form, with the
GEMM operands laid out as ConvStep lays them). ``need_dx`` false skips ``K δ``'s GEMMs (the
im2col of δ is still needed by ∂C/∂W). The ∂C/∂x path of ConvStep is repeated here, not
called: ConvStep's backward computes ∂C/∂W first, which the forward here must not.

Trains with the readable form instead (:class:`~manual_bp.layers.steps.GenericStep`):
ConvTranspose3d (ConvStep is 2-D), ``implementation="readable"``, an ``output_padding``
not smaller than the stride on some axis (``K`` then reads a larger grid than the output:
the readable form pads), an uninitialised lazy layer, and an empty batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp._threads import parallel_rows
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
    """The fast form of :class:`~manual_bp.layers.convolution_transpose.ConvTranspose2d`
    and ``ConvTranspose1d`` (a 1-D input worked on as height 1)."""

    def __init__(self, layer: Any) -> None:
        super().__init__(_Adjoint(layer))
        self.transposed = layer
        self.generic = GenericStep(layer)
        self.xt: np.ndarray | None = None
        self.empty = False

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``LAYER.conv-transpose2d``: ``y = Kᵀx + b`` by ``dU_g = W_gᵀ X_g`` and col2im."""
        layer = self.transposed
        self.empty = x.shape[0] == 0
        if self.empty:  # the readable form's empty output
            return self.generic.forward(x)
        x2 = layer._as_view(x)
        n = x2.shape[0]
        shape = (n, layer.out_channels, *layer._size(x2.shape[2:]))  # K's input, as a view
        self.buf = shape_buffers(
            self._buffers, shape, lambda: self._make(np.broadcast_to(np.zeros((), x.dtype), shape))
        )
        self.xt = x
        buf, groups = self.buf, self.geometry.groups
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
        elif not buf["batch_last"]:
            d_all, u_mat = buf["delta"], buf["cols"].reshape(groups, k_g, -1)

            def lay_out(rows: slice) -> None:
                np.copyto(d_all[:, rows], x2[rows].transpose(1, 0, 2, 3))

            parallel_rows(lay_out, n, x2[0].size)
            np.matmul(w_mat.transpose(0, 2, 1), d_all.reshape(groups, o_g, -1), out=u_mat)
            parallel_rows(self._col2im, n, buf["cols"][:, :, :, 0].size + out[0].size)
        else:
            self._forward_batch_last(x2, w_mat)
        bias = layer.params.get("bias")
        if bias is not None:
            b = bias[:, None, None]

            def add_bias(rows: slice) -> None:
                np.add(out[rows], b, out=out[rows])

            parallel_rows(add_bias, n, out[0].size)
        return layer._from_view(out)

    def _forward_batch_last(self, x2: np.ndarray, w_mat: np.ndarray) -> None:
        """Small outputs (``BATCH_LAST_SIZE``): x laid ``(C_in, H, W, N)``, col2im adding
        runs of N numbers (ConvStep's batch-last ∂C/∂x), the interior copied to NCHW."""
        buf, groups = self.buf, self.geometry.groups
        d_bl, dxp_bl, out = buf["delta_bl"], buf["dxp_bl"], buf["dx"]
        u_mat = buf["cols"].reshape(groups, w_mat.shape[2], -1)

        def lay_out_bl(channels: slice) -> None:
            np.copyto(d_bl[channels], x2[:, channels].transpose(1, 2, 3, 0))

        parallel_rows(lay_out_bl, x2.shape[1], x2[:, 0].size)
        np.matmul(w_mat.transpose(0, 2, 1), d_bl.reshape(groups, w_mat.shape[1], -1), out=u_mat)
        parallel_rows(self._col2im_bl, dxp_bl.shape[0], dxp_bl[0].size + buf["cols"][0].size)
        (h, w), ((top, _), (left, _)) = buf["size"], self.geometry.padding

        def crop(rows: slice) -> None:
            inner = dxp_bl[:, top : top + h, left : left + w, rows]
            np.copyto(out[rows], inner.transpose(3, 0, 1, 2))

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
            np.sum(delta, axis=(0, 2, 3), out=grads["bias"])
        if need_dx:
            dx = super().forward(dout)
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
    g = layer.geometry
    if (
        layer.dims == 3
        or layer.implementation != "fast"
        or getattr(layer, "has_uninitialized_params", lambda: False)()
        or any(p >= s for p, s in zip(layer.output_padding_pair, g.stride, strict=True))
    ):
        return GenericStep(layer)
    return ConvTransposeStep(layer)
