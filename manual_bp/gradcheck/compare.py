"""Gradient checking: normalised errors, tolerances and central finite differences.

The comparison rule used throughout the project (``docs/conventions.md``)::

    |actual − expected| ≤ c·ε·max|expected| + rtol·|expected| + c·tiny     elementwise

with ε the machine epsilon of the dtype and a small constant ``c`` (64). The
error is normalised by the *largest* reference entry, because an elementwise
relative error is meaningless for entries near zero. :func:`normalised_error`
reports ``max|Δ| / max|expected|``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from manual_bp._arguments import (
    as_real_array,
    check_flag,
    check_float_dtype,
    check_number,
    check_step,
)
from manual_bp._validation import check_finite

__all__ = [
    "DEFAULT_C",
    "assert_gradients_close",
    "bound_ratio",
    "finite_difference_gradient",
    "normalised_error",
    "tolerance",
]

#: Multiple of the machine epsilon allowed, relative to max|expected|.
DEFAULT_C = 64.0


def tolerance(dtype: np.dtype | type = np.float64, c: float = DEFAULT_C) -> float:
    """``c·ε`` for ``dtype`` (a floating-point dtype; ``c`` a finite number > 0): the
    allowed normalised error."""
    dtype = check_float_dtype(dtype, "dtype")
    return check_number(c, "c") * float(np.finfo(dtype).eps)


def normalised_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """``max|actual − expected| / max|expected|`` (absolute error if ``expected`` is all 0).

    Entries where both are the same infinity count as equal; a NaN on either
    side, or an infinity on one side only, gives ``inf``.
    """
    actual = as_real_array(actual, "actual").astype(np.float64)
    expected = as_real_array(expected, "expected").astype(np.float64)
    if actual.shape != expected.shape:
        raise ValueError(f"shapes differ: actual {actual.shape}, expected {expected.shape}")
    if actual.size == 0:
        return 0.0
    same_inf = np.isinf(actual) & (actual == expected)
    if np.isnan(actual).any() or np.isnan(expected).any():
        return float("inf")
    if (np.isinf(actual) != np.isinf(expected)).any():
        return float("inf")
    with np.errstate(invalid="ignore"):  # inf − inf where both are the same infinity
        diff = np.where(same_inf, 0.0, np.abs(actual - expected))
    finite_expected = np.where(np.isinf(expected), 0.0, np.abs(expected))
    scale = float(finite_expected.max())
    return float(diff.max()) / (scale if scale > 0 else 1.0)


def assert_gradients_close(
    actual: np.ndarray,
    expected: np.ndarray,
    *,
    name: str = "gradient",
    dtype: np.dtype | type = np.float64,
    c: float = DEFAULT_C,
    rtol: float | None = None,
    atol: float | None = None,
    scale: np.ndarray | None = None,
) -> float:
    """Assert ``|actual − expected| ≤ c·ε·max|expected| + rtol·|expected|`` elementwise.

    Parameters
    ----------
    actual, expected : arrays of the same shape
    name : str
        Named in the failure message (e.g. ``"∂C/∂W[1]"``).
    dtype : dtype whose ε sets the tolerance.
    c : float
        Multiple of ε (relative to ``max|expected|``).
    rtol : float, optional
        Elementwise relative slack; default ``c·ε``.
    atol : float or array, optional
        Replaces ``c·ε·max|expected|`` as the absolute bound when given
        (for finite differences, whose error is not a multiple of ε); an
        array gives an elementwise bound.
    scale : array, optional
        Elementwise magnitude of the terms that were summed to form each entry
        (``Σ|terms|``, see ``reference/conditioning.py``). Where it exceeds
        ``max|expected|`` — a result of cancellation — the bound is
        ``c·ε·scale`` instead, the a-priori rounding bound of a sum.

    Returns
    -------
    float
        The normalised error ``max|Δ| / max|expected|``.

    Raises
    ------
    AssertionError
        Naming ``name``, the shape, the worst elements with their expected and
        actual values, and the bound.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    actual = as_real_array(actual, f"actual {name}")
    expected = as_real_array(expected, f"expected (reference) {name}")
    _check_bound_arguments(expected.shape, dtype, c, rtol, atol, scale)
    if actual.shape != expected.shape:
        raise AssertionError(
            f"{name}: shape {actual.shape} differs from the reference shape {expected.shape}"
        )
    a64, e64, diff, same, bound_abs, bound, rtol = _elementwise_bound(
        actual, expected, dtype, c, rtol, atol, scale
    )
    with np.errstate(invalid="ignore"):
        bad = ~same & ~(diff <= bound)
    error = normalised_error(actual, expected)
    if bad.any():
        raise AssertionError(
            _mismatch_message(name, a64, e64, diff, bad, bound_abs, bound, rtol, error)
        )
    return error


