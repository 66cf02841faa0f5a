"""Fully connected (dense) layer ``z = x Wᵀ + b`` — ``torch.nn.Linear``.

Shapes follow Nielsen and ``torch.nn.Linear``: ``weight`` is ``(n_out, n_in)``, ``bias``
is ``(n_out,)``; ``x`` is ``(batch, *, n_in)`` and ``z`` is ``(batch, *, n_out)`` — the
map acts on the last axis, so the same layer serves feature vectors ``(N, D)`` and
sequences ``(N, T, D)``. :func:`dense_forward` is the only dense forward in the library:
:class:`~manual_bp.models.network.Network` and the fused trainer call it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from manual_bp.initializers import initialize
from manual_bp.layers.base import (
    Cache,
    Layer,
    check_input,
    layer_dtype,
    register_layer,
    tangent_count,
)
from manual_bp.layers.dense_step import DenseStep, dense_forward

__all__ = ["Dense", "DenseCache", "DenseStep", "Linear", "dense_backward", "dense_forward"]


@dataclass
class DenseCache(Cache):
    """``input`` x ``(batch, *, n_in)`` and the weight used: what the backward pass needs."""

    weight: np.ndarray


def dense_backward(
    dz: np.ndarray, x: np.ndarray, W: np.ndarray, *, input_grad: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Gradients of a scalar ``C`` through ``z = x Wᵀ + b`` (equation ``LAYER.dense``).

    With ``dz = ∂C/∂z`` of shape ``(batch, *, n_out)`` and all leading axes flattened
    into rows::

        ∂C/∂x = dz W          (batch, *, n_in)  -- the (Wˡ⁺¹)ᵀδˡ⁺¹ of BP2, row-wise
        ∂C/∂W = dzᵀ x         (n_out, n_in)     -- BP4 summed over the rows
        ∂C/∂b = Σ_rows dz     (n_out,)          -- BP3 summed over the rows

    ``input_grad=False`` skips ``∂C/∂x`` (returned as ``None``) for the bottom of a stack.
    """
    dz_rows = dz.reshape(-1, dz.shape[-1])
    x_rows = x.reshape(-1, x.shape[-1])
    dx = dz @ W if input_grad else None
    return dx, dz_rows.T @ x_rows, dz_rows.sum(axis=0)


