"""Equations of ``docs/curvature.md``'s Kronecker factors beyond Dense on (batch, features):
KFC for convolution, the expand convention for Dense on sequences, KFRA."""

from manual_bp.equations._base import Equation

_D = "docs/curvature.md"
_C = "manual_bp.curvature."

EQUATIONS = [
    Equation(
        "CURV.kfc",
        "KFC: Kronecker factors of a convolution (BackPACK's scaling)",
        "A = (1/n) Σₓ Σ_l ũₓₗ ũₓₗᵀ (patches + 1, summed over locations), "
        "B = (1/n) Σ_{c,x} (Σ_l V_{c,x,·,l})(Σ_l V_{c,x,·,l})ᵀ, G_W̃ ≈ B ⊗ A",
        f"{_D}#CURV.kfc",
        _C + "_kfc.conv_factors",
        "tests/test_curvature_kfc.py::test_kfc_equals_torch_func_and_the_ggn_block",
    ),
    Equation(
        "CURV.kfac-expand",
        "Kronecker factors of Dense on (N, *T, D): the expand convention",
        "A = (1/(nR)) Σ_{x,t} x̃ₓₜ x̃ₓₜᵀ, B = (1/n) Σ_{c,x,t} V_{c,x,t} V_{c,x,t}ᵀ",
        f"{_D}#CURV.kfac-expand",
        _C + "_kfc.dense_factors",
        "tests/test_curvature_kfc.py::test_expand_equals_torch_func_and_the_ggn_block",
    ),
    Equation(
        "CURV.kfra",
        "KFRA: the recursive batch-averaged GGN",
        "Ḡ_f = (1/n) Σₓ ∇²_f ℓₓ, Ḡ_x = Wᵀ Ḡ_z W, Ḡ_z = Ḡ_a ⊙ (1/n) Σₓ σ'ₓσ'ₓᵀ; (A, Ḡ_z)",
        f"{_D}#CURV.kfra",
        _C + "kfra.kfra",
        "tests/test_curvature_kfra.py::test_kfra_equals_the_torch_recursion_and_the_ggn_block",
    ),
]
