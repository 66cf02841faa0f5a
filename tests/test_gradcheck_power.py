"""The gradient checkers' power at their documented bounds (issue 24, item 9).

A user relies on :func:`~manual_bp.gradcheck.check_layer` and
:func:`~manual_bp.gradcheck.check_vjp` to say when a gradient is wrong. An error planted in
one entry of a layer's backward just below the documented bound must pass and just above it
must fail, for each oracle at its default tolerances: central finite differences
(``rtol·max|fd| + atol·(1 + |C|)``, widened only by the difference quotient's own error
estimate, ~1e-10 here) and torch (``c·ε`` of the largest entry plus ``c·ε`` of the entry).
So a loosened default (``GRADCHECK_RTOL``, ``GRADCHECK_ATOL``, ``DEFAULT_C``) or an oracle
that stops looking fails here. The layer is affine, so the finite differences are exact up
to rounding and the margins (±5 % for finite differences, ×0.5 and ×2 for torch, whose
bound is tens of ε) are far above their noise.
"""

from __future__ import annotations

import numpy as np
import pytest

from manual_bp.gradcheck import check_layer, check_vjp

EPS = float(np.finfo(np.float64).eps)
#: The documented defaults (docs/gradcheck.md), written out: a test that read the library's
#: constants would move with them and could not catch a loosened default.
GRADCHECK_RTOL, GRADCHECK_ATOL, DEFAULT_C = 1e-6, 1e-8, 64.0


class PlantedAffine:
    """``out = x ⊙ γ + β`` per feature, with ``planted`` added to ``∂C/∂γ[where]``."""

    def __init__(self, planted: float = 0.0, where: int = 0) -> None:
        rng = np.random.default_rng(7)
        self.params = {"gamma": rng.standard_normal(5), "beta": rng.standard_normal(5)}
        self.planted, self.where = planted, where

    def forward(self, x):
        return x * self.params["gamma"] + self.params["beta"], x

    def backward(self, dout, x):
        dgamma = (dout * x).sum(0)
        dgamma[self.where] += self.planted
        return dout * self.params["gamma"], {"gamma": dgamma, "beta": dout.sum(0)}

    def __repr__(self) -> str:
        return "PlantedAffine"


def _setting():
    rng = np.random.default_rng(3)
    x, upstream = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    layer = PlantedAffine()
    out = layer.forward(x)[0]
    exact = layer.backward(upstream, x)[1]["gamma"]
    cost = float(np.sum(upstream * out))
    return x, upstream, exact, cost


def _fd_bound(exact: np.ndarray, cost: float) -> float:
    """The documented finite-difference bound of ∂C/∂γ (its estimate terms are ~1e-10)."""
    return GRADCHECK_RTOL * float(np.abs(exact).max()) + GRADCHECK_ATOL * (1 + abs(cost))


@pytest.mark.parametrize("factor, passes", [(0.95, True), (1.05, False)])
def test_finite_differences_at_their_bound(factor, passes):
    x, upstream, exact, cost = _setting()
    layer = PlantedAffine(factor * _fd_bound(exact, cost))
    if passes:
        check_layer(layer, x, upstream=upstream)
    else:
        with pytest.raises(AssertionError, match=r"parameter 'gamma' .*finite differences"):
            check_layer(layer, x, upstream=upstream)


def _torch_forward(x, params):
    return x * params["gamma"] + params["beta"]


@pytest.mark.parametrize("factor, passes", [(0.5, True), (2.0, False)])
def test_torch_at_its_bound(factor, passes):
    """An error far inside the finite-difference bound is still caught by torch."""
    pytest.importorskip("torch")
    x, upstream, exact, _ = _setting()
    where = int(np.argmin(np.abs(exact)))
    bound = DEFAULT_C * EPS * (float(np.abs(exact).max()) + abs(exact[where]))
    layer = PlantedAffine(factor * bound, where)
    if passes:
        check_layer(layer, x, upstream=upstream, torch_forward=_torch_forward)
    else:
        with pytest.raises(AssertionError, match=r"parameter 'gamma' .*\(vs torch\)"):
            check_layer(layer, x, upstream=upstream, torch_forward=_torch_forward)


@pytest.mark.parametrize("factor, passes", [(0.95, True), (1.05, False)])
def test_check_vjp_at_its_bound(factor, passes):
    """``check_vjp`` holds an input gradient to the same documented bound."""
    rng = np.random.default_rng(5)
    x, upstream, w = (
        rng.standard_normal((3, 4)),
        rng.standard_normal((3, 4)),
        rng.standard_normal(4),
    )
    exact = upstream * w
    bound = GRADCHECK_RTOL * float(np.abs(exact).max()) + GRADCHECK_ATOL * (
        1 + abs(float(np.sum(upstream * x * w)))
    )

    def vjp(dout, z):
        grad = dout * w
        grad[0, 0] += factor * bound
        return grad

    if passes:
        check_vjp(lambda z: z * w, vjp, x, upstream=upstream)
    else:
        with pytest.raises(AssertionError, match=r"input ∂C/∂x .*finite differences"):
            check_vjp(lambda z: z * w, vjp, x, upstream=upstream)
