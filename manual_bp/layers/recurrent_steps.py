"""The fused training steps of the one-layer, one-direction Elman RNN and GRU (``RNN.step``,
``GRU.step``, ``BPTT.sequence``), beside the LSTM's (:class:`~manual_bp.layers.
recurrent_fast.LSTMStep`) and organised as it is:

* time-major ``(T, N, ·)`` buffers, so step ``t``'s slice is one contiguous block;
* the input projection ``x W_ihᵀ + b`` of all ``T`` steps as ONE GEMM before the loop;
* the recurrent GEMM ``h W_hhᵀ`` with ``out=`` a buffer, every gate in place;
* BPTT in place, then ONE GEMM per weight gradient and for ``∂C/∂x`` after the loop.

Checked against the readable per-step cells and torch in ``tests/test_fast_recurrent.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["GRUStep", "RNNStep"]


class _HiddenStateStep:
    """Buffers and the shared parts (projection, weight gradients, ``∂C/∂x``) of a cell whose
    state is ``h`` alone; ``G`` gates per unit."""

    gates = 1

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        p = layer.params
        self.W_ih, self.W_hh = p["weight_ih_l0"], p["weight_hh_l0"]
        self.b_ih, self.b_hh = p.get("bias_ih_l0"), p.get("bias_hh_l0")
        # W_hhᵀ copied C-contiguous once per forward pass: the loop's GEMM h·W_hhᵀ then reads
        # B untransposed, BLAS's faster path (SkylakeX kernels, (32 × 128)·(128 × 384):
        # float32 34.5 against 48.6 µs a product from the transposed view)
        self.W_hhT = np.empty_like(self.W_hh.T, order="C")
        self._buffers: dict[tuple, dict[str, np.ndarray]] = {}
        self.buf: dict[str, np.ndarray] = {}
        self.shape: tuple | None = None

    def _make(self, n: int, length: int, width: int, dtype: Any) -> dict[str, np.ndarray]:
        H, G, e = self.layer.hidden_size, self.gates, np.empty
        out = e((n, length, H), dtype)  # batch-major output
        return {
            "x": e((length, n, width), dtype),  # x time-major (for the GEMMs)
            "A": e((length, n, G * H), dtype),  # input projections, then the gates in place
            "h": e((length + 1, n, H), dtype),  # h_0 … h_T
            "out": out,
            "gh": e((length, n, G * H), dtype),  # the hidden projections (GRU) / scratch
            "dA": e((length, n, G * H), dtype),  # ∂C/∂(input pre-activations)
            "dH": e((length, n, G * H), dtype),  # ∂C/∂(hidden pre-activations) (GRU)
            "dh": e((n, H), dtype),
            "t1": e((n, H), dtype),
            "dx": e((n, length, width), dtype),
            "dxT": e((length * n, width), dtype),
            "ones": np.ones(length * n, dtype),
        }

    def _start(self, x: np.ndarray, bias: np.ndarray | None) -> dict[str, np.ndarray]:
        """Buffers for ``x``'s shape, ``x`` time-major, ``A = x W_ihᵀ + bias``, ``h_0``."""
        if self.shape != x.shape:
            found = self._buffers.get(x.shape)
            if found is None:
                found = self._buffers[x.shape] = self._make(*x.shape, x.dtype)
            self.buf, self.shape = found, x.shape
        b = self.buf
        b["x"][...] = x.transpose(1, 0, 2)
        A = b["A"]
        np.matmul(b["x"].reshape(-1, x.shape[-1]), self.W_ih.T, out=A.reshape(-1, A.shape[-1]))
        if bias is not None:
            A += bias
        initial = self.layer.initial_state
        b["h"][0] = 0.0 if initial is None else initial[0][0]
        return b

    def _finish_forward(self) -> np.ndarray:
        out = self.buf["out"]
        out[...] = self.buf["h"][1:].transpose(1, 0, 2)
        return out

    def _finish_backward(
        self, d_ih: np.ndarray, d_hh: np.ndarray, grads: dict[str, np.ndarray], need_dx: bool
    ) -> np.ndarray | None:
        """``∂C/∂W_ih = δ_ihᵀ x``, ``∂C/∂W_hh = δ_hhᵀ h_{t−1}``, ``∂C/∂b = 1ᵀ δ``, ``∂C/∂x``."""
        b, (n, length, width) = self.buf, self.shape
        rows_ih = d_ih.reshape(-1, d_ih.shape[-1])
        rows_hh = d_hh.reshape(-1, d_hh.shape[-1])
        np.dot(rows_ih.T, b["x"].reshape(-1, width), out=grads["weight_ih_l0"])
        np.dot(rows_hh.T, b["h"][:-1].reshape(-1, b["h"].shape[-1]), out=grads["weight_hh_l0"])
        if self.b_ih is not None:
            np.dot(b["ones"], rows_ih, out=grads["bias_ih_l0"])
            if d_hh is d_ih:
                grads["bias_hh_l0"][...] = grads["bias_ih_l0"]
            else:
                np.dot(b["ones"], rows_hh, out=grads["bias_hh_l0"])
        if not need_dx:
            return None
        np.matmul(rows_ih, self.W_ih, out=b["dxT"])
        b["dx"][...] = b["dxT"].reshape(length, n, width).transpose(1, 0, 2)
        return b["dx"]


