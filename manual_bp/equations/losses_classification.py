"""Equations of ``docs/losses_classification.md``: torch's classification losses."""

from manual_bp.equations._base import Equation

_D = "docs/losses_classification.md"
_T = "tests/test_losses_classification.py"
_C = "manual_bp.losses.classification"
_M = "manual_bp.losses.multi_margin"
_L = "manual_bp.losses.linear_classification"
_TL = "tests/test_losses_linear.py"

EQUATIONS = [
    Equation(
        "LOSS.nll",
        "NLLLoss (torch): weighted negative log-likelihood, ignore_index, weighted mean",
        "ℓᵢ = −w_{yᵢ} x_{i,yᵢ}; mean = Σℓᵢ / Σ_{i kept} w_{yᵢ}",
        f"{_D}#LOSS.nll",
        f"{_C}.NLLLoss",
        f"{_T}::test_nll_matches_torch",
    ),
    Equation(
        "LOSS.nll.grad",
        "Gradient of NLLLoss",
        "∂ℓᵢ/∂x_{ic} = −w_{yᵢ} [c = yᵢ] (0 on ignored rows)",
        f"{_D}#LOSS.nll.grad",
        f"{_C}.NLLLoss",
        f"{_T}::test_nll_matches_torch",
    ),
    Equation(
        "LOSS.cross-entropy",
        "CrossEntropyLoss (torch): weights, ignore_index, label smoothing, probability targets",
        "ℓᵢ = −Σ_c a_{ic} ln softmax(zᵢ)_c, aᵢ = (1−ε) w_{yᵢ} e_{yᵢ} + (ε/C) w",
        f"{_D}#LOSS.cross-entropy",
        f"{_C}.CrossEntropyLoss",
        f"{_T}::test_cross_entropy_matches_torch",
    ),
    Equation(
        "LOSS.cross-entropy.grad",
        "Gradient of CrossEntropyLoss: softmax minus the weighted target mixture",
        "∂ℓᵢ/∂zᵢ = (Σ_c a_{ic}) pᵢ − aᵢ; ∂ℓᵢ/∂t_{ic} = −(1−ε) w_c ln p_{ic}",
        f"{_D}#LOSS.cross-entropy.grad",
        f"{_C}.CrossEntropyLoss",
        f"{_T}::test_cross_entropy_matches_torch",
    ),
    Equation(
        "LOSS.cross-entropy.hessian",
        "Output Hessian of CrossEntropyLoss",
        "∂²ℓᵢ/∂zᵢ² = (Σ_c a_{ic}) (diag pᵢ − pᵢ pᵢᵀ)",
        f"{_D}#LOSS.cross-entropy.hessian",
        f"{_C}.CrossEntropyLoss.input_hessian",
        f"{_T}::test_cross_entropy_hessian_matches_torch_double_backward",
    ),
    Equation(
        "LOSS.multi-margin",
        "MultiMarginLoss (torch): the multi-class hinge with 1/C and the target's weight",
        "ℓᵢ = (1/C) Σ_{j≠yᵢ} w_{yᵢ} max(0, m − x_{i,yᵢ} + x_{ij})^p",
        f"{_D}#LOSS.multi-margin",
        f"{_M}.MultiMarginLoss",
        f"{_T}::test_multi_margin_matches_torch",
    ),
    Equation(
        "LOSS.multi-margin.grad",
        "Gradient of MultiMarginLoss",
        "∂ℓᵢ/∂x_{ij} = (w_{yᵢ}/C) p h_{ij}^{p−1} [h_{ij} > 0], ∂ℓᵢ/∂x_{i,yᵢ} = −Σ_j of those",
        f"{_D}#LOSS.multi-margin.grad",
        f"{_M}.MultiMarginLoss",
        f"{_T}::test_multi_margin_matches_torch",
    ),
    Equation(
        "LOSS.multi-margin.hessian",
        "Output Hessian of MultiMarginLoss (p = 2; 0 for p = 1)",
        "Hᵢ = (2 w_{yᵢ}/C) Σ_{j active} (e_j − e_{yᵢ})(e_j − e_{yᵢ})ᵀ",
        f"{_D}#LOSS.multi-margin.hessian",
        f"{_M}.MultiMarginLoss.input_hessian",
        f"{_T}::test_multi_margin_hessian_matches_torch",
    ),
    Equation(
        "LOSS.linear-cross-entropy",
        "LinearCrossEntropyLoss (torch): a linear projection to (N, C, d…) logits, then "
        "CrossEntropyLoss",
        "z = x Wᵀ + b reshaped to (N, C, d…); value = CrossEntropyLoss(z, target)",
        f"{_D}#LOSS.linear-cross-entropy",
        f"{_L}.LinearCrossEntropyLoss",
        f"{_TL}::test_linear_cross_entropy_matches_torch",
    ),
    Equation(
        "LOSS.linear-cross-entropy.grad",
        "Gradients of LinearCrossEntropyLoss: input, linear.weight, linear.bias (chunked too)",
        "δ = ∂⟨g, value⟩/∂z (cross-entropy's); ∂x = δ W, ∂W = δᵀ x, ∂b = Σ_rows δ",
        f"{_D}#LOSS.linear-cross-entropy.grad",
        f"{_L}.LinearCrossEntropyLoss.backward_with_params",
        f"{_TL}::test_linear_cross_entropy_matches_torch",
    ),
    Equation(
        "LOSS.linear-cross-entropy.hessian",
        "Input Hessian of LinearCrossEntropyLoss, per sample",
        "∂²⟨g, value⟩/∂xₙ² = Σ_j W_jᵀ gᵢ sᵢ (diag pᵢ − pᵢ pᵢᵀ) W_j over the sample's positions",
        f"{_D}#LOSS.linear-cross-entropy.hessian",
        f"{_L}.LinearCrossEntropyLoss.input_hessian",
        f"{_TL}::test_linear_cross_entropy_hessian_matches_torch_double_backward",
    ),
]
