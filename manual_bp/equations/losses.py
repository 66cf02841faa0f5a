"""Equations of ``docs/losses.md``: torch's reduction and the element-wise torch-named losses
(value ``LOSS.<name>``, gradient ``LOSS.<name>.grad``, second derivative ``LOSS.<name>.hess``).
"""

from manual_bp.equations._base import Equation

_D = "docs/losses.md"
_T = "tests/test_losses_elementwise.py"
_M = "manual_bp.losses"

#: (name, class path, value, gradient, second derivative), the statements of each loss.
_LOSSES = [
    ("mse", "regression.MSELoss", "ℓ = (x − y)²", "∂ℓ/∂x = 2(x − y) = −∂ℓ/∂y", "∂²ℓ/∂x² = 2"),
    ("l1", "regression.L1Loss", "ℓ = |x − y|", "∂ℓ/∂x = sign(x − y) = −∂ℓ/∂y", "∂²ℓ/∂x² = 0"),
    (
        "huber",
        "regression.HuberLoss",
        "ℓ = ½d² if |d| < δ else δ(|d| − ½δ)",
        "∂ℓ/∂x = clip(d, −δ, δ) = −∂ℓ/∂y",
        "∂²ℓ/∂x² = [|d| < δ]",
    ),
    (
        "smooth-l1",
        "regression.SmoothL1Loss",
        "ℓ = ½d²/β if |d| < β else |d| − ½β",
        "∂ℓ/∂x = clip(d/β, −1, 1) = −∂ℓ/∂y",
        "∂²ℓ/∂x² = [|d| < β]/β",
    ),
    (
        "bce",
        "binary.BCELoss",
        "ℓ = −w[y max(ln x, −100) + (1 − y) max(ln(1 − x), −100)]",
        "∂ℓ/∂x = w(x − y)/max(x(1 − x), 10⁻¹²), ∂ℓ/∂y = −w logit x",
        "∂²ℓ/∂x² = w(x² − 2xy + y)/((x + ε)²(1 − x + ε)²)",
    ),
    (
        "bce-logits",
        "binary.BCEWithLogitsLoss",
        "ℓ = w[(1 − y)x + (1 + (p − 1)y) softplus(−x)]",
        "∂ℓ/∂x = w[(1 + (p − 1)y)σ(x) − py], ∂ℓ/∂y = w[−x + (p − 1) softplus(−x)]",
        "∂²ℓ/∂x² = w(1 + (p − 1)y)σ(x)(1 − σ(x))",
    ),
    (
        "kl-div",
        "distribution.KLDivLoss",
        "ℓ = y(ln y − x), or eʸ(y − x) with log_target",
        "∂ℓ/∂x = −y (−eʸ), ∂ℓ/∂y = ln y + 1 − x (eʸ(y − x + 1))",
        "∂²ℓ/∂x² = 0",
    ),
    (
        "poisson-nll",
        "distribution.PoissonNLLLoss",
        "ℓ = eˣ − yx (or x − y ln(x + eps)) + [y > 1](y ln y − y + ½ ln 2πy)",
        "∂ℓ/∂x = eˣ − y (or 1 − y/(x + eps)), ∂ℓ/∂y = −x (or −ln(x + eps)) + [y > 1](ln y + 1/2y)",
        "∂²ℓ/∂x² = eˣ (or y/(x + eps)²)",
    ),
]

_KINDS = [
    ("", "", "test_value_matches_torch"),
    (".grad", "Gradient of ", "test_gradients_match_torch"),
    (".hess", "Second derivative of ", "test_second_derivative_matches_torch_double_backward"),
]

EQUATIONS = [
    Equation(
        "LOSS.reduction",
        "torch's reduction of a loss and its VJP",
        "'none': ℓ; 'sum': Σℓᵢ; 'mean': Σℓᵢ/N; VJP: g, g·1, g·1/N",
        f"{_D}#LOSS.reduction",
        f"{_M}.base.reduce",
        f"{_T}::test_reduction_and_its_vjp",
    ),
] + [
    Equation(
        f"LOSS.{name}{suffix}",
        f"{prefix}torch's {cls.split('.')[1]}" if prefix else f"torch's {cls.split('.')[1]}",
        statement,
        f"{_D}#LOSS.{name}{suffix}",
        f"{_M}.{cls}",
        f"{_T}::{test}",
    )
    for name, cls, *statements in _LOSSES
    for (suffix, prefix, test), statement in zip(_KINDS, statements, strict=True)
]
