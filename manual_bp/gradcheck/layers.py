"""Checking a user's own layer or function: :func:`check_layer` and :func:`check_vjp`.

Random upstream gradient, finite differences as the oracle (and torch autograd when a torch
forward is given); the comparison rule is :mod:`manual_bp.gradcheck.compare`'s. See
``docs/gradcheck.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from manual_bp._arguments import as_generator, as_real_array, check_number, check_step
from manual_bp._validation import check_finite, check_nonempty
from manual_bp.gradcheck.compare import (
    DEFAULT_C,
    assert_gradients_close,
    finite_difference_gradient,
)

__all__ = ["GradcheckReport", "check_layer", "check_vjp"]


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
        Before any work, in one line naming the argument: a ``layer`` without the protocol,
        a non-float64 parameter, an ``x`` or ``upstream`` that is not a finite real array
        (of the output's shape), a ``seed`` that is not a seed, ``h`` outside ``(0, 1)``,
        ``rtol``/``atol`` negative or not finite, ``c ≤ 0``, a ``torch_forward`` that is
        not callable.

    Examples
    --------
    >>> from manual_bp import Dense
    >>> layer = Dense(3, 2, seed=0)
    >>> x = np.random.default_rng(1).standard_normal((4, 3))
    >>> check_layer(layer, x).worst < 1e-6
    True
    """
    _check_protocol(layer)
    _check_settings(seed, torch_forward, h, rtol, atol, c)
    x = as_real_array(x, "x")
    check_nonempty(x, "x")
    x = np.array(x, dtype=np.float64, order="C")  # a private copy, perturbed in place
    check_finite(x, "x")
    params = dict(layer.params)
    for name, value in params.items():
        if not isinstance(value, np.ndarray) or value.dtype != np.float64:
            raise TypeError(
                f"layer parameter {name!r} must be a float64 NumPy array to be checked, got "
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
    for label, value in (("function", function), ("vjp", vjp)):
        if not callable(value):
            raise TypeError(f"{label} must be callable, got {type(value).__name__}")
    if torch_function is not None and not callable(torch_function):
        raise TypeError(f"torch_function must be callable, got {type(torch_function).__name__}")
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


def _check_protocol(layer: Any) -> None:
    """``layer`` has callable ``forward`` and ``backward`` and a ``params`` dict."""
    missing = [m for m in ("forward", "backward") if not callable(getattr(layer, m, None))]
    params = getattr(layer, "params", None)
    if missing or not isinstance(params, Mapping):
        lacks = [*missing, *([] if isinstance(params, Mapping) else ["a params dict"])]
        raise TypeError(
            f"layer must follow the layer protocol (forward, backward and a params dict); "
            f"{type(layer).__name__} lacks {', '.join(lacks)}"
        )


def _check_settings(seed, torch_forward, h, rtol, atol, c) -> None:
    """The checker's own arguments, each named when refused (before any forward pass)."""
    as_generator(seed, "seed")
    if torch_forward is not None and not callable(torch_forward):
        raise TypeError(f"torch_forward must be callable, got {type(torch_forward).__name__}")
    check_step(h)
    check_number(rtol, "rtol", zero=True)
    check_number(atol, "atol", zero=True)
    check_number(c, "c")


def _upstream(upstream, shape, seed) -> np.ndarray:
    if upstream is None:
        return as_generator(seed, "seed").standard_normal(shape)
    upstream = np.array(as_real_array(upstream, "upstream"), dtype=np.float64)
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
