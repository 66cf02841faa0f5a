"""Rectifiers with a negative slope that is learnt or random: ``torch.nn.PReLU`` and
``torch.nn.RReLU`` (``docs/activations.md``, "Activation modules").

* ``PReLU(num_parameters=1, init=0.25)`` (He et al. 2015): ``out = x`` where ``x > 0``, else
  ``w_c x``, with one slope per channel (axis 1) or one shared (``LAYER.prelu``)::

      ∂C/∂x = g ⊙ (1[x > 0] + w_c 1[x ≤ 0]),   ∂C/∂w_c = Σ_(all axes but 1) g ⊙ x ⊙ 1[x ≤ 0].

* ``RReLU(lower=1/8, upper=1/3)`` (Xu et al. 2015): in training each ``x ≤ 0`` is scaled by
  its own ``r ~ U(lower, upper)``, in evaluation by ``(lower + upper)/2``; for the drawn
  (or fixed) slopes it is linear, ``∂C/∂x = g ⊙ r`` (``LAYER.rrelu``). The slopes come from
  the layer's own generator, torch's Mersenne twister reproduced draw for draw
  (:func:`torch_uniform`): ``RReLU(seed=s)`` draws what torch draws after
  ``torch.manual_seed(s)``; its state is saved with the model (:meth:`RReLU.get_extra_state`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from manual_bp.layers.activation_steps import PReLUStep, RReLUStep
from manual_bp.layers.base import (
    Cache,
    ElementwiseLayer,
    Layer,
    check_input,
    layer_dtype,
    register_layer,
    zero_residual,
)
from manual_bp.layers.torch_random import torch_generator, torch_uniform

__all__ = ["PReLU", "RReLU", "RReLUCache", "torch_generator", "torch_uniform"]


# ---------------------------------------------------------------------- PReLU
@register_layer
class PReLU(Layer):
    """``torch.nn.PReLU(num_parameters=1, init=0.25)``: parameter ``weight`` of shape
    ``(num_parameters,)`` filled with ``init``; ``num_parameters`` is 1 (one shared slope) or
    the size of axis 1 of the input (a 0-d or 1-d input takes the shared form only, as
    torch). Equation ``LAYER.prelu``; products ``PROD.prelu.*``."""

    name = "prelu"
    equation = "LAYER.prelu"
    product_equations = ("PROD.prelu.vjp", "PROD.prelu.jvp", "PROD.prelu.residual")
    hyperparameters = ("num_parameters", "init")

    def __init__(
        self, num_parameters: int = 1, init: float = 0.25, device: Any = None, dtype: Any = None
    ) -> None:
        super().__init__()
        dtype = layer_dtype(dtype, "PReLU", device)
        if isinstance(num_parameters, bool) or not isinstance(num_parameters, (int, np.integer)):
            raise TypeError(f"PReLU: num_parameters must be an integer, got {num_parameters!r}")
        if num_parameters < 0:
            raise ValueError(f"PReLU: num_parameters must be >= 0, got {num_parameters}")
        if isinstance(init, bool) or not isinstance(init, (int, float, np.integer, np.floating)):
            raise TypeError(f"PReLU: init must be a real number, got {init!r}")
        self.num_parameters, self.init = int(num_parameters), float(init)
        self.params["weight"] = np.full(self.num_parameters, self.init, dtype)

    def reset_parameters(self, rng: np.random.Generator) -> None:
        """torch's initialisation: every slope ``init`` (no randomness)."""
        self.params["weight"][...] = self.init

    def _shape(self, ndim: int) -> tuple[int, ...]:
        """The weight's shape broadcast against an ``ndim``-d input (channels on axis 1)."""
        if self.num_parameters == 1:
            return ()
        return (self.num_parameters, *(1,) * (ndim - 2))

    def _check(self, x: np.ndarray) -> None:
        check_input(x, self, name="x")
        if x.ndim == 0 and self.num_parameters != 1:
            raise ValueError(f"{self!r}: x is 0-d; only one shared slope takes a 0-d input")
        channels = x.shape[1] if x.ndim >= 2 else 1
        if self.num_parameters not in (1, channels):
            raise ValueError(
                f"{self!r}: x has shape {x.shape}; num_parameters={self.num_parameters} must "
                f"be 1 or the channel size (axis 1) {channels}"
            )

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        """``out = x`` where ``x > 0``, else ``w_c x`` (``LAYER.prelu``)."""
        self._check(x)
        w = self.params["weight"].reshape(self._shape(x.ndim))
        return np.where(x > 0, x, w * x), Cache(x)

    def backward(self, dout: np.ndarray, cache: Cache) -> tuple[np.ndarray, dict]:
        """``∂C/∂x = g ⊙ slope``, ``∂C/∂w_c = Σ g ⊙ x ⊙ 1[x ≤ 0]`` over every axis but the
        channel axis, batch and positions alike (``LAYER.prelu``)."""
        dx = self.input_vjp(cache, dout[None])[0]
        terms = (dout * self._negative(cache.input))[None]
        return dx, {"weight": self._reduce(terms, cache, False)[0]}

    def fast_step(self) -> PReLUStep:
        """The fused form for training: the readable expressions in buffers
        (:mod:`~manual_bp.layers.activation_steps`)."""
        return PReLUStep(self)

    def _negative(self, x: np.ndarray) -> np.ndarray:
        """``x ⊙ 1[x ≤ 0]`` (``∂out/∂w`` before the reduction; NaN stays NaN as torch's)."""
        return np.where(x > 0, 0.0, x)

    def _reduce(self, terms: np.ndarray, cache: Cache, per_sample: bool) -> np.ndarray:
        """Sum ``terms`` ``(V, *x.shape)`` to the weight's ``(V, C)``; ``per_sample``:
        ``(V, N, C)`` (positions only)."""
        ndim = cache.input.ndim
        keep = {0, 1} if per_sample else {0}
        if self.num_parameters != 1:
            keep.add(2)
        axes = tuple(a for a in range(1, ndim + 1) if a not in keep)
        out = terms.sum(axis=axes)
        return out if self.num_parameters != 1 else out[..., None]

    def _slope(self, cache: Cache) -> np.ndarray:
        x = cache.input
        return np.where(x > 0, 1.0, self.params["weight"].reshape(self._shape(x.ndim)))

    # ------------------------------------------------------------------ products (V axis)
    def input_vjp(self, cache: Cache, M: np.ndarray) -> np.ndarray:
        """``J_xᵀ M = M ⊙ slope`` (diagonal, ``PROD.prelu.vjp``)."""
        return M * self._slope(cache).astype(M.dtype, copy=False)

    def input_jvp(self, cache: Cache, T: np.ndarray) -> np.ndarray:
        """``J_x T = slope ⊙ T`` (``PROD.prelu.jvp``)."""
        return T * self._slope(cache).astype(T.dtype, copy=False)

    def param_vjp(self, cache: Cache, M: np.ndarray, sum_batch: bool = True) -> dict:
        """``J_wᵀ M = Σ M ⊙ x ⊙ 1[x ≤ 0]`` per channel; per sample over positions only
        (``PROD.prelu.vjp``)."""
        if not sum_batch and cache.input.ndim == 0:
            raise ValueError(f"{self!r}: a 0-d input has no batch axis to keep")
        return {"weight": self._reduce(M * self._negative(cache.input), cache, not sum_batch)}

    def _tangent(self, T_params: dict[str, np.ndarray], ndim: int) -> np.ndarray:
        """``T_w`` ``(V, C)`` broadcast against ``(V, *x.shape)``."""
        Tw = T_params["weight"]
        return Tw.reshape(len(Tw), *(1,) * ndim) if self.num_parameters == 1 else (
            Tw.reshape(len(Tw), 1, self.num_parameters, *(1,) * (ndim - 2))
        )  # fmt: skip

    def param_jvp(self, cache: Cache, T_params: dict[str, np.ndarray]) -> np.ndarray:
        """``J_w T_w = x ⊙ 1[x ≤ 0] ⊙ T_w`` (``PROD.prelu.jvp``)."""
        x = cache.input
        if "weight" not in T_params:
            V = next(iter(T_params.values())).shape[0] if T_params else 1
            return np.zeros((V, *x.shape), x.dtype)
        return self._negative(x) * self._tangent(T_params, x.ndim)

    def residual(self, cache, dout, T, T_params=None):
        """The one second derivative is the mixed ``∂²out/∂x∂w_c = 1[x ≤ 0]``
        (``PROD.prelu.residual``): input part ``dout ⊙ 1[x ≤ 0] ⊙ T_w``, weight part
        ``Σ dout ⊙ 1[x ≤ 0] ⊙ T`` over every axis but the channel axis."""
        T_params = T_params or {}
        rx, rp = zero_residual(self, cache, T, T_params)
        x = cache.input
        negative = (x <= 0) | np.isnan(x)  # the complement of x > 0, as forward's
        if "weight" in T_params:
            rx = dout * negative * self._tangent(T_params, x.ndim)
        if T is not None:
            rp = {"weight": self._reduce(dout * negative * T, cache, False)}
        return rx, rp

    def __repr__(self) -> str:
        return f"PReLU(num_parameters={self.num_parameters})"


