"""Equations of ``docs/padding.md``: torch's padding layers (the index map's transpose, the
fast form's fold) and the bilinear layer's two-sided gradient, with their products."""

from manual_bp.equations._base import Equation
from manual_bp.equations.products import product_equations

_D = "docs/padding.md"
_T = "tests/test_padding_layers.py"
_B = "tests/test_bilinear.py"

EQUATIONS = [
    Equation(
        "LAYER.pad",
        "Padding layers (zero, constant, reflection, replication, circular; 1-3 d, cropping)",
        "xp[u] = x[π(u)] (a constant where π = −1);  ∂C/∂x[s] = Σ_{u: π(u)=s} ∂C/∂xp[u]",
        f"{_D}#LAYER.pad",
        "manual_bp.layers.padding_layers._PadNd.backward",
        f"{_T}::test_padding_layers_match_torch",
    ),
    Equation(
        "PAD.fold",
        "The padding's adjoint as a fold of each border onto its source, axis by axis",
        "reflect: g[a+j] += g[a−j], g[a+H−1−j] += g[a+H−1+j];  replicate: g[a] += Σ_{u<a} g[u]",
        f"{_D}#PAD.fold",
        "manual_bp.layers.padding_fast.fold",
        f"{_T}::test_fast_pad_and_fold_match_the_map",
    ),
    *product_equations(
        "pad",
        "Padding layers",
        "J_xᵀ M = the scatter-add of each cotangent",
        "J_x T = each tangent padded with 0",
        "0 (linear)",
        "manual_bp.layers.padding_layers._PadNd",
        f"{_T}::test_padding_products_match_torch_func",
        doc=_D,
    ),
    Equation(
        "LAYER.bilinear",
        "Bilinear layer y_k = x₁ᵀ A_k x₂ + b_k and its two-sided gradient",
        "∂C/∂x₁ = Σ_k δ_k A_k x₂,  ∂C/∂x₂ = Σ_k δ_k A_kᵀ x₁,  ∂C/∂A_k = Σ δ_k x₁ x₂ᵀ,  ∂C/∂b = Σ δ",
        f"{_D}#LAYER.bilinear",
        "manual_bp.layers.bilinear.Bilinear.backward",
        f"{_B}::test_bilinear_matches_torch",
    ),
    *product_equations(
        "bilinear",
        "Bilinear",
        "J_x₁ᵀ M = Σ_k M_k A_k x₂,  J_x₂ᵀ M = Σ_k M_k A_kᵀ x₁,  J_Aᵀ M = Σ M_k x₁ x₂ᵀ",
        "J T = T₁ᵀ A_k x₂ + x₁ᵀ A_k T₂ + x₁ᵀ T_A,k x₂ + T_b,k",
        "R∂x₁ = Σ dout_k (A_k T₂ + T_A,k x₂),  R∂A_k = Σ dout_k (T₁ x₂ᵀ + x₁ T₂ᵀ)",
        "manual_bp.layers.bilinear.Bilinear",
        f"{_B}::test_bilinear_products_match_torch_func",
        doc=_D,
    ),
]
