"""Equations of ``docs/convolution.md`` for the 3-D convolution and the 1-D and 3-D
transposed convolutions (the N-d arithmetic of ``manual_bp.layers._im2col``), with their
products on a leading axis of V vectors."""

from manual_bp.equations._base import Equation
from manual_bp.equations.products import product_equations

_D = "docs/convolution.md"
_T = "tests/test_convolution_nd.py"
_CONV_VJP = (
    "J_xᵀ M = col2im(W_gᵀ M_g);  J_Wᵀ M = M_g U_g(x)ᵀ (per sample: sample n's columns);  "
    "J_bᵀ M = Σ_{n,positions} M"
)
_CONV_JVP = "J_x T = W_g U_g(T);  J_W T_W + J_b T_b = (T_W)_g U_g(x) + T_b"
_CONV_RES = "residual_x = col2im((T_W)_gᵀ dout_g);  residual_W = dout_g U_g(T_x)ᵀ;  residual_b = 0"
_TR_VJP = (
    "J_xᵀ M = crop(W_g U_g(M));  J_Wᵀ M = x̃_g U_g(M)ᵀ (per sample: its columns);  "
    "J_bᵀ M = Σ_{n,positions} M"
)
_TR_JVP = "J_x T = col2im(W_gᵀ T_g);  J_W T_W + J_b T_b = col2im((T_W)_gᵀ x_g) + T_b"
_TR_RES = "residual_x = crop((T_W)_g U_g(dout));  residual_W = T̃_x,g U_g(dout)ᵀ;  residual_b = 0"
_CT = "manual_bp.layers.convolution_transpose"

EQUATIONS = [
    Equation(
        "LAYER.conv3d",
        "Backward pass of Conv3d: CONV.* on three spatial axes",
        "∂C/∂x by CONV.input, ∂C/∂W by CONV.weight, ∂C/∂b[o] = Σ_{n,z,y,x} δ[n,o,z,y,x]",
        f"{_D}#LAYER.conv3d",
        "manual_bp.layers.convolution.Conv3d",
        f"{_T}::test_conv3d_matches_torch",
    ),
    Equation(
        "LAYER.conv-transpose1d",
        "Transposed 1-D convolution (ConvTranspose2d on a height-1 image)",
        "as LAYER.conv-transpose2d with H = 1",
        f"{_D}#LAYER.conv-transpose1d",
        f"{_CT}.ConvTranspose1d",
        f"{_T}::test_conv_transpose_nd_matches_torch",
    ),
    Equation(
        "LAYER.conv-transpose3d",
        "Transposed 3-D convolution as the adjoint of Conv3d",
        "y = Kᵀx + b,  ∂C/∂x = Kδ,  ∂C/∂W = CONV.weight with x and δ swapped (three axes)",
        f"{_D}#LAYER.conv-transpose3d",
        f"{_CT}.ConvTranspose3d",
        f"{_T}::test_conv_transpose_nd_matches_torch",
    ),
    *product_equations(
        "conv3d",
        "Conv3d",
        _CONV_VJP,
        _CONV_JVP,
        _CONV_RES,
        "manual_bp.layers.convolution.Conv3d",
        f"{_T}::test_nd_products_match_torch_func",
        doc=_D,
    ),
    *product_equations(
        "conv-transpose1d",
        "ConvTranspose1d",
        _TR_VJP,
        _TR_JVP,
        _TR_RES,
        f"{_CT}.ConvTranspose1d",
        f"{_T}::test_nd_products_match_torch_func",
        doc=_D,
    ),
    *product_equations(
        "conv-transpose3d",
        "ConvTranspose3d",
        _TR_VJP,
        _TR_JVP,
        _TR_RES,
        f"{_CT}.ConvTranspose3d",
        f"{_T}::test_nd_products_match_torch_func",
        doc=_D,
    ),
]
