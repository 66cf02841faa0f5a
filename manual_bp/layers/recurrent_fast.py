"""The fast form of one LSTM direction, beside the readable per-step form (``LSTM.step``).

Same mathematics as :func:`manual_bp.layers.recurrent_cells.lstm_step` unrolled by
:func:`manual_bp.layers.recurrent.run_direction`, reorganised for speed: the input
projection ``x W_ihᵀ + b_ih + b_hh`` of all ``T`` steps is ONE matrix product before the
loop, and ``∂C/∂x``, ``∂C/∂W_ih``, ``∂C/∂W_hh`` and the biases are ONE product each after
the backward loop (from the stacked pre-activation gradients ``δa`` ``(N, T, 4H)``); only
the recurrence ``h W_hhᵀ`` stays inside the loop. ``tests/test_recurrent.py`` checks the
two forms against each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from manual_bp._threads import one_blas_thread
from manual_bp.layers.recurrent_cells import _sigmoid, _tanh_grad

__all__ = ["LSTMStep", "lstm_backward_fast", "lstm_forward_fast"]


@dataclass
class FastLSTMCache:
    x: np.ndarray
    h0: np.ndarray
    c0: np.ndarray
    gates: np.ndarray  # (N, T, 4H) activated i, f, g, o
    c: np.ndarray  # (N, T, H)
    h: np.ndarray  # (N, T, H)
    weight_ih: np.ndarray
    weight_hh: np.ndarray
    bias: bool


def lstm_forward_fast(
    x: np.ndarray, h0: np.ndarray, c0: np.ndarray, params: dict[str, np.ndarray | None]
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], FastLSTMCache]:
    """One forward LSTM direction (``LSTM.step`` unrolled): ``(out (N, T, H), (h_T, c_T), cache)``.

    ``params``: ``weight_ih`` ``(4H, I)``, ``weight_hh`` ``(4H, H)``, ``bias_ih``/``bias_hh``
    ``(4H,)`` or None.
    """
    W_ih, W_hh = params["weight_ih"], params["weight_hh"]
    n, length, _ = x.shape
    H = W_hh.shape[1]
    # Every step's input projection in ONE (N·T, I) × (I, 4H) product. As a 2-D product it
    # goes to BLAS; numpy's stacked (N, T, I) @ (I, 4H) loops over N instead (5× slower).
    projected = (x.reshape(n * length, x.shape[-1]) @ W_ih.T).reshape(n, length, 4 * H)
    if params["bias_ih"] is not None:
        projected += params["bias_ih"] + params["bias_hh"]
    gates = np.empty((n, length, 4 * H), dtype=x.dtype)
    cs, hs = np.empty((n, length, H), dtype=x.dtype), np.empty((n, length, H), dtype=x.dtype)
    h, c = h0, c0
    for t in range(length):
        a = projected[:, t] + h @ W_hh.T
        g_t = gates[:, t]
        g_t[:, : 2 * H] = _sigmoid(a[:, : 2 * H])  # i, f
        g_t[:, 2 * H : 3 * H] = np.tanh(a[:, 2 * H : 3 * H])  # g
        g_t[:, 3 * H :] = _sigmoid(a[:, 3 * H :])  # o
        c = g_t[:, H : 2 * H] * c + g_t[:, :H] * g_t[:, 2 * H : 3 * H]
        h = g_t[:, 3 * H :] * np.tanh(c)
        cs[:, t], hs[:, t] = c, h
    cache = FastLSTMCache(x, h0, c0, gates, cs, hs, W_ih, W_hh, params["bias_ih"] is not None)
    return hs, (h, c), cache


def lstm_backward_fast(
    d_out: np.ndarray, d_hT: np.ndarray, d_cT: np.ndarray, cache: FastLSTMCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """BPTT of :func:`lstm_forward_fast`: ``(∂C/∂x, ∂C/∂h0, ∂C/∂c0, grads)`` (``LSTM.step``)."""
    n, length, H = d_out.shape
    d_a = np.empty((n, length, 4 * H), dtype=d_out.dtype)
    dh, dc = d_hT, d_cT
    for t in reversed(range(length)):
        i, f, g, o = np.split(cache.gates[:, t], 4, axis=-1)
        c_prev = cache.c[:, t - 1] if t else cache.c0
        tanh_c = np.tanh(cache.c[:, t])
        dh = dh + d_out[:, t]
        dc = dc + dh * o * _tanh_grad(tanh_c)
        d_a[:, t, :H] = dc * g * i * (1.0 - i)
        d_a[:, t, H : 2 * H] = dc * c_prev * f * (1.0 - f)
        d_a[:, t, 2 * H : 3 * H] = dc * i * _tanh_grad(g)
        d_a[:, t, 3 * H :] = dh * tanh_c * o * (1.0 - o)
        dc = dc * f
        dh = d_a[:, t] @ cache.weight_hh
    h_prev = np.concatenate([cache.h0[:, None], cache.h[:, :-1]], axis=1)
    rows = d_a.reshape(-1, 4 * H)
    grads = {
        "weight_ih": rows.T @ cache.x.reshape(len(rows), cache.x.shape[-1]),
        "weight_hh": rows.T @ h_prev.reshape(len(rows), H),
    }
    if cache.bias:
        grads["bias_ih"] = rows.sum(axis=0)
        grads["bias_hh"] = grads["bias_ih"].copy()
    dx = (rows @ cache.weight_ih).reshape(n, length, cache.weight_ih.shape[1])
    return dx, dh, dc, grads


class LSTMStep:
    """The fused training step of a one-layer, one-direction :class:`LSTM` (``LSTM.step``
    unrolled, ``BPTT.sequence``), every array a preallocated buffer.

    Layout: time-major ``(T, N, ·)`` buffers, so step ``t``'s slice is one contiguous block.
    Forward, with ``s = [½, ½, 1, ½]`` per gate block (i, f, g, o) and ``s ⊙ W`` the rows
    scaled once per pass (a power of two: exact)::

        A      = (x s⊙W_ihᵀ + s⊙(b_ih + b_hh))       all T steps, ONE GEMM into A (T·N, 4H)
        A[t]  += h_{t−1} (s⊙W_hh)ᵀ                   GEMM out= a scratch, one add
        A[t]   = s ⊙ tanh(A[t]) + (1 − s)            σ(a) = ½ + ½ tanh(a/2) for i, f, o; tanh g
        c_t    = f ⊙ c_{t−1} + i ⊙ g,  h_t = o ⊙ tanh(c_t)

    Backward (in place, carried ``δh``, ``δc``; ``τ = tanh c_t``; the factors the forward
    pass fixed are formed a few steps at a time before their steps, see :meth:`_bptt`)::

        δh += ∂C/∂out_t;  δc += δh ⊙ o ⊙ (1 − τ)(1 + τ)
        δA[t] = [δc⊙g⊙i(1−i), δc⊙c_{t−1}⊙f(1−f), δc⊙i⊙(1−g)(1+g), δh⊙τ⊙o(1−o)]
        δc ← δc ⊙ f;  δh ← δA[t] W_hh                 (GEMM out= δh)

    then ONE GEMM each: ``[∂C/∂W_ih | ∂C/∂W_hh] = δAᵀ [x | h_{t−1}]``, ``∂C/∂b = 1ᵀ δA``
    (both biases), ``∂C/∂x = δA W_ih``. The loops stay on one thread, their products on one
    BLAS thread: two halves of the batch on two Python threads ran slower (each step is ~10
    short GIL-releasing calls, the threads convoy on the GIL: 2.3 → 2.7 ms forward, 2.7 →
    3.2 backward), and two BLAS threads give other float32 bits for these shapes than one.
    """

    def __init__(self, layer) -> None:
        self.layer = layer
        self.W_ih, self.W_hh = layer.params["weight_ih_l0"], layer.params["weight_hh_l0"]
        self.b_ih, self.b_hh = layer.params.get("bias_ih_l0"), layer.params.get("bias_hh_l0")
        H = layer.hidden_size
        dtype = self.W_ih.dtype
        self.scale = np.full(4 * H, 0.5, dtype)
        self.scale[2 * H : 3 * H] = 1.0
        self.shift = 1.0 - self.scale  # ½ for i, f, o; 0 for g
        self.W_ih_s = np.empty_like(self.W_ih)
        # (s⊙W_hh)ᵀ stored C-contiguous (H, 4H): the loop's GEMM h·(s⊙W_hh)ᵀ then reads B
        # untransposed, BLAS's faster path here (SkylakeX kernels, 35 products of
        # (32 × 128)·(128 × 512): float32 1.49 against 2.20 ms from the transposed view,
        # float64 2.97 against 3.10)
        self.W_hh_sT = np.empty_like(self.W_hh.T, order="C")
        self.b_s = np.empty(4 * H, dtype)
        self._buffers: dict[tuple, dict[str, np.ndarray]] = {}
        self.buf: dict[str, np.ndarray] | None = None
        self.shape: tuple | None = None

    def _make(self, n: int, length: int, width: int, dtype) -> dict[str, np.ndarray]:
        H = self.layer.hidden_size
        e = np.empty
        out = e((n, length, H), dtype)  # batch-major output
        # x_t and h_{t−1} side by side in one time-major buffer: both weight gradients are
        # then ONE GEMM δAᵀ[x | h_{t−1}] (N 192 instead of 64 and 128: 1.81 → 1.73 ms, f32)
        xh = e((length + 1, n, width + H), dtype)
        return {
            "xh": xh,
            "x": xh[:length, :, :width],  # x time-major (for the GEMMs)
            "A": e((length, n, 4 * H), dtype),  # pre-activations, then gates in place
            "h": xh[:, :, width:],  # h_0 … h_T
            "gW": e((4 * H, width + H), dtype),  # [∂C/∂W_ih | ∂C/∂W_hh]
            "c": e((length + 1, n, H), dtype),  # c_0 … c_T
            "tc": e((length, n, H), dtype),  # tanh c_t
            "tp": e((CHUNK, n, H), dtype),  # o ⊙ (1 − τ)(1 + τ), for BPTT
            "tg": e((CHUNK, n, H), dtype),  # scratch of BPTT's factors
            "out": out,
            "tmp4": e((n, 4 * H), dtype),
            # s and 1 − s repeated over the batch rows: a same-shape pass is half the time of
            # a broadcast one at these sizes (f32 32 × 512: 2.6 against 5.2 µs a step for both)
            "scale": np.repeat(self.scale[None], n, axis=0),
            "shift": np.repeat(self.shift[None], n, axis=0),
            "t1": e((n, H), dtype),
            "t2": e((n, H), dtype),
            "dh": e((n, H), dtype),
            "dc": e((n, H), dtype),
            "dA": e((length, n, 4 * H), dtype),
            "dxT": e((length * n, width), dtype),
            "dx": e((n, length, width), dtype),
            "ones": np.ones(length * n, dtype),
        }

    def forward(self, x: np.ndarray) -> np.ndarray:
        width = x.shape[2]
        if self.shape != x.shape:
            self.buf = shape_buffers_dict(self._buffers, x.shape, self._make, x.dtype)
            self.shape = x.shape
        b, H = self.buf, self.layer.hidden_size
        scale = self.scale
        np.multiply(self.W_ih, scale[:, None], out=self.W_ih_s)
        np.multiply(self.W_hh.T, scale, out=self.W_hh_sT)
        b["x"][...] = x.transpose(1, 0, 2)
        A, h, c = b["A"], b["h"], b["c"]
        np.matmul(b["x"].reshape(-1, width), self.W_ih_s.T, out=A.reshape(-1, 4 * H))
        if self.b_ih is not None:
            np.add(self.b_ih, self.b_hh, out=self.b_s)
            self.b_s *= scale
            A += self.b_s
        initial = self.layer.initial_state
        if initial is None:
            h[0] = 0.0
            c[0] = 0.0
        else:
            h[0], c[0] = initial[0][0], initial[1][0]
        with one_blas_thread(2 * x.shape[0] * H * 4 * H):  # the recurrent products are small
            self._recurrence()
        out = b["out"]
        out[...] = h[1:].transpose(1, 0, 2)
        return out

    def backward(
        self, d_out: np.ndarray, grads: dict[str, np.ndarray], need_dx: bool
    ) -> np.ndarray | None:
        b, H = self.buf, self.layer.hidden_size
        n, length, width = self.shape
        dA = b["dA"]
        with one_blas_thread(2 * n * H * 4 * H):  # the recurrent products are small
            self._bptt(d_out)
        rows = dA.reshape(-1, 4 * H)
        gW = b["gW"]
        np.dot(rows.T, b["xh"][:-1].reshape(-1, width + H), out=gW)
        grads["weight_ih_l0"][...] = gW[:, :width]
        grads["weight_hh_l0"][...] = gW[:, width:]
        if self.b_ih is not None:
            np.dot(b["ones"], rows, out=grads["bias_ih_l0"])
            grads["bias_hh_l0"][...] = grads["bias_ih_l0"]
        if not need_dx:
            return None
        np.matmul(rows, self.W_ih, out=b["dxT"])
        dx = b["dx"]
        dx[...] = b["dxT"].reshape(length, n, width).transpose(1, 0, 2)
        return dx

    def _recurrence(self) -> None:
        """The forward loop: ``A[t] += h_{t−1} (s⊙W_hh)ᵀ``, the gates in place, ``c_t``, ``h_t``."""
        b, H = self.buf, self.layer.hidden_size
        A, h, c, tc = b["A"], b["h"], b["c"], b["tc"]
        tmp4, t1, scale, shift = b["tmp4"], b["t1"], b["scale"], b["shift"]
        W_hh_sT = self.W_hh_sT
        for t in range(A.shape[0]):
            a = A[t]
            np.matmul(h[t], W_hh_sT, out=tmp4)
            a += tmp4
            np.tanh(a, out=a)
            a *= scale
            a += shift
            i, f, g, o = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
            np.multiply(f, c[t], out=c[t + 1])
            np.multiply(i, g, out=t1)
            c[t + 1] += t1
            np.tanh(c[t + 1], out=tc[t])
            np.multiply(o, tc[t], out=h[t + 1])

    def _bptt(self, d_out: np.ndarray) -> None:
        """BPTT into ``δA``.

        Every factor of ``δA`` the forward pass fixed is formed first
        (``D = [g⊙i(1−i), c_{t−1}⊙f(1−f), i⊙(1−g)(1+g), τ⊙o(1−o)]`` in ``δA`` itself, and
        ``P = o⊙(1−τ)(1+τ)``) for :data:`CHUNK` steps at a time (blocks that stay in cache),
        so a step is five small in-place products and the GEMM::

            δh += ∂C/∂out_t;  δc += δh ⊙ P_t;  δA[t] = D_t ⊙ [δc, δc, δc, δh]
            δc ← δc ⊙ f;  δh ← δA[t] W_hh

        The carried ``δh``, ``δc`` start at 0: the final states are not outputs.
        """
        b, H = self.buf, self.layer.hidden_size
        length, n = b["A"].shape[:2]
        A4 = b["A"].reshape(length, n, 4, H)  # (T, N, gate, H) views
        D4 = b["dA"].reshape(length, n, 4, H)
        tc, c_prev, dA = b["tc"], b["c"][:-1], b["dA"]
        dh, dc, t1 = b["dh"], b["dc"], b["t1"]
        dh[...] = 0.0
        dc[...] = 0.0
        dc3 = dc[:, None, :]  # δc against the i, f, g blocks at once
        # W_hh itself, C-contiguous (4H, H): on SkylakeX kernels faster than the transpose
        # of a contiguous copy (35 products δA[t]·W_hh, float32 1.67 against 2.32 ms,
        # float64 3.43 against 3.75; Haswell's kernels had preferred the copy)
        W_hh = self.W_hh
        for stop in range(length, 0, -CHUNK):
            k = slice(max(0, stop - CHUNK), stop)
            a4, d4, tau = A4[k], D4[k], tc[k]
            m = stop - k.start
            P, tmp = b["tp"][:m], b["tg"][:m]
            g = a4[:, :, 2]
            np.subtract(1.0, a4, out=d4)  # σ(1 − σ) for i, f, o (g's block is redone below)
            d4 *= a4
            Dg = d4[:, :, 2]
            np.subtract(1.0, g, out=Dg)  # (1 − g)(1 + g)
            np.add(1.0, g, out=tmp)
            Dg *= tmp
            d4[:, :, 0] *= g
            d4[:, :, 1] *= c_prev[k]
            Dg *= a4[:, :, 0]
            d4[:, :, 3] *= tau
            np.subtract(1.0, tau, out=P)  # P = o ⊙ (1 − τ)(1 + τ)
            np.add(1.0, tau, out=tmp)
            P *= tmp
            P *= a4[:, :, 3]
            for t in range(stop - 1, k.start - 1, -1):
                d = D4[t]
                dh += d_out[:, t]
                np.multiply(dh, P[t - k.start], out=t1)
                dc += t1
                d[:, 3] *= dh
                d[:, :3] *= dc3
                dc *= A4[t, :, 1]
                np.matmul(dA[t], W_hh, out=dh)


#: Steps whose BPTT factors are formed together (blocks that stay in cache).
CHUNK = 4


def shape_buffers_dict(store: dict, key: tuple, make, dtype) -> dict[str, np.ndarray]:
    """:func:`~manual_bp.layers.steps.shape_buffers` for a dict of named buffers."""
    found = store.get(key)
    if found is None:
        found = store[key] = make(*key, dtype)
    return found