def _check_bound_arguments(shape, dtype, c, rtol, atol, scale) -> None:
    """Refuse, naming the argument, what would make the bound meaningless: a dtype without
    an ε, ``c ≤ 0``, a negative or NaN ``rtol``/``atol``/``scale`` (a NaN bound accepts
    nothing, a negative one nothing either, an infinite one everything), or an ``atol``
    or ``scale`` array that does not broadcast to the reference's shape."""
    check_float_dtype(dtype, "dtype")
    check_number(c, "c")
    if rtol is not None:
        check_number(rtol, "rtol", zero=True)
    for label, value in (("atol", atol), ("scale", scale)):
        if value is None:
            continue
        if np.ndim(value) == 0 and not isinstance(value, np.ndarray):
            check_number(value, label, zero=True)
            continue
        array = as_real_array(value, label)
        try:
            fits = np.broadcast_shapes(array.shape, tuple(shape)) == tuple(shape)
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(
                f"{label} has shape {array.shape}; expected {tuple(shape)} (or one that "
                "broadcasts to it)"
            )
        check_finite(array, label)
        if (array < 0).any():
            raise ValueError(f"{label} must be >= 0 everywhere, got a minimum of {array.min()}")


def _elementwise_bound(actual, expected, dtype, c, rtol, atol, scale):
    """The elementwise bound of :func:`assert_gradients_close`, with what it compares."""
    eps_bound = tolerance(dtype, c)
    rtol = eps_bound if rtol is None else rtol
    finite = np.isfinite(expected)
    largest = float(np.abs(expected[finite]).max()) if finite.any() else 0.0
    bound_abs = eps_bound * largest if atol is None else np.broadcast_to(atol, expected.shape)
    a64, e64 = actual.astype(np.float64), expected.astype(np.float64)
    with np.errstate(invalid="ignore"):
        diff = np.abs(a64 - e64)
        same = (a64 == e64) | (np.isnan(a64) & np.isnan(e64))
        # c·tiny: results in the subnormal range differ by flush-to-zero choices alone.
        # An infinite reference is matched only by the same infinity (``same``): its
        # relative slack must not become an infinite bound that accepts anything.
        relative = np.where(np.isinf(e64), 0.0, np.abs(e64))
        bound = bound_abs + rtol * relative + c * float(np.finfo(dtype).tiny)
        if scale is not None:
            bound = np.maximum(bound, eps_bound * np.broadcast_to(scale, e64.shape))
    return a64, e64, diff, same, bound_abs, bound, rtol


