"""Equations of ``docs/losses_pairs.md``: the pairwise, margin and embedding losses."""

from manual_bp.equations._base import Equation

_D = "docs/losses_pairs.md"
_T = "tests/test_losses_pairs.py"
_VALUE = f"{_T}::test_loss_value_matches_torch"
_GRAD = f"{_T}::test_loss_gradient_matches_torch"

_LOSSES = [
    # (name, class path, readable name, value statement, gradient statement)
    ("cosine-embedding", "embeddings.CosineEmbeddingLoss", "Cosine embedding loss",
     "ℓ = [y = 1](1 − cos) + [y = −1]max(0, cos − Δ), cos = ⟨x₁, x₂⟩/√((‖x₁‖² + ε)(‖x₂‖² + ε))",
     "∂cos/∂x₁ = x₂/√(m₁m₂) − cos·x₁/m₁ (and symmetrically), the hinge passing at cos = Δ"),
    ("gaussian-nll", "gaussian.GaussianNLLLoss", "Gaussian negative log-likelihood loss",
     "ℓ = ½(ln v + (x − y)²/v) [+ ½ ln 2π], v = max(var, eps)",
     "∂ℓ/∂x = (x − y)/v = −∂ℓ/∂y, ∂ℓ/∂var = ½(1/v − (x − y)²/v²) at the clamped v"),
    ("hinge-embedding", "margins.HingeEmbeddingLoss", "Hinge embedding loss",
     "ℓ = [y ≠ 1]max(0, Δ − x) + [y ≠ −1]x",
     "∂ℓ/∂x = [y ≠ −1] − [y ≠ 1][Δ − x ≥ 0]"),
    ("margin-ranking", "margins.MarginRankingLoss", "Margin ranking loss",
     "ℓ = max(0, −y(x₁ − x₂) + Δ)",
     "∂ℓ/∂(x₁, x₂, y) = [u ≥ 0](−y, y, −(x₁ − x₂)), u = −y(x₁ − x₂) + Δ"),
    ("multilabel-margin", "margins.MultiLabelMarginLoss", "Multi-label margin loss",
     "ℓ = (1/C) Σ_{j∈J} Σ_{i∉T} max(0, 1 − x_j + x_i)",
     "each pair with 1 − x_j + x_i > 0 adds 1/C to ∂ℓ/∂x_i and −1/C to ∂ℓ/∂x_j"),
    ("multilabel-soft-margin", "margins.MultiLabelSoftMarginLoss",
     "Multi-label soft margin loss",
     "ℓ = −(1/C) Σ_c w_c[y_c ln σ(x_c) + (1 − y_c) ln σ(−x_c)]",
     "∂ℓ/∂x_c = (w_c/C)(σ(x_c) − y_c), ∂ℓ/∂y_c = −(w_c/C)x_c"),
    ("soft-margin", "margins.SoftMarginLoss", "Soft margin loss",
     "ℓ = ln(1 + e^{−yx})",
     "∂ℓ/∂x = −y σ(−yx)"),
    ("triplet-margin", "embeddings.TripletMarginLoss", "Triplet margin loss",
     "ℓ = max(0, Δ + d(a, p) − d(a, n)), d(u, v) = ‖u − v + ε‖_p "
     "(swap: d(a, n) ← min(d(a, n), d(p, n)))",
     "∂ℓ/∂a = [ℓ-hinge ≥ 0](∇d(a, p) − ∇d(a, n)), ∇‖v‖_p = sgn(v)|v|^{p−1}/‖v‖_p^{p−1}"),
    ("triplet-margin-with-distance", "embeddings.TripletMarginWithDistanceLoss",
     "Triplet margin loss with the default distance",
     "ℓ = max(0, Δ + d(a, p) − d(a, n)), d = pairwise_distance (p = 2, ε = 10⁻⁶)",
     "as LOSS.triplet-margin.grad at p = 2, ε = 10⁻⁶"),
]  # fmt: skip

EQUATIONS = []
for _name, _code, _readable, _value, _grad in _LOSSES:
    EQUATIONS.append(
        Equation(
            f"LOSS.{_name}",
            _readable,
            _value,
            f"{_D}#LOSS.{_name}",
            f"manual_bp.losses.{_code}",
            _VALUE,
        )
    )
    EQUATIONS.append(
        Equation(
            f"LOSS.{_name}.grad",
            f"Gradient of the {_readable[0].lower()}{_readable[1:]}",
            _grad,
            f"{_D}#LOSS.{_name}.grad",
            f"manual_bp.losses.{_code}",
            _GRAD,
        )
    )
