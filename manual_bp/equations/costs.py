"""Equations of ``docs/costs.md``."""

from manual_bp.equations._base import Equation

_D = "docs/costs.md"
_T = "tests/test_costs.py"

EQUATIONS = [
    Equation(
        "COST.quadratic",
        "Quadratic cost",
        "Cₓ = ½‖a − y‖²",
        f"{_D}#COST.quadratic",
        "manual_bp.costs.QuadraticCost.per_sample",
        f"{_T}::test_cost_value_matches_torch",
    ),
    Equation(
        "COST.quadratic.grad",
        "Gradient of the quadratic cost",
        "∂Cₓ/∂a = a − y",
        f"{_D}#COST.quadratic.grad",
        "manual_bp.costs.QuadraticCost.grad",
        f"{_T}::test_cost_gradient_matches_torch",
    ),
    Equation(
        "COST.cross-entropy",
        "Cross-entropy cost (Nielsen)",
        "Cₓ = −Σⱼ [yⱼ ln aⱼ + (1 − yⱼ) ln(1 − aⱼ)]",
        f"{_D}#COST.cross-entropy",
        "manual_bp.costs.CrossEntropyCost.per_sample",
        f"{_T}::test_cost_value_matches_torch",
    ),
    Equation(
        "COST.cross-entropy.grad",
        "Gradient of the cross-entropy cost",
        "∂Cₓ/∂aⱼ = (aⱼ − yⱼ) / (aⱼ (1 − aⱼ))",
        f"{_D}#COST.cross-entropy.grad",
        "manual_bp.costs.CrossEntropyCost.grad",
        f"{_T}::test_cost_gradient_matches_torch",
    ),
    Equation(
        "SHORTCUT.sigmoid-cross-entropy",
        "Sigmoid output with cross-entropy",
        "δᴸ = a − y",
        f"{_D}#SHORTCUT.sigmoid-cross-entropy",
        "manual_bp.costs.CrossEntropyCost",
        f"{_T}::test_shortcut_equals_general_bp1",
    ),
    Equation(
        "SHORTCUT.identity-quadratic",
        "Identity output with quadratic cost",
        "δᴸ = a − y",
        f"{_D}#SHORTCUT.identity-quadratic",
        "manual_bp.costs.QuadraticCost",
        f"{_T}::test_shortcut_equals_general_bp1",
    ),
]
