"""Equations of ``docs/products.md``: pooling and the structural layers on the V axis.

Max pooling gathers at each window's winner (its VJP scatters), average pooling, flatten,
identity and reshape are linear (zero residual), and a residual block's products are walks
of its branch's (``manual_bp.layers.containers_products``).
"""

from manual_bp.equations.products import product_equations

_T = "tests/test_products_structure.py"
_P = "manual_bp.layers.pooling"
_C = "manual_bp.layers.containers"

EQUATIONS = [
    *product_equations(
        "maxpool2d",
        "MaxPool2d",
        "J_xᵀ M: each window's M goes to its winner m(y, x) (first maximum, never padding)",
        "(J_x T)[y, x] = T[m(y, x)]: the tangent gathered at the winner",
        "0 almost everywhere (a selection: linear where the winners are constant)",
        f"{_P}.MaxPool2d",
        f"{_T}::test_maxpool2d_products_match_torch_func",
    ),
    *product_equations(
        "avgpool2d",
        "AvgPool2d",
        "J_xᵀ M[u, v] = Σ_{windows (y,x) ∋ (u,v)} M[y, x] / D[y, x]",
        "J_x T = Σ_{i,j} T^p[ys + i, xs + j] / D[y, x]",
        "0 (linear)",
        f"{_P}.AvgPool2d",
        f"{_T}::test_avgpool2d_products_match_torch_func",
    ),
    *product_equations(
        "global-avgpool2d",
        "GlobalAvgPool2d",
        "J_xᵀ M = M / (HW) at every position",
        "J_x T = mean over (H, W) of T",
        "0 (linear)",
        f"{_P}.GlobalAvgPool2d",
        f"{_T}::test_global_avgpool2d_products_match_torch_func",
    ),
    *product_equations(
        "flatten",
        "Flatten",
        "J_xᵀ M = M reshaped to (V, N, *in)",
        "J_x T = T reshaped to (V, N, prod(in))",
        "0 (linear)",
        f"{_C}.Flatten",
        f"{_T}::test_flatten_products_match_torch_func",
    ),
    *product_equations(
        "identity",
        "Identity",
        "J_xᵀ M = M",
        "J_x T = T",
        "0 (linear)",
        f"{_C}.Identity",
        f"{_T}::test_identity_products_match_torch_func",
    ),
    *product_equations(
        "reshape",
        "Reshape",
        "J_xᵀ M = M reshaped to (V, N, *in)",
        "J_x T = T reshaped to (V, N, *shape)",
        "0 (linear)",
        f"{_C}.Reshape",
        f"{_T}::test_reshape_products_match_torch_func",
    ),
    *product_equations(
        "residual",
        "Residual block",
        "J_xᵀ M = M + J_fᵀ M;  J_θᵢᵀ M = J_{θ,i}ᵀ Mᵢ with Mᵢ₋₁ = J_{x,i}ᵀ Mᵢ down the branch",
        "J_x T = T + J_f T;  Tᵢ = J_{x,i} Tᵢ₋₁ + J_{θ,i} T_θᵢ up the branch",
        "R{gᵢ₋₁} = J_{x,i}ᵀ R{gᵢ} + residual_x,i;  R{∂θᵢ} = J_{θ,i}ᵀ R{gᵢ} + residual_θ,i",
        f"{_C}.Residual",
        f"{_T}::test_residual_products_match_torch_func",
    ),
]
