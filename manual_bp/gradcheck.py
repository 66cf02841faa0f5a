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
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from manual_bp._validation import as_array, check_finite, check_nonempty

__all__ = [
    "DEFAULT_C",
    "GradcheckReport",
    "assert_gradients_close",
    "bound_ratio",
    "check_layer",
    "check_vjp",
    "finite_difference_gradient",
    "normalised_error",
    "tolerance",
]

#: Multiple of the machine epsilon allowed, relative to max|expected|.
DEFAULT_C = 64.0


def tolerance(dtype: np.dtype | type = np.float64, c: float = DEFAULT_C) -> float:
    """``c·ε`` for ``dtype``: the allowed normalised error."""
    return c * float(np.finfo(dtype).eps)


def normalised_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """``max|actual − expected| / max|expected|`` (absolute error if ``expected`` is all 0).

    Entries where both are the same infinity count as equal; a NaN on either
    side, or an infinity on one side only, gives ``inf``.
    """
    actual = as_array(actual, "actual").astype(np.float64)
    expected = as_array(expected, "expected").astype(np.float64)
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
    actual, expected = as_array(actual, name), as_array(expected, f"reference {name}")
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
    actual, expected = as_array(actual, "actual"), as_array(expected, "expected")
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
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x must be a NumPy array (perturbed in place), got {type(x).__name__}")
    if x.dtype != np.float64:
        raise TypeError(f"finite differences need float64, got {x.dtype}")
    if x.size:
        check_finite(x, "x")
    if isinstance(h, bool) or not isinstance(h, (int, float, np.floating)) or not 0 < h < 1:
        raise ValueError(f"the relative step h must be a number in (0, 1), got {h!r}")
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
        for multiple in offsets:
            flat[i] = original + multiple * step
            values.append(f())
        flat[i] = original
        grad[i] = (values[0] - values[1]) / (2 * step)
        if return_error:
            coarse[i] = (values[2] - values[3]) / (4 * step)
    grad = grad.reshape(x.shape)
    if return_error:
        return grad, np.abs(grad - coarse.reshape(x.shape))
    return grad


# --------------------------------------------------------------------------- user layers

#: Finite-difference step and bounds of :func:`check_layer` (as in ``reference/compare.py``):
#: central differences with h = 1e-6 carry ~h²·|f‴| + ε·|C|/h ≈ 1e-10 of error.
GRADCHECK_STEP = 1e-6
GRADCHECK_RTOL = 1e-6
GRADCHECK_ATOL = 1e-8


@dataclass
class GradcheckReport:
    """What :func:`check_layer` / :func:`check_vjp` measured, once every gradient passed.

    ``finite_differences`` and ``torch`` map each gradient (``"x"`` for the
    input, else the parameter's name) to its normalised error
    ``max|Δ| / max|expected|`` against that oracle; ``torch`` is empty when no
    torch forward was given. ``upstream`` is the random ``∂C/∂out`` used
    (``C = Σ upstream ⊙ out``).
    """

    finite_differences: dict[str, float]
    torch: dict[str, float]
    upstream: np.ndarray = field(repr=False)

    @property
    def worst(self) -> float:
        """The largest normalised error over all gradients and oracles."""
        return max([*self.finite_differences.values(), *self.torch.values()], default=0.0)

    def __str__(self) -> str:
        lines = ["gradient  vs finite differences  vs torch"]
        for name, error in self.finite_differences.items():
            torch_error = self.torch.get(name)
            torch_cell = "—" if torch_error is None else f"{torch_error:.2e}"
            lines.append(f"{name:<8}  {error:>20.2e}  {torch_cell:>8}")
        return "\n".join(lines)


