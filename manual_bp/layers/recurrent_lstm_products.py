"""The LSTM's V-axis products through its fast sweeps, with a per-cache memo.

The dispatch of :class:`~manual_bp.layers.recurrent_products.RecurrentProducts` to
:mod:`manual_bp.layers.recurrent_lstm_sweeps` for ``mode == "lstm"`` (``PROD.lstm.vjp``,
``PROD.lstm.jvp``, ``PROD.lstm.residual``): each direction's :class:`LSTMLinearisation`
is formed once per cache, every sweep goes through the cache's :class:`SweepMemo` (a walk
asking the same cotangents of ``param_vjp`` and ``input_vjp``, or the residual after
``input_jvp`` and ``param_jvp``, sweeps once), and the results are laid out as the readable
sweeps' (real time, ``(V, N, T, ·)``).
"""

from __future__ import annotations

import numpy as np

from manual_bp.layers.recurrent_lstm_sweeps import LSTMLinearisation, SweepMemo, summed_records

__all__ = ["FastLSTMProducts", "lstm_residual"]


class FastLSTMProducts:
    """Mixin of :class:`~manual_bp.layers.recurrent_products.RecurrentProducts`: the LSTM's
    fast sweeps (its ``_masked``, ``_sweep_jvp``, ``_trace`` and options are the layer's)."""

    def _linearised(self, cache, k: int) -> LSTMLinearisation | None:
        """Direction ``k`` of an LSTM linearised once per cache (its fast sweeps); None for
        RNN and GRU (the readable per-step sweeps)."""
        if self.mode != "lstm":
            return None
        memo = getattr(cache, "linearised", None)
        lin = None if memo is None else memo.get(k)
        if lin is None:
            reverse = bool(k % self.directions)
            lin = LSTMLinearisation.of(cache.steps[k], reverse, self._trace)
            if memo is not None:
                memo[k] = lin
        return lin

    @staticmethod
    def _memo(cache) -> SweepMemo | None:
        memo = getattr(cache, "linearised", None)
        return None if memo is None else memo.setdefault("memo", SweepMemo())

    def _lstm_stacks(self, cache, M: np.ndarray) -> list[dict]:
        """The fast cotangent sweeps of every (layer, direction), ``{k: δa (T, N, V, 4H)}``
        in processing order, each row of ``M`` swept once per cache (:class:`SweepMemo`):
        runs of consecutive rows (:meth:`SweepMemo.groups`)."""
        memo = self._memo(cache)
        found = [None] * len(M) if memo is None else memo.find_rows(M)
        missing = [v for v, f in enumerate(found) if f is None]
        if missing:
            part = M if len(missing) == len(M) else M[missing]
            H, D, stacks = self.hidden_size, self.directions, {}
            for layer in reversed(range(self.num_layers)):
                for d in range(D):
                    lin = self._linearised(cache, layer * D + d)
                    M_d = lin.to_proc(part[..., d * H : (d + 1) * H])
                    stacks[layer * D + d] = lin.backward(M_d)
                if layer:
                    (part,) = self._masked(cache, layer - 1, self._lstm_dx(cache, stacks, layer))
            if memo is None:
                return [stacks]
            memo.put_rows(M if len(missing) == len(M) else M[missing], stacks)
            for j, v in enumerate(missing):
                found[v] = (stacks, j)
        return SweepMemo.groups(found)

    def _lstm_param_vjp(self, cache, M: np.ndarray, sum_batch: bool) -> dict:
        """``param_vjp`` of the fast sweeps, per run of rows, stacked on the V axis."""
        runs, grads = self._lstm_stacks(cache, M), {}
        for k in runs[0]:
            layer, d = divmod(k, self.directions)
            suffix, lin = "_reverse" if d else "", self._linearised(cache, k)
            parts = [lin.param_cotangents(run[k], sum_batch, self.bias) for run in runs]
            for kind in parts[0]:
                value = np.concatenate([p[kind] for p in parts]) if len(parts) > 1 else None
                grads[f"{kind}_l{layer}{suffix}"] = parts[0][kind] if value is None else value
        return {name: grads[name] for name in self.params}

    def _lstm_dx(self, cache, stacks: dict, layer: int) -> np.ndarray:
        """``δa_ih W_ih`` summed over ``layer``'s directions: the cotangent of its input."""
        dx = None
        for d in range(self.directions):
            lin = self._linearised(cache, layer * self.directions + d)
            dx_d = lin.from_proc(lin.times(stacks[layer * self.directions + d], lin.W_ih))
            dx = dx_d if dx is None else dx + dx_d
        return dx

    def _tangents(self, cache, T, T_params: dict):
        """:meth:`_sweep_jvp`, the LSTM's through its :class:`SweepMemo`: a repeat of a sweep,
        or the residual's ``(T, T_θ)`` as the sum of ``input_jvp(T)`` and ``param_jvp(T_θ)``."""
        memo = self._memo(cache) if self.mode == "lstm" else None
        if memo is None:
            return self._sweep_jvp(cache, T, T_params)
        T_params = {name: a for name, a in T_params.items() if a is not None}
        records = memo.find_jvp(T, T_params)
        if records is None and T is not None and T_params:
            alone, params = memo.find_jvp(T, {}), memo.find_jvp(None, T_params)
            if alone is not None and params is not None:
                records = summed_records(alone, params)
        if records is None:
            records = self._sweep_jvp(cache, T, T_params)[1]
            memo.put_jvp(T, T_params, records)
        top = self.num_layers - 1
        outs = []
        for d in range(self.directions):
            k = top * self.directions + d
            outs.append(self._linearised(cache, k).from_proc(records[k][3]))
        out = np.concatenate(outs, axis=-1) if len(outs) > 1 else outs[0]
        return self._masked(cache, top, out)[0], records


def lstm_residual(cell, lin: LSTMLinearisation, tp: dict, record, g, Rg, V: int):
    """One LSTM direction of the R-operator in the fast form
    (:meth:`~manual_bp.layers.recurrent_lstm_sweeps.LSTMLinearisation.residual`), with the
    arguments and results of :func:`_residual_direction` (real-time layouts), and the
    gradient's cotangent stack ``δa``."""
    Rg = None if Rg is None else lin.to_proc(Rg)
    DA, R, r_params = lin.residual(lin.to_proc(g[None]), Rg, tp, record)
    Rdx = lin.times(R, lin.W_ih)
    if tp["weight_ih"] is not None:  # R{W_ih} in ∂x = δa_ih W_ih
        Rdx += lin.fixed_times(DA, tp["weight_ih"])
    return lin.from_proc(lin.times(DA, lin.W_ih))[0], lin.from_proc(Rdx), r_params, DA
