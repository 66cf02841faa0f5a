"""Normalising activations that couple the units of a sample: softmax, log-softmax (``ACT.*``)."""

from __future__ import annotations

import numpy as np

from manual_bp._threads import parallel_rows
from manual_bp.activations.base import (
    Activation,
    register_activation,
)

__all__ = ["LogSoftmax", "Softmax"]


def _softmax_rows(z: np.ndarray, out: np.ndarray) -> None:
    """``out = e^{z − max} / Σ e^{z − max}`` per row, in ``out`` (Softmax.forward's steps)."""
    np.subtract(z, z.max(axis=-1, keepdims=True), out=out)
    np.exp(out, out=out)
    np.divide(out, out.sum(axis=-1, keepdims=True), out=out)


@register_activation
class Softmax(Activation):
    """``σ(z)ⱼ = e^{zⱼ} / Σₖ e^{zₖ}`` over the units of each sample. Equation ``ACT.softmax``.

    Not elementwise: ``∂aᵢ/∂zⱼ = aᵢ(δᵢⱼ − aⱼ)``, so the VJP is
    ``∂C/∂z = a ⊙ (g − ⟨g, a⟩)`` per sample (``g = ∂C/∂a``), never
    ``g ⊙ a(1 − a)``. The forward subtracts the row maximum first, so no
    ``exp`` overflows (only underflows to 0).
    """

    name = "softmax"
    equation = "ACT.softmax"
    elementwise = False

    def forward(self, z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    def forward_into(self, z: np.ndarray, out: np.ndarray) -> np.ndarray:
        """:meth:`forward` written into ``out`` in place, the same operations in the same
        order (so the same bits); only the per-row max and sum are temporaries. Each row is
        its own work, so the rows are split over the threads (:func:`parallel_rows`)."""
        if not (z.flags.c_contiguous and out.flags.c_contiguous) or z.ndim < 2:
            _softmax_rows(z, out)
            return out
        width = z.shape[-1]
        z_rows, out_rows = z.reshape(-1, width), out.reshape(-1, width)
        parallel_rows(lambda rows: _softmax_rows(z_rows[rows], out_rows[rows]), len(z_rows), width)
        return out

    def backward(self, grad_a: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return a * (grad_a - np.sum(grad_a * a, axis=-1, keepdims=True))

    def jvp(self, dz: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``J dz = a ⊙ (dz − ⟨a, dz⟩)`` (J is symmetric, so this equals the VJP)."""
        return self.backward(dz, z, a)

    def second_vjp(self, grad_a: np.ndarray, dz: np.ndarray, z: np.ndarray, a: np.ndarray):
        """``Σₖ gₖ ∇²aₖ dz = g ⊙ w − a⟨g, w⟩ − ⟨g, a⟩ w`` with ``w = J dz`` (``ACT2.softmax``)."""
        w = self.jvp(dz, z, a)
        g_w = np.sum(grad_a * w, axis=-1, keepdims=True)
        g_a = np.sum(grad_a * a, axis=-1, keepdims=True)
        return grad_a * w - a * g_w - g_a * w


@register_activation
class LogSoftmax(Activation):
    """``σ(z)ⱼ = zⱼ − ln Σₖ e^{zₖ}`` per sample (log-probabilities). Equation ``ACT.log-softmax``.

    Not elementwise: ``∂aᵢ/∂zⱼ = δᵢⱼ − softmax(z)ⱼ``, so the VJP is
    ``∂C/∂z = g − softmax(z) Σᵢ gᵢ`` with ``softmax(z) = eᵃ``. Log-sum-exp is
    evaluated after subtracting the row maximum.
    """

    name = "log-softmax"
    aliases = ("logsoftmax",)
    equation = "ACT.log-softmax"
    elementwise = False

    def forward(self, z: np.ndarray) -> np.ndarray:
        shifted = z - z.max(axis=-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))

    def backward(self, grad_a: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return grad_a - np.exp(a) * grad_a.sum(axis=-1, keepdims=True)

    def jvp(self, dz: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``J dz = dz − ⟨softmax(z), dz⟩`` (``J = I − 1 softmaxᵀ``)."""
        return dz - np.sum(np.exp(a) * dz, axis=-1, keepdims=True)

    def second_vjp(self, grad_a: np.ndarray, dz: np.ndarray, z: np.ndarray, a: np.ndarray):
        """``Σₖ gₖ ∇²aₖ dz = −(Σₖ gₖ) p ⊙ (dz − ⟨p, dz⟩)``, ``p = eᵃ`` (``ACT2.log-softmax``)."""
        p = np.exp(a)
        w = p * (dz - np.sum(p * dz, axis=-1, keepdims=True))
        return -grad_a.sum(axis=-1, keepdims=True) * w
