"""The five products of RNN, LSTM and GRU on a leading axis of V vectors (``docs/products.md``).

A recurrent layer is a composition through time: per (layer, direction) the state runs
``S_t = cell(x_t, S_{t-1}; θ)`` in processing order (backwards in time for the reverse
direction) from a constant initial state (zeros or the caller's ``initial_state``), the
output is ``h_t`` and a stacked layer reads the concatenated directions below. The
products are the sweeps of that composition, vectorised over V and the batch; only time
is a Python loop (each step needs the previous one):

* VJP: backpropagation through time with ``V`` cotangent sequences at once, the step's
  VJP (:mod:`~manual_bp.layers.recurrent_cell_products`) on ``(V, N, H)``; the input and
  parameter cotangents are one product each after the loop, parameters summed over time
  (shared weights) and, per sample, over that sample's steps only;
* JVP: forward mode through time, the tangent of every state carried forward;
* residual: the R-operator of the whole unrolled recurrence: a forward sweep of tangents
  of every state, then a backward sweep carrying both the gradient ``δS`` (no V axis) and
  its R-derivative ``R{δS}`` ``(V, N, H)``.

Directions are traced from either cache form (the readable per-step caches or the fast
LSTM's stacked arrays) into real-time arrays ``(N, T, ·)``. The sweeps run in the core's
batch-major layout: a product's argument and result are in the forward input's layout
(time-major, batch-major or unbatched, ``(V, …)``). Dropout between layers (training mode)
is the forward pass's fixed mask, a diagonal linear map, applied on both sweeps. A projected
LSTM (``proj_size``) is refused: the cell products do not model ``W_hr``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from manual_bp.layers.base import Layer, tangent_count
from manual_bp.layers.recurrent_cell_products import CELL_PRODUCTS
from manual_bp.layers.recurrent_fast import FastLSTMCache
from manual_bp.layers.recurrent_lstm_products import FastLSTMProducts, lstm_residual
from manual_bp.layers.recurrent_unroll import from_core, sequence_to_core

__all__ = ["DirectionTrace", "RecurrentProducts", "trace_direction"]

_KINDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


@dataclass
class DirectionTrace:
    """One direction at the cached point, in real time: the input ``x`` ``(N, T, I)``,
    previous states ``prev`` and step values (each ``(N, T, ·)``), the weights."""

    x: np.ndarray
    prev: tuple[np.ndarray, ...]
    values: tuple[np.ndarray, ...]
    weight_ih: np.ndarray
    weight_hh: np.ndarray
    reverse: bool
    #: the fast LSTM's form: its backward sums the parameter gradients in one product
    stacked: bool = False

    def order(self) -> range:
        """Processing order of the time steps."""
        length = self.x.shape[1]
        return range(length - 1, -1, -1) if self.reverse else range(length)

    def at(self, t: int) -> tuple[tuple, tuple]:
        return tuple(v[:, t] for v in self.values), tuple(p[:, t] for p in self.prev)


def trace_direction(steps, reverse: bool) -> DirectionTrace:
    """A :class:`DirectionTrace` from one direction's cache (per-step list or fast LSTM)."""
    if isinstance(steps, FastLSTMCache):  # stacked over processing order: flip back if reverse
        flip = (lambda a: a[:, ::-1]) if reverse else (lambda a: a)
        h_prev = np.concatenate([steps.h0[:, None], steps.h[:, :-1]], axis=1)
        c_prev = np.concatenate([steps.c0[:, None], steps.c[:, :-1]], axis=1)
        gates = np.split(steps.gates, 4, axis=-1)
        values = (*gates, np.tanh(steps.c))
        return DirectionTrace(
            flip(steps.x),
            (flip(h_prev), flip(c_prev)),
            tuple(flip(v) for v in values),
            steps.weight_ih,
            steps.weight_hh,
            reverse,
            stacked=True,
        )
    first = steps[0]
    return DirectionTrace(
        np.stack([s.x for s in steps], axis=1),
        tuple(np.stack([s.prev[j] for s in steps], axis=1) for j in range(len(first.prev))),
        tuple(np.stack([s.values[j] for s in steps], axis=1) for j in range(len(first.values))),
        first.params["weight_ih"],
        first.params["weight_hh"],
        reverse,
    )


