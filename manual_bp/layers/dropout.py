"""Inverted dropout — ``torch.nn.Dropout`` and ``torch.nn.Dropout2d`` (equation ``LAYER.dropout``).

Training mode keeps each unit (or whole channel) with probability ``1 − p`` and rescales
the kept ones by ``1/(1 − p)``, so ``E[y] = x`` and evaluation is the identity
(Srivastava et al. 2014, with the rescaling moved to training time). The mask comes from
the layer's OWN generator, so a seeded model reproduces its masks, and the generator's
state is saved with the model (:meth:`Dropout.get_extra_state`). The backward pass
applies the same mask and scale: ``∂C/∂x = dout ⊙ m/(1 − p)``.

For a fixed mask dropout is elementwise and linear: an
:class:`~manual_bp.layers.base.ElementwiseLayer` with ``φ′ = m/(1 − p)`` in training and
``φ′ = 1`` in evaluation, ``φ″ = 0`` (``PROD.dropout.*``, ``PROD.dropout2d.*`` in
``docs/products.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from manual_bp.layers.base import (
    Cache,
    ElementwiseLayer,
    check_input,
    register_layer,
    zero_residual,
)

__all__ = ["Dropout", "Dropout2d", "DropoutCache"]


@dataclass
class DropoutCache(Cache):
    """``input`` x; ``mask`` (broadcastable to x, bool) and ``scale`` ``1/(1−p)``.

    ``mask`` is None in evaluation mode (the identity)."""

    mask: np.ndarray | None
    scale: float


@register_layer
class Dropout(ElementwiseLayer):
    """``torch.nn.Dropout(p)``: zero each element with probability ``p``, scale by 1/(1−p).

    Parameters
    ----------
    p : float in [0, 1] — drop probability; ``p = 0`` is exactly the identity, ``p = 1``
        gives zeros (torch's convention)
    inplace : bool — torch's flag, accepted; the result is the same (a new array: the
        input a layer below cached must survive)
    seed : int or Generator, optional — seed of the layer's own mask generator
        (:class:`~manual_bp.models.sequential.Sequential` re-seeds it through ``reset_parameters``)
    """

    name = "dropout"
    equation = "LAYER.dropout"
    hyperparameters = ("p",)
    product_equations = ("PROD.dropout.vjp", "PROD.dropout.jvp", "PROD.dropout.residual")
    hessian_is_zero = True

    def __init__(
        self,
        p: float = 0.5,
        inplace: bool = False,
        *,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(inplace, (bool, np.bool_)):
            raise TypeError(f"inplace must be True or False, got {inplace!r}")
        self.inplace = bool(inplace)  # torch's flag: accepted, the result is the same
        if isinstance(p, bool) or not isinstance(p, (int, float, np.floating)):
            raise TypeError(f"dropout probability p must be a number, got {p!r}")
        if not (math.isfinite(p) and 0.0 <= p <= 1.0):
            raise ValueError(f"dropout probability p must be in [0, 1], got {p!r}")
        self.p = float(p)
        self._generator = np.random.default_rng(seed)

    def reset_parameters(self, rng: np.random.Generator) -> None:
        """A fresh mask generator seeded from ``rng`` (so a seeded model is reproducible)."""
        self._generator = np.random.default_rng(int(rng.integers(0, 2**63 - 1)))

    def get_extra_state(self) -> dict[str, Any]:
        """The mask generator's state (JSON-serialisable): a reload draws the same masks."""
        return {"generator": self._generator.bit_generator.state}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if set(state) != {"generator"}:
            raise ValueError(
                f"{self!r}: extra state must have key 'generator', got {sorted(state)}"
            )
        saved = state["generator"]
        kind = getattr(np.random, str(saved.get("bit_generator")), None)
        if kind is None:
            raise ValueError(f"{self!r}: unknown bit generator {saved.get('bit_generator')!r}")
        bit_generator = kind()
        bit_generator.state = saved
        self._generator = np.random.Generator(bit_generator)

    def _mask_shape(self, x: np.ndarray) -> tuple[int, ...]:
        return x.shape

    def _check(self, x: Any) -> None:
        check_input(x, self, ndim=range(1, 33), name="x")

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, DropoutCache]:
        """``x -> x ⊙ m/(1 − p)`` in training, ``x`` in evaluation (``LAYER.dropout``)."""
        self._check(x)
        if not self.training:
            return x, DropoutCache(x, None, 1.0)
        # keep with probability 1 − p: u ~ U[0, 1) and u ≥ p (p = 0 keeps everything); u is
        # drawn in float32 for a float32 input (no float64 temporary of the input's size; p
        # is then compared rounded to float32), in float64 otherwise
        draw = np.float32 if x.dtype == np.float32 else np.float64
        mask = self._generator.random(self._mask_shape(x), dtype=draw) >= self.p
        scale = 0.0 if self.p == 1.0 else 1.0 / (1.0 - self.p)
        return x * mask * scale, DropoutCache(x, mask, scale)

    def backward(self, dout: np.ndarray, cache: DropoutCache) -> tuple[np.ndarray, dict]:
        """``∂C/∂x = dout ⊙ m/(1 − p)`` with the forward's own mask (``LAYER.dropout``)."""
        if not isinstance(dout, np.ndarray) or dout.shape != cache.input.shape:
            raise ValueError(
                f"{self!r}: dout has shape {np.shape(dout)}, expected {cache.input.shape}"
            )
        if cache.mask is None:
            return dout, {}
        return dout * cache.mask * cache.scale, {}

    def jvp(self, cache: DropoutCache, dx, dparams=None) -> np.ndarray:
        """``dout = dx ⊙ m/(1 − p)`` (dropout is linear in x for a fixed mask)."""
        if dx is None:
            return np.zeros_like(cache.input)
        return dx if cache.mask is None else dx * cache.mask * cache.scale

    # ------------------------------------------------------------------ products (V axis)
    def derivative(self, cache: DropoutCache) -> np.ndarray:
        """``φ′ = m/(1 − p)`` in training, ``1`` in evaluation, in the input's dtype and
        broadcastable to it (Dropout2d's mask is ``(N, C, 1, …)``): ``J_xᵀ M = J_x M = φ′ ⊙ M``
        (``PROD.dropout.vjp``, ``PROD.dropout.jvp``, ``PROD.dropout2d.vjp``,
        ``PROD.dropout2d.jvp``)."""
        dtype = cache.input.dtype
        if cache.mask is None:
            return np.ones((), dtype)
        return cache.mask * np.asarray(cache.scale, dtype)

    def residual(self, cache, dout, T, T_params=None):
        """Zero (``PROD.dropout.residual``, ``PROD.dropout2d.residual``): for a fixed mask
        ``x ↦ φ′ ⊙ x`` is linear, ``φ″ = 0``."""
        return zero_residual(self, cache, T, T_params)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


@register_layer
class Dropout2d(Dropout):
    """``torch.nn.Dropout2d(p)``: zero whole channels of ``(N, C, H, W)`` or ``(N, C, L)``.

    One draw per ``(sample, channel)``, broadcast over the spatial axes (Tompson et al.
    2015's spatial dropout); same options as :class:`Dropout`.
    """

    name = "dropout2d"
    product_equations = ("PROD.dropout2d.vjp", "PROD.dropout2d.jvp", "PROD.dropout2d.residual")

    def _check(self, x: Any) -> None:
        check_input(x, self, ndim=(3, 4), name="x")

    def _mask_shape(self, x: np.ndarray) -> tuple[int, ...]:
        return (*x.shape[:2], *(1,) * (x.ndim - 2))

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) not in (2, 3):
            raise ValueError(
                f"{self!r} needs per-sample inputs (C, H, W) or (C, L), got {tuple(input_shape)}"
            )
        return tuple(input_shape)
