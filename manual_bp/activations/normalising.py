"""Normalising activations that couple the units of a sample: softmax, log-softmax, softmin
(``ACT.*``).

All three act along one axis ``dim`` as torch's ``nn.Softmax(dim)`` / ``nn.LogSoftmax(dim)``. The
library's default is the last axis (``dim=-1``); ``dim=None`` is torch's legacy implicit
choice (``torch.nn.functional._get_softmax_dim``: axis 0 for 0-, 1- and 3-d inputs, else
axis 1), with torch's deprecation warning. Every reduction runs on the NEGATIVE axis
``dim − z.ndim``, so the same code serves a sample's array and the V-stacked arrays of the
products (an extra leading axis). A 0-d input is a one-element axis (softmax 1, log 0).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

import numpy as np

from manual_bp._threads import parallel_rows
from manual_bp.activations.base import (
    Activation,
    register_activation,
)

__all__ = ["LogSoftmax", "Softmax", "Softmin", "softmax_axis"]


def softmax_axis(dim: int | None, ndim: int, owner: str = "softmax") -> int:
    """The negative axis ``dim`` names in an ``ndim``-d input (torch's range rule).

    ``dim=None`` is torch's legacy implicit choice (0 if ``ndim`` is 0, 1 or 3, else 1),
    with torch's warning; a 0-d input takes ``dim`` in ``[-1, 0]`` as torch does.
    """
    if dim is None:
        warnings.warn(
            f"Implicit dimension choice for {owner} has been deprecated. Change the call to "
            "include dim=X as an argument.",
            UserWarning,
            stacklevel=4,
        )
        dim = 0 if ndim in (0, 1, 3) else 1
    size = max(ndim, 1)
    if not -size <= dim < size:
        raise ValueError(
            f"{owner}: dim={dim} is out of range for a {ndim}-d input "
            f"(expected to be in range of [{-size}, {size - 1}])"
        )
    return dim - size if dim >= 0 else dim


def _check_dim(dim: object) -> int | None:
    if dim is None:
        return None
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise TypeError(f"dim must be an integer or None, got {dim!r}")
    return int(dim)


def _scalar_as_axis(method: Callable) -> Callable:
    """Run ``method(self, *gs, z, a)`` of a 0-d ``a = σ(z)`` on a one-element last axis (torch
    treats a scalar as one); the V-stacked ``gs`` of the products keep their leading axes."""

    @functools.wraps(method)
    def wrapped(self, *args):
        *gs, _, a = args
        if np.ndim(a) == 0:  # a has z's shape (callers may pass z=None: a is enough)
            out = method(self, *(g[..., None] for g in gs), None, a[None])
            return out.reshape(out.shape[:-1])  # an array, also when 0-d
        return method(self, *args)

    return wrapped


def _softmax_rows(z: np.ndarray, out: np.ndarray, axis: int = -1) -> None:
    """``out = e^{z − max} / Σ e^{z − max}`` along ``axis``, in ``out`` (forward's steps)."""
    np.subtract(z, z.max(axis=axis, keepdims=True), out=out)
    np.exp(out, out=out)
    np.divide(out, out.sum(axis=axis, keepdims=True), out=out)


def _softmax_vjp(grad_a: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``a ⊙ (g − ⟨g, a⟩)`` along the last axis (``ACT.softmax``)."""
    return a * (grad_a - np.sum(grad_a * a, axis=-1, keepdims=True))


class _AlongDim(Activation):
    """The ``dim`` hyper-parameter shared by softmax and log-softmax."""

    elementwise = False
    z_optional = True  # the VJP and JVP are in terms of a = σ(z) alone
    hyperparameters = ("dim",)

    def __init__(self, dim: int | None = -1) -> None:
        self.dim = _check_dim(dim)

    def axis(self, z: np.ndarray) -> int:
        """The negative axis this σ acts along in ``z`` or ``a = σ(z)``, one shape
        (:func:`softmax_axis`)."""
        return softmax_axis(self.dim, np.ndim(z), self.name)

    def forward(self, z: np.ndarray) -> np.ndarray:
        if z.ndim == 0:
            return self._forward(z[None], -1).reshape(())
        axis = self.axis(z)
        if z.shape[axis] == 0:  # torch: an empty output (no maximum, no sum of nothing)
            return np.empty_like(z)
        return self._forward(z, axis)

    def _forward(self, z: np.ndarray, axis: int) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim})"


@register_activation
class Softmax(_AlongDim):
    """``σ(z)ⱼ = e^{zⱼ} / Σₖ e^{zₖ}`` along axis ``dim``. Equation ``ACT.softmax``.

    ``Softmax(dim=-1)``: torch's ``nn.Softmax(dim)``; the default is the last axis (torch's
    ``dim=None`` legacy rule is taken when passed explicitly, see the module docstring).

    Not elementwise: ``∂aᵢ/∂zⱼ = aᵢ(δᵢⱼ − aⱼ)``, so the VJP is
    ``∂C/∂z = a ⊙ (g − ⟨g, a⟩)`` along ``dim`` (``g = ∂C/∂a``), never
    ``g ⊙ a(1 − a)``. The forward subtracts the maximum first, so no
    ``exp`` overflows (only underflows to 0).
    """

    name = "softmax"
    equation = "ACT.softmax"

    def _forward(self, z: np.ndarray, axis: int) -> np.ndarray:
        e = np.exp(z - z.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)

    def forward_into(self, z: np.ndarray, out: np.ndarray) -> np.ndarray:
        """:meth:`forward` written into ``out`` in place, the same operations in the same
        order (so the same bits); only the per-row max and sum are temporaries. Along the
        last axis each row is its own work, so the rows are split over the threads
        (:func:`parallel_rows`)."""
        if z.ndim == 0 or z.size == 0:
            out[...] = self.forward(z)
            return out
        axis = self.axis(z)
        if axis != -1 or not (z.flags.c_contiguous and out.flags.c_contiguous) or z.ndim < 2:
            _softmax_rows(z, out, axis)
            return out
        width = z.shape[-1]
        z_rows, out_rows = z.reshape(-1, width), out.reshape(-1, width)
        parallel_rows(lambda rows: _softmax_rows(z_rows[rows], out_rows[rows]), len(z_rows), width)
        return out

    @_scalar_as_axis
    def backward(self, grad_a: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        axis = self.axis(a)
        if axis != -1:  # along another axis: the same VJP with that axis moved last
            g, p = np.moveaxis(grad_a, axis, -1), np.moveaxis(a, axis, -1)
            return np.moveaxis(_softmax_vjp(g, p), -1, axis)
        return _softmax_vjp(grad_a, a)

    def jvp(self, dz: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``J dz = a ⊙ (dz − ⟨a, dz⟩)`` (J is symmetric, so this equals the VJP)."""
        return self.backward(dz, z, a)

    @_scalar_as_axis
    def second_vjp(self, grad_a: np.ndarray, dz: np.ndarray, z: np.ndarray, a: np.ndarray):
        """``Σₖ gₖ ∇²aₖ dz = g ⊙ w − a⟨g, w⟩ − ⟨g, a⟩ w`` with ``w = J dz`` (``ACT2.softmax``)."""
        axis = self.axis(a)
        w = self.jvp(dz, z, a)
        g_w = np.sum(grad_a * w, axis=axis, keepdims=True)
        g_a = np.sum(grad_a * a, axis=axis, keepdims=True)
        return grad_a * w - a * g_w - g_a * w


@register_activation
class LogSoftmax(_AlongDim):
    """``σ(z)ⱼ = zⱼ − ln Σₖ e^{zₖ}`` along axis ``dim`` (log-probabilities). Equation
    ``ACT.log-softmax``; ``LogSoftmax(dim=-1)`` is torch's ``nn.LogSoftmax(dim)``.

    Not elementwise: ``∂aᵢ/∂zⱼ = δᵢⱼ − softmax(z)ⱼ``, so the VJP is
    ``∂C/∂z = g − softmax(z) Σᵢ gᵢ`` with ``softmax(z) = eᵃ``. Log-sum-exp is
    evaluated after subtracting the maximum.
    """

    name = "log-softmax"
    aliases = ("logsoftmax",)
    equation = "ACT.log-softmax"

    def _forward(self, z: np.ndarray, axis: int) -> np.ndarray:
        shifted = z - z.max(axis=axis, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))

    @_scalar_as_axis
    def backward(self, grad_a: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return grad_a - np.exp(a) * grad_a.sum(axis=self.axis(a), keepdims=True)

    @_scalar_as_axis
    def jvp(self, dz: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``J dz = dz − ⟨softmax(z), dz⟩`` (``J = I − 1 softmaxᵀ``)."""
        return dz - np.sum(np.exp(a) * dz, axis=self.axis(a), keepdims=True)

    @_scalar_as_axis
    def second_vjp(self, grad_a: np.ndarray, dz: np.ndarray, z: np.ndarray, a: np.ndarray):
        """``Σₖ gₖ ∇²aₖ dz = −(Σₖ gₖ) p ⊙ (dz − ⟨p, dz⟩)``, ``p = eᵃ`` (``ACT2.log-softmax``)."""
        axis = self.axis(a)
        p = np.exp(a)
        w = p * (dz - np.sum(p * dz, axis=axis, keepdims=True))
        return -grad_a.sum(axis=axis, keepdims=True) * w


@register_activation
class Softmin(Softmax):
    """``σ(z) = softmax(−z)`` along axis ``dim``: ``σ(z)ⱼ = e^{−zⱼ} / Σₖ e^{−zₖ}``. Equation
    ``ACT.softmin``; ``Softmin(dim=-1)`` is torch's ``nn.Softmin(dim)`` (the default as
    :class:`Softmax`'s).

    The chain rule through ``−z`` flips the sign of softmax's Jacobian at ``−z``:
    ``J = −(diag a − a aᵀ)``, symmetric, so the VJP and the JVP are
    ``−a ⊙ (g − ⟨g, a⟩)``. The second derivative has two sign flips and keeps softmax's form
    (``ACT2.softmin``).
    """

    name = "softmin"
    equation = "ACT.softmin"

    def _forward(self, z: np.ndarray, axis: int) -> np.ndarray:
        return super()._forward(-z, axis)

    def forward_into(self, z: np.ndarray, out: np.ndarray) -> np.ndarray:
        out[...] = self.forward(z)
        return out

    def backward(self, grad_a: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``∂C/∂z = −a ⊙ (g − ⟨g, a⟩)`` (``ACT.softmin``)."""
        return -super().backward(grad_a, z, a)

    def second_vjp(self, grad_a: np.ndarray, dz: np.ndarray, z: np.ndarray, a: np.ndarray):
        """``Σₖ gₖ ∇²σₖ(z) dz = Σₖ gₖ ∇²softmaxₖ(−z) dz`` (``ACT2.softmin``): softmax's form
        with ``w = a ⊙ (dz − ⟨a, dz⟩)``; softmax's method, given this class's JVP ``−w``,
        returns the negative (the form is linear in ``w``)."""
        return -super().second_vjp(grad_a, dz, z, a)