@register_layer
class Dense(Layer):
    """``torch.nn.Linear``: ``z = x Wᵀ + b`` on the last axis. Equation ``LAYER.dense``.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
        Learn an additive bias (torch's ``bias=True``).
    weight_init, bias_init : str or dict
        Schemes of :func:`manual_bp.initializers.initialize`; default ``"torch"``
        (``U(±1/√n_in)`` for both, as ``nn.Linear``). ``"nielsen"``/``"normal"`` give
        Nielsen's ``N(0, 1/n_in)`` weights and ``N(0, 1)`` biases.
    device, dtype
        torch's keywords: ``dtype`` float64 (``None``, the library's default) or float32;
        ``device`` None or ``"cpu"``.
    seed : int or Generator, optional
        Initialise immediately from this seed (a :class:`Sequential` re-seeds anyway).

    ``Linear`` is the same class under torch's name (``Linear(in_features, out_features,
    bias=True, device=None, dtype=None)``; spec ``linear(30)``). An unbatched input
    ``(n_in,)`` gives ``(n_out,)``, as torch's.
    """

    name = "dense"
    aliases = ("linear",)
    equation = "LAYER.dense"
    product_equations = ("PROD.dense.vjp", "PROD.dense.jvp", "PROD.dense.residual")
    decay = ("weight",)
    hyperparameters = ("in_features", "out_features", "bias", "weight_init", "bias_init")

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
        *,
        weight_init: str | dict[str, Any] = "torch",
        bias_init: str | dict[str, Any] = "torch",
        seed: int | np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        self.dtype = layer_dtype(dtype, "Linear", device)
        self.in_features = _positive_int(in_features, "in_features")
        self.out_features = _positive_int(out_features, "out_features")
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"bias must be True or False, got {bias!r}")
        self.has_bias = bool(bias)
        self.weight_init = weight_init
        self.bias_init = bias_init
        self.params["weight"] = np.zeros((self.out_features, self.in_features), self.dtype)
        if self.has_bias:
            self.params["bias"] = np.zeros(self.out_features, self.dtype)
        self.reset_parameters(np.random.default_rng(seed))

    @property
    def W(self) -> np.ndarray:
        """``weight``, Nielsen's ``Wˡ`` ``(n_out, n_in)``."""
        return self.params["weight"]

    @property
    def b(self) -> np.ndarray | None:
        """``bias`` ``(n_out,)``, or None without one."""
        return self.params.get("bias")

    def reset_parameters(self, rng: np.random.Generator) -> None:
        weight = self.params["weight"]
        weight[...] = initialize(self.weight_init, rng, weight.shape, dtype=weight.dtype)
        if self.has_bias:
            bias_scheme = self.bias_init
            if bias_scheme == "nielsen":
                bias_scheme = "normal"  # Nielsen's biases are N(0, 1)
            self.params["bias"][...] = initialize(
                bias_scheme, rng, (self.out_features,), fan_in=self.in_features, dtype=weight.dtype
            )

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if not input_shape or input_shape[-1] != self.in_features:
            raise ValueError(
                f"{self!r} needs inputs whose last axis has {self.in_features} features, "
                f"got per-sample shape {tuple(input_shape)}"
            )
        return (*input_shape[:-1], self.out_features)

    def forward(self, input: np.ndarray) -> tuple[np.ndarray, DenseCache]:
        """``x (batch, *, n_in) -> z (batch, *, n_out)``; unbatched ``(n_in,) -> (n_out,)``.
        The argument's name is torch's (``Linear.forward(input)``)."""
        x = input
        check_input(x, self, ndim=range(1, 33), trailing=(self.in_features,), name="x")
        weight = self.params["weight"]
        return dense_forward(x, weight, self.params.get("bias")), DenseCache(x, weight)

    def backward(
        self, dz: np.ndarray, cache: DenseCache
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``dz (batch, *, n_out) -> (dx (batch, *, n_in), {"weight": dW, "bias": db})``."""
        self._check_upstream(dz, cache)
        dx, dW, db = dense_backward(dz, cache.input, cache.weight)
        grads = {"weight": dW}
        if self.has_bias:
            grads["bias"] = db
        return dx, grads

    def parameter_gradients(self, dz: np.ndarray, cache: DenseCache) -> dict[str, np.ndarray]:
        """BP4 and BP3 of :meth:`backward` without ``∂C/∂x = dz W`` (the stack's bottom)."""
        self._check_upstream(dz, cache)
        _, dW, db = dense_backward(dz, cache.input, cache.weight, input_grad=False)
        return {"weight": dW, "bias": db} if self.has_bias else {"weight": dW}

    def _check_upstream(self, dz: np.ndarray, cache: DenseCache) -> None:
        expected = (*cache.input.shape[:-1], self.out_features)
        if not isinstance(dz, np.ndarray) or dz.shape != expected:
            raise ValueError(
                f"{self!r}: upstream gradient has shape {np.shape(dz)}, expected {expected}"
            )

    def fast_step(self) -> DenseStep:
        """The fused form for training (:class:`DenseStep`)."""
        return DenseStep(self)

    # ------------------------------------------------------------------ products (V axis)
    # Rows: every leading axis of x but the batch is a row of the same map, so x is viewed
    # as (N, R, n_in) and a V-stack M as (V, N, R, n_out); ``PROD.dense.*`` in docs/products.md.
    def input_vjp(self, cache: DenseCache, M: np.ndarray) -> np.ndarray:
        """``J_xᵀ M = M W`` ``(V, N, *, n_in)`` (``PROD.dense.vjp``; BP2's ``(Wˡ⁺¹)ᵀδ``)."""
        return _rows_times(M, cache.weight)

    def param_vjp(
        self, cache: DenseCache, M: np.ndarray, sum_batch: bool = True
    ) -> dict[str, np.ndarray]:
        """``∂/∂W = Σ_rows M xᵀ``, ``∂/∂b = Σ_rows M`` (``PROD.dense.vjp``; BP4, BP3).

        ``sum_batch=False`` keeps the batch axis: sample n's share sums its own rows only
        (a sequence position is a row of the sample it belongs to).
        """
        x = cache.input
        if x.ndim == 1:  # unbatched: one sample of one row
            return self.param_vjp(_batched(cache), M[:, None], sum_batch)
        V, N = M.shape[0], x.shape[0]
        x_rows = x.reshape(N, -1, self.in_features)  # (N, R, n_in)
        M_rows = M.reshape(V, N, -1, self.out_features)  # (V, N, R, n_out)
        if sum_batch:
            flat = M_rows.reshape(V, -1, self.out_features)  # (V, N·R, n_out)
            grads = {"weight": np.swapaxes(flat, 1, 2) @ x_rows.reshape(-1, self.in_features)}
            if self.has_bias:
                grads["bias"] = flat.sum(axis=1)
            return grads
        grads = {"weight": np.swapaxes(M_rows, 2, 3) @ x_rows}  # (V, N, n_out, n_in)
        if self.has_bias:
            grads["bias"] = M_rows.sum(axis=2)
        return grads

    def _param_vjp_norms(self, cache: DenseCache, delta: np.ndarray) -> dict[str, np.ndarray]:
        """``‖(J_θᵀ δ)ₙ‖²`` per sample ``(N,)`` and parameter, without the per-sample
        gradients (``CURV.grad-norms``): on ``(N, n_in)`` ``‖δₙ‖² ‖xₙ‖²`` and ``‖δₙ‖²``
        (Goodfellow 2015); with rows ``(N, R, ·)`` the Gram form
        ``Σ_{r,s} (δ_r·δ_s)(x_r·x_s)`` and ``‖Σ_r δ_r‖²`` (a weight shared by the rows: the
        square of the sum). An optional product the curvature walks use where a layer has
        it; it equals the squared norms of ``param_vjp(cache, δ[None], sum_batch=False)``
        (``tests/test_curvature_speed.py``)."""
        x = cache.input
        if x.ndim == 1:  # unbatched: one sample of one row
            return self._param_vjp_norms(_batched(cache), delta[None])
        if x.ndim == 2:
            d2 = np.einsum("ni,ni->n", delta, delta)
            norms = {"weight": d2 * np.einsum("ni,ni->n", x, x)}
        else:
            N = x.shape[0]
            xr, dr = x.reshape(N, -1, self.in_features), delta.reshape(N, -1, self.out_features)
            gram = (dr @ np.swapaxes(dr, 1, 2)) * (xr @ np.swapaxes(xr, 1, 2))
            total = dr.sum(axis=1)
            d2 = np.einsum("ni,ni->n", total, total)
            norms = {"weight": gram.reshape(N, -1).sum(axis=1)}
        if self.has_bias:
            norms["bias"] = d2
        return norms

    def input_jvp(self, cache: DenseCache, T: np.ndarray) -> np.ndarray:
        """``J_x T = T Wᵀ`` ``(V, N, *, n_out)`` (``PROD.dense.jvp``)."""
        return _rows_times(T, cache.weight.T)

    def param_jvp(self, cache: DenseCache, T_params: dict[str, np.ndarray]) -> np.ndarray:
        """``J_W T_W + J_b T_b = x T_Wᵀ + T_b`` ``(V, N, *, n_out)`` (``PROD.dense.jvp``)."""
        x = cache.input
        if x.ndim == 1:  # unbatched: one sample of one row
            return self.param_jvp(_batched(cache), T_params)[:, 0]
        V = next(iter(T_params.values())).shape[0]
        rows = x.reshape(-1, self.in_features)
        out = np.zeros((V, rows.shape[0], self.out_features), dtype=x.dtype)
        if "weight" in T_params:
            out += rows @ np.swapaxes(T_params["weight"], 1, 2)  # (V, N·R, n_out)
        if self.has_bias and "bias" in T_params:
            out += T_params["bias"][:, None, :]
        return out.reshape(V, *x.shape[:-1], self.out_features)

    def residual(
        self,
        cache: DenseCache,
        dout: np.ndarray,
        T: np.ndarray | None,
        T_params: dict[str, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``z = x Wᵀ + b`` is bilinear in ``(x, W)``: the only second-order terms are mixed
        (``PROD.dense.residual``)::

            residual_x = dout T_W        (V, N, *, n_in)   — R{W} in BP2's dout W
            residual_W = Σ_rows dout T_xᵀ (V, n_out, n_in)  — R{x} in BP4's dout xᵀ
            residual_b = 0
        """
        x = cache.input
        if x.ndim == 1:  # unbatched: one sample of one row
            T1 = None if T is None else T[:, None]
            r_x, grads = self.residual(_batched(cache), dout[None], T1, T_params)
            return r_x[:, 0], grads
        V = tangent_count(T, T_params)
        T_params = T_params or {}
        dout_rows = dout.reshape(-1, self.out_features)  # (N·R, n_out)
        if "weight" in T_params:
            r_x = (dout_rows @ T_params["weight"]).reshape(V, *x.shape)
        else:
            r_x = np.zeros((V, *x.shape), dtype=x.dtype)
        grads: dict[str, np.ndarray] = {}
        if T is None:
            grads["weight"] = np.zeros((V, self.out_features, self.in_features), dtype=x.dtype)
        else:
            grads["weight"] = dout_rows.T @ T.reshape(V, -1, self.in_features)
        if self.has_bias:
            grads["bias"] = np.zeros((V, self.out_features), dtype=x.dtype)
        return r_x, grads

    @classmethod
    def from_shape(cls, input_shape, *args, n_outputs=None, **kwargs) -> Dense:
        """``dense(30)`` -> ``Dense(n_in, 30)``; a bare ``dense`` maps to the model's outputs."""
        if args and "out_features" in kwargs:
            raise ValueError("dense: give out_features once")
        out = args[0] if args else kwargs.pop("out_features", n_outputs)
        if out is None:
            raise ValueError("dense needs out_features (e.g. dense(30))")
        if not input_shape:
            raise ValueError("dense needs an input with a feature axis")
        return cls(input_shape[-1], out, *args[1:], **kwargs)

    def __repr__(self) -> str:
        extra = "" if self.has_bias else ", bias=False"
        return f"Dense({self.in_features}, {self.out_features}{extra})"


def _rows_times(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``A @ B`` for a stack ``A`` ``(V, N, *, k)`` and a matrix ``B`` ``(k, m)``: one 2-D
    GEMM over every row when ``A`` is contiguous (NumPy's stacked matmul calls one GEMM
    per leading index: 12 % slower on the MLP's ``(10, 128, 256)`` factor), else the
    stacked product."""
    if A.ndim <= 2 or not A.flags.c_contiguous:
        return A @ B
    return (A.reshape(-1, A.shape[-1]) @ B).reshape(*A.shape[:-1], B.shape[1])


def _batched(cache: DenseCache) -> DenseCache:
    """The cache of an unbatched ``(n_in,)`` input as a batch of one ``(1, n_in)``."""
    return DenseCache(cache.input[None], cache.weight)


#: torch's name (``torch.nn.Linear``): the same class.
Linear = Dense


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
