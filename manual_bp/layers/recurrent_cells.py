"""One time step of the Elman RNN, LSTM and GRU cells and its vector-Jacobian product.

Every cell maps ``(x_t, state_{t-1}) -> state_t`` with torch's parameter layout
(``weight_ih`` ``(gates·H, I)``, ``weight_hh`` ``(gates·H, H)``, ``bias_ih``, ``bias_hh``
``(gates·H,)``) and gate order (LSTM ``i, f, g, o``; GRU ``r, z, n``). A state is a tuple:
``(h,)`` for RNN and GRU, ``(h, c)`` for the LSTM; the cell's output is ``h``.

``*_step_backward(d_state, cache)`` receives ``∂C/∂state_t`` (the carried gradient: what
flows back from step ``t+1`` plus what the output at ``t`` receives) and returns
``(∂C/∂x_t, ∂C/∂state_{t-1}, {name: ∂C/∂param})`` — the per-step VJP of the cell
(equations ``RNN.step``, ``LSTM.step``, ``GRU.step`` of ``docs/sequences.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CELLS", "Cell", "StepCache"]

State = tuple[np.ndarray, ...]
Params = dict[str, np.ndarray | None]


@dataclass
class StepCache:
    """Everything a step's backward pass needs: the input, previous state and gate values."""

    x: np.ndarray
    prev: State
    values: tuple[np.ndarray, ...]
    params: Params


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # exp never overflows: exp(−|z|) ≤ 1; 1/(1 + e^{−z}) for z ≥ 0, e^z/(1 + e^z) otherwise.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0, e) / (1.0 + e)


def _tanh_grad(t: np.ndarray) -> np.ndarray:
    """``tanh'`` from the output: ``1 − t² = (1 − t)(1 + t)``, the factored form.

    ``1 − t²`` rounds ``t²`` first and loses ``ε t²/(1 − t²)`` relative in saturation
    (measured: 5e-14 at ``t = −0.9995``); the factored form is accurate to a few ε there,
    as torch's fused ``1 − t·t`` (one rounding) is.
    """
    return (1.0 - t) * (1.0 + t)


