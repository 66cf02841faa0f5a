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

from manual_bp.layers.recurrent_cells import _sigmoid, _tanh_grad

__all__ = ["lstm_backward_fast", "lstm_forward_fast"]


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
    projected = (x.reshape(n * length, -1) @ W_ih.T).reshape(n, length, -1)
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
        "weight_ih": rows.T @ cache.x.reshape(len(rows), -1),
        "weight_hh": rows.T @ h_prev.reshape(len(rows), H),
    }
    if cache.bias:
        grads["bias_ih"] = rows.sum(axis=0)
        grads["bias_hh"] = grads["bias_ih"].copy()
    dx = (rows @ cache.weight_ih).reshape(n, length, -1)
    return dx, dh, dc, grads