def bound_ratio(
    actual: np.ndarray,
    expected: np.ndarray,
    *,
    dtype: np.dtype | type = np.float64,
    c: float = DEFAULT_C,
    rtol: float | None = None,
    atol: float | None = None,
    scale: np.ndarray | None = None,
) -> float:
    """``max |actual − expected| / bound`` elementwise, the bound of :func:`assert_gradients_close`.

    Same parameters; the comparison passes exactly when the ratio is ≤ 1. Unlike
    the normalised error it is comparable across well- and ill-conditioned
    quantities (the ``scale`` of a cancelling sum enlarges the bound). ``inf``
    for a shape mismatch or a NaN on one side only.
    """
    actual, expected = as_real_array(actual, "actual"), as_real_array(expected, "expected")
    _check_bound_arguments(expected.shape, dtype, c, rtol, atol, scale)
    if actual.shape != expected.shape:
        return float("inf")
    if actual.size == 0:
        return 0.0
    _, _, diff, same, _, bound, _ = _elementwise_bound(
        actual, expected, dtype, c, rtol, atol, scale
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(same, 0.0, diff / bound)
    return float(np.nan_to_num(ratio, nan=np.inf, posinf=np.inf).max())


def _mismatch_message(name, actual, expected, diff, bad, bound_abs, bound, rtol, error) -> str:
    indices = np.argwhere(bad)
    order = np.argsort(-np.nan_to_num(diff[bad], nan=np.inf))[:5]
    lines = [
        f"{name}: {len(indices)} of {actual.size} elements differ "
        f"(shape {actual.shape}; normalised error {error:.3e}; "
        f"bound {np.max(bound_abs):.3e} + {rtol:.1e}·|expected|). Worst:"
    ]
    for k in order:
        index = tuple(int(i) for i in indices[k])
        lines.append(
            f"  at {index}: expected {expected[index]:.17g}, actual {actual[index]:.17g}, "
            f"|Δ| = {diff[index]:.3e}, bound {bound[index]:.3e}"
        )
    return "\n".join(lines)


def finite_difference_gradient(
    f: Callable[[], float], x: np.ndarray, h: float = 1e-6, *, return_error: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Central differences ``D(h) = (f(x + h e_i) − f(x − h e_i)) / 2h`` for every entry of ``x``.

    ``x`` is perturbed *in place* (and restored), so ``f`` can close over it —
    e.g. a network weight array. Steps are relative: ``h·max(1, |x_i|)``.
    Use float64: the error is ``O(h²)·|f‴| + O(ε·|f|/h)``, and more where
    ``f`` itself is computed with cancellation.

    With ``return_error=True`` also returns an elementwise error estimate
    ``|D(h) − D(2h)|``: it exposes both the truncation error and rounding noise
    in ``f``, so a caller can tell where the finite difference is uninformative.
    """
    if not callable(f):
        raise TypeError(f"f must be a callable returning a number, got {type(f).__name__}")
    return_error = check_flag(return_error, "return_error")
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x must be a NumPy array (perturbed in place), got {type(x).__name__}")
    if x.dtype != np.float64:
        raise TypeError(f"x must be float64: finite differences need float64, got {x.dtype}")
    if x.size:
        check_finite(x, "x")
    check_step(h)
    flat = x.reshape(-1)
    if not np.shares_memory(flat, x):
        raise ValueError("x must be contiguous so that it can be perturbed in place")
    grad = np.empty(flat.size)
    coarse = np.empty(flat.size)
    offsets = (1.0, -1.0, 2.0, -2.0) if return_error else (1.0, -1.0)
    for i in range(flat.size):
        original = flat[i]
        step = h * max(1.0, abs(original))
        values = []
        try:
            for multiple in offsets:
                flat[i] = original + multiple * step
                values.append(_value(f(), i, multiple))
        finally:
            flat[i] = original
        grad[i] = (values[0] - values[1]) / (2 * step)
        if return_error:
            coarse[i] = (values[2] - values[3]) / (4 * step)
    grad = grad.reshape(x.shape)
    if not np.isfinite(grad).all():  # finite values that overflow in the difference
        raise ValueError("f changes by more than float64 can hold between its steps")
    if return_error:
        return grad, np.abs(grad - coarse.reshape(x.shape))
    return grad


def _value(value, i: int, multiple: float) -> float:
    """``f()``'s value as a finite float, or one ``ValueError``/``TypeError`` naming ``f``."""
    number = isinstance(value, (int, float, np.integer, np.floating)) or (
        isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind in "iuf"
    )
    if isinstance(value, (bool, np.bool_)) or not number:
        raise TypeError(f"f must return a real number, got {type(value).__name__} {value!r:.60}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"f returned {value} at flat entry {i} of x stepped by {multiple:+g}·h")
    return value
