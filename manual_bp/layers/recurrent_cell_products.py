"""First and second derivatives of one RNN, LSTM or GRU step, on any leading axes.

The per-step pieces of the layer products (``PROD.rnn.*``, ``PROD.lstm.*``, ``PROD.gru.*``
of ``docs/products.md``; the sweeps through time are in
:mod:`manual_bp.layers.recurrent_products`). One step maps the pre-activations
``a_ih = x Wᵢₕᵀ + b_ih`` and ``a_hh = h_{t-1} Wₕₕᵀ + b_hh`` (``gates·H`` wide, torch's gate
blocks) and the previous state to the new state. ``values`` are the step's cached
activations (``RNN``: ``(h,)``; ``LSTM``: ``(i, f, g, o, tanh c)``; ``GRU``:
``(r, z, n, hₙ)`` with ``hₙ = h_{t-1} W_hnᵀ + b_hn``), ``prev`` the previous state.
Every map broadcasts over leading axes: cotangents and tangents carry the V axis,
``(V, N, H)``, the cached values do not, ``(N, H)``; the plain gradient is the case with
no V axis. Each cell gives

* ``vjp(dS, values, prev) -> (d_ih, d_hh, direct)``: the cotangents of ``a_ih`` and
  ``a_hh`` from the new state's cotangent ``dS``, and the part of ``dS_prev`` that bypasses
  ``W_hh`` (``None`` for zero): ``dS_prev = (d_hh W_hh + direct₀, *direct[1:])``;
* ``jvp(t_ih, t_hh, tS_prev, values, prev) -> (tS, aux)``: the new state's tangent from
  the tangents of ``a_ih``, ``a_hh`` and the previous state; ``aux`` holds the gate
  tangents the second-order pass reuses;
* ``rvjp(dS, RdS, tS_prev, tS, aux, values, prev) -> (R d_ih, R d_hh, R direct)``: the
  R-derivative of ``vjp`` (Pearlmutter): ``vjp`` applied to ``R{dS}`` plus ``vjp``
  differentiated in the cached point along the tangents (σ″ = σ′(1 − 2σ),
  tanh″ = −2 tanh · tanh′, and the bilinear gate products).
"""

from __future__ import annotations

import numpy as np

__all__ = ["CELL_PRODUCTS"]


def _d_sigmoid(s: np.ndarray) -> np.ndarray:
    """``σ′ = σ(1 − σ)`` from the output."""
    return s * (1.0 - s)


def _d_tanh(t: np.ndarray) -> np.ndarray:
    """``tanh′ = (1 − t)(1 + t)`` from the output (the factored form, as the cells)."""
    return (1.0 - t) * (1.0 + t)


class RNNStep:
    """``h = φ(a)``, ``a = a_ih + a_hh``, φ = tanh or relu (``RNN.step``).

    ``δa = δh φ′``; tangent ``ḣ = φ′ ȧ``; ``R{δa} = R{δh} φ′ + δh φ″ ȧ`` with
    ``tanh″ ȧ = −2 h ḣ`` and ``relu″ = 0`` (the derivative of torch's ``1[a > 0]``).
    """

    def __init__(self, nonlinearity: str) -> None:
        self.tanh = nonlinearity == "tanh"

    def _slope(self, h: np.ndarray) -> np.ndarray:
        return _d_tanh(h) if self.tanh else (h > 0).astype(h.dtype)

    def vjp(self, dS, values, prev):
        da = dS[0] * self._slope(values[0])
        return da, da, (None,)

    def jvp(self, t_ih, t_hh, tS_prev, values, prev):
        return ((t_ih + t_hh) * self._slope(values[0]),), None

    def rvjp(self, dS, RdS, tS_prev, tS, aux, values, prev):
        (h,) = values
        R_da = RdS[0] * self._slope(h)
        if self.tanh:
            R_da = R_da - 2.0 * dS[0] * h * tS[0]  # tanh″(a) ȧ = −2 h (1 − h²) ȧ = −2 h ḣ
        return R_da, R_da, (None,)


