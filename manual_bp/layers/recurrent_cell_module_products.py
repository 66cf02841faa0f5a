"""The products of :class:`~manual_bp.layers.recurrent_cell_modules.RNNCell`, ``LSTMCell``
and ``GRUCell`` on a leading axis of V vectors (``PROD.cell.*`` of ``docs/sequences.md``).

A cell module is one step of its cell, ``h' = cell(x, hx; θ)`` (the output: ``h'``; the
LSTM's ``c'`` is on the cache), with ``hx`` a constant of the layer protocol (zeros, the
caller's ``hx`` or ``initial_state``): the products are those of a recurrent layer of
length 1 with no time loop. Every per-step derivative — the step's VJP, its tangent map
and the R-derivative of the VJP — is the recurrent layers' own
(:mod:`~manual_bp.layers.recurrent_cell_products`, one copy of each gate's math); what this
module adds is the affine maps around them (``a_ih = x W_ihᵀ + b_ih``,
``a_hh = hx W_hhᵀ + b_hh``) and the parameter cotangents. An unbatched cache ``(F,)``
takes and returns products without the batch axis; its per-sample products are refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp.layers.base import Layer, tangent_count
from manual_bp.layers.recurrent_cell_products import CELL_PRODUCTS

__all__ = ["CellModuleProducts"]

_KINDS = ("ih", "hh")


class CellModuleProducts(Layer):
    """The V-axis products of a cell module (its base class); ``mode`` names the cell."""

    mode = ""

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _argument(cache: Any, A: np.ndarray | None) -> np.ndarray | None:
        """A product's argument ``(V, *in)`` with the batch axis an unbatched input lacks."""
        if A is None:
            return None
        return A[..., None, :] if cache.unbatched else A

    @staticmethod
    def _as_input(cache: Any, A: np.ndarray) -> np.ndarray:
        """A result ``(V, N, ·)`` in the layout of the forward input."""
        return A[..., 0, :] if cache.unbatched else A

    def _vjp(self, cache: Any, M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The pre-activation cotangents ``(δa_ih, δa_hh)`` ``(V, N, gates·H)`` of ``M``
        on ``h'`` (the LSTM's ``c'`` receives none: it is not the output)."""
        step = cache.step
        M = self._argument(cache, M)
        dS = (M, *(np.zeros_like(M) for _ in step.prev[1:]))
        d_ih, d_hh, _ = CELL_PRODUCTS[self.mode].vjp(dS, step.values, step.prev)
        return d_ih, d_hh

    def _tangents(self, cache: Any, T: np.ndarray | None, T_params: dict) -> tuple:
        """``(Ṡ', gate tangents)`` from ``ẋ`` and ``Ṫ_θ``: ``ȧ_ih = ẋ W_ihᵀ + x Ṫ_W_ihᵀ +
        Ṫ_b_ih``, ``ȧ_hh = hx Ṫ_W_hhᵀ + Ṫ_b_hh``, the state's tangent ``Ṡ = 0`` (constant)."""
        step, p = cache.step, cache.step.params
        V = tangent_count(T, T_params)
        dtypes = [step.x.dtype, *(a.dtype for a in T_params.values() if a is not None)]
        if T is not None:
            dtypes.append(T.dtype)
        dtype = np.result_type(*dtypes)
        n, width = step.x.shape[0], p["weight_ih"].shape[0]
        t = {kind: np.zeros((V, n, width), dtype) for kind in _KINDS}
        if T is not None:
            t["ih"] += self._argument(cache, T) @ p["weight_ih"].T
        for kind, rows in (("ih", step.x), ("hh", step.prev[0])):
            if T_params.get(f"weight_{kind}") is not None:
                t[kind] += rows @ np.swapaxes(T_params[f"weight_{kind}"], -1, -2)
            if T_params.get(f"bias_{kind}") is not None:
                t[kind] += T_params[f"bias_{kind}"][:, None, :]
        zero = tuple(np.zeros((V, *s.shape), dtype) for s in step.prev)
        return CELL_PRODUCTS[self.mode].jvp(t["ih"], t["hh"], zero, step.values, step.prev)

    def _ordered(self, found: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: found[name] for name in self.params}

    # ------------------------------------------------------------------ products (V axis)
    def input_vjp(self, cache: Any, M: np.ndarray) -> np.ndarray:
        """``J_xᵀ M = δa_ih W_ih`` ``(V, N, I)`` (``PROD.cell.vjp``), ``δa_ih`` the step's
        VJP of ``M`` on ``h'`` (``RNN.step``, ``LSTM.step``, ``GRU.step``)."""
        d_ih, _ = self._vjp(cache, M)
        return self._as_input(cache, d_ih @ cache.step.params["weight_ih"])

    def param_vjp(self, cache: Any, M: np.ndarray, sum_batch: bool = True) -> dict[str, np.ndarray]:
        """``J_θᵀ M`` (``PROD.cell.vjp``): ``∂W_ih = δa_ihᵀ x``, ``∂W_hh = δa_hhᵀ hx``,
        ``∂b = Σ_n δa``; per sample (``sum_batch=False``) the outer products of one row,
        ``(V, N, *p)``."""
        if not sum_batch and cache.unbatched:
            raise ValueError(f"{self!r}: per-sample products need a batched input (N, F)")
        d = dict(zip(_KINDS, self._vjp(cache, M), strict=True))
        rows = {"ih": cache.step.x, "hh": cache.step.prev[0]}
        grads = {}
        for kind in _KINDS:
            if sum_batch:
                grads[f"weight_{kind}"] = np.swapaxes(d[kind], -1, -2) @ rows[kind]
                grads[f"bias_{kind}"] = d[kind].sum(axis=-2)
            else:
                grads[f"weight_{kind}"] = d[kind][..., :, None] * rows[kind][:, None, :]
                grads[f"bias_{kind}"] = d[kind]
        return self._ordered(grads)

    def input_jvp(self, cache: Any, T: np.ndarray) -> np.ndarray:
        """``J_x T`` ``(V, N, H)`` (``PROD.cell.jvp``): the step's tangent map of
        ``ȧ_ih = ẋ W_ihᵀ`` at a constant state."""
        return self._as_input(cache, self._tangents(cache, T, {})[0][0])

    def param_jvp(self, cache: Any, T_params: dict[str, np.ndarray]) -> np.ndarray:
        """``Σ_p J_p T_p`` (``PROD.cell.jvp``): ``ȧ_ih = x Ṫ_W_ihᵀ + Ṫ_b_ih``,
        ``ȧ_hh = hx Ṫ_W_hhᵀ + Ṫ_b_hh`` through the step's tangent map (missing: zero)."""
        return self._as_input(cache, self._tangents(cache, None, T_params)[0][0])

    def residual(
        self,
        cache: Any,
        dout: np.ndarray,
        T: np.ndarray | None,
        T_params: dict[str, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``Σ_o dout_o ∇²h'_o · (T, T_θ)`` (``PROD.cell.residual``): with ``R{dout} = 0``
        and a constant state, the step's R-derivative ``R{δa}`` (the cells' ``rvjp``) and::

            residual_x    = R{δa_ih} W_ih + δa_ih Ṫ_W_ih
            residual_W_ih = R{δa_ih}ᵀ x + δa_ihᵀ ẋ,   residual_W_hh = R{δa_hh}ᵀ hx
            residual_b    = Σ_n R{δa}
        """
        T_params = T_params or {}
        step, p = cache.step, cache.step.params
        cell = CELL_PRODUCTS[self.mode]
        tS, aux = self._tangents(cache, T, T_params)
        g = self._argument(cache, dout[None])[0]
        dS = (g, *(np.zeros_like(g) for _ in step.prev[1:]))
        RdS = tuple(np.zeros_like(s) for s in tS)
        tS_prev = tuple(np.zeros_like(s) for s in tS)
        d_ih, _, _ = cell.vjp(dS, step.values, step.prev)
        R_ih, R_hh, _ = cell.rvjp(dS, RdS, tS_prev, tS, aux, step.values, step.prev)
        r_x = R_ih @ p["weight_ih"]
        if T_params.get("weight_ih") is not None:  # R{W_ih} in ∂x = δa_ih W_ih
            r_x = r_x + d_ih @ T_params["weight_ih"]
        r_ih = np.swapaxes(R_ih, -1, -2) @ step.x
        if T is not None:  # R{x} in ∂W_ih = δa_ihᵀ x
            r_ih = r_ih + d_ih.T @ self._argument(cache, T)
        found = {
            "weight_ih": r_ih,
            "weight_hh": np.swapaxes(R_hh, -1, -2) @ step.prev[0],
            "bias_ih": R_ih.sum(axis=-2),
            "bias_hh": R_hh.sum(axis=-2),
        }
        return self._as_input(cache, r_x), self._ordered(found)