def _rows_times(a: np.ndarray, W: np.ndarray) -> np.ndarray:
    """``a (N, T, k) @ W (V, k, m) -> (V, N, T, m)``: fixed rows times V matrices."""
    n, length, k = a.shape
    return (a.reshape(n * length, k) @ W).reshape(W.shape[0], n, length, W.shape[-1])


def _summed_cotangents(d: np.ndarray, a: np.ndarray, tr: DirectionTrace, bias: bool):
    """``(Σ_{n,t} dᵀ a (V, m, k), Σ_{n,t} d (V, m) or None)`` summed in the order of the
    layer's own backward pass, so that ``V = 1`` is ``backward`` bit for bit: per step in
    reversed processing order (the readable form), or one product over the rows in
    processing order (the fast LSTM). V is folded into the columns: one 2-D product."""
    V, N, T, m = d.shape
    if tr.stacked:
        order = slice(None, None, -1) if tr.reverse else slice(None)
        rows = d[:, :, order].transpose(1, 2, 0, 3).reshape(N * T, V * m)
        weight = (rows.T @ a[:, order].reshape(N * T, -1)).reshape(V, m, -1)
        return weight, rows.sum(axis=0).reshape(V, m) if bias else None
    weight = bias_sum = None
    for t in reversed(tr.order()):
        rows = d[:, :, t].transpose(1, 0, 2).reshape(N, V * m)
        step = (rows.T @ a[:, t]).reshape(V, m, -1)
        weight = step if weight is None else weight + step
        if bias:
            step_bias = rows.sum(axis=0).reshape(V, m)
            bias_sum = step_bias if bias_sum is None else bias_sum + step_bias
    return weight, bias_sum


def _weight_cotangent(d: np.ndarray, a: np.ndarray, sum_batch: bool) -> np.ndarray:
    """``Σ_t dᵀ a`` of V cotangent stacks ``d (V, N, T, m)`` and fixed rows ``a (N, T, k)``:
    ``(V, m, k)`` summed over the batch, ``(V, N, m, k)`` per sample."""
    if sum_batch:
        V, m = d.shape[0], d.shape[-1]
        return np.swapaxes(d.reshape(V, -1, m), 1, 2) @ a.reshape(-1, a.shape[-1])
    return np.swapaxes(d, -1, -2) @ a


def _mixed_cotangent(d: np.ndarray, ta: np.ndarray) -> np.ndarray:
    """``Σ_{n,t} dᵀ ȧ`` of a fixed ``d (N, T, m)`` and V tangents ``ȧ (V, N, T, k)``."""
    V, k = ta.shape[0], ta.shape[-1]
    return d.reshape(-1, d.shape[-1]).T @ ta.reshape(V, -1, k)


