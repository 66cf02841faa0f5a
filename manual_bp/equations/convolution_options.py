"""Equations of ``docs/convolution.md`` for torch's options of the convolution family:
padding modes as index maps and adaptive average pooling (with its products)."""

from manual_bp.equations._base import Equation
from manual_bp.equations.products import product_equations

_D = "docs/convolution.md"
_C = "tests/test_convolution.py"
_P = "tests/test_pooling.py"
_A = "manual_bp.layers.pooling_adaptive.AdaptiveAvgPool2d"

EQUATIONS = [
    Equation(
        "PAD.map",
        "Padding modes (reflect, replicate, circular, zeros) as an index map and its VJP",
        "xp[u, v] = x[π_H(u), π_W(v)];  ∂C/∂x[s, r] = Σ_{π_H(u)=s, π_W(v)=r} ∂C/∂xp[u, v]",
        f"{_D}#PAD.map",
        "manual_bp.layers.padding.PadMap",
        f"{_C}::test_padding_modes_match_torch",
    ),
    Equation(
        "LAYER.adaptive-avgpool2d",
        "Adaptive average pooling with torch's windows ⌊yH/Ho⌋ … ⌈(y+1)H/Ho⌉",
        "out = (B_H x B_Wᵀ) / D,  ∂C/∂x = B_Hᵀ (δ / D) B_W",
        f"{_D}#LAYER.adaptive-avgpool2d",
        _A,
        f"{_P}::test_adaptive_avgpool2d_matches_torch",
    ),
    *product_equations(
        "adaptive-avgpool2d",
        "AdaptiveAvgPool2d",
        "J_xᵀ M = B_Hᵀ (M / D) B_W",
        "J_x T = (B_H T B_Wᵀ) / D",
        "0 (linear)",
        _A,
        f"{_P}::test_adaptive_avgpool2d_products_match_torch_func",
        doc=_D,
    ),
]
