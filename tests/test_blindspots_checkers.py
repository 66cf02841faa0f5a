"""The comparison helpers themselves (issue 15): every test in the suite relies on them.

Pins what :func:`manual_bp.gradcheck.normalised_error`,
:func:`~manual_bp.gradcheck.assert_gradients_close`,
:func:`~manual_bp.gradcheck.bound_ratio` and :meth:`reference.compare.Comparison.check`
do with NaN, ±inf, empty arrays, shape mismatches, and an error just below and
just above the tolerance. Values are dyadic (``1 + kε``), so every difference is
exact and "just above" is never a rounding accident.
"""

from __future__ import annotations

import numpy as np
import pytest

from manual_bp.gradcheck import (
    DEFAULT_C,
    assert_gradients_close,
    bound_ratio,
    normalised_error,
    tolerance,
)
from reference.compare import Comparison

EPS = float(np.finfo(np.float64).eps)

NAN, INF = float("nan"), float("inf")


# --------------------------------------------------------------- normalised_error
def test_normalised_error_is_max_abs_difference_over_max_abs_expected():
    assert normalised_error(np.array([1.0, -2.0]), np.array([1.5, -2.0])) == 0.25
    assert normalised_error(np.zeros(3), np.zeros(3)) == 0.0
    # expected all zero: the absolute error, not a division by zero
    assert normalised_error(np.array([0.0, 3e-9]), np.zeros(2)) == 3e-9
    assert normalised_error(np.empty((0, 2)), np.empty((0, 2))) == 0.0


@pytest.mark.parametrize(
    ("actual", "expected", "error"),
    [
        ([NAN, 1.0], [1.0, 1.0], INF),  # NaN in ours
        ([1.0, 1.0], [NAN, 1.0], INF),  # NaN in the oracle
        ([NAN, 1.0], [NAN, 1.0], INF),  # NaN on both sides is still not agreement
        ([INF, 1.0], [1.0, 1.0], INF),  # an infinity on one side only
        ([1.0, 1.0], [-INF, 1.0], INF),
        ([INF, -INF], [-INF, -INF], INF),  # opposite infinities
        ([INF, 2.0], [INF, 1.0], 1.0),  # the same infinity counts as equal; scale from finite
    ],
)
def test_normalised_error_with_nan_and_inf(actual, expected, error):
    assert normalised_error(np.array(actual), np.array(expected)) == error


def test_normalised_error_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shapes differ"):
        normalised_error(np.zeros(3), np.zeros((3, 1)))


# ----------------------------------------------------------- assert_gradients_close
def _bound_at_one() -> float:
    """Bound of the element expected = 1 in ``[1, 0.5]``: ``c·ε·max|e| + c·ε·|e| + c·tiny``."""
    return 2 * tolerance(np.float64) + DEFAULT_C * float(np.finfo(np.float64).tiny)


def test_tolerance_is_c_times_epsilon():
    assert tolerance(np.float64) == 64 * EPS
    assert tolerance(np.float32) == 64 * float(np.finfo(np.float32).eps)
    assert tolerance(np.float64, c=2.0) == 2 * EPS


def test_error_just_below_the_bound_passes_and_just_above_fails():
    """The bound is ``c·ε·max|expected| + rtol·|expected|`` (rtol = c·ε): 128ε at 1."""
    expected = np.array([1.0, 0.5])
    assert 120 * EPS < _bound_at_one() < 130 * EPS
    below = np.array([1.0 + 120 * EPS, 0.5])
    error = assert_gradients_close(below, expected)
    assert error == 120 * EPS
    assert bound_ratio(below, expected) == pytest.approx(120 * EPS / _bound_at_one())
    above = np.array([1.0 + 130 * EPS, 0.5])
    with pytest.raises(AssertionError, match=r"gradient: 1 of 2 elements differ"):
        assert_gradients_close(above, expected)
    assert bound_ratio(above, expected) > 1.0


def test_explicit_c_rtol_and_atol_change_the_bound():
    expected = np.array([1.0, 0.5])
    actual = np.array([1.0 + 8 * EPS, 0.5])
    assert_gradients_close(actual, expected, c=5.0)  # 5ε + 5ε ≥ 8ε
    with pytest.raises(AssertionError):
        assert_gradients_close(actual, expected, c=3.0)  # 3ε + 3ε < 8ε
    with pytest.raises(AssertionError):
        assert_gradients_close(actual, expected, c=5.0, rtol=0.0)  # 5ε < 8ε
    assert_gradients_close(actual, expected, c=5.0, rtol=0.0, atol=8 * EPS)
    with pytest.raises(AssertionError):
        assert_gradients_close(actual, expected, rtol=0.0, atol=np.array([7 * EPS, 1.0]))


