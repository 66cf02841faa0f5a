"""An activation function of the catalogue as a parameter-free layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from manual_bp import _threads
from manual_bp._threads import parallel_rows
from manual_bp.activations import Activation, get_activation
from manual_bp.layers.base import Cache, Layer, register_layer, zero_residual
from manual_bp.layers.steps import shape_buffers

__all__ = ["ActivationCache", "ActivationLayer", "ActivationStep"]


@dataclass
class ActivationCache(Cache):
    """``input`` z and the output ``a = σ(z)`` (several σ' are cheapest from ``a``)."""

    output: np.ndarray


class _HessianIsZero:
    """``hessian_is_zero`` of an activation layer: on an instance its activation's (ReLU's
    ``σ'' = 0``), on the class False — the class must provide the residual, since most σ
    have one (the tests that ask which products a class implements read the class)."""

    def __get__(self, layer: ActivationLayer | None, owner: type) -> bool:
        return False if layer is None else layer.activation.hessian_is_zero


@register_layer
class ActivationLayer(Layer):
    """``a = σ(z)`` for any activation of the catalogue (no parameters).

    The backward pass is the activation's VJP — BP1/BP2's ``⊙ σ'(z)`` for an elementwise
    σ, the full Jacobian product for softmax (``ACT.*``). In a stack spec the activation's
    own name stands for this layer: ``"relu"``, ``{"name": "leaky-relu", "alpha": 0.2}``.
    Softmax and log-softmax act along their ``dim`` (the last axis by default).
    """

    name = "activation"
    hyperparameters = ("activation",)
    product_equations = ("PROD.activation.vjp", "PROD.activation.jvp", "PROD.activation.residual")
    hessian_is_zero = _HessianIsZero()  # type: ignore[assignment]

    def __init__(self, activation: str | Activation | dict[str, Any] = "identity") -> None:
        super().__init__()
        self.activation = get_activation(activation)

    @property
    def equation(self) -> str:  # type: ignore[override]
        return self.activation.equation

    def forward(self, z: np.ndarray) -> tuple[np.ndarray, ActivationCache]:
        # torch's activation modules take any shape (a scalar, an unbatched vector); a
        # coupled σ (softmax) acts along its ``dim`` (a scalar is a one-element axis)
        if not isinstance(z, np.ndarray):
            raise ValueError(f"{self!r}: input must be a NumPy array, got {type(z).__name__}")
        a = self.activation.forward(z)
        return a, ActivationCache(z, a)

    def backward(
        self, grad_a: np.ndarray, cache: ActivationCache
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        z = cache.input
        if not isinstance(grad_a, np.ndarray):
            raise ValueError(
                f"{self!r}: upstream gradient must be a NumPy array of shape {z.shape}, got "
                f"{type(grad_a).__name__}"
            )
        if grad_a.shape != z.shape:
            raise ValueError(
                f"{self!r}: upstream gradient has shape {grad_a.shape}, expected {z.shape}"
            )
        return self.activation.backward(grad_a, z, cache.output), {}

    def fast_step(self) -> ActivationStep:
        """The fused form for training (:class:`ActivationStep`)."""
        return ActivationStep(self)

    # ------------------------------------------------------------------ products (V axis)
    # The activation's own products broadcast over the leading V axis: an elementwise σ
    # gives them from σ′ and σ″ (Activation's base class), a coupled one (softmax) over
    # its last axis. ``PROD.activation.*`` in docs/products.md.
    def input_vjp(self, cache: ActivationCache, M: np.ndarray) -> np.ndarray:
        """``J_σᵀ M`` (``PROD.activation.vjp``): ``M ⊙ σ′(z)`` for an elementwise σ."""
        return self.activation.backward(M, cache.input, cache.output)

    def input_jvp(self, cache: ActivationCache, T: np.ndarray) -> np.ndarray:
        """``J_σ T`` (``PROD.activation.jvp``): ``σ′(z) ⊙ T`` for an elementwise σ."""
        return self.activation.jvp(T, cache.input, cache.output)

    def param_jvp(self, cache: ActivationCache, T_params: dict[str, np.ndarray]) -> np.ndarray:
        raise ValueError(f"{self!r} has no parameters to take a tangent of")

    def residual(self, cache, dout, T, T_params=None):
        """``Σₖ doutₖ ∇²σₖ(z) T`` (``PROD.activation.residual``; ``ACT2.*``): ``dout ⊙ σ″ ⊙ T``
        for an elementwise σ."""
        if T is None or self.hessian_is_zero:
            return zero_residual(self, cache, T, T_params)
        return self.activation.second_vjp(dout, T, cache.input, cache.output), {}

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "activation": self.activation.get_config()}

    def __repr__(self) -> str:
        return f"ActivationLayer({self.activation!r})"


class ActivationStep:
    """The fast form of :class:`ActivationLayer`: ``a = σ(z)`` into a buffer and the VJP in
    place (``g ← g ⊙ σ′(z)``, BP1/BP2's ⊙), through the activation's own fast forms
    (:meth:`Activation.forward_into`, :meth:`Activation.backward_inplace`).

    Large arrays of an elementwise σ are cut into slices of the batch, one per thread
    (:func:`~manual_bp._threads.parallel_rows`): any slicing gives the same bits. A coupled
    σ (softmax) is called whole: it may split its own rows, and ``parallel_rows`` called
    from inside a pool worker would wait on itself.
    """

    def __init__(self, layer: ActivationLayer) -> None:
        self.activation = layer.activation
        self.split = layer.activation.elementwise
        self.kept = layer.activation.fast_state  # buffers kept from forward for backward
        self._buffers: dict[tuple, tuple[np.ndarray, ...]] = {}
        self.z = self.a = self.out = self.scratch = self.state = None
        self.whole: dict[str, np.ndarray] = {}  # state= of a whole-batch call
        self.rows_split, self.threads_seen = False, 0

    def _make(self, z: np.ndarray) -> tuple[np.ndarray, ...]:
        state = np.empty((self.kept, *z.shape), z.dtype) if self.kept else None
        return np.empty_like(z), np.empty_like(z), state

    def _state(self, rows: slice) -> dict[str, np.ndarray]:
        """``state=`` of the rows ``rows`` (nothing for an activation without one)."""
        return {"state": self.state[:, rows]} if self.kept else {}

    def forward(self, z: np.ndarray) -> np.ndarray:
        # z is usually the layer below's output buffer, the same step after step
        threads = _threads.get_num_threads()
        if z is not self.z and (self.z is None or self.z.shape != z.shape):
            self.out, self.scratch, self.state = shape_buffers(
                self._buffers, z.shape, lambda: self._make(z)
            )
            self.whole = {"state": self.state} if self.kept else {}
            self.threads_seen = 0
        if threads != self.threads_seen:  # decided once per shape and thread count
            rows = z.shape[0] if z.ndim else 1  # parallel_rows's own decision, per shape
            self.rows_split = self.split and _threads.row_parts(rows, z.size // max(rows, 1)) > 1
            self.threads_seen = threads
        self.z = z
        if not self.rows_split:
            self.a = self.activation.forward_into(z, self.out, **self.whole)
            return self.a
        out, forward_into, holds_z = self.out, self.activation.forward_into, []

        def work(rows: slice) -> None:
            zr, target = z[rows], out[rows]
            held = forward_into(zr, target, **self._state(rows))
            if held is zr:  # the identity: a = z, no copy
                holds_z.append(True)
            elif held is not target:
                target[...] = held

        parallel_rows(work, z.shape[0], z.size // z.shape[0])
        self.a = z if holds_z else out
        return self.a

    def backward(self, g: np.ndarray, grads: dict, need_dx: bool) -> np.ndarray:
        z, a, scratch = self.z, self.a, self.scratch
        if not self.rows_split or g.shape != z.shape:
            return self.activation.backward_inplace(g, z, a, scratch, **self.whole)
        backward_inplace = self.activation.backward_inplace

        def work(rows: slice) -> None:
            gr = g[rows]
            held = backward_inplace(gr, z[rows], a[rows], scratch[rows], **self._state(rows))
            if held is not gr:
                gr[...] = held

        parallel_rows(work, z.shape[0], z.size // z.shape[0])
        return g