def _affine(x: np.ndarray, W: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    z = x @ W.T
    return z if b is None else z + b


def _param_grads(
    d_ih: np.ndarray, d_hh: np.ndarray, x: np.ndarray, h: np.ndarray, params: Params
) -> dict[str, np.ndarray]:
    """``∂C/∂W_ih = d_ihᵀ x``, ``∂C/∂W_hh = d_hhᵀ h``, biases summed over the batch."""
    grads = {"weight_ih": d_ih.T @ x, "weight_hh": d_hh.T @ h}
    if params["bias_ih"] is not None:
        grads["bias_ih"] = d_ih.sum(axis=0)
        grads["bias_hh"] = d_hh.sum(axis=0)
    return grads


# ---------------------------------------------------------------------------- Elman RNN
def rnn_step(x: np.ndarray, prev: State, params: Params, nonlinearity: str) -> tuple:
    """``h_t = φ(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh)``, φ = tanh or relu (``RNN.step``)."""
    (h,) = prev
    a = _affine(x, params["weight_ih"], params["bias_ih"])
    a += _affine(h, params["weight_hh"], params["bias_hh"])
    h_new = np.tanh(a) if nonlinearity == "tanh" else np.maximum(a, 0.0)
    return (h_new,), StepCache(x, prev, (h_new,), params)


def rnn_step_backward(d_state: State, cache: StepCache, nonlinearity: str) -> tuple:
    """VJP of :func:`rnn_step` (``RNN.step``): ``δa = δh_t ⊙ φ'``; ``δh_{t-1} = δa W_hh``."""
    (dh,) = d_state
    (h_new,) = cache.values
    # φ' from the output: tanh' = 1 − h², relu' = 1[a > 0] = 1[h > 0] (torch: 0 at a = 0).
    da = dh * _tanh_grad(h_new) if nonlinearity == "tanh" else dh * (h_new > 0)
    p = cache.params
    dx = da @ p["weight_ih"]
    dh_prev = da @ p["weight_hh"]
    return dx, (dh_prev,), _param_grads(da, da, cache.x, cache.prev[0], p)


# ---------------------------------------------------------------------------- LSTM
def lstm_step(x: np.ndarray, prev: State, params: Params) -> tuple:
    """LSTM step, torch gate order ``i, f, g, o`` (``LSTM.step``).

    ``[a_i a_f a_g a_o] = x W_ihᵀ + b_ih + h W_hhᵀ + b_hh``; ``i, f, o = σ(a)``,
    ``g = tanh(a_g)``; ``c_t = f ⊙ c_{t-1} + i ⊙ g``; ``h_t = o ⊙ tanh(c_t)``, or with
    torch's ``proj_size`` P the projected ``h_t = (o ⊙ tanh c_t) W_hrᵀ`` (``W_hr`` ``(P, H)``,
    ``LSTM.proj``): ``h`` has P units, ``c`` keeps H.
    """
    h, c = prev
    a = _affine(x, params["weight_ih"], params["bias_ih"])
    a += _affine(h, params["weight_hh"], params["bias_hh"])
    a_i, a_f, a_g, a_o = np.split(a, 4, axis=-1)
    i, f, g, o = _sigmoid(a_i), _sigmoid(a_f), np.tanh(a_g), _sigmoid(a_o)
    c_new = f * c + i * g
    tanh_c = np.tanh(c_new)
    h_new = o * tanh_c
    if params.get("weight_hr") is not None:
        h_new = h_new @ params["weight_hr"].T
    return (h_new, c_new), StepCache(x, prev, (i, f, g, o, tanh_c), params)


def lstm_step_backward(d_state: State, cache: StepCache) -> tuple:
    """VJP of :func:`lstm_step` (``LSTM.step``).

    ``δc = δc_t + δh_t ⊙ o ⊙ (1 − tanh² c_t)`` (both paths into ``c_t``), then
    ``δi = δc ⊙ g``, ``δf = δc ⊙ c_{t-1}``, ``δg = δc ⊙ i``, ``δo = δh_t ⊙ tanh c_t``,
    ``δc_{t-1} = δc ⊙ f``; through the gate nonlinearities to ``δa`` and the affine map.
    With a projection (``LSTM.proj``) ``∂C/∂W_hr = δh_tᵀ (o ⊙ tanh c_t)`` and the unprojected
    ``δh`` the formulas above take is ``δh_t W_hr``.
    """
    dh, dc_next = d_state
    i, f, g, o, tanh_c = cache.values
    _, c = cache.prev
    W_hr = cache.params.get("weight_hr")
    if W_hr is not None:
        d_hr = dh.T @ (o * tanh_c)
        dh = dh @ W_hr
    dc = dc_next + dh * o * _tanh_grad(tanh_c)
    da = np.concatenate(
        [
            dc * g * i * (1.0 - i),  # input gate
            dc * c * f * (1.0 - f),  # forget gate
            dc * i * _tanh_grad(g),  # cell candidate
            dh * tanh_c * o * (1.0 - o),  # output gate
        ],
        axis=-1,
    )
    p = cache.params
    dx = da @ p["weight_ih"]
    dh_prev = da @ p["weight_hh"]
    grads = _param_grads(da, da, cache.x, cache.prev[0], p)
    if W_hr is not None:
        grads["weight_hr"] = d_hr
    return dx, (dh_prev, dc * f), grads


# ---------------------------------------------------------------------------- GRU
def gru_step(x: np.ndarray, prev: State, params: Params) -> tuple:
    """GRU step, torch gate order ``r, z, n`` with ``b_hn`` inside the reset (``GRU.step``).

    ``r = σ(x W_irᵀ + b_ir + h W_hrᵀ + b_hr)``, ``z`` likewise,
    ``n = tanh(x W_inᵀ + b_in + r ⊙ (h W_hnᵀ + b_hn))``, ``h_t = (1 − z) ⊙ n + z ⊙ h``.
    """
    (h,) = prev
    gi = _affine(x, params["weight_ih"], params["bias_ih"])
    gh = _affine(h, params["weight_hh"], params["bias_hh"])
    i_r, i_z, i_n = np.split(gi, 3, axis=-1)
    h_r, h_z, h_n = np.split(gh, 3, axis=-1)
    r = _sigmoid(i_r + h_r)
    z = _sigmoid(i_z + h_z)
    n = np.tanh(i_n + r * h_n)
    h_new = (1.0 - z) * n + z * h
    return (h_new,), StepCache(x, prev, (r, z, n, h_n), params)


def gru_step_backward(d_state: State, cache: StepCache) -> tuple:
    """VJP of :func:`gru_step` (``GRU.step``).

    ``δn = δh_t ⊙ (1 − z)``, ``δz = δh_t ⊙ (h − n)``, ``δa_n = δn ⊙ (1 − n²)``,
    ``δr = δa_n ⊙ (h W_hnᵀ + b_hn)``; the hidden-side ``n`` gradient is ``δa_n ⊙ r``
    (b_hn sits inside the reset product), and ``δh_{t-1} = δh_t ⊙ z + δa_hh W_hh``.
    """
    (dh,) = d_state
    r, z, n, h_n = cache.values
    (h,) = cache.prev
    da_n = dh * (1.0 - z) * _tanh_grad(n)
    da_z = dh * (h - n) * z * (1.0 - z)
    da_r = da_n * h_n * r * (1.0 - r)
    d_ih = np.concatenate([da_r, da_z, da_n], axis=-1)
    d_hh = np.concatenate([da_r, da_z, da_n * r], axis=-1)
    p = cache.params
    dx = d_ih @ p["weight_ih"]
    dh_prev = dh * z + d_hh @ p["weight_hh"]
    return dx, (dh_prev,), _param_grads(d_ih, d_hh, cache.x, h, p)


@dataclass(frozen=True)
class Cell:
    """A cell kind: gate count, state count and its step / step VJP."""

    gates: int
    n_states: int
    step: object
    step_backward: object


CELLS = {
    "rnn_tanh": Cell(
        1,
        1,
        lambda x, s, p: rnn_step(x, s, p, "tanh"),
        lambda d, c: rnn_step_backward(d, c, "tanh"),
    ),
    "rnn_relu": Cell(
        1,
        1,
        lambda x, s, p: rnn_step(x, s, p, "relu"),
        lambda d, c: rnn_step_backward(d, c, "relu"),
    ),
    "lstm": Cell(4, 2, lstm_step, lstm_step_backward),
    "gru": Cell(3, 1, gru_step, gru_step_backward),
}
