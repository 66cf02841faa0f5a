"""Equations of ``docs/pooling.md``: pooling on 1, 2 and 3 axes — sliding max and average
windows in N-d, adaptive average and max windows, power-average (LP) pooling and fractional
max pooling — with their products on the V axis."""

from manual_bp.equations._base import Equation
from manual_bp.equations.products import product_equations

_D = "docs/pooling.md"
_N = "tests/test_pooling_nd.py"
_S = "tests/test_pooling_select.py"
_L = "manual_bp.layers"

EQUATIONS = [
    Equation(
        "LAYER.maxpool-nd",
        "Max pooling on 1 or 3 axes: the gradient goes to the first maximum of each window",
        "∂C/∂x[u] = Σ_{windows y whose first maximum is u} δ[y]",
        f"{_D}#LAYER.maxpool-nd",
        f"{_L}.pooling.MaxPool1d",
        f"{_N}::test_maxpool_nd_matches_torch",
    ),
    *product_equations(
        "maxpool-nd",
        "MaxPool1d/3d",
        "J_xᵀ M: each window's M goes to its winner m(y) (first maximum, never padding)",
        "(J_x T)[y] = T[m(y)]",
        "0 almost everywhere (a selection)",
        f"{_L}.pooling.MaxPool3d",
        f"{_N}::test_nd_pool_products_match_torch_func",
        doc=_D,
    ),
    Equation(
        "LAYER.avgpool-nd",
        "Average pooling on 1 or 3 axes with torch's divisor",
        "∂C/∂x[u] = Σ_{windows y ∋ u} δ[y] / D[y],  D[y] = Π_a c_a[y_a] (or the override)",
        f"{_D}#LAYER.avgpool-nd",
        f"{_L}.pooling.AvgPool1d",
        f"{_N}::test_avgpool_nd_matches_torch",
    ),
    *product_equations(
        "avgpool-nd",
        "AvgPool1d/3d",
        "J_xᵀ M[u] = Σ_{windows y ∋ u} M[y] / D[y]",
        "J_x T = Σ_i T^p[y·s + i] / D[y]",
        "0 (linear)",
        f"{_L}.pooling.AvgPool3d",
        f"{_N}::test_nd_pool_products_match_torch_func",
        doc=_D,
    ),
    Equation(
        "LAYER.adaptive-avgpool-nd",
        "Adaptive average pooling on 1 or 3 axes: one window matrix per axis",
        "out = (x ×₁ B_1 ×₂ B_2 …) / D,  ∂C/∂x = (δ / D) ×₁ B_1ᵀ ×₂ B_2ᵀ …",
        f"{_D}#LAYER.adaptive-avgpool-nd",
        f"{_L}.pooling_adaptive.AdaptiveAvgPool1d",
        f"{_S}::test_adaptive_avgpool_nd_matches_torch",
    ),
    *product_equations(
        "adaptive-avgpool-nd",
        "AdaptiveAvgPool1d/3d",
        "J_xᵀ M = (M / D) ×₁ B_1ᵀ …",
        "J_x T = (T ×₁ B_1 …) / D",
        "0 (linear)",
        f"{_L}.pooling_adaptive.AdaptiveAvgPool3d",
        f"{_S}::test_adaptive_pool_products_match_torch_func",
        doc=_D,
    ),
    Equation(
        "LAYER.adaptive-maxpool",
        "Adaptive max pooling: the first maximum of each window ⌊yS/O⌋ … ⌈(y+1)S/O⌉",
        "out[y] = x[m(y)],  ∂C/∂x[u] = Σ_{y : m(y) = u} δ[y]",
        f"{_D}#LAYER.adaptive-maxpool",
        f"{_L}.pooling_adaptive.AdaptiveMaxPoolNd",
        f"{_S}::test_adaptive_maxpool_matches_torch",
    ),
    *product_equations(
        "adaptive-maxpool",
        "AdaptiveMaxPool1d/2d/3d",
        "J_xᵀ M[u] = Σ_{y : m(y) = u} M[y]",
        "(J_x T)[y] = T[m(y)]",
        "0 almost everywhere (a selection)",
        f"{_L}.pooling_adaptive.AdaptiveMaxPool2d",
        f"{_S}::test_adaptive_pool_products_match_torch_func",
        doc=_D,
    ),
    Equation(
        "LAYER.lppool",
        "Power-average pooling: (K·avg(x^p))^{1/p}, zero windows pass no gradient",
        "∂C/∂x[u] = p x[u]^{p−1} Σ_{y ∋ u} (K/c[y]) h'(f[y]) δ[y] [f[y] ≠ 0],  h(f) = f^{1/p}",
        f"{_D}#LAYER.lppool",
        f"{_L}.pooling_lp.LPPoolNd",
        f"{_N}::test_lppool_matches_torch",
    ),
    *product_equations(
        "lppool",
        "LPPool1d/2d/3d",
        "J_xᵀ M = p x^{p−1} Σ_{y ∋ u} (K/c) h'(f) M[y]",
        "J_x T = (K/c) h'(f) Σ_{i ∈ y} p x_i^{p−1} T_i",
        "p x^{p−1} Σ (K/c)² h''(f) δ (Σ p x^{p−1} T) + p(p−1) x^{p−2} T Σ (K/c) h'(f) δ",
        f"{_L}.pooling_lp.LPPoolNd",
        f"{_N}::test_lppool_products_match_torch_func",
        doc=_D,
    ),
    Equation(
        "LAYER.fractional-maxpool",
        "Fractional max pooling: windows at torch's pseudo-random sequence, first maximum",
        "seq[y] = ⌊(y+α)(S−k)/(O−1)⌋ − ⌊α(S−k)/(O−1)⌋,  ∂C/∂x[u] = Σ_{y : m(y) = u} δ[y]",
        f"{_D}#LAYER.fractional-maxpool",
        f"{_L}.pooling_fractional.FractionalMaxPoolNd",
        f"{_S}::test_fractional_maxpool_matches_torch",
    ),
    *product_equations(
        "fractional-maxpool",
        "FractionalMaxPool2d/3d",
        "J_xᵀ M[u] = Σ_{y : m(y) = u} M[y]",
        "(J_x T)[y] = T[m(y)]",
        "0 almost everywhere (a selection)",
        f"{_L}.pooling_fractional.FractionalMaxPool2d",
        f"{_S}::test_fractional_maxpool_products_match_torch_func",
        doc=_D,
    ),
]
