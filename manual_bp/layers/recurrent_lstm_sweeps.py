"""The LSTM's product sweeps in their fast form: one GEMM per time step for all V and N.

Same mathematics as the readable sweeps of :mod:`manual_bp.layers.recurrent_products` over
the cell derivatives of :mod:`manual_bp.layers.recurrent_cell_products` (``PROD.lstm.vjp``,
``PROD.lstm.jvp``, ``PROD.lstm.residual``), reorganised for speed. The step is linear in its
tangents (cotangents) with coefficients the forward pass fixed, so they are formed ONCE per
cache for all steps (:class:`LSTMLinearisation`, kept on the cache)::

    P = [σ′(i) g, σ′(f) c₋, tanh′(g) i, σ′(o) k]   (N, 4H),   Q = o k′,   F = f

and a step of each sweep is a handful of elementwise operations and ONE product with
``W_hh`` on the rows ``(N·V, ·)``:

* tangents:   ``ȧ = pre_t + ḣ₋ W_hhᵀ``, ``u = ȧ ⊙ P``, ``ċ = u_i + u_f + u_g + F ċ₋``,
  ``ḣ = u_o + Q ċ``;
* cotangents: ``δh = M_t + δh₊``, ``δc = δh Q + Mc_t + δc₊``, ``δa = [δc, δc, δc, δh] ⊙ P
  + X_t``, ``δh₋ = δa W_hh``, ``δc₋ = δc F``.

Everything not recurrent is one GEMM over all ``T·N`` rows outside the loop: the tangent
pre-activations (``ẋ W_ihᵀ + x Ṫ_W_ihᵀ + h₋ Ṫ_W_hhᵀ + Ṫ_b``), the input and parameter
cotangents, and for the R-operator the sources ``Mc``, ``X`` (the second-order terms, from
the plain gradient's sweep and the tangents) — so the residual's R-sweep is the cotangent
sweep with sources. Arrays are time-major in processing order with the V axis inside the
batch, ``(T, N, V, ·)``: a step's slice is one contiguous ``(N·V, ·)`` block and every
product over time is one 2-D GEMM on ``(T·N, V·…)``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LSTMLinearisation", "SweepMemo", "summed_records"]


def _d_tanh(t: np.ndarray) -> np.ndarray:
    return (1.0 - t) * (1.0 + t)


def _shifted(a: np.ndarray) -> np.ndarray:
    """``a`` one step later in processing order: ``out[t] = a[t − 1]``, ``out[0] = 0``
    (the initial state is constant: no tangent)."""
    out = np.empty_like(a)
    out[0] = 0.0
    out[1:] = a[:-1]
    return out


class LSTMLinearisation:
    """One LSTM direction linearised at its cached point, processing order, time-major
    ``(T, N, ·)``: :meth:`of` a direction's cache (the fast LSTM's stacked arrays, or the
    readable per-step caches through their
    :class:`~manual_bp.layers.recurrent_products.DirectionTrace`)."""

    def __init__(self, x, h_prev, c_prev, gates, k, W_ih, W_hh, reverse: bool) -> None:
        T, N, H = k.shape
        self.reverse, self.x, self.h_prev, self.c_prev, self.k = reverse, x, h_prev, c_prev, k
        self.W_ih, self.W_hh, self.W_hhT = W_ih, W_hh, np.ascontiguousarray(W_hh.T)
        self.dtype = x.dtype
        # [x, h₋] side by side: both weights' products in one GEMM (``W_ih`` first)
        self.xh = np.concatenate([x, h_prev], axis=-1)
        i, f, g, o = (gates[..., j * H : (j + 1) * H] for j in range(4))
        self.i, self.f, self.g, self.o = i, f, g, o
        D = gates * (1.0 - gates)  # σ′ of i, f, o; g's slot is tanh′
        D[..., 2 * H : 3 * H] = _d_tanh(g)
        self.D = D[:, :, None]  # gate slopes (T, N, 1, 4H)
        self.dk = _d_tanh(k)[:, :, None]
        P = D * np.concatenate([g, c_prev, i, k], axis=-1)
        self.P = P[:, :, None]  # (T, N, 1, 4H)
        self.P4 = P.reshape(T, N, 1, 4, H)
        self.Q = (o * self.dk[:, :, 0])[:, :, None]  # (T, N, 1, H)
        self.F = f[:, :, None]

    @classmethod
    def of(cls, steps, reverse: bool, trace) -> LSTMLinearisation:
        """From a direction's cache: the fast LSTM's arrays are already in processing order
        (``steps.gates`` ``(N, T, 4H)``); per-step caches go through ``trace(steps,
        reverse)`` (real time)."""
        if hasattr(steps, "gates"):  # FastLSTMCache

            def tm(a: np.ndarray) -> np.ndarray:
                return np.ascontiguousarray(a.swapaxes(0, 1))

            c, h = tm(steps.c), tm(steps.h)
            h_prev = np.concatenate([steps.h0[None], h[:-1]])
            c_prev = np.concatenate([steps.c0[None], c[:-1]])
            return cls(
                tm(steps.x), h_prev, c_prev, tm(steps.gates), np.tanh(c),
                steps.weight_ih, steps.weight_hh, reverse,
            )  # fmt: skip
        tr = trace(steps, reverse)

        def proc(a: np.ndarray) -> np.ndarray:  # (N, T, F) real time -> (T, N, F) processing
            a = a.swapaxes(0, 1)
            return np.ascontiguousarray(a[::-1] if reverse else a)

        gates = np.concatenate([proc(v) for v in tr.values[:4]], axis=-1)
        x, h_prev, c_prev = proc(tr.x), proc(tr.prev[0]), proc(tr.prev[1])
        k = proc(tr.values[4])
        return cls(x, h_prev, c_prev, gates, k, tr.weight_ih, tr.weight_hh, reverse)

    # ------------------------------------------------------------------ layouts
    def to_proc(self, a: np.ndarray) -> np.ndarray:
        """A real-time ``(V, N, T, F)`` stack as ``(T, N, V, F)`` in processing order."""
        a = a.transpose(2, 1, 0, 3)
        return np.ascontiguousarray(a[::-1] if self.reverse else a)

    def from_proc(self, a: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_proc`: ``(T, N, V, F)`` as ``(V, N, T, F)`` in real time."""
        a = a[::-1] if self.reverse else a
        return a.transpose(2, 1, 0, 3).copy()  # never a view of a (kept) record

    # ------------------------------------------------------------------ products over time
    @staticmethod
    def rows_times(rows: np.ndarray, W: np.ndarray) -> np.ndarray:
        """``rows (T, N, K) @ Wᵀ`` for V matrices ``W (V, G, K)``: ``(T, N, V, G)``."""
        T, N, K = rows.shape
        V, G = W.shape[:2]
        Wt = W.transpose(2, 0, 1).reshape(K, V * G)
        return (rows.reshape(T * N, K) @ Wt).reshape(T, N, V, G)

    @staticmethod
    def times(a: np.ndarray, W: np.ndarray) -> np.ndarray:
        """``a (T, N, V, G) @ W (G, K)``: ``(T, N, V, K)``, one GEMM."""
        return (a.reshape(-1, a.shape[-1]) @ W).reshape(*a.shape[:-1], W.shape[-1])

    @staticmethod
    def fixed_times(d: np.ndarray, W: np.ndarray) -> np.ndarray:
        """``d (T, N, 1, G) @ W (V, G, K)`` for V matrices: ``(T, N, V, K)``."""
        T, N, _, G = d.shape
        V, _, K = W.shape
        Wc = W.transpose(1, 0, 2).reshape(G, V * K)
        return (d.reshape(T * N, G) @ Wc).reshape(T, N, V, K)

    @staticmethod
    def summed(d: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """``Σ_{t,n} d[t, n, v]ᵀ rows[t, n]``: ``(V, G, K)`` — one GEMM."""
        T, N, V, G = d.shape
        K = rows.shape[-1]
        if rows.ndim == 3:  # fixed rows, V cotangents
            out = d.reshape(T * N, V * G).T @ rows.reshape(T * N, K)
            return out.reshape(V, G, K)
        # a fixed cotangent d (T, N, 1, G) against V tangent rows (T, N, V, K)
        out = d.reshape(T * N, G).T @ rows.reshape(T * N, -1)
        return out.reshape(G, rows.shape[2], K).transpose(1, 0, 2)

    @staticmethod
    def per_sample(d: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """``Σ_t d[t, n, v]ᵀ rows[t, n]`` per sample: ``(V, N, G, K)``."""
        T, N, V, G = d.shape
        out = np.matmul(d.reshape(T, N, V * G).transpose(1, 2, 0), rows.transpose(1, 0, 2))
        return out.reshape(N, V, G, -1).transpose(1, 0, 2, 3)

    # ------------------------------------------------------------------ the two sweeps
    def forward(self, pre: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tangents through time from the non-recurrent pre-activation tangents ``pre``
        ``(T, N, V, 4H)`` (overwritten: it becomes ``ȧ``): ``(ȧ, ċ, ḣ)``."""
        T, N, V, G = pre.shape
        H = G // 4
        TC = np.empty((T, N, V, H), pre.dtype)
        TH = np.empty_like(TC)
        u = np.empty((N, V, G), pre.dtype)
        for t in range(T):
            ta = pre[t]
            if t:  # ḣ₋ W_hhᵀ (ḣ₀ = 0)
                ta += (TH[t - 1].reshape(N * V, H) @ self.W_hhT).reshape(N, V, G)
            np.multiply(ta, self.P[t], out=u)
            tc = TC[t]
            np.add(u[..., :H], u[..., H : 2 * H], out=tc)
            tc += u[..., 2 * H : 3 * H]
            if t:
                tc += self.F[t] * TC[t - 1]
            np.multiply(self.Q[t], tc, out=TH[t])
            TH[t] += u[..., 3 * H :]
        return pre, TC, TH

    def backward(self, Mh: np.ndarray, Mc=None, X=None, record: bool = False):
        """Cotangents through time: ``δa`` ``(T, N, V, 4H)`` from the output cotangents
        ``Mh`` ``(T, N, V, H)``, with sources ``Mc`` on ``δc`` and ``X`` on ``δa`` (None:
        zero); ``record``: also every step's ``δh``, ``δc``."""
        T, N, V, H = Mh.shape
        G = 4 * H
        DA = np.empty((T, N, V, G), np.result_type(Mh.dtype, self.dtype))
        if record:
            DH, DC = np.empty((T, N, V, H), DA.dtype), np.empty((T, N, V, H), DA.dtype)
        dh_next = dc_next = None
        for t in range(T - 1, -1, -1):
            dh = Mh[t] if dh_next is None else Mh[t] + dh_next
            dc = dh * self.Q[t]
            if Mc is not None:
                dc += Mc[t]
            if dc_next is not None:
                dc += dc_next
            da = DA[t]
            da4 = da.reshape(N, V, 4, H)
            np.multiply(dc[:, :, None, :], self.P4[t, :, :, :3], out=da4[:, :, :3])
            np.multiply(dh, self.P4[t, :, :, 3], out=da4[:, :, 3])
            if X is not None:
                da += X[t]
            if record:
                DH[t], DC[t] = dh, dc
            if t:
                dh_next = (da.reshape(N * V, G) @ self.W_hh).reshape(N, V, H)
                dc_next = dc * self.F[t]
        return (DA, DH, DC) if record else DA

    # ------------------------------------------------------------------ the products
    def pre_tangent(self, tx, tp: dict, V: int, dtype) -> np.ndarray:
        """The non-recurrent part of ``ȧ``: ``ẋ W_ihᵀ + x Ṫ_W_ihᵀ + h₋ Ṫ_W_hhᵀ + Ṫ_b``,
        ``(T, N, V, 4H)`` (``tx`` in processing layout or None)."""
        T, N = self.x.shape[:2]
        G = self.W_hh.shape[0]
        pre = None
        if tx is not None:
            pre = self.times(tx, self.W_ih.T).astype(dtype, copy=False)
        terms = [(self.x, tp["weight_ih"]), (self.h_prev, tp["weight_hh"])]
        if tp["weight_ih"] is not None and tp["weight_hh"] is not None:  # one GEMM for both
            terms = [(self.xh, np.concatenate([tp["weight_ih"], tp["weight_hh"]], axis=-1))]
        for rows, W in terms:
            if W is not None:
                term = self.rows_times(rows, W)
                pre = term.astype(dtype, copy=False) if pre is None else pre + term
        if pre is None:
            pre = np.zeros((T, N, V, G), dtype)
        for kind in ("ih", "hh"):
            if tp[f"bias_{kind}"] is not None:
                pre += tp[f"bias_{kind}"]  # (V, 4H) on every (t, n)
        return pre

    def param_cotangents(self, DA: np.ndarray, sum_batch: bool, bias: bool) -> dict:
        """``{weight_ih, weight_hh[, bias_ih, bias_hh]}`` of the cotangents ``δa``: summed
        over batch and time ``(V, …)`` or per sample over its own steps ``(V, N, …)``."""
        both = self.summed(DA, self.xh) if sum_batch else self.per_sample(DA, self.xh)
        split = self.x.shape[-1]
        grads = {"weight_ih": both[..., :split], "weight_hh": both[..., split:]}
        if bias:
            b = DA.sum(axis=(0, 1)) if sum_batch else DA.sum(axis=0).transpose(1, 0, 2)
            grads["bias_ih"], grads["bias_hh"] = b, b.copy()
        return grads

    def residual(self, g, Rg, tp: dict, record):
        """One direction of the R-operator (``PROD.lstm.residual``): ``g`` ``(T, N, 1, H)``
        the gradient reaching the outputs, ``Rg`` ``(T, N, V, H)`` its R-derivative (None:
        zero), ``record = (ẋ, ȧ, ċ, ḣ)`` from :meth:`forward`. Returns
        ``(δa, R{δa}, R{∂θ})``; the R-sweep is :meth:`backward` with the sources::

            Mh_t = R{g}_t + δa_{t+1} Ṫ_W_hh
            Mc_t = δh (k′ ȯ − 2 o k k̇) + δc_{t+1} ḟ_{t+1}
            X_t  = [δc (ġ σ′(i) + g (1 − 2i) i̇), δc (ċ₋ σ′(f) + c₋ (1 − 2f) ḟ),
                    δc (i̇ tanh′(g) − 2 i g ġ),    δh (k̇ σ′(o) + k (1 − 2o) ȯ)]
        """
        tx, TA, TC, TH = record
        T, N, V, H = TC.shape
        DA, DH, DC = self.backward(g, record=True)
        A = self.D * TA  # gate tangents i̇, ḟ, ġ, ȯ
        ti, tf, tg, to = (A[..., j * H : (j + 1) * H] for j in range(4))
        tk = self.dk * TC
        i, f, gg, o, k = (a[:, :, None] for a in (self.i, self.f, self.g, self.o, self.k))
        c_prev = self.c_prev[:, :, None]
        d = [a[..., None, :] for a in np.split(self.D[:, :, 0], 4, axis=-1)]
        Mh = np.zeros((T, N, V, H), TC.dtype) if Rg is None else Rg.astype(TC.dtype, copy=True)
        if tp["weight_hh"] is not None:  # R{W_hh} in δS₋ = δa_hh W_hh
            Mh[:-1] += self.fixed_times(DA[1:], tp["weight_hh"])
        Mc = DH * (self.dk * to - 2.0 * o * k * tk)
        Mc[:-1] += DC[1:] * tf[1:]
        X = np.empty((T, N, V, 4 * H), TC.dtype)
        X[..., :H] = DC * (tg * d[0] + gg * (1.0 - 2.0 * i) * ti)
        X[..., H : 2 * H] = DC * (_shifted(TC) * d[1] + c_prev * (1.0 - 2.0 * f) * tf)
        X[..., 2 * H : 3 * H] = DC * (ti * d[2] - 2.0 * i * gg * tg)
        X[..., 3 * H :] = DH * (tk * d[3] + k * (1.0 - 2.0 * o) * to)
        R = self.backward(Mh, Mc, X)
        both = self.summed(R, self.xh)
        r_ih, r_hh = both[..., : self.x.shape[-1]], both[..., self.x.shape[-1] :]
        if tx is not None:  # R{x} in ∂W_ih = Σ δa_ihᵀ x
            r_ih = r_ih + self.summed(DA, tx)
        r_hh = r_hh + self.summed(DA, _shifted(TH))
        b = R.sum(axis=(0, 1))
        return DA, R, {"weight_ih": r_ih, "weight_hh": r_hh, "bias_ih": b, "bias_hh": b.copy()}


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)


class SweepMemo:
    """The last sweeps of one cache, reused when a product is asked again of the same
    argument (compared value for value, never by identity).

    Cotangent sweeps are separable over the V axis (row ``v`` of the result depends on row
    ``v`` of the argument only), so they are kept per row: a walk asking ``param_vjp(M)``
    and then ``input_vjp(M)`` — or ``input_vjp([R{g}, g])`` after ``param_vjp(R{g})`` and
    the residual's own sweep of ``g`` — runs each sweep once. Tangent sweeps are linear in
    ``(T, T_θ)``: the residual's sweep of ``(T, T_θ)`` is the sum of the records of
    ``input_jvp(T)`` and ``param_jvp(T_θ)`` when both were asked.
    """

    def __init__(self, keep_rows: int = 32, keep_jvps: int = 2) -> None:
        self.rows: list = []  # (key, row copy, stacks, v), oldest first
        self.jvps: list = []
        self.keep_rows, self.keep_jvps = keep_rows, keep_jvps
        self._weights: dict[str, np.ndarray] = {}  # per dtype: no float64 in a float32 cache

    def _key(self, row: np.ndarray) -> tuple:
        """A cheap fingerprint of a row (shape, dtype, one dot product with fixed random
        weights): a candidate only, a hit is confirmed by comparing every value."""
        flat = np.ascontiguousarray(row).reshape(-1)
        weights = self._weights.get(flat.dtype.str)
        if weights is None or weights.size < flat.size:
            weights = np.random.default_rng(0).standard_normal(flat.size).astype(flat.dtype)
            self._weights[flat.dtype.str] = weights
        return row.shape, flat.dtype.str, float(flat @ weights[: flat.size])

    def find_rows(self, M: np.ndarray) -> list:
        """Per row of ``M``: ``(stacks, v)`` of the sweep that computed it, or None."""
        found = []
        for row in M:
            key = self._key(row)
            hit = (e for e in self.rows if e[0] == key and _same(e[1], row))
            entry = next(hit, None)
            found.append(None if entry is None else entry[2:])
        return found

    def put_rows(self, M: np.ndarray, stacks: dict) -> None:
        """Keep row ``v`` of ``M`` with ``(stacks, v)`` (``stacks[k]`` ``(T, N, V, 4H)``)."""
        self.rows += [(self._key(row), row.copy(), stacks, v) for v, row in enumerate(M)]
        del self.rows[: max(0, len(self.rows) - self.keep_rows)]

    @staticmethod
    def groups(found: list) -> list[dict]:
        """The rows' sources as runs of consecutive rows of one sweep, each
        ``{k: (T, N, V_run, 4H)}`` a slice (no copy): products are taken per run and
        their (smaller) results stacked."""
        runs: list = []
        for stacks, v in found:
            last = runs[-1] if runs else None
            if last is not None and last[0] is stacks and last[2] == v:
                last[2] += 1
            else:
                runs.append([stacks, v, v + 1])
        return [{k: a[:, :, start:stop] for k, a in src.items()} for src, start, stop in runs]

    def find_jvp(self, T, T_params: dict):
        """The records of a tangent sweep of exactly ``(T, T_params)``, or None."""
        for T0, P0, result in self.jvps:
            same = _same(T0, T) and P0.keys() == T_params.keys()
            if same and all(_same(P0[name], T_params[name]) for name in P0):
                return result
        return None

    def put_jvp(self, T, T_params: dict, result) -> None:
        copies = {name: a.copy() for name, a in T_params.items()}
        entry = (None if T is None else T.copy(), copies, result)
        self.jvps = [entry, *self.jvps][: self.keep_jvps]


def summed_records(a: dict, b: dict) -> dict:
    """The records of the tangent sweep of ``(T, 0) + (0, T_θ)`` (linear in the tangents)."""

    def add(x, y):
        return x if y is None else y if x is None else x + y

    return {k: tuple(add(x, y) for x, y in zip(a[k], b[k], strict=True)) for k in a}
