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
        "manual_bp.activations.smooth.Identity",
        _T,
    ),
    Equation(
        "ACT.sigmoid",
        "Logistic sigmoid",
        "σ(z) = 1/(1 + e⁻ᶻ),  σ'(z) = σ(z)(1 − σ(z))",
        f"{_D}#ACT.sigmoid",
        "manual_bp.activations.smooth.Sigmoid",
        _T,
    ),
    Equation(
        "ACT.tanh",
        "Hyperbolic tangent",
        "σ(z) = tanh z,  σ'(z) = 1 − tanh² z",
        f"{_D}#ACT.tanh",
        "manual_bp.activations.smooth.Tanh",
        _T,
    ),
    Equation(
        "ACT.relu",
        "Rectified linear unit",
        "σ(z) = max(0, z),  σ'(z) = 1[z > 0]",
        f"{_D}#ACT.relu",
        "manual_bp.activations.piecewise.ReLU",
        _T,
    ),
    Equation(
        "ACT.leaky-relu",
        "Leaky ReLU (slope α)",
        "σ(z) = z (z > 0), αz (z ≤ 0);  σ'(z) = 1 (z > 0), α (z ≤ 0, torch's kink convention)",
        f"{_D}#ACT.leaky-relu",
        "manual_bp.activations.piecewise.LeakyReLU",
        _T,
    ),
    Equation(
        "ACT.elu",
        "Exponential linear unit (α)",
        "σ(z) = z (z > 0), α(eᶻ − 1) (z ≤ 0);  σ'(z) = 1 (z > 0), αeᶻ (z ≤ 0)",
        f"{_D}#ACT.elu",
        "manual_bp.activations.piecewise.ELU",
        _T,
    ),
    Equation(
        "ACT.selu",
        "Scaled ELU",
        "σ(z) = λz (z > 0), λα(eᶻ − 1) (z ≤ 0);  σ'(z) = λ (z > 0), λαeᶻ (z ≤ 0)",
        f"{_D}#ACT.selu",
        "manual_bp.activations.piecewise.SELU",
        _T,
    ),
    Equation(
        "ACT.softplus",
        "Softplus (β, threshold)",
        "σ(z) = ln(1 + e^{βz})/β (βz ≤ threshold), z otherwise;  σ'(z) = sigmoid(βz), 1",
        f"{_D}#ACT.softplus",
        "manual_bp.activations.smooth.Softplus",
        _T,
    ),
    Equation(
        "ACT.gelu",
        "GELU (exact erf form and tanh approximation)",
        "σ(z) = zΦ(z), σ'(z) = Φ(z) + zφ(z);  tanh: ½z(1 + tanh u), u = √(2/π)(z + 0.044715z³)",
        f"{_D}#ACT.gelu",
        "manual_bp.activations.smooth.GELU",
        _T,
    ),
    Equation(
        "ACT.silu",
        "SiLU / swish",
        "σ(z) = z·s(z);  σ'(z) = s(z)(1 + z(1 − s(z))),  s = sigmoid",
        f"{_D}#ACT.silu",
        "manual_bp.activations.smooth.SiLU",
        _T,
    ),
    Equation(
        "ACT.hardtanh",
        "Hard tanh",
        "σ(z) = clip(z, min, max);  σ'(z) = 1[min < z < max]",
        f"{_D}#ACT.hardtanh",
        "manual_bp.activations.piecewise.HardTanh",
        _T,
    ),
    Equation(
        "ACT.softmax",
        "Softmax (full VJP)",
        "aⱼ = e^{zⱼ}/Σₖe^{zₖ};  ∂C/∂z = a ⊙ (g − ⟨g, a⟩)",
        f"{_D}#ACT.softmax",
        "manual_bp.activations.normalising.Softmax",
        _T,
    ),
    Equation(
        "ACT.log-softmax",
        "Log-softmax (full VJP)",
        "aⱼ = zⱼ − ln Σₖe^{zₖ};  ∂C/∂z = g − softmax(z) Σᵢgᵢ",
        f"{_D}#ACT.log-softmax",
        "manual_bp.activations.normalising.LogSoftmax",
        _T,
    ),
]