class RNNStep(_HiddenStateStep):
    """Elman RNN (``RNN.step``)::

        A = x W_ihᵀ + (b_ih + b_hh)  (one GEMM);  h_t = φ(A[t] + h_{t−1} W_hhᵀ)
        δA[t] = (δh_t + ∂C/∂out_t) ⊙ φ′;  δh_{t−1} = δA[t] W_hh

    ``φ′`` from the output: tanh′ = (1 − h)(1 + h); relu′ = 1[h > 0] = sign(h) (h ≥ 0).
    """

    def __init__(self, layer: Any) -> None:
        super().__init__(layer)
        self.relu = layer.nonlinearity == "relu"

    def forward(self, x: np.ndarray) -> np.ndarray:
        bias = None if self.b_ih is None else self.b_ih + self.b_hh
        b = self._start(x, bias)
        A, h, tmp, W_hhT = b["A"], b["h"], b["gh"][0], self.W_hhT
        np.copyto(W_hhT, self.W_hh.T)
        for t in range(x.shape[1]):
            np.matmul(h[t], W_hhT, out=tmp)
            A[t] += tmp
            if self.relu:
                np.maximum(A[t], 0.0, out=h[t + 1])
            else:
                np.tanh(A[t], out=h[t + 1])
        return self._finish_forward()

    def backward(
        self, d_out: np.ndarray, grads: dict[str, np.ndarray], need_dx: bool
    ) -> np.ndarray | None:
        self._bptt(d_out)
        return self._finish_backward(self.buf["dA"], self.buf["dA"], grads, need_dx)

    def _bptt(self, d_out: np.ndarray) -> None:
        b = self.buf
        h, dA, dh, t1 = b["h"], b["dA"], b["dh"], b["t1"]
        dh[...] = 0.0  # the final state is not an output
        for t in range(self.shape[1] - 1, -1, -1):
            dh += d_out[:, t]
            d = dA[t]
            if self.relu:
                np.sign(h[t + 1], out=d)
            else:
                np.subtract(1.0, h[t + 1], out=d)
                np.add(1.0, h[t + 1], out=t1)
                d *= t1
            d *= dh
            np.matmul(d, self.W_hh, out=dh)