# ---------------------------------------------------------------------- RReLU
@dataclass
class RReLUCache(Cache):
    """``input`` x; ``slope``: the per-element factor (1 where ``x > 0``), drawn in
    training, ``1[x > 0] + (lower + upper)/2 · 1[x ≤ 0]`` in evaluation."""

    slope: np.ndarray


@register_layer
class RReLU(ElementwiseLayer):
    """``torch.nn.RReLU(lower=1/8, upper=1/3, inplace=False)``: randomised leaky ReLU.

    Training: ``out = r ⊙ x`` with ``r ~ U(lower, upper)`` drawn for each ``x ≤ 0`` (in
    memory order) and ``r = 1`` elsewhere; evaluation: the fixed slope ``(lower + upper)/2``.
    ``seed``: the generator's seed (torch's ``manual_seed`` stream); a
    :class:`~manual_bp.models.sequential.Sequential` re-seeds it through
    :meth:`reset_parameters`. Equation ``LAYER.rrelu``; products ``PROD.rrelu.*``.
    """

    name = "rrelu"
    equation = "LAYER.rrelu"
    product_equations = ("PROD.rrelu.vjp", "PROD.rrelu.jvp", "PROD.rrelu.residual")
    hyperparameters = ("lower", "upper")
    hessian_is_zero = True

    def __init__(
        self,
        lower: float = 1.0 / 8,
        upper: float = 1.0 / 3,
        inplace: bool = False,
        *,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        for value, label in ((lower, "lower"), (upper, "upper")):
            if isinstance(value, bool) or not isinstance(
                value, (int, float, np.integer, np.floating)
            ):
                raise TypeError(f"RReLU: {label} must be a real number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"RReLU: {label} must be finite, got {value!r}")
        if lower > upper:
            raise ValueError(
                f"RReLU: lower={lower} must be less than or equal to upper={upper} "
                "(torch: 'Lower bound should be less than or equal to the upper bound')"
            )
        if not isinstance(inplace, (bool, np.bool_)):
            raise TypeError(f"RReLU: inplace must be True or False, got {inplace!r}")
        self.lower, self.upper, self.inplace = float(lower), float(upper), bool(inplace)
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"RReLU: seed must be an integer, got {seed!r}")
        self._generator = torch_generator(int(seed))

    def reset_parameters(self, rng: np.random.Generator) -> None:
        """A fresh slope generator seeded from ``rng`` (a seeded model is reproducible)."""
        self._generator = torch_generator(int(rng.integers(0, 2**32)))

    def manual_seed(self, seed: int) -> RReLU:
        """Re-seed the slope generator as ``torch.manual_seed(seed)`` seeds torch's: the next
        training forward draws torch's slopes (returns the layer)."""
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"RReLU: seed must be an integer, got {seed!r}")
        self._generator = torch_generator(int(seed))
        return self

    def get_extra_state(self) -> dict[str, Any]:
        """The slope generator's state, JSON-serialisable (the MT19937 key as a list)."""
        state = self._generator.state
        return {"generator": {"bit_generator": "MT19937",
                              "state": {"key": [int(k) for k in state["state"]["key"]],
                                        "pos": int(state["state"]["pos"])}}}  # fmt: skip

    def set_extra_state(self, state: dict[str, Any]) -> None:
        saved = state.get("generator") if set(state) == {"generator"} else None
        if not isinstance(saved, dict) or saved.get("bit_generator") != "MT19937":
            raise ValueError(
                f"{self!r}: extra state must be {{'generator': an MT19937 state}}, got "
                f"{sorted(state)}"
            )
        bit_generator = np.random.MT19937()
        inner = saved["state"]
        bit_generator.state = {"bit_generator": "MT19937",
                               "state": {"key": np.asarray(inner["key"], np.uint32),
                                         "pos": int(inner["pos"])}}  # fmt: skip
        self._generator = bit_generator

    def fast_step(self) -> RReLUStep:
        """Training's fast form: the same draws from the same stream, into buffers
        (:mod:`~manual_bp.layers.activation_steps`)."""
        return RReLUStep(self)

    @property
    def eval_slope(self) -> float:
        """The evaluation slope ``(lower + upper)/2``."""
        return (self.lower + self.upper) / 2

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, RReLUCache]:
        """``out = r ⊙ x`` (``LAYER.rrelu``): ``r`` drawn in training, fixed in evaluation."""
        check_input(x, self, name="x")
        negative = x <= 0
        if self.training:
            slope = np.ones_like(x)
            slope[negative] = torch_uniform(
                self._generator, int(negative.sum()), self.lower, self.upper, x.dtype
            )
        else:
            slope = np.where(negative, x.dtype.type(self.eval_slope), x.dtype.type(1.0))
        return x * slope, RReLUCache(x, slope)

    def backward(self, dout: np.ndarray, cache: RReLUCache) -> tuple[np.ndarray, dict]:
        """``∂C/∂x = g ⊙ r`` with the forward's own slopes (``LAYER.rrelu``)."""
        return dout * cache.slope, {}

    def derivative(self, cache: RReLUCache) -> np.ndarray:
        """``φ′ = r`` (``PROD.rrelu.vjp``, ``PROD.rrelu.jvp``); ``φ″ = 0`` for fixed slopes
        (``PROD.rrelu.residual``: zero)."""
        return cache.slope

    def __repr__(self) -> str:
        return f"RReLU(lower={self.lower}, upper={self.upper})"