class LSTMStep:
    """``i, f, o = σ(a)``, ``g = tanh(a_g)``, ``c = f c₋ + i g``, ``h = o tanh c``
    (``LSTM.step``), ``a = a_ih + a_hh``, ``k = tanh c``.

    VJP: ``δc = δc_next + δh o k′``; ``δa = [δc g i′, δc c₋ f′, δc i g′, δh k o′]``;
    ``δc₋ = δc f``. Tangent: ``ċ = ḟ c₋ + f ċ₋ + i̇ g + i ġ``, ``ḣ = ȯ k + o k′ ċ``.
    R: each product rule of the VJP differentiated (see ``docs/products.md#PROD.lstm.residual``).
    """

    def vjp(self, dS, values, prev):
        dh, dc_next = dS
        i, f, g, o, k = values
        c_prev = prev[1]
        dc = dc_next + dh * o * _d_tanh(k)
        # the factors in the order of the cell's own VJP: at V = 1 it is backward, bit for bit
        da = np.concatenate(
            [
                dc * g * i * (1.0 - i),
                dc * c_prev * f * (1.0 - f),
                dc * i * _d_tanh(g),
                dh * k * o * (1.0 - o),
            ],
            axis=-1,
        )
        return da, da, (None, dc * f)

    def jvp(self, t_ih, t_hh, tS_prev, values, prev):
        i, f, g, o, k = values
        c_prev = prev[1]
        ta_i, ta_f, ta_g, ta_o = np.split(t_ih + t_hh, 4, axis=-1)
        ti, tf = _d_sigmoid(i) * ta_i, _d_sigmoid(f) * ta_f
        tg, to = _d_tanh(g) * ta_g, _d_sigmoid(o) * ta_o
        tc = tf * c_prev + f * tS_prev[1] + ti * g + i * tg
        tk = _d_tanh(k) * tc
        th = to * k + o * tk
        return (th, tc), np.concatenate([ti, tf, tg, to, tk], axis=-1)

    def rvjp(self, dS, RdS, tS_prev, tS, aux, values, prev):
        dh, dc_next = dS
        Rdh, Rdc_next = RdS
        i, f, g, o, k = values
        c_prev, tc_prev = prev[1], tS_prev[1]
        ti, tf, tg, to, tk = np.split(aux, 5, axis=-1)
        dk = _d_tanh(k)
        dc = dc_next + dh * o * dk
        # R{δc}: R{δh} o k′ + δh ȯ k′ + δh o k″ċ, with k″ċ = −2 k k̇
        Rdc = Rdc_next + (Rdh * o + dh * to) * dk - 2.0 * dh * o * k * tk
        # R{x σ′(s)} = R{x} σ′ + x σ″ ṡ-terms: σ″ȧ = (1 − 2σ) σ̇, tanh″ȧ = −2 t ṫ
        R_da = np.concatenate(
            [
                (Rdc * g + dc * tg) * _d_sigmoid(i) + dc * g * (1.0 - 2.0 * i) * ti,
                (Rdc * c_prev + dc * tc_prev) * _d_sigmoid(f) + dc * c_prev * (1.0 - 2.0 * f) * tf,
                (Rdc * i + dc * ti) * _d_tanh(g) - 2.0 * dc * i * g * tg,
                (Rdh * k + dh * tk) * _d_sigmoid(o) + dh * k * (1.0 - 2.0 * o) * to,
            ],
            axis=-1,
        )
        return R_da, R_da, (None, Rdc * f + dc * tf)


class GRUStep:
    """``r = σ(a_r)``, ``z = σ(a_z)``, ``n = tanh(iₙ + r hₙ)``, ``h = (1 − z) n + z h₋``
    (``GRU.step``; ``a_r = i_r + h_r``, ``hₙ = h₋ W_hnᵀ + b_hn`` inside the reset).

    VJP: ``δaₙ = δh (1 − z) n′``, ``δa_z = δh (h₋ − n) z′``, ``δa_r = δaₙ hₙ r′``;
    ``d_ih = [δa_r, δa_z, δaₙ]``, ``d_hh = [δa_r, δa_z, δaₙ r]``, direct ``δh z``.
    Tangent: ``ṅ = n′ (i̇ₙ + ṙ hₙ + r ḣₙ)``, ``ḣ = (1 − z) ṅ + ż (h₋ − n) + z ḣ₋``.
    """

    def vjp(self, dS, values, prev):
        (dh,) = dS
        r, z, n, hn = values
        h = prev[0]
        da_n = dh * (1.0 - z) * _d_tanh(n)
        da_z = dh * (h - n) * z * (1.0 - z)  # factor order of the cell's VJP (bit for bit)
        da_r = da_n * hn * r * (1.0 - r)
        d_ih = np.concatenate([da_r, da_z, da_n], axis=-1)
        d_hh = np.concatenate([da_r, da_z, da_n * r], axis=-1)
        return d_ih, d_hh, (dh * z,)

    def jvp(self, t_ih, t_hh, tS_prev, values, prev):
        r, z, n, hn = values
        h = prev[0]
        ti_r, ti_z, ti_n = np.split(t_ih, 3, axis=-1)
        th_r, th_z, t_hn = np.split(t_hh, 3, axis=-1)
        tr, tz = _d_sigmoid(r) * (ti_r + th_r), _d_sigmoid(z) * (ti_z + th_z)
        tn = _d_tanh(n) * (ti_n + tr * hn + r * t_hn)
        th = (1.0 - z) * tn + tz * (h - n) + z * tS_prev[0]
        return (th,), np.concatenate([tr, tz, tn, t_hn], axis=-1)

    def rvjp(self, dS, RdS, tS_prev, tS, aux, values, prev):
        (dh,), (Rdh,) = dS, RdS
        r, z, n, hn = values
        h, th_prev = prev[0], tS_prev[0]
        tr, tz, tn, t_hn = np.split(aux, 4, axis=-1)
        dn = _d_tanh(n)
        da_n = dh * (1.0 - z) * dn
        Rda_n = (Rdh * (1.0 - z) - dh * tz) * dn - 2.0 * dh * (1.0 - z) * n * tn
        Rda_z = (Rdh * (h - n) + dh * (th_prev - tn)) * _d_sigmoid(z)
        Rda_z = Rda_z + dh * (h - n) * (1.0 - 2.0 * z) * tz
        Rda_r = (Rda_n * hn + da_n * t_hn) * _d_sigmoid(r) + da_n * hn * (1.0 - 2.0 * r) * tr
        R_ih = np.concatenate([Rda_r, Rda_z, Rda_n], axis=-1)
        R_hh = np.concatenate([Rda_r, Rda_z, Rda_n * r + da_n * tr], axis=-1)
        return R_ih, R_hh, (Rdh * z + dh * tz,)


#: a layer's ``mode`` -> its step derivatives
CELL_PRODUCTS = {
    "rnn_tanh": RNNStep("tanh"),
    "rnn_relu": RNNStep("relu"),
    "lstm": LSTMStep(),
    "gru": GRUStep(),
}
