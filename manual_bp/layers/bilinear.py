"""``nn.Bilinear``: ``y_k = x₁ᵀ A_k x₂ + b_k`` for two inputs (equation ``LAYER.bilinear``).

torch's arguments ``(in1_features, in2_features, out_features, bias=True, device=None,
dtype=None)`` (and the library's keyword ``seed``), ``weight`` ``(out, in1, in2)`` and
``bias`` ``(out,)``, both drawn from ``U(±1/√in1)`` as torch's ``reset_parameters``.
``forward(input1, input2)`` takes ``(*, in1)`` and ``(*, in2)`` with the same leading
axes (one unbatched sample: ``(in1,)``, ``(in2,)``) and its ``backward`` returns
``((∂C/∂input1, ∂C/∂input2), grads)``, torch's argument order, as
:class:`~manual_bp.layers.attention.MultiheadAttention` does for cross-attention.
The gradient is two-sided (``docs/padding.md#LAYER.bilinear``)::

    ∂C/∂x₁ = Σ_k δ_k A_k x₂      ∂C/∂x₂ = Σ_k δ_k A_kᵀ x₁
    ∂C/∂A_k = Σ_rows δ_k x₁ x₂ᵀ  ∂C/∂b = Σ_rows δ

**In a stack** (one input) the layer is the *quadratic form* ``y_k = xᵀ A_k x + b_k``:
``input2`` omitted means ``input2 = input1`` (as self-attention feeds one input to the query,
key and value), which needs ``in1 = in2``; its input gradient is the sum of the two sides,
``Σ_k δ_k (A_k + A_kᵀ) x``. A spec ``bilinear(out)`` builds ``Bilinear(D, D, out)`` for
inputs of last axis ``D``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from manual_bp.layers.base import Cache, Layer, layer_dtype, register_layer, tangent_count
from manual_bp.layers.bilinear_steps import BilinearStep

__all__ = ["Bilinear", "BilinearCache"]


@dataclass
class BilinearCache(Cache):
    """``input`` (``x₁``) and ``input2`` (``None``: the one-input quadratic form)."""

    input2: np.ndarray | None

    @property
    def pair(self) -> tuple[np.ndarray, np.ndarray]:
        return self.input, self.input if self.input2 is None else self.input2


def _positive(owner: str, label: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{owner}: {label} must be a positive integer, got {value!r}")
    return int(value)


@register_layer
class Bilinear(Layer):
    """``torch.nn.Bilinear`` (see the module docstring). Equation ``LAYER.bilinear``."""

    name = "bilinear"
    equation = "LAYER.bilinear"
    product_equations = ("PROD.bilinear.vjp", "PROD.bilinear.jvp", "PROD.bilinear.residual")
    hyperparameters = ("in1_features", "in2_features", "out_features", "bias")
    decay = ("weight",)

    def __init__(
        self,
        in1_features: int,
        in2_features: int,
        out_features: int,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
        *,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        self.in1_features = _positive("Bilinear", "in1_features", in1_features)
        self.in2_features = _positive("Bilinear", "in2_features", in2_features)
        self.out_features = _positive("Bilinear", "out_features", out_features)
        if not isinstance(bias, (bool, np.bool_)):
            raise ValueError(f"Bilinear: bias must be True or False, got {bias!r}")
        self.has_bias = bool(bias)
        kind = layer_dtype(dtype, "Bilinear", device)
        self.dtype = kind
        shape = (self.out_features, self.in1_features, self.in2_features)
        self.params["weight"] = np.zeros(shape, kind)
        if self.has_bias:
            self.params["bias"] = np.zeros(self.out_features, kind)
        self.reset_parameters(np.random.default_rng(seed))

    def reset_parameters(self, rng: np.random.Generator) -> None:
        """torch's initialisation: weight and bias ``U(±1/√in1)``."""
        bound = 1.0 / math.sqrt(self.in1_features)
        for p in self.params.values():
            p[...] = rng.uniform(-bound, bound, size=p.shape)

    @classmethod
    def from_shape(cls, input_shape, *args, n_outputs=None, **kwargs) -> Bilinear:
        """``bilinear(out)`` in a stack: the quadratic form ``Bilinear(D, D, out)``."""
        if len(args) == 1 and not {"in1_features", "in2_features"} & set(kwargs):
            return cls(input_shape[-1], input_shape[-1], *args, **kwargs)
        return cls(*args, **kwargs)

    def fast_step(self) -> BilinearStep:
        """Training's fast form of the quadratic form (one input, a stack's): GEMMs on the
        rows (:mod:`~manual_bp.layers.bilinear_steps`)."""
        return BilinearStep(self)

    # ------------------------------------------------------------------ protocol
    def _check(self, x1: Any, x2: Any) -> None:
        for label, x, n in (("input1", x1, self.in1_features), ("input2", x2, self.in2_features)):
            if not isinstance(x, np.ndarray) or x.ndim < 1 or x.shape[-1] != n:
                raise ValueError(
                    f"{self!r}: {label} has shape {np.shape(x)}; its last axis must be {n}"
                )
        if x1.shape[:-1] != x2.shape[:-1]:
            raise ValueError(
                f"{self!r}: input1 {x1.shape} and input2 {x2.shape} must have the same leading axes"
            )

    def forward(
        self, input1: np.ndarray, input2: np.ndarray | None = None
    ) -> tuple[np.ndarray, BilinearCache]:
        """``LAYER.bilinear``: ``y_k = x₁ᵀ A_k x₂ + b_k`` on the last axes
        (``input2=None``: ``x₂ = x₁``, the quadratic form of a stack)."""
        x2 = input1 if input2 is None else input2
        if input2 is None and self.in1_features != self.in2_features:
            raise ValueError(
                f"{self!r}: one input needs in1_features == in2_features (the quadratic form)"
            )
        self._check(input1, x2)
        out = np.einsum("...i,kij,...j->...k", input1, self.params["weight"], x2, optimize=True)
        if self.has_bias:
            out = out + self.params["bias"]
        return out, BilinearCache(input1, input2)

    def backward(self, dout: np.ndarray, cache: BilinearCache) -> tuple[Any, dict]:
        """``LAYER.bilinear``: the two-sided gradient (module docstring); ``(dx1, dx2)``
        for two inputs, ``dx1 + dx2`` for the quadratic form."""
        x1, x2 = cache.pair
        want = (*x1.shape[:-1], self.out_features)
        if not isinstance(dout, np.ndarray) or dout.shape != want:
            raise ValueError(f"{self!r}: dout has shape {np.shape(dout)}, expected {want}")
        A = self.params["weight"]
        dx1 = np.einsum("...k,kij,...j->...i", dout, A, x2, optimize=True)
        dx2 = np.einsum("...k,kij,...i->...j", dout, A, x1, optimize=True)
        grads = {"weight": np.einsum("...k,...i,...j->kij", dout, x1, x2, optimize=True)}
        if self.has_bias:
            grads["bias"] = dout.reshape(-1, self.out_features).sum(axis=0)
        return (dx1 + dx2 if cache.input2 is None else (dx1, dx2)), grads

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*tuple(input_shape)[:-1], self.out_features)

    # ------------------------------------------------------------------ products (V axis)
    def _rows(self, a: np.ndarray, x: np.ndarray, sum_batch: bool) -> tuple[str, str]:
        """einsum labels: the V axis, then the sample axis kept unless summed (an
        unbatched input has none)."""
        lead = "".join("nabcdefg"[: x.ndim - 1])
        keep = "v" + (lead[:1] if not sum_batch and x.ndim > 1 else "")
        return "v" + lead, keep

    def input_vjp(self, cache: BilinearCache, M: np.ndarray) -> Any:
        """``J_xᵀ M`` (``PROD.bilinear.vjp``): ``Σ_k M_k A_k x₂`` and ``Σ_k M_k A_kᵀ x₁`` for
        each of the V cotangents (a pair for two inputs, their sum for the quadratic form)."""
        x1, x2 = cache.pair
        A = self.params["weight"]
        m1 = np.einsum("v...k,kij,...j->v...i", M, A, x2, optimize=True)
        m2 = np.einsum("v...k,kij,...i->v...j", M, A, x1, optimize=True)
        return m1 + m2 if cache.input2 is None else (m1, m2)

    def param_vjp(self, cache: BilinearCache, M: np.ndarray, sum_batch: bool = True) -> dict:
        """``J_θᵀ M`` (``PROD.bilinear.vjp``): ``Σ_rows M_k x₁ x₂ᵀ`` and ``Σ_rows M``
        (``sum_batch=False``: sample n's rows only, ``(V, N, *p)``)."""
        x1, x2 = cache.pair
        rows, keep = self._rows(M, x1, sum_batch)
        grads = {"weight": np.einsum(f"{rows}k,{rows[1:]}i,{rows[1:]}j->{keep}kij", M, x1, x2)}
        if self.has_bias:
            grads["bias"] = np.einsum(f"{rows}k->{keep}k", M)
        return grads

    def input_jvp(self, cache: BilinearCache, T: Any) -> np.ndarray:
        """``J_x T`` (``PROD.bilinear.jvp``): ``T₁ᵀ A_k x₂ + x₁ᵀ A_k T₂`` (``T`` a pair for
        two inputs; one ``T`` for both sides of the quadratic form)."""
        x1, x2 = cache.pair
        T1, T2 = (T, T) if cache.input2 is None else T
        A = self.params["weight"]
        return np.einsum("v...i,kij,...j->v...k", T1, A, x2, optimize=True) + np.einsum(
            "...i,kij,v...j->v...k", x1, A, T2, optimize=True
        )

    def param_jvp(self, cache: BilinearCache, T_params: dict[str, np.ndarray]) -> np.ndarray:
        """``Σ_p J_p T_p`` (``PROD.bilinear.jvp``): ``x₁ᵀ T_A,k x₂ + T_b,k``."""
        x1, x2 = cache.pair
        V = tangent_count(None, T_params)
        out = np.zeros((V, *x1.shape[:-1], self.out_features), x1.dtype)
        if "weight" in T_params:
            out = out + np.einsum("...i,vkij,...j->v...k", x1, T_params["weight"], x2)
        if "bias" in T_params and self.has_bias:
            shape = (V, *(1,) * (x1.ndim - 1), self.out_features)
            out = out + T_params["bias"].reshape(shape)
        return out

    def residual(self, cache, dout, T, T_params=None):
        """``Σ_k dout_k ∇²y_k · (T, T_θ)`` (``PROD.bilinear.residual``): ``y`` is bilinear
        in ``(x₁, x₂)`` and in ``(x₁ or x₂, A)``, so every second derivative is a mixed one::

            R∂x₁ = Σ_k dout_k (A_k T₂ + T_A,k x₂)     R∂x₂ = Σ_k dout_k (A_kᵀ T₁ + T_A,kᵀ x₁)
            R∂A_k = Σ_rows dout_k (T₁ x₂ᵀ + x₁ T₂ᵀ)   R∂b = 0
        """
        x1, x2 = cache.pair
        V = tangent_count(T if T is None or cache.input2 is None else T[0], T_params)
        T1, T2 = (None, None) if T is None else ((T, T) if cache.input2 is None else T)
        TA = (T_params or {}).get("weight")
        A = self.params["weight"]
        r1 = np.zeros((V, *x1.shape), np.result_type(x1, np.float32))
        r2 = np.zeros((V, *x2.shape), r1.dtype)
        rA = np.zeros((V, *A.shape), A.dtype)
        if T1 is not None:
            r1 = r1 + np.einsum("...k,kij,v...j->v...i", dout, A, T2, optimize=True)
            r2 = r2 + np.einsum("...k,kij,v...i->v...j", dout, A, T1, optimize=True)
            rows = (dout.reshape(-1, self.out_features), x1.reshape(-1, self.in1_features))
            d, a1, a2 = (*rows, x2.reshape(-1, self.in2_features))
            t1, t2 = T1.reshape(V, *a1.shape), T2.reshape(V, *a2.shape)
            rA = rA + np.einsum("nk,vni,nj->vkij", d, t1, a2, optimize=True)
            rA = rA + np.einsum("nk,ni,vnj->vkij", d, a1, t2, optimize=True)
        if TA is not None:
            r1 = r1 + np.einsum("...k,vkij,...j->v...i", dout, TA, x2, optimize=True)
            r2 = r2 + np.einsum("...k,vkij,...i->v...j", dout, TA, x1, optimize=True)
        grads = {"weight": rA}
        if self.has_bias:
            grads["bias"] = np.zeros((V, self.out_features), A.dtype)
        return (r1 + r2 if cache.input2 is None else (r1, r2)), grads

    def __repr__(self) -> str:
        return (
            f"Bilinear(in1_features={self.in1_features}, in2_features={self.in2_features}, "
            f"out_features={self.out_features}, bias={self.has_bias})"
        )
