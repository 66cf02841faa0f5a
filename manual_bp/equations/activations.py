"""Equations of ``docs/activations.md``."""

from manual_bp.equations._base import Equation

_D = "docs/activations.md"
_T = "tests/test_activations.py::test_activation_backward_matches_torch"

EQUATIONS = [
    Equation(
        "ACT.identity",
        "Identity",
        "σ(z) = z,  σ'(z) = 1",
        f"{_D}#ACT.identity",
        "manual_bp.activations.Identity",
        _T,
    ),
    Equation(
        "ACT.sigmoid",
        "Logistic sigmoid",
        "σ(z) = 1/(1 + e⁻ᶻ),  σ'(z) = σ(z)(1 − σ(z))",
        f"{_D}#ACT.sigmoid",
        "manual_bp.activations.Sigmoid",
        _T,
    ),
    Equation(
        "ACT.tanh",
        "Hyperbolic tangent",
        "σ(z) = tanh z,  σ'(z) = 1 − tanh² z",
        f"{_D}#ACT.tanh",
        "manual_bp.activations.Tanh",
        _T,
    ),
    Equation(
        "ACT.relu",
        "Rectified linear unit",
        "σ(z) = max(0, z),  σ'(z) = 1[z > 0]",
        f"{_D}#ACT.relu",
        "manual_bp.activations.ReLU",
        _T,
    ),
]
