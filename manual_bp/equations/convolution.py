"""Equations of ``docs/convolution.md``: convolution, transposed convolution, pooling."""

from manual_bp.equations._base import Equation

_D = "docs/convolution.md"
_C = "tests/test_convolution.py"
_P = "tests/test_pooling.py"
_IM = "manual_bp.layers._im2col"

EQUATIONS = [
    Equation(
        "CONV.forward",
        "Forward pass of a 2-D convolution (cross-correlation, torch's)",
        "out[n,o,y,x] = b[o] + Σ_{c,i,j} W[o,c,i,j]·xp[n, g·C_g+c, y·s+i·d, x·s+j·d]",
        f"{_D}#CONV.forward",
        f"{_IM}.conv_forward_readable",
        f"{_C}::test_conv2d_layer_matches_torch",
    ),
    Equation(
        "CONV.weight",
        "Weight gradient of a convolution",
        "∂C/∂W[o,c,i,j] = Σ_{n,y,x} δ[n,o,y,x]·xp[n, g·C_g+c, y·s+i·d, x·s+j·d]",
        f"{_D}#CONV.weight",
        f"{_IM}.conv_weight_grad_readable",
        f"{_C}::test_conv_gradients_match_finite_differences",
    ),
    Equation(
        "CONV.input",
        "Input gradient of a convolution: full correlation of the stride-dilated δ "
        "with the flipped kernel",
        "∂C/∂xp[n,c,u,v] = Σ_{o,i,j} W[o,c,k−1−i,…]·Dpad[n,o,u+i·d,v+j·d]",
        f"{_D}#CONV.input",
        f"{_IM}.conv_input_grad_readable",
        f"{_C}::test_adjoint_identity",
    ),
    Equation(
        "CONV.fast",
        "im2col + GEMM form of the convolution and its gradients",
        "out_g = W_g·cols_g;  ∂C/∂W_g = δ_g·cols_gᵀ;  dcols_g = W_gᵀ·δ_g, col2im",
        f"{_D}#CONV.fast",
        f"{_IM}.conv_forward_fast",
        f"{_C}::test_readable_equals_fast",
    ),
    Equation(
        "LAYER.conv2d",
        "Backward pass of Conv2d (any upstream gradient)",
        "∂C/∂x by CONV.input, ∂C/∂W by CONV.weight, ∂C/∂b[o] = Σ_{n,y,x} δ[n,o,y,x]",
        f"{_D}#LAYER.conv2d",
        "manual_bp.layers.convolution.Conv2d",
        f"{_C}::test_conv2d_layer_matches_torch",
    ),
    Equation(
        "LAYER.conv1d",
        "Backward pass of Conv1d (Conv2d on a height-1 image)",
        "as LAYER.conv2d with H = 1",
        f"{_D}#LAYER.conv1d",
        "manual_bp.layers.convolution.Conv1d",
        f"{_C}::test_conv1d_layer_matches_torch",
    ),
    Equation(
        "LAYER.conv-transpose2d",
        "Transposed convolution as the adjoint of a convolution",
        "y = Kᵀx + b,  ∂C/∂x = Kδ,  ∂C/∂W = CONV.weight with x and δ swapped",
        f"{_D}#LAYER.conv-transpose2d",
        "manual_bp.layers.convolution_transpose.ConvTranspose2d",
        f"{_C}::test_conv_transpose2d_matches_torch",
    ),
    Equation(
        "LAYER.maxpool2d",
        "Max pooling: the gradient goes to the first maximum of each window",
        "∂C/∂x[u,v] = Σ_{(y,x): first argmax of window (y,x) = (u,v)} δ[y,x]",
        f"{_D}#LAYER.maxpool2d",
        "manual_bp.layers.pooling.MaxPool2d",
        f"{_P}::test_maxpool2d_matches_torch",
    ),
    Equation(
        "LAYER.avgpool2d",
        "Average pooling with torch's divisor",
        "∂C/∂x[u,v] = Σ_{windows (y,x) ∋ (u,v)} δ[y,x] / divisor[y,x]",
        f"{_D}#LAYER.avgpool2d",
        "manual_bp.layers.pooling.AvgPool2d",
        f"{_P}::test_avgpool2d_matches_torch",
    ),
    Equation(
        "LAYER.global-avgpool2d",
        "Global average pooling (adaptive average pooling to 1×1)",
        "∂C/∂x[n,c,u,v] = δ[n,c] / (H·W)",
        f"{_D}#LAYER.global-avgpool2d",
        "manual_bp.layers.pooling.GlobalAvgPool2d",
        f"{_P}::test_global_avgpool2d_matches_torch",
    ),
]
