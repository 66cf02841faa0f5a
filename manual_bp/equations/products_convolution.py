"""Equations of ``docs/products.md`` for the convolution family: Conv1d, Conv2d and
ConvTranspose2d products on a leading axis of V vectors, in im2col form (``U_g(x)`` the
unfolded input of group ``g``, ``W_g`` its weight matrix)."""

from manual_bp.equations.products import product_equations

_T = "tests/test_products_convolution.py"
_CONV_VJP = (
    "J_xᵀ M = col2im(W_gᵀ M_g);  J_Wᵀ M = M_g U_g(x)ᵀ (per sample: sample n's columns);  "
    "J_bᵀ M = Σ_{n,y,x} M"
)
_CONV_JVP = "J_x T = W_g U_g(T);  J_W T_W + J_b T_b = (T_W)_g U_g(x) + T_b"
_CONV_RES = "residual_x = col2im((T_W)_gᵀ dout_g);  residual_W = dout_g U_g(T_x)ᵀ;  residual_b = 0"

EQUATIONS = [
    *product_equations(
        "conv2d",
        "Conv2d",
        _CONV_VJP,
        _CONV_JVP,
        _CONV_RES,
        "manual_bp.layers.convolution.Conv2d",
        f"{_T}::test_conv_products_match_torch_func",
    ),
    *product_equations(
        "conv1d",
        "Conv1d",
        _CONV_VJP,
        _CONV_JVP,
        _CONV_RES,
        "manual_bp.layers.convolution.Conv1d",
        f"{_T}::test_conv_products_match_torch_func",
    ),
    *product_equations(
        "conv-transpose2d",
        "ConvTranspose2d",
        "J_xᵀ M = crop(W_g U_g(M));  J_Wᵀ M = x̃_g U_g(M)ᵀ (per sample: its columns);  "
        "J_bᵀ M = Σ_{n,y,x} M",
        "J_x T = col2im(W_gᵀ T_g);  J_W T_W + J_b T_b = col2im((T_W)_gᵀ x_g) + T_b",
        "residual_x = crop((T_W)_g U_g(dout));  residual_W = T̃_x,g U_g(dout)ᵀ;  residual_b = 0",
        "manual_bp.layers.convolution_transpose.ConvTranspose2d",
        f"{_T}::test_conv_products_match_torch_func",
    ),
]
