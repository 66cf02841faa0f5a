"""The :class:`Activation` protocol, the registry and shared helpers (``docs/activations.md``)."""

from __future__ import annotations

import functools
import inspect
import math
from typing import Any, ClassVar

import numpy as np

from manual_bp._registry import Configurable, Registry
from manual_bp._validation import as_array, check_layer_array

__all__ = ["ACTIVATIONS", "Activation", "get_activation", "register_activation"]


class Activation(Configurable):
    """Base class of activation functions.

    Subclasses set ``name`` and ``equation`` and implement :meth:`forward` and
    either :meth:`derivative` (elementwise σ) or :meth:`backward` (coupled σ).
    Hyper-parameters are keyword arguments of ``__init__`` stored as attributes
    of the same name, so :meth:`get_config` can save them.
    """

    #: Equation ID of the backward pass, e.g. ``"ACT.sigmoid"``.
    equation: ClassVar[str] = ""
    #: True when σ acts on each unit separately (diagonal Jacobian).
    elementwise: ClassVar[bool] = True
    #: True when the VJP and JVP need only ``a = σ(z)``: ``z`` may then be ``None`` there.
    z_optional: ClassVar[bool] = False
    #: True when ``σ'' = 0`` everywhere (σ piecewise linear, σ' piecewise constant): the
    #: R-operator's residual ``g ⊙ σ'' ⊙ T`` vanishes, and a sweep may skip it
    #: (:class:`~manual_bp.layers.activation.ActivationLayer`'s ``hessian_is_zero``).
    hessian_is_zero: ClassVar[bool] = False

    def forward(self, z: np.ndarray) -> np.ndarray:
        """Return ``a = σ(z)``, same shape as ``z``."""
        raise NotImplementedError

    def derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """Return ``σ'(z)`` elementwise (only for elementwise activations).

        ``a = σ(z)`` is passed too because several derivatives are cheapest
        in terms of the output (sigmoid: ``a(1−a)``, tanh: ``(1−a)(1+a)``).
        """
        raise NotImplementedError(f"{type(self).__name__} is not elementwise; use backward()")

    def backward(self, grad_a: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """Vector–Jacobian product: ``∂C/∂z`` from ``∂C/∂a``. Shapes ``(batch, n)``.

        Elementwise case (the ⊙ of BP1/BP2): ``∂C/∂z = ∂C/∂a ⊙ σ'(z)``.
        """
        return grad_a * type(self).derivative.unchecked(self, z, a)  # checked on entry

    def second_derivative(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """Return ``σ''(z)`` elementwise (equation ``ACT2.<name>``, ``docs/curvature.md``).

        At a kink ``σ''`` is the derivative of the ``σ'`` this library (and torch) uses,
        which is 0 on flat or linear pieces; the Dirac mass of a true second
        derivative at a kink is not represented (it is zero almost everywhere).
        """
        raise NotImplementedError(f"{type(self).__name__} is not elementwise; use second_vjp()")

    def jvp(self, dz: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        """Jacobian–vector product ``J_σ(z) dz`` (forward mode). Shapes ``(batch, n)``.

        Elementwise: ``σ'(z) ⊙ dz``; coupled activations override it.
        """
        return dz * type(self).derivative.unchecked(self, z, a)

    def second_vjp(self, grad_a: np.ndarray, dz: np.ndarray, z: np.ndarray, a: np.ndarray):
        """Second-order VJP ``Σₖ gₖ ∇²σₖ(z) dz`` with ``g = ∂C/∂a`` (``ACT2.*``).

        The term the R-operator adds to the backward pass through σ (Pearlmutter 1994):
        ``R{∂C/∂z} = J_σᵀ R{∂C/∂a} + Σₖ gₖ ∇²σₖ R{z}``. Elementwise: ``g ⊙ σ''(z) ⊙ dz``.
        """
        return grad_a * type(self).second_derivative.unchecked(self, z, a) * dz

    # ------------------------------------------------------------------ fast form
    # What the fused training step calls: the same σ and VJP written into preallocated
    # buffers. The generic forms copy the readable result; sigmoid, tanh, ReLU and the
    # identity override them with in-place ufuncs (``docs/performance.md``). An activation
    # whose backward reuses work of its forward (GELU's erf) sets ``fast_state`` to the
    # number of z-shaped buffers it keeps: the step then passes ``state`` (shape
    # ``(fast_state, *z.shape)``, its own) to both calls of the same step.
    fast_state = 0

    def forward_into(self, z: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``σ(z)`` written into ``out`` (same shape and dtype); returns the array holding
        it (``z`` itself for the identity, which needs no copy)."""
        out[...] = type(self).forward.unchecked(self, z)
        return out

    def backward_inplace(
        self, grad_a: np.ndarray, z: np.ndarray, a: np.ndarray, scratch: np.ndarray
    ) -> np.ndarray:
        """:meth:`backward` overwriting ``grad_a`` (``scratch``: a spare buffer like ``z``)."""
        grad_a[...] = type(self).backward.unchecked(self, grad_a, z, a)
        return grad_a

    def __call__(self, z: Any) -> np.ndarray:
        """``σ(z)`` for any array-like of real numbers, as ``torch.nn.ReLU()(z)``; a float32 or
        float64 array keeps its dtype, integers and nested lists become float64 (the user's
        convenience entry; :meth:`forward` and the other methods take float arrays only).

        Complex, bool, object and string values and ``None`` raise ``TypeError`` naming ``z``
        (:func:`manual_bp._validation.as_array`), ragged nestings ``ValueError``.
        """
        z = as_array(z, "z")
        if z.dtype.kind == "f":  # float16, longdouble: not cast silently, as a layer's
            check_layer_array(z, f"{type(self).__name__}", "z")
        elif z.dtype.char not in _FLOAT_CHARS:
            z = z.astype(np.float64)
        return self.forward(z)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every public method a subclass defines checks its arrays first (:func:`_guarded`):
        one validation path for the whole family, the base's own methods included."""
        super().__init_subclass__(**kwargs)
        for name in CHECKED_METHODS:
            if name in cls.__dict__:
                setattr(cls, name, _guarded(cls.__dict__[name]))


#: The public methods that take arrays (the fast ``forward_into``/``backward_inplace`` are
#: the fused step's, on buffers it allocated: unchecked).
CHECKED_METHODS = ("forward", "derivative", "backward", "second_derivative", "jvp", "second_vjp")
#: Methods whose ``z`` may be None for a class with ``z_optional`` (softmax's VJP needs only a).
_Z_OPTIONAL_IN = ("backward", "jvp", "second_vjp")
_FLOAT_CHARS = "fd"  # float32, float64: torch's floating dtypes the library computes in


def _guarded(method):
    """``method`` checking each array argument first, torch's rule: float32 or float64 NumPy
    arrays (kept as they are); anything else one ``TypeError`` naming the class, the method
    and the argument (``ReLU.forward: z has dtype int64; expected float32 or float64 …``).
    Values are not looked at: NaN and ±inf are computed as torch computes them, without
    NumPy's warnings (torch gives none). ``a = None``
    is computed from ``z``; ``z = None`` is taken where only ``a`` is needed
    (``z_optional``)."""
    names = tuple(inspect.signature(method).parameters)[1:]
    z_may_be_none = method.__name__ in _Z_OPTIONAL_IN

    @functools.wraps(method)
    def guarded(self, *arrays, **options):
        for i, x in enumerate(arrays):
            if type(x) is np.ndarray and x.dtype.char in _FLOAT_CHARS:
                continue  # the common case, checked in two attribute reads
            name = names[i] if i < len(names) else f"argument {i}"
            if x is None and name == "z" and z_may_be_none and self.z_optional:
                continue
            if x is None and name == "a" and i > 0:  # σ(z), from the z just checked
                z = arrays[names.index("z")] if "z" in names[:i] else None
                if isinstance(z, np.ndarray):
                    arrays = (*arrays[:i], self.forward(z), *arrays[i + 1 :])
                    continue
            owner = f"{type(self).__name__}.{method.__name__}"
            if x is None:
                raise TypeError(f"{owner}: {name} is None; expected a float32 or float64 array")
            check_layer_array(x, owner, name)
            if type(x) is not np.ndarray:  # a NumPy float scalar: a 0-d array, as torch's
                arrays = (*arrays[:i], np.asarray(x), *arrays[i + 1 :])
        with np.errstate(all="ignore"):  # inf·0 is NaN without a warning, as torch's
            return method(self, *arrays, **options)

    guarded.unchecked = method  # the fused step's generic fast forms call it directly
    return guarded


for _name in CHECKED_METHODS:  # the base's own generic forms are public entries too
    setattr(Activation, _name, _guarded(vars(Activation)[_name]))


ACTIVATIONS = Registry("activation", Activation)


register_activation = ACTIVATIONS.register


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic sigmoid without overflow: ``e^{−|z|}`` never exceeds 1."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0, e) / (1.0 + e)


def _finite_float(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def _inplace(value: object) -> bool:
    """torch's ``inplace=`` flag of an activation module, checked and kept as ``.inplace``.

    Accepted for torch's signatures; the result is the same either way: the readable form
    returns a new array (the input a layer cached for backward must survive), and the fused
    training step already writes into its own buffers (``forward_into``).
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"inplace must be True or False, got {value!r}")
    return bool(value)


def _masked(g: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``where(keep, g, 0)`` as a new array; ``keep`` (boolean) broadcasts against ``g``
    (a V axis of products in front).

    The product ``g ⊙ keep`` is the same select wherever ``g`` is finite and ~3× faster than
    ``where`` on a broadcast mask; an infinite or NaN ``g`` (where ``inf·0`` would give NaN
    in place of torch's 0) shows as a non-finite product and takes the select.
    """
    out = np.multiply(g, keep)
    if not np.isfinite(out).all():
        out = np.where(keep, g, g.dtype.type(0))
    return out


def _keep_where(grad_a: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``grad_a`` zeroed in place where ``keep`` is False (a piecewise σ' of 0 there); returned.

    A select, not a product with the mask: an infinite or NaN upstream gradient where σ' = 0
    gives 0, as torch's ``where``-style backward kernels do.
    """
    np.copyto(grad_a, 0.0, where=~keep)
    return grad_a


def get_activation(
    spec: str | Activation | type[Activation] | dict[str, Any],
) -> Activation:
    """Return an :class:`Activation` from a name, class, instance or config dict.

    Names are case-insensitive and ``_``/``-`` are interchangeable
    (``"leaky_relu"`` == ``"leaky-relu"``); an unknown name raises ``ValueError``
    listing the valid names.
    """
    return ACTIVATIONS.get(spec)
