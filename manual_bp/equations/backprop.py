"""Equations of ``docs/backprop.md`` and ``docs/training.md`` (Nielsen ch. 1–2)."""

from manual_bp.equations._base import Equation

_BP = "docs/backprop.md"
_T = "tests/test_backprop.py"

EQUATIONS = [
    Equation(
        "FWD.dense",
        "Forward pass of a dense layer",
        "zˡ = aˡ⁻¹ Wˡᵀ + bˡ,  aˡ = σ(zˡ)",
        f"{_BP}#FWD.dense",
        "manual_bp.models.network.Network.forward",
        f"{_T}::test_forward_matches_torch",
    ),
    Equation(
        "BP1",
        "Output error",
        "δᴸ = ∇ₐC ⊙ σ'(zᴸ)",
        f"{_BP}#BP1",
        "manual_bp.costs.base.Cost.delta",
        f"{_T}::test_bp1_output_error",
    ),
    Equation(
        "BP2",
        "Error of a hidden layer",
        "δˡ = ((Wˡ⁺¹)ᵀ δˡ⁺¹) ⊙ σ'(zˡ)",
        f"{_BP}#BP2",
        "manual_bp.layers.dense.dense_backward",
        f"{_T}::test_bp2_hidden_errors",
    ),
    Equation(
        "BP3",
        "Gradient of the biases",
        "∂C/∂bˡ = (1/n) Σₓ δˡₓ",
        f"{_BP}#BP3",
        "manual_bp.layers.dense.dense_backward",
        f"{_T}::test_bp3_bias_gradients",
    ),
    Equation(
        "BP4",
        "Gradient of the weights",
        "∂C/∂Wˡ = (1/n) Σₓ δˡₓ (aˡ⁻¹ₓ)ᵀ",
        f"{_BP}#BP4",
        "manual_bp.layers.dense.dense_backward",
        f"{_T}::test_bp4_weight_gradients",
    ),
    Equation(
        "BP.input",
        "Gradient of the inputs",
        "∂C/∂x = (1/n) δ¹ W¹ (row-wise)",
        f"{_BP}#BP.input",
        "manual_bp.models.network.Network.backprop",
        f"{_T}::test_input_gradient",
    ),
    Equation(
        "BP.single",
        "Backpropagation for one sample (seed equations)",
        "δᴸ = ∇ₐC ⊙ σ'(zᴸ); δˡ = (Wˡ⁺¹)ᵀδˡ⁺¹ ⊙ σ'(zˡ); ∂C/∂b = δ; ∂C/∂W = δ aᵀ",
        f"{_BP}#BP.single",
        "manual_bp.models.network.Network.backprop_single",
        f"{_T}::test_loop_form_equals_matrix_form",
    ),
    Equation(
        "SGD.average",
        "Mini-batch gradient as the mean of per-sample gradients",
        "∂C/∂θ = (1/n) Σₓ ∂Cₓ/∂θ",
        f"{_BP}#SGD.average",
        "manual_bp.models.network.Network.backprop_per_sample",
        f"{_T}::test_per_sample_gradients_match_vmap",
    ),
    Equation(
        "LAYER.dense",
        "Backward pass of a dense layer (any upstream gradient)",
        "∂C/∂x = dz W,  ∂C/∂W = dzᵀ x,  ∂C/∂b = Σ_rows dz",
        f"{_BP}#LAYER.dense",
        "manual_bp.layers.dense.dense_backward",
        "tests/test_layers.py::test_dense_layer_backward_matches_torch",
    ),
    Equation(
        "INIT.default",
        "Nielsen's default initialisation",
        "Wⱼₖ ~ N(0, 1/n_in),  bⱼ ~ N(0, 1)",
        "docs/training.md#INIT.default",
        "manual_bp.initializers.default_initializer",
        "tests/test_training.py::test_default_initializer_statistics",
    ),
    Equation(
        "OPT.sgd",
        "Stochastic gradient descent step",
        "θ ← θ − η ∂C/∂θ",
        "docs/training.md#OPT.sgd",
        "manual_bp.optimizers.sgd.SGD",
        "tests/test_training.py::test_sgd_step_matches_torch",
    ),
    Equation(
        "REG.l2",
        "L2 regularisation (Nielsen's weight decay)",
        "C = C₀ + (λ/2N) Σ w²;  w ← (1 − ηλ/N) w − η ∂C₀/∂w",
        "docs/training.md#REG.l2",
        "manual_bp.regularizers.L2",
        "tests/test_training.py::test_l2_step_matches_torch_weight_decay",
    ),
]
