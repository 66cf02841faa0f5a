"""Checks of the scalar arguments of the curvature functions and gradient checkers.

Each check runs before any work and raises ONE ``TypeError`` (wrong kind) or ``ValueError``
(right kind, value out of range) whose message names the argument, so that an iteration
count of 0, a NaN tolerance or a seed of the wrong kind never reaches NumPy (whose messages
name neither the argument nor the function) nor silently returns a number.

* :func:`check_count` — an integer ``≥ minimum`` (``bool`` is refused: ``True`` is a flag);
* :func:`check_number` — a finite real number, ``> 0`` or ``≥ 0``;
* :func:`check_step` — a finite-difference step relative to ``max(1, |x|)``: in ``[ε, 1)``;
* :func:`check_flag` — ``True`` or ``False`` (a ``1`` or ``"yes"`` is refused, not coerced);
* :func:`as_generator` — ``None``, a non-negative integer, a ``SeedSequence``, a
  ``BitGenerator`` or a ``Generator``, as :func:`numpy.random.default_rng` takes them;
* :func:`check_float_dtype` — a floating-point dtype whose ε sets a tolerance;
* :func:`as_real_array` — :func:`~manual_bp._validation.as_array` whose message for ragged
  nesting is the library's one line, without NumPy's own sentence appended.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from manual_bp._validation import as_array

__all__ = [
    "as_generator",
    "as_real_array",
    "check_count",
    "check_flag",
    "check_float_dtype",
    "check_number",
    "check_step",
]


def _is_integer(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_count(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as a Python int, refused unless it is an integer ``≥ minimum``."""
    if not _is_integer(value):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_number(value: Any, name: str, *, zero: bool = False) -> float:
    """``value`` as a float, refused unless it is a finite real number ``> 0`` (``≥ 0`` with
    ``zero=True``)."""
    bound = ">= 0" if zero else "> 0"
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise TypeError(f"{name} must be a finite real number {bound}, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0 or (number == 0 and not zero):
        raise ValueError(f"{name} must be a finite real number {bound}, got {value!r}")
    return number


def check_flag(value: Any, name: str) -> bool:
    """``value`` as a bool, refused unless it is ``True`` or ``False`` (NumPy's too)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def as_generator(rng: Any, name: str) -> np.random.Generator:
    """:func:`numpy.random.default_rng` of ``rng`` once it is a kind that function takes."""
    if rng is None or isinstance(
        rng, (np.random.Generator, np.random.BitGenerator, np.random.SeedSequence)
    ):
        return np.random.default_rng(rng)
    if not _is_integer(rng):
        raise TypeError(
            f"{name} must be None, a non-negative integer seed or a numpy.random.Generator, "
            f"got {type(rng).__name__} {rng!r}"
        )
    if rng < 0:
        raise ValueError(f"{name} must be a non-negative integer seed, got {rng}")
    return np.random.default_rng(int(rng))


def check_float_dtype(dtype: Any, name: str = "dtype") -> np.dtype:
    """``dtype`` as a floating-point ``numpy.dtype`` (float16, float32, float64, …)."""
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name} must be a floating-point dtype, got {dtype!r}") from None
    if resolved.kind != "f":
        raise TypeError(f"{name} must be a floating-point dtype (e.g. float64), got {resolved}")
    return resolved


def as_real_array(value: Any, name: str) -> np.ndarray:
    """:func:`~manual_bp._validation.as_array`; ragged nesting is named in one line."""
    if not isinstance(value, np.ndarray) and value is not None:
        try:
            value = np.asarray(value)
        except ValueError:
            raise ValueError(
                f"{name} is not a rectangular array (nested rows of different lengths)"
            ) from None
    return as_array(value, name)


def check_step(h: Any, name: str = "h") -> float:
    """A relative finite-difference step in ``[ε, 1)`` (float64's ε): below ε the step
    ``h·max(1, |x|)`` is lost in rounding (``x + step == x``) and the quotient divides by
    almost nothing."""
    eps = float(np.finfo(np.float64).eps)
    if _is_real(h) and eps <= float(h) < 1:
        return float(h)
    raise ValueError(f"the relative step {name} must be a number in [{eps:.3g}, 1), got {h!r}")


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )
