"""The checks every curvature function shares: directions, results, floating-point state.

:func:`as_direction` is the one place a direction ``v`` is read (``hvp``, ``ggnvp``, and the
power iteration through them). It refuses, before any work and in one line naming ``v``
(or ``v[i]``), what ``torch.func.jvp`` refuses — a tangent that is not a floating-point
array (integer, bool, object, string), of the wrong shape or count, or ``None`` — and also
what torch would propagate into NaN results: NaN, ±inf, and complex values (torch keeps the
imaginary part or refuses; a cast to real would drop it silently).

:func:`entry` wraps each public function: NumPy's floating-point warnings are silenced
inside (an overflow is not a warning to the user but an error), and a result with a
non-finite entry raises one ``ValueError`` naming the arguments instead of being returned.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from manual_bp._arguments import as_real_array, check_number
from manual_bp._validation import check_finite

__all__ = [
    "as_arrays",
    "as_direction",
    "as_factors",
    "as_vector",
    "check_choice",
    "check_results",
    "check_width",
    "entry",
]

F = TypeVar("F", bound=Callable[..., Any])


def _layout(shapes: list[tuple[int, ...]]) -> str:
    total = sum(int(np.prod(s)) for s in shapes)
    return (
        f"a direction is a list of {len(shapes)} arrays shaped like model.parameter_arrays() "
        f"{[tuple(s) for s in shapes]} or one flat vector of {total} entries"
    )


def _floating(v: np.ndarray, name: str, what: str = "a direction") -> None:
    """Refuse any dtype but a real floating one (``torch.func.jvp``: "Expected tangent to be
    floating point"); complex is refused before, by the real-dtype check of
    :func:`~manual_bp._arguments.as_real_array`."""
    if v.dtype.kind != "f":
        raise TypeError(
            f"{name} has dtype {v.dtype}; {what} must be floating point (float32 or "
            "float64), as torch's tangents must be"
        )


def _cast(v: np.ndarray, dtype: np.dtype, name: str) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is named below
        cast = v.astype(dtype, copy=False)
    check_finite(cast, name, source=v)
    return cast


def as_direction(v: Any, shapes: list[tuple[int, ...]], dtype: Any, name: str = "v") -> list:
    """``v`` as a list of finite arrays of ``dtype`` shaped like the parameters ``shapes``.

    Accepted: a list or tuple of floating-point arrays (or nested lists of floats) of exactly
    the parameters' shapes, or one flat floating-point vector of their total size (split in
    ``parameter_arrays()`` order). Shapes are exact, never broadcast.

    Raises
    ------
    TypeError
        ``v`` (or ``v[i]``) is None, not a list/tuple/array, or not floating point.
    ValueError
        Wrong count, shape or size; ragged nesting; a NaN or ±inf entry (also one that a
        cast to the model's float32 overflows).
    """
    dtype = np.dtype(dtype)
    if v is None:
        raise TypeError(f"{name} is None; {_layout(shapes)}")
    if isinstance(v, np.ndarray):
        v = as_real_array(v, name)
        if v.ndim != 1:
            raise ValueError(f"{name} has shape {v.shape}; {_layout(shapes)}")
        _floating(v, name)
        sizes = [int(np.prod(s)) for s in shapes]
        if v.size != sum(sizes):
            raise ValueError(
                f"{name}: direction has {v.size} entries, the model {sum(sizes)} parameters; "
                f"{_layout(shapes)}"
            )
        v = _cast(v, dtype, name)
        pieces = np.split(v, np.cumsum(sizes)[:-1])
        return [p.reshape(s) for p, s in zip(pieces, shapes, strict=True)]
    if not isinstance(v, (list, tuple)):
        raise TypeError(f"{name} must be a list of arrays or a flat vector, got {type(v).__name__}")
    if len(v) != len(shapes):
        raise ValueError(
            f"{name}: direction has {len(v)} arrays, the model {len(shapes)}; {_layout(shapes)}"
        )
    out = []
    for i, (vi, shape) in enumerate(zip(v, shapes, strict=True)):
        label = f"{name}[{i}]"
        vi = as_real_array(vi, label)
        _floating(vi, label)
        if vi.shape != tuple(shape):
            raise ValueError(
                f"{label}: direction array {i} has shape {vi.shape}, expected {tuple(shape)}"
            )
        out.append(_cast(vi, dtype, label))
    return out


def _finite_float(value: Any, name: str, what: str) -> np.ndarray:
    array = as_real_array(value, name)
    _floating(array, name, what)
    check_finite(array, name)
    return array


def _kind(value: Any) -> str:
    """A one-line description of a wrong value (a repr of arrays spans lines)."""
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"{type(value).__name__} {value!r:.40}".split("\n")[0]


def check_width(value: Any, name: str) -> float:
    """A Gaussian's width: a finite real number at least the smallest normal float64 (below
    it ``σ²`` underflows and the peak ``1/(σ√2π)`` overflows)."""
    width = check_number(value, name)
    tiny = float(np.finfo(np.float64).tiny)
    if width < tiny:
        raise ValueError(f"{name} must be at least {tiny:.4g} (a normal float64), got {width!r}")
    return width


def as_arrays(arrays: Any, name: str, *, batch: bool = False) -> list[np.ndarray]:
    """``arrays`` (a result of a curvature function: one array per parameter) as a list of
    finite floating-point arrays, refused in one line naming ``name`` (or ``name[i]``):
    not a non-empty list/tuple, ``None``, complex, integer, NaN/±inf, ragged. ``batch``:
    per-sample arrays, which must share a non-empty leading axis ``n``."""
    if not isinstance(arrays, (list, tuple)) or not arrays:
        raise TypeError(f"{name} must be a non-empty list of arrays, got {_kind(arrays)}")
    out = [_finite_float(a, f"{name}[{i}]", "each array") for i, a in enumerate(arrays)]
    if batch:
        for i, a in enumerate(out):
            if a.ndim == 0 or a.shape[0] == 0 or a.shape[0] != out[0].shape[0]:
                raise ValueError(
                    f"{name}[{i}] has shape {a.shape}; per-sample arrays share a non-empty "
                    f"leading batch axis ({out[0].shape[:1]})"
                )
    return out


def as_vector(value: Any, name: str, *, ndim: int | None = None) -> np.ndarray:
    """``value`` as a non-empty finite floating-point array (``ndim`` exact when given)."""
    array = as_real_array(value, name)
    if array.dtype.kind in "iu":  # integers are exact values here (a grid, nodes)
        array = array.astype(float)
    array = _finite_float(array, name, name)
    if array.size == 0 or (ndim is not None and array.ndim != ndim):
        raise ValueError(f"{name} has shape {array.shape}; expected a non-empty array")
    return array


def check_choice(value: Any, name: str, choices: Any) -> str:
    """``value`` unless it is not one of the strings ``choices`` (compared exactly)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r:.60}")
    return value


def as_factors(factors: Any, shapes: list[list[tuple[int, ...]]], name: str = "factors") -> list:
    """``factors``: one tuple of arrays per layer with parameters, of exactly the ``shapes``
    given (``shapes[i][j]`` for ``factors[i][j]``), finite and floating point; refused in one
    line naming ``factors`` (or ``factors[i][j]``) otherwise."""
    width = len(shapes[0]) if shapes else 0
    if not isinstance(factors, (list, tuple)) or len(factors) != len(shapes):
        raise ValueError(
            f"{name} must be a list of one {width}-tuple of arrays per layer with parameters "
            f"({len(shapes)}), got {_kind(factors)}"
        )
    out = []
    for i, (layer, expected) in enumerate(zip(factors, shapes, strict=True)):
        if not isinstance(layer, (list, tuple)) or len(layer) != len(expected):
            raise ValueError(
                f"{name}[{i}] must be a {len(expected)}-tuple of arrays, got {_kind(layer)}"
            )
        arrays = []
        for j, (a, shape) in enumerate(zip(layer, expected, strict=True)):
            label = f"{name}[{i}][{j}]"
            a = _finite_float(a, label, "a factor")
            if a.shape != tuple(shape):
                raise ValueError(f"{label} has shape {a.shape}, expected {tuple(shape)}")
            arrays.append(a)
        out.append(tuple(arrays))
    return out


def check_results(result: Any, function: str, arguments: str) -> None:
    """Raise ``ValueError`` when an array in ``result`` (an array, a float, or lists/tuples of
    them) has a non-finite entry: the inputs overflowed the model's dtype."""
    stack = [result]
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, (np.ndarray, float, np.floating)) and not np.isfinite(item).all():
            raise ValueError(
                f"{function}: the result is not finite (an overflow): {arguments} are too "
                "large in magnitude for this model's dtype"
            )


def entry(arguments: str) -> Callable[[F], F]:
    """Wrap a public curvature function: floating-point warnings off, results checked
    finite (:func:`check_results`); ``arguments`` names the inputs a message blames."""

    def wrap(function: F) -> F:
        @functools.wraps(function)
        def checked(*args: Any, **kwargs: Any) -> Any:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
                result = function(*args, **kwargs)
            check_results(result, function.__name__, arguments)
            return result

        return checked  # type: ignore[return-value]

    return wrap