class GRUStep(_HiddenStateStep):
    """GRU, torch gate order ``r, z, n``, ``b_hn`` inside the reset (``GRU.step``)::

        A = x W_ihᵀ + b_ih (one GEMM);  Gh[t] = h_{t−1} W_hhᵀ + b_hh
        r, z = σ(A_rz + Gh_rz)  (σ(a) = ½ + ½ tanh(a/2), in place over A)
        n = tanh(A_n + r ⊙ Gh_n);  h_t = n + z ⊙ (h_{t−1} − n)

    Backward (``δh`` carried, ``+ ∂C/∂out_t``)::

        δa_n = δh ⊙ (1 − z) ⊙ (1 − n)(1 + n);  δa_z = δh ⊙ (h_{t−1} − n) ⊙ z(1 − z)
        δa_r = δa_n ⊙ Gh_n ⊙ r(1 − r)
        δ_ih = [δa_r, δa_z, δa_n];  δ_hh = [δa_r, δa_z, δa_n ⊙ r]
        δh_{t−1} = δh ⊙ z + δ_hh W_hh
    """

    gates = 3

    def forward(self, x: np.ndarray) -> np.ndarray:
        b = self._start(x, self.b_ih)
        H = self.layer.hidden_size
        A, Gh, h, t1, W_hhT = b["A"], b["gh"], b["h"], b["t1"], self.W_hhT
        np.copyto(W_hhT, self.W_hh.T)
        for t in range(x.shape[1]):
            gh = Gh[t]
            np.matmul(h[t], W_hhT, out=gh)
            if self.b_hh is not None:
                gh += self.b_hh
            rz, n = A[t][:, : 2 * H], A[t][:, 2 * H :]
            rz += gh[:, : 2 * H]
            rz *= 0.5
            np.tanh(rz, out=rz)
            rz *= 0.5
            rz += 0.5
            np.multiply(rz[:, :H], gh[:, 2 * H :], out=t1)  # r ⊙ (h W_hnᵀ + b_hn)
            n += t1
            np.tanh(n, out=n)
            np.subtract(h[t], n, out=t1)
            t1 *= rz[:, H:]
            np.add(n, t1, out=h[t + 1])
        return self._finish_forward()

    def backward(
        self, d_out: np.ndarray, grads: dict[str, np.ndarray], need_dx: bool
    ) -> np.ndarray | None:
        self._bptt(d_out)
        return self._finish_backward(self.buf["dA"], self.buf["dH"], grads, need_dx)

    def _bptt(self, d_out: np.ndarray) -> None:
        b, H = self.buf, self.layer.hidden_size
        A, Gh, h, dA, dH, dh, t1 = b["A"], b["gh"], b["h"], b["dA"], b["dH"], b["dh"], b["t1"]
        dh[...] = 0.0  # the final state is not an output
        for t in range(self.shape[1] - 1, -1, -1):
            dh += d_out[:, t]
            a, d, dhh = A[t], dA[t], dH[t]
            r, z, n = a[:, :H], a[:, H : 2 * H], a[:, 2 * H :]
            dr, dz, dn = d[:, :H], d[:, H : 2 * H], d[:, 2 * H :]
            np.subtract(1.0, a, out=d)  # r(1 − r), z(1 − z); dn redone below
            d *= a
            np.subtract(1.0, n, out=dn)  # δa_n = δh ⊙ (1 − z) ⊙ (1 − n)(1 + n)
            np.add(1.0, n, out=t1)
            dn *= t1
            np.subtract(1.0, z, out=t1)
            dn *= t1
            dn *= dh
            np.subtract(h[t], n, out=t1)  # δa_z = δh ⊙ (h_{t−1} − n) ⊙ z(1 − z)
            t1 *= dh
            dz *= t1
            np.multiply(dn, Gh[t][:, 2 * H :], out=t1)  # δa_r = δa_n ⊙ Gh_n ⊙ r(1 − r)
            dr *= t1
            dhh[:, : 2 * H] = d[:, : 2 * H]
            np.multiply(dn, r, out=dhh[:, 2 * H :])
            dh *= z
            np.matmul(dhh, self.W_hh, out=t1)
            dh += t1