def check_layer(
    layer: Any,
    x: np.ndarray,
    *,
    upstream: np.ndarray | None = None,
    seed: int | np.random.Generator | None = 0,
    torch_forward: Callable[..., Any] | None = None,
    h: float = GRADCHECK_STEP,
    rtol: float = GRADCHECK_RTOL,
    atol: float = GRADCHECK_ATOL,
    c: float = DEFAULT_C,
) -> GradcheckReport:
    """Check a layer's ``backward`` against central finite differences (and torch).

    ``layer`` follows the layer protocol (:class:`manual_bp.layers.base.Layer`,
    CS231n / edunn style): ``forward(x) -> (out, cache)``,
    ``backward(dout, cache) -> (dx, {name: dparam})`` and a ``params`` dict
    holding the very arrays ``forward`` reads (they are perturbed in place
    and restored). The scalar checked is ``C = Σ upstream ⊙ out`` with a
    RANDOM ``upstream`` (an all-ones upstream would hide a wrong transpose or
    sum), so ``backward(upstream, cache)`` must return ``∂C/∂x`` and ``∂C/∂θ``.

    Parameters
    ----------
    layer : object with ``forward``, ``backward`` and ``params`` (float64 arrays)
    x : (batch, ...) array
        The input; converted to a float64 copy.
    upstream : array shaped like ``out``, optional
        ``∂C/∂out``; default standard normal drawn from ``seed``.
    seed : int or Generator
        Seeds the default ``upstream``.
    torch_forward : callable, optional
        ``torch_forward(x, params) -> out`` written with torch functions
        (``x`` a float64 tensor, ``params`` a dict of float64 tensors named as
        ``layer.params``). When given, torch autograd is a second oracle
        (torch is imported only then), held to ``c·ε`` of the largest entry.
    h : float
        Relative finite-difference step (``h·max(1, |θ|)``).
    rtol, atol : float
        Finite-difference bound: ``rtol·max|fd| + atol·(1 + |C|)`` plus 4× the
        difference quotient's own error estimate ``|D(h) − D(2h)|``.
    c : float
        Multiple of ε allowed against torch.

    Returns
    -------
    GradcheckReport
        Normalised errors per gradient and oracle.

    Raises
    ------
    AssertionError
        Listing every gradient that disagrees (``input ∂C/∂x`` or
        ``parameter 'W' ∂C/∂W``), its worst elements with expected and actual
        values, and the bound; also when ``backward`` omits or invents a
        parameter gradient or returns a wrong shape.
    TypeError, ValueError
        For a non-float64 parameter or a wrongly shaped ``upstream``.

    Examples
    --------
    >>> from manual_bp import Dense
    >>> layer = Dense(3, 2, rng=0)
    >>> x = np.random.default_rng(1).standard_normal((4, 3))
    >>> check_layer(layer, x).worst < 1e-6
    True
    """
    x = as_array(x, "x")
    check_nonempty(x, "x")
    x = np.array(x, dtype=np.float64)  # a private copy, perturbed in place
    check_finite(x, "x")
    params = dict(layer.params)
    for name, value in params.items():
        if not isinstance(value, np.ndarray) or value.dtype != np.float64:
            raise TypeError(
                f"parameter {name!r} must be a float64 NumPy array to be checked, got "
                f"{type(value).__name__} of dtype {getattr(value, 'dtype', None)}"
            )
    out, cache = layer.forward(x)
    out = np.asarray(out, dtype=np.float64)
    upstream = _upstream(upstream, out.shape, seed)
    dx, dparams = layer.backward(upstream.copy(), cache)
    failures = _missing_gradients(params, dparams)

    def cost() -> float:
        return float(np.sum(upstream * np.asarray(layer.forward(x)[0], dtype=np.float64)))

    # Rounding of out (ε·max(|out|, 1) each) moves C by up to ε·Σ|upstream|·max(|out|, 1);
    # a difference quotient divides that noise by its step.
    noise = float(np.finfo(np.float64).eps * np.sum(np.abs(upstream) * np.maximum(np.abs(out), 1)))
    c0 = abs(cost())
    targets = {"x": (x, dx), **{n: (p, dparams.get(n)) for n, p in params.items()}}
    fd_errors: dict[str, float] = {}
    for name, (array, actual) in targets.items():
        if actual is None:
            continue
        expected, fd_error = finite_difference_gradient(cost, array, h, return_error=True)
        steps = h * np.maximum(1.0, np.abs(array))
        bound = rtol * float(np.abs(expected).max(initial=0.0)) + atol * (1 + c0)
        bound = bound + 4.0 * fd_error + 8.0 * noise / steps
        label = _gradient_label(name)
        try:
            fd_errors[name] = assert_gradients_close(
                np.asarray(actual),
                expected,
                name=f"{label} (vs central finite differences)",
                atol=bound,
                rtol=0.0,
                c=c,
            )
        except AssertionError as error:
            hint = ""
            if not np.any(expected) and np.any(actual):
                hint = (
                    "\n  (the finite difference is exactly 0: does `params` return copies "
                    "instead of the arrays forward reads?)"
                )
            failures.append(f"{error}{hint}")
    torch_errors: dict[str, float] = {}
    if torch_forward is not None:
        torch_errors = _check_torch(torch_forward, x, params, out, upstream, targets, c, failures)
    if failures:
        raise AssertionError(
            f"gradient check of {layer!r} failed ({len(failures)} problem(s)):\n"
            + "\n".join(failures)
        )
    return GradcheckReport(fd_errors, torch_errors, upstream)