class RecurrentProducts(FastLSTMProducts, Layer):
    """The products of :class:`~manual_bp.layers.recurrent.RecurrentLayer` (its base); the
    LSTM's sweeps in their fast form (:class:`FastLSTMProducts`)."""

    _trace = staticmethod(lambda steps, reverse: trace_direction(steps, reverse))

    # ------------------------------------------------------------------ helpers
    def _traces(self, cache) -> list[DirectionTrace]:
        return [trace_direction(s, bool(k % self.directions)) for k, s in enumerate(cache.steps)]

    def _core(self, cache, A: np.ndarray | None) -> np.ndarray | None:
        """A product's argument in the core's layout ``(V, N, T, ·)``; refuses ``proj_size``."""
        if self.proj_size:
            raise NotImplementedError(
                f"{self!r}: the V-axis products do not model proj_size (W_hr); "
                "use backward / backward_sequence"
            )
        return None if A is None else sequence_to_core(A, cache.layout)

    @staticmethod
    def _masked(cache, layer: int, *arrays):
        """``arrays`` through the dropout mask on ``layer``'s output (unchanged: none)."""
        mask = cache.masks[layer] if cache.masks else None
        return arrays if mask is None else tuple(None if a is None else a * mask for a in arrays)

    def _direction_tangents(self, T_params, layer: int, d: int) -> dict:
        suffix = "_reverse" if d else ""
        return {kind: T_params.get(f"{kind}_l{layer}{suffix}") for kind in _KINDS}

    def _sweep_vjp(self, cache, M: np.ndarray):
        """BPTT of V cotangents ``M (V, N, T, H·D)``: ``(J_xᵀ M, {k: (d_ih, d_hh)})`` with
        the stacked pre-activation cotangents ``(V, N, T, gates·H)`` of direction ``k``
        (the LSTM's fast form: runs of rows ``[{k: δa}]``, :meth:`_lstm_stacks`)."""
        if self.mode == "lstm":
            runs = self._lstm_stacks(cache, M)
            dx = [self._lstm_dx(cache, run, 0) for run in runs]
            return (np.concatenate(dx) if len(dx) > 1 else dx[0]), runs
        cell, H, D = CELL_PRODUCTS[self.mode], self.hidden_size, self.directions
        traces, stacks = self._traces(cache), {}
        for layer in reversed(range(self.num_layers)):
            dx = None
            for d in range(D):
                k = layer * D + d
                M_d = M[..., d * H : (d + 1) * H]
                tr = traces[k]
                d_ih = np.empty((*M_d.shape[:-1], tr.weight_ih.shape[0]), dtype=M.dtype)
                d_hh = np.empty_like(d_ih)
                dS = tuple(np.zeros_like(M_d[..., 0, :]) for _ in tr.prev)
                for t in reversed(tr.order()):
                    values, prev = tr.at(t)
                    dS = (dS[0] + M_d[..., t, :], *dS[1:])
                    d_ih[..., t, :], d_hh[..., t, :], direct = cell.vjp(dS, values, prev)
                    dS = _carry(d_hh[..., t, :] @ tr.weight_hh, direct)
                stacks[k] = (d_ih, d_hh)
                dx_d = d_ih @ tr.weight_ih
                dx = dx_d if dx is None else dx + dx_d
            (M,) = self._masked(cache, layer - 1, dx) if layer else (dx,)
        return M, stacks

    def _sweep_jvp(self, cache, T, T_params):
        """Forward mode through time: ``(J_x T + J_θ T_θ, records)``; ``records[k]`` holds
        direction ``k``'s input tangent, state tangents (previous and new, ``(V, N, T, H)``)
        and the cell's gate tangents, for the second-order sweep."""
        cell, D = CELL_PRODUCTS[self.mode], self.directions
        V = tangent_count(T, T_params)
        traces = None if self.mode == "lstm" else self._traces(cache)
        records, tx = {}, T
        for layer in range(self.num_layers):
            outs = []
            for d in range(D):
                k = layer * D + d
                tp = self._direction_tangents(T_params, layer, d)
                dtypes = [a.dtype for a in tp.values() if a is not None]
                if tx is not None:
                    dtypes.append(tx.dtype)
                lin = self._linearised(cache, k)
                if lin is not None:  # the fast sweep, records in processing order
                    dtype = np.result_type(lin.dtype, *dtypes)
                    t_in = None if tx is None else lin.to_proc(tx)
                    records[k] = (t_in, *lin.forward(lin.pre_tangent(t_in, tp, V, dtype)))
                    outs.append(lin.from_proc(records[k][3]))
                    continue
                tr = traces[k]
                dtype = np.result_type(tr.x.dtype, *dtypes)
                n, length = tr.x.shape[:2]
                gh, H = tr.weight_hh.shape
                t_ih = np.zeros((V, n, length, gh), dtype)
                t_hh = np.zeros((V, n, length, gh), dtype)
                if tx is not None:
                    t_ih += tx @ tr.weight_ih.T
                for kind, rows, target in (("ih", tr.x, t_ih), ("hh", tr.prev[0], t_hh)):
                    if tp[f"weight_{kind}"] is not None:
                        target += _rows_times(rows, np.swapaxes(tp[f"weight_{kind}"], 1, 2))
                    if tp[f"bias_{kind}"] is not None:
                        target += tp[f"bias_{kind}"][:, None, None, :]
                t_prev = tuple(np.zeros((V, n, length, H), dtype) for _ in tr.prev)
                t_new = tuple(np.zeros((V, n, length, H), dtype) for _ in tr.prev)
                aux = None
                tS = tuple(np.zeros((V, n, H), dtype) for _ in tr.prev)  # constant initial state
                for t in tr.order():
                    values, prev = tr.at(t)
                    for slot, value in zip(t_prev, tS, strict=True):
                        slot[:, :, t] = value
                    t_hh_t = t_hh[:, :, t] + tS[0] @ tr.weight_hh.T
                    tS, aux_t = cell.jvp(t_ih[:, :, t], t_hh_t, tS, values, prev)
                    for slot, value in zip(t_new, tS, strict=True):
                        slot[:, :, t] = value
                    if aux_t is not None:
                        if aux is None:
                            aux = np.empty((V, n, length, aux_t.shape[-1]), dtype)
                        aux[:, :, t] = aux_t
                records[k] = (tx, t_prev, t_new, aux)
                outs.append(t_new[0])
            tx = np.concatenate(outs, axis=-1) if D > 1 else outs[0]
            (tx,) = self._masked(cache, layer, tx)
        return tx, records

    # ------------------------------------------------------------------ products (V axis)
    def input_vjp(self, cache, M: np.ndarray) -> np.ndarray:
        """``J_xᵀ M`` ``(V, N, T, I)``: BPTT of V cotangent sequences at once
        (``PROD.rnn.vjp``, ``PROD.lstm.vjp``, ``PROD.gru.vjp``).

        Per step (processing order reversed) ``δS_t += M_t``; the cell's VJP gives ``δa``,
        ``δS_{t-1} = δa_hh W_hh + direct``; after the loop ``J_xᵀ M = δa_ih W_ih`` in one
        product, summed over directions and handed to the layer below.
        """
        return from_core(self._sweep_vjp(cache, self._core(cache, M))[0], cache.layout)

    def param_vjp(self, cache, M: np.ndarray, sum_batch: bool = True) -> dict[str, np.ndarray]:
        """``J_θᵀ M`` (``PROD.rnn.vjp``, ``PROD.lstm.vjp``, ``PROD.gru.vjp``): weights are
        shared by every step, so ``∂W_ih = Σ_t δa_ihᵀ x_t``, ``∂W_hh = Σ_t δa_hhᵀ h_{t-1}``,
        ``∂b = Σ_t δa``, over batch and time, or per sample over its own steps only
        (``sum_batch=False``: ``(V, N, *p)``)."""
        if self.mode == "lstm":
            return self._lstm_param_vjp(cache, self._core(cache, M), sum_batch)
        _, stacks = self._sweep_vjp(cache, self._core(cache, M))
        traces, grads = self._traces(cache), {}
        for k, (d_ih, d_hh) in stacks.items():
            layer, d = divmod(k, self.directions)
            suffix, tr = "_reverse" if d else "", traces[k]
            for kind, stack, rows in (("ih", d_ih, tr.x), ("hh", d_hh, tr.prev[0])):
                if sum_batch:
                    weight, bias = _summed_cotangents(stack, rows, tr, self.bias)
                else:  # sample n: its own steps only
                    weight, bias = _weight_cotangent(stack, rows, False), stack.sum(axis=2)
                grads[f"weight_{kind}_l{layer}{suffix}"] = weight
                if self.bias:
                    grads[f"bias_{kind}_l{layer}{suffix}"] = bias
        return {name: grads[name] for name in self.params}

    def input_jvp(self, cache, T: np.ndarray) -> np.ndarray:
        """``J_x T`` ``(V, N, T, H·D)``: forward mode through time (``PROD.rnn.jvp``,
        ``PROD.lstm.jvp``, ``PROD.gru.jvp``); ``ȧ_ih = ẋ W_ihᵀ``, ``ȧ_hh = Ṡ_{t-1} W_hhᵀ``,
        the cell's tangent map gives ``Ṡ_t`` (``Ṡ_0 = 0``: the initial state is constant)."""
        return from_core(self._tangents(cache, self._core(cache, T), {})[0], cache.layout)

    def param_jvp(self, cache, T_params: dict[str, np.ndarray]) -> np.ndarray:
        """``Σ_p J_p T_p`` (``PROD.rnn.jvp``, ``PROD.lstm.jvp``, ``PROD.gru.jvp``): the same
        sweep with ``ȧ_ih = x Ṫ_W_ihᵀ + Ṫ_b_ih``, ``ȧ_hh = h_{t-1} Ṫ_W_hhᵀ + Ṫ_b_hh +
        Ṡ_{t-1} W_hhᵀ`` (missing names are zero)."""
        return from_core(self._tangents(cache, self._core(cache, None), T_params)[0], cache.layout)

    def residual(self, cache, dout, T, T_params=None):
        """``Σ_o dout_o ∇²out_o · (T, T_θ)``: the R-operator through time at fixed ``dout``
        (``PROD.rnn.residual``, ``PROD.lstm.residual``, ``PROD.gru.residual``).

        Forward: every step's state and gate tangents (:meth:`_sweep_jvp`). Backward, per
        layer from the top, per step in reversed processing order, carrying ``δS`` (the
        gradient of ``dout``, no V axis) and ``R{δS}`` ``(V, N, H)``::

            R{δa}      = the cell's rvjp (R{δS} through the VJP + its second-order terms)
            R{δS_{t-1}} = R{δa_hh} W_hh + δa_hh Ṫ_W_hh + R{direct}
            R{∂x}      = R{δa_ih} W_ih + δa_ih Ṫ_W_ih          (R{dout} of the layer below)
            R{∂W_ih}   = Σ R{δa_ih}ᵀ x + δa_ihᵀ ẋ,   R{∂W_hh} = Σ R{δa_hh}ᵀ h₋ + δa_hhᵀ ḣ₋

        ``R{dout} = 0`` at the top: what remains is the residual.
        """
        T_params = T_params or {}
        V = tangent_count(T, T_params)
        T, dout = self._core(cache, T), sequence_to_core(dout, cache.layout)
        cell, H, D = CELL_PRODUCTS[self.mode], self.hidden_size, self.directions
        _, records = self._tangents(cache, T, T_params)
        traces = None if self.mode == "lstm" else self._traces(cache)
        grads, gradient_stacks = {}, {}
        g, Rg = dout, None  # the gradient reaching the layer and R{·} of it (0 at the top)
        for layer in reversed(range(self.num_layers)):
            dx = Rdx = None
            for d in range(D):
                k, suffix = layer * D + d, "_reverse" if d else ""
                lin = self._linearised(cache, k)
                residual_direction = _residual_direction if lin is None else lstm_residual
                dx_d, Rdx_d, r_params, *stack = residual_direction(
                    cell,
                    lin if traces is None else traces[k],
                    self._direction_tangents(T_params, layer, d),
                    records[k],
                    g[..., d * H : (d + 1) * H],
                    None if Rg is None else Rg[..., d * H : (d + 1) * H],
                    V,
                )
                dx = dx_d if dx is None else dx + dx_d
                Rdx = Rdx_d if Rdx is None else Rdx + Rdx_d
                if stack:  # the LSTM's sweep of the gradient: input_vjp(dout) reuses it
                    gradient_stacks[k] = stack[0]
                for kind, value in r_params.items():
                    grads[f"{kind}_l{layer}{suffix}"] = value
            g, Rg = self._masked(cache, layer - 1, dx, Rdx) if layer else (dx, Rdx)
        memo = self._memo(cache) if gradient_stacks else None
        if memo is not None:
            memo.put_rows(dout[None], gradient_stacks)
        return from_core(Rg, cache.layout), {name: grads[name] for name in self.params}


