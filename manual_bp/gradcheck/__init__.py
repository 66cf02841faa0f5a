"""Gradient checking: normalised errors, tolerances, central finite differences
(:mod:`~manual_bp.gradcheck.compare`) and checks of a user's own layers
(:mod:`~manual_bp.gradcheck.layers`). Everything is importable from here.
"""

from manual_bp.gradcheck.compare import (
    DEFAULT_C,
    assert_gradients_close,
    bound_ratio,
    finite_difference_gradient,
    normalised_error,
    tolerance,
)
from manual_bp.gradcheck.layers import GradcheckReport, check_layer, check_vjp

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