def check_vjp(
    function: Callable[[np.ndarray], np.ndarray],
    vjp: Callable[[np.ndarray, np.ndarray], np.ndarray],
    x: np.ndarray,
    *,
    upstream: np.ndarray | None = None,
    seed: int | np.random.Generator | None = 0,
    torch_function: Callable[..., Any] | None = None,
    h: float = GRADCHECK_STEP,
    rtol: float = GRADCHECK_RTOL,
    atol: float = GRADCHECK_ATOL,
    c: float = DEFAULT_C,
) -> GradcheckReport:
    """Check a (function, vector-Jacobian product) pair: ``vjp(dout, x) = (∂out/∂x)ᵀ dout``.

    ``function(x) -> out`` and ``vjp(dout, x) -> ∂C/∂x`` for ``C = Σ dout ⊙ out``.
    Same oracles, bounds and errors as :func:`check_layer` (the input gradient
    is named ``"x"``); ``torch_function(x) -> out`` adds torch autograd.

    Examples
    --------
    >>> softplus = lambda z: np.logaddexp(0.0, z)
    >>> softplus_vjp = lambda dout, z: dout / (1.0 + np.exp(-z))
    >>> check_vjp(softplus, softplus_vjp, np.linspace(-3, 3, 8).reshape(2, 4)).worst < 1e-6
    True
    """
    torch_forward = None
    if torch_function is not None:

        def torch_forward(x, params):
            return torch_function(x)

    return check_layer(
        _FunctionLayer(function, vjp),
        x,
        upstream=upstream,
        seed=seed,
        torch_forward=torch_forward,
        h=h,
        rtol=rtol,
        atol=atol,
        c=c,
    )


class _FunctionLayer:
    """A parameter-free layer made of a (function, vjp) pair."""

    def __init__(self, function, vjp) -> None:
        self.function, self.vjp, self.params = function, vjp, {}

    def forward(self, x):
        return self.function(x), x

    def backward(self, dout, x):
        return self.vjp(dout, x), {}

    def __repr__(self) -> str:
        name = getattr(self.function, "__name__", repr(self.function))
        return f"function {name} with its vjp"


def _upstream(upstream, shape, seed) -> np.ndarray:
    if upstream is None:
        return np.random.default_rng(seed).standard_normal(shape)
    upstream = np.array(as_array(upstream, "upstream"), dtype=np.float64)
    if upstream.shape != shape:
        raise ValueError(f"upstream has shape {upstream.shape}, but the output has shape {shape}")
    if upstream.size:
        check_finite(upstream, "upstream")
    return upstream


def _gradient_label(name: str) -> str:
    return "input ∂C/∂x" if name == "x" else f"parameter {name!r} ∂C/∂{name}"


def _missing_gradients(params: dict, dparams: dict) -> list[str]:
    problems = []
    if not isinstance(dparams, dict):
        return [f"backward must return (dx, dict of parameter gradients), got {type(dparams)}"]
    for name in params:
        if name not in dparams:
            problems.append(f"backward returned no gradient for parameter {name!r}")
    for name in dparams:
        if name not in params:
            problems.append(f"backward returned a gradient for {name!r}, which is not in params")
    return problems


def _check_torch(torch_forward, x, params, out, upstream, targets, c, failures) -> dict:
    """Torch autograd on ``torch_forward`` as the second oracle; appends to ``failures``."""
    import torch  # only when the user asks for it

    xt = torch.tensor(x, requires_grad=True)
    pt = {n: torch.tensor(np.array(p), requires_grad=True) for n, p in params.items()}
    out_t = torch_forward(xt, pt)
    try:
        assert_gradients_close(
            out, out_t.detach().numpy(), name="forward output (vs torch_forward)", c=c
        )
    except AssertionError as error:
        failures.append(f"{error}\n  (the layer's forward and torch_forward differ)")
        return {}
    (out_t * torch.tensor(upstream)).sum().backward()
    oracle = {"x": xt.grad, **{n: t.grad for n, t in pt.items()}}
    errors = {}
    for name, (_, actual) in targets.items():
        if actual is None:
            continue
        expected = oracle[name]
        expected = np.zeros_like(targets[name][0]) if expected is None else expected.numpy()
        try:
            errors[name] = assert_gradients_close(
                np.asarray(actual), expected, name=f"{_gradient_label(name)} (vs torch)", c=c
            )
        except AssertionError as error:
            failures.append(str(error))
    return errors