def _residual_direction(cell, tr: DirectionTrace, tp: dict, record, g, Rg, V: int):
    """One direction of the R-operator sweep (:meth:`RecurrentProducts.residual`).

    ``g`` ``(N, T, H)`` is the gradient reaching this direction's outputs, ``Rg``
    ``(V, N, T, H)`` its R-derivative (``None``: zero); ``record`` the direction's tangents.
    Returns ``(∂x, R{∂x}, {kind: R{∂θ}})``.
    """
    tx, t_prev, t_new, aux = record
    dtype = t_new[0].dtype
    (n, length, H), gh = g.shape, tr.weight_hh.shape[0]
    d_ih = np.empty((n, length, gh), dtype=g.dtype)
    d_hh = np.empty_like(d_ih)
    R_ih = np.empty((V, n, length, gh), dtype)
    R_hh = np.empty_like(R_ih)
    dS = tuple(np.zeros((n, H), g.dtype) for _ in tr.prev)
    RdS = tuple(np.zeros((V, n, H), dtype) for _ in tr.prev)
    for t in reversed(tr.order()):
        values, prev = tr.at(t)
        dS = (dS[0] + g[:, t], *dS[1:])
        if Rg is not None:
            RdS = (RdS[0] + Rg[:, :, t], *RdS[1:])
        tS_prev = tuple(a[:, :, t] for a in t_prev)
        tS = tuple(a[:, :, t] for a in t_new)
        aux_t = None if aux is None else aux[:, :, t]
        d_ih[:, t], d_hh[:, t], direct = cell.vjp(dS, values, prev)
        R_ih[:, :, t], R_hh[:, :, t], R_direct = cell.rvjp(
            dS, RdS, tS_prev, tS, aux_t, values, prev
        )
        R_prev = R_hh[:, :, t] @ tr.weight_hh
        if tp["weight_hh"] is not None:  # R{W_hh} in δS_{t-1} = δa_hh W_hh
            R_prev = R_prev + d_hh[:, t] @ tp["weight_hh"]
        dS = _carry(d_hh[:, t] @ tr.weight_hh, direct)
        RdS = _carry(R_prev, R_direct)
    dx = d_ih @ tr.weight_ih
    Rdx = R_ih @ tr.weight_ih
    if tp["weight_ih"] is not None:  # R{W_ih} in ∂x = δa_ih W_ih
        Rdx = Rdx + _rows_times(d_ih, tp["weight_ih"])
    r_ih = _weight_cotangent(R_ih, tr.x, True)
    if tx is not None:  # R{x} in ∂W_ih = Σ δa_ihᵀ x
        r_ih = r_ih + _mixed_cotangent(d_ih, tx)
    r_hh = _weight_cotangent(R_hh, tr.prev[0], True) + _mixed_cotangent(d_hh, t_prev[0])
    # the layer keeps the biases it has (the bias sums cost little)
    r_bias = {"bias_ih": R_ih.sum(axis=(1, 2)), "bias_hh": R_hh.sum(axis=(1, 2))}
    return dx, Rdx, {"weight_ih": r_ih, "weight_hh": r_hh, **r_bias}


def _carry(through_hh: np.ndarray, direct: tuple) -> tuple[np.ndarray, ...]:
    """``δS_{t-1} = (δa_hh W_hh + direct₀, *direct[1:])`` (``None``: no direct part)."""
    first = through_hh if direct[0] is None else through_hh + direct[0]
    return (first, *direct[1:])
