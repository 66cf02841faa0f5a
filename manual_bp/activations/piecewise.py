"""Piecewise activations with a kink: ReLU, leaky ReLU, ELU, SELU, hardtanh (``ACT.*``)."""

from __future__ import annotations

import numpy as np

from manual_bp.activations.base import (
    Activation,
    _finite_float,
    _inplace,
    _keep_where,
    _masked,
    register_activation,
)

__all__ = [
    "ELU",
    "SELU",
    "SELU_ALPHA",
    "SELU_SCALE",
    "HardTanh",
    "Hardtanh",
    "LeakyReLU",
    "ReLU",
]


_ZERO_ROWS: dict[np.dtype, np.ndarray] = {}


def _zero_row(dtype: np.dtype) -> np.ndarray:
    """A read-only row of zeros (one per dtype) for :meth:`ReLU.forward_into`."""
    row = _ZERO_ROWS.get(dtype)
    if row is None:
        row = _ZERO_ROWS[dtype] = np.zeros(8192, dtype)
        row.flags.writeable = False
    return row


@register_activation
class ReLU(Activation):
    """``σ(z) = max(0, z)``; ``σ'(z) = 1[z > 0]``. Equation ``ACT.relu``.

    At the kink ``z = 0`` we take ``σ'(0) = 0``, torch's convention.
    """

    name = "relu"
    equation = "ACT.relu"
    hessian_is_zero = True

    def __init__(self, inplace: bool = False) -> None:
        """``inplace``: torch's flag, accepted; the result is the same (``_inplace``)."""
        self.inplace = _inplace(inplace)

    def forward(self, z: np.ndarray) -> np.ndarray:
        """``max(z, 0)`` (by :meth:`forward_into`: the same values, ~3× faster than NumPy's
        scalar-operand loop)."""
        return self.forward_into(z, np.empty_like(z))

    def derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return (z > 0).astype(z.dtype)

    def backward(self, grad_a: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``g ⊙ 1[z > 0]``, a select: ``g`` may carry a V axis of products in front."""
        return _masked(grad_a, z > 0)

    def jvp(self, dz: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``1[z > 0] ⊙ dz``, the same select (torch's forward-mode rule for ``relu``)."""
        return _masked(dz, z > 0).astype(np.result_type(dz, z), copy=False)

    def forward_into(self, z: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``max(z, 0)`` into ``out``. Against a row of zeros rather than the scalar 0:
        NumPy's ``maximum`` with a scalar operand takes a non-vectorised loop (~3× slower);
        same values (NaN propagates, ``max(−0, 0)`` as the scalar form)."""
        if not (z.flags.c_contiguous and out.flags.c_contiguous):
            return np.maximum(z, 0, out=out)
        flat_z, flat_out = z.reshape(-1), out.reshape(-1)
        zeros = _zero_row(z.dtype)
        width = zeros.shape[0]
        whole = flat_z.shape[0] - flat_z.shape[0] % width
        if whole:
            np.maximum(
                flat_z[:whole].reshape(-1, width), zeros, out=flat_out[:whole].reshape(-1, width)
            )
        if whole < flat_z.shape[0]:
            rest = flat_z.shape[0] - whole
            np.maximum(flat_z[whole:], zeros[:rest], out=flat_out[whole:])
        return out

    def backward_inplace(self, grad_a, z, a, scratch) -> np.ndarray:
        """``g ⊙ 1[z > 0]`` in place (``relu'(0) = 0``); the boolean mask is written into
        ``scratch``'s memory (a float mask cost a slower bool→float comparison)."""
        if scratch.flags.c_contiguous and z.size:
            mask = scratch.reshape(-1).view(np.bool_)[: z.size].reshape(z.shape)
        else:
            mask = np.empty(z.shape, np.bool_)
        np.greater(z, 0, out=mask)
        np.multiply(grad_a, mask, out=grad_a)
        return grad_a

    def second_derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``σ'' = 0`` everywhere, also at the kink (``ACT2.relu``: σ' is piecewise constant)."""
        return np.zeros_like(z)


@register_activation
class LeakyReLU(Activation):
    """``σ(z) = z`` for ``z > 0``, ``αz`` otherwise; ``σ'(z) = 1[z > 0] + α·1[z ≤ 0]``.

    Equation ``ACT.leaky-relu``. At the kink ``z = 0`` the slope is ``α``:
    torch's ``leaky_relu_backward`` passes ``grad`` only where ``z > 0`` and
    ``α·grad`` everywhere else, and we follow it. ``α`` is torch's
    ``negative_slope``.
    """

    name = "leaky-relu"
    aliases = ("leakyrelu",)
    equation = "ACT.leaky-relu"
    hessian_is_zero = True
    hyperparameters = ("alpha",)

    def __init__(
        self, alpha: float = 0.01, inplace: bool = False, *, negative_slope: float | None = None
    ) -> None:
        """torch's ``LeakyReLU(negative_slope, inplace)``; ``inplace`` changes nothing."""
        self.inplace = _inplace(inplace)
        if negative_slope is not None:  # torch's name for α
            if alpha != 0.01:
                raise ValueError("give alpha or negative_slope (torch's name), not both")
            alpha = negative_slope
        self.alpha = _finite_float(alpha, "alpha")

    @property
    def negative_slope(self) -> float:
        """torch's name for the slope ``α``."""
        return self.alpha

    def forward(self, z: np.ndarray) -> np.ndarray:
        return np.where(z > 0, z, self.alpha * z)

    def derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        one, alpha = z.dtype.type(1.0), z.dtype.type(self.alpha)  # no float64 array of z's size
        return np.where(z > 0, one, alpha)

    def backward(self, grad_a: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return np.where(z > 0, grad_a, self.alpha * grad_a)

    def second_derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``σ'' = 0`` everywhere, also at the kink (``ACT2.leaky-relu``)."""
        return np.zeros_like(z)


@register_activation
class ELU(Activation):
    """``σ(z) = z`` for ``z > 0``, ``α(eᶻ − 1)`` otherwise. Equation ``ACT.elu``.

    ``σ'(z) = 1`` for ``z > 0`` and ``α eᶻ`` for ``z ≤ 0``: at ``z = 0`` the
    derivative is ``α`` (torch's ``elu_backward`` takes the ``z ≤ 0`` branch),
    which is the true derivative only for ``α = 1``. The negative branch uses
    ``expm1`` (no cancellation for small ``|z|``), and ``eᶻ`` rather than
    ``a + α`` (which cancels as ``z → −∞``).
    """

    name = "elu"
    equation = "ACT.elu"
    hyperparameters = ("alpha",)

    def __init__(self, alpha: float = 1.0, inplace: bool = False) -> None:
        """torch's ``ELU(alpha, inplace)``; ``inplace`` changes nothing (``_inplace``)."""
        self.inplace = _inplace(inplace)
        self.alpha = _finite_float(alpha, "alpha")

    def forward(self, z: np.ndarray) -> np.ndarray:
        # min(z, 0): the unused branch must not overflow for large positive z.
        return np.where(z > 0, z, self.alpha * np.expm1(np.minimum(z, 0.0)))

    def derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return np.where(z > 0, 1.0, self.alpha * np.exp(np.minimum(z, 0.0))).astype(
            z.dtype, copy=False
        )

    def second_derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``σ'' = α eᶻ`` for ``z < 0``, 0 for ``z ≥ 0`` (``ACT2.elu``).

        At the kink ``z = 0`` torch's double backward gives 0 (the right branch) although
        its ``σ'(0) = α`` is the left one; we follow torch.
        """
        return np.where(z >= 0, 0.0, self.alpha * np.exp(np.minimum(z, 0.0))).astype(
            z.dtype, copy=False
        )


#: SELU constants (Klambauer et al. 2017), as in torch.
SELU_ALPHA = 1.6732632423543772848170429916717


SELU_SCALE = 1.0507009873554804934193349852946


@register_activation
class SELU(Activation):
    """``σ(z) = λ z`` for ``z > 0``, ``λα(eᶻ − 1)`` otherwise. Equation ``ACT.selu``.

    ``λ ≈ 1.0507``, ``α ≈ 1.6733`` (:data:`SELU_SCALE`, :data:`SELU_ALPHA`).
    ``σ'(z) = λ`` for ``z > 0`` and ``λα eᶻ`` for ``z ≤ 0`` (so ``λα`` at the
    kink, torch's convention, as for :class:`ELU`).
    """

    name = "selu"
    equation = "ACT.selu"

    def __init__(self, inplace: bool = False) -> None:
        """``inplace``: torch's flag, accepted; the result is the same (``_inplace``)."""
        self.inplace = _inplace(inplace)

    def forward(self, z: np.ndarray) -> np.ndarray:
        negative = (SELU_SCALE * SELU_ALPHA) * np.expm1(np.minimum(z, 0.0))
        return np.where(z > 0, SELU_SCALE * z, negative)

    def derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        negative = (SELU_SCALE * SELU_ALPHA) * np.exp(np.minimum(z, 0.0))
        return np.where(z > 0, SELU_SCALE, negative).astype(z.dtype, copy=False)

    def second_derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``σ'' = λα eᶻ`` for ``z < 0``, 0 for ``z ≥ 0`` (``ACT2.selu``; kink: see ELU)."""
        negative = (SELU_SCALE * SELU_ALPHA) * np.exp(np.minimum(z, 0.0))
        return np.where(z >= 0, 0.0, negative).astype(z.dtype, copy=False)


@register_activation
class HardTanh(Activation):
    """``σ(z) = clip(z, min_val, max_val)``; ``σ'(z) = 1[min_val < z < max_val]``.

    Equation ``ACT.hardtanh``. At the two kinks the derivative is 0: torch's
    ``hardtanh_backward`` passes the gradient only strictly inside the interval.
    """

    name = "hardtanh"
    aliases = ("hard-tanh",)
    equation = "ACT.hardtanh"
    hessian_is_zero = True
    hyperparameters = ("min_val", "max_val")

    def __init__(
        self,
        min_val: float = -1.0,
        max_val: float = 1.0,
        inplace: bool = False,
        min_value: float | None = None,
        max_value: float | None = None,
    ) -> None:
        """torch's ``Hardtanh``: ``min_value``/``max_value`` are its deprecated spellings of
        ``min_val``/``max_val`` (they win when given, as in torch); ``inplace`` changes
        nothing (``_inplace``)."""
        self.inplace = _inplace(inplace)
        if min_value is not None:
            min_val = min_value
        if max_value is not None:
            max_val = max_value
        self.min_val = _finite_float(min_val, "min_val")
        self.max_val = _finite_float(max_val, "max_val")
        if not self.min_val < self.max_val:
            raise ValueError(f"hardtanh needs min_val < max_val, got {min_val!r}, {max_val!r}")

    def forward(self, z: np.ndarray) -> np.ndarray:
        return np.clip(z, self.min_val, self.max_val)

    def derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return ((z > self.min_val) & (z < self.max_val)).astype(z.dtype)

    def backward(self, grad_a: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return _masked(grad_a, (z > self.min_val) & (z < self.max_val))

    def forward_into(self, z: np.ndarray, out: np.ndarray) -> np.ndarray:
        return np.clip(z, self.min_val, self.max_val, out=out)

    def backward_inplace(self, grad_a, z, a, scratch) -> np.ndarray:
        """``g`` kept strictly inside ``(min_val, max_val)``, zeroed elsewhere, in place."""
        return _keep_where(grad_a, (z > self.min_val) & (z < self.max_val))

    def second_derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``σ'' = 0`` everywhere, also at both kinks (``ACT2.hardtanh``)."""
        return np.zeros_like(z)


#: torch's spelling (``torch.nn.Hardtanh``), the same class.
Hardtanh = HardTanh