def test_float32_tolerance_is_wider():
    expected = np.array([1.0, 0.5], dtype=np.float32)
    actual = np.array([1.0 + 2e-6, 0.5], dtype=np.float32)
    with pytest.raises(AssertionError):
        assert_gradients_close(actual, expected)
    assert_gradients_close(actual, expected, dtype=np.float32)


def test_scale_widens_the_bound_only_where_it_exceeds_the_values():
    """``scale`` (Σ|terms| of a cancelling sum): bound ``c·ε·scale`` where larger."""
    expected = np.array([1e-10, 1.0])
    actual = np.array([1e-10 + 1e-13, 1.0])
    with pytest.raises(AssertionError):
        assert_gradients_close(actual, expected)
    assert_gradients_close(actual, expected, scale=np.array([1e4, 1.0]))
    with pytest.raises(AssertionError):  # a scale on the wrong element does not help
        assert_gradients_close(actual, expected, scale=np.array([1.0, 1e4]))


@pytest.mark.parametrize(
    ("actual", "expected", "passes"),
    [
        ([NAN, 1.0], [1.0, 1.0], False),
        ([1.0, 1.0], [NAN, 1.0], False),
        # NaN at the same place on both sides is agreement elementwise (two overflowing
        # implementations agree); the normalised error still reports inf.
        ([NAN, 1.0], [NAN, 1.0], True),
        ([INF, 1.0], [INF, 1.0], True),
        pytest.param([INF, 1.0], [-INF, 1.0], False),
        pytest.param([INF, 1.0], [1e308, 1.0], False),
        pytest.param([1e308, 1.0], [INF, 1.0], False),
    ],
)
def test_assert_gradients_close_with_nan_and_inf(actual, expected, passes):
    actual, expected = np.array(actual), np.array(expected)
    if passes:
        assert_gradients_close(actual, expected)
        assert bound_ratio(actual, expected) == 0.0
    else:
        with pytest.raises(AssertionError):
            assert_gradients_close(actual, expected)
        assert bound_ratio(actual, expected) == INF


def test_subnormal_results_get_an_absolute_c_tiny_slack():
    """All-zero reference: only ``c·tiny`` is allowed (flush-to-zero differences)."""
    expected = np.zeros(2)
    assert_gradients_close(np.array([1e-310, 0.0]), expected)
    with pytest.raises(AssertionError):
        assert_gradients_close(np.array([1e-300, 0.0]), expected)


def test_failure_message_names_the_quantity_shape_and_worst_element():
    expected = np.arange(6.0).reshape(2, 3)
    actual = expected.copy()
    actual[1, 2] += 1.0
    with pytest.raises(AssertionError) as info:
        assert_gradients_close(actual, expected, name="∂C/∂W[2]")
    message = str(info.value)
    assert message.startswith("∂C/∂W[2]: 1 of 6 elements differ (shape (2, 3)")
    assert "at (1, 2): expected 5, actual 6" in message


def test_shape_mismatch_is_an_assertion_and_an_infinite_ratio():
    with pytest.raises(AssertionError, match="shape"):
        assert_gradients_close(np.zeros(3), np.zeros((3, 1)))
    assert bound_ratio(np.zeros(3), np.zeros((3, 1))) == INF
    assert bound_ratio(np.empty(0), np.empty(0)) == 0.0


# ---------------------------------------------------------------------- Comparison
def test_comparison_check_uses_scale_atol_and_names_the_equation():
    expected = np.array([1e-10, 1.0])
    actual = np.array([1e-10 + 1e-13, 1.0])
    loose = Comparison("BP2", "δ[1]", actual, expected, scale=np.array([1e4, 1.0]))
    assert loose.check() == pytest.approx(1e-13)
    assert loose.error == normalised_error(actual, expected)
    with pytest.raises(AssertionError, match=r"^BP2 δ\[1\] \(vs torch\)"):
        Comparison("BP2", "δ[1]", actual, expected).check()
    fd = Comparison("BP4", "W", actual, expected, oracle="finite-differences", atol=1e-12)
    fd.check()
    with pytest.raises(AssertionError, match="vs finite-differences"):
        Comparison("BP4", "W", actual, expected, oracle="finite-differences", atol=1e-14).check()
    with pytest.raises(AssertionError):
        Comparison("BP4", "W", np.array([NAN, 1.0]), expected).check()
