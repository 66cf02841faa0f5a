"""Equations of ``docs/layers.md``: normalisation, dropout and initialisation schemes."""

from manual_bp.equations._base import Equation

_D = "docs/layers.md"
_N = "tests/test_normalisation.py"

EQUATIONS = [
    Equation(
        "LAYER.batchnorm",
        "Batch norm, training mode (batch statistics)",
        "∂C/∂x = (1/√(σ²+ε))·(g − mean g − x̂·mean(g x̂)),  g = γ·∂C/∂y;  "
        "∂C/∂γ = Σ ∂C/∂y·x̂,  ∂C/∂β = Σ ∂C/∂y",
        f"{_D}#LAYER.batchnorm",
        "manual_bp.layers.normalisation.normalise_backward",
        f"{_N}::test_batchnorm_matches_torch",
    ),
    Equation(
        "LAYER.batchnorm.running",
        "Batch norm running statistics",
        "r ← (1 − m)·r + m·stat,  running_var uses σ²·n/(n − 1);  m = 1/t when momentum=None",
        f"{_D}#LAYER.batchnorm.running",
        "manual_bp.layers.normalisation._BatchNorm._update_running",
        f"{_N}::test_running_statistics_match_torch_module",
    ),
    Equation(
        "LAYER.batchnorm.eval",
        "Batch norm, evaluation mode (running statistics)",
        "y = γ (x − r_μ)/√(r_σ² + ε) + β,  ∂C/∂x = γ ∂C/∂y/√(r_σ² + ε)",
        f"{_D}#LAYER.batchnorm.eval",
        "manual_bp.layers.normalisation._BatchNorm.backward",
        f"{_N}::test_batchnorm_matches_torch",
    ),
    Equation(
        "LAYER.layernorm",
        "Layer norm (per-sample statistics over the trailing axes)",
        "the batch-norm VJP with the group = normalized_shape axes of one sample",
        f"{_D}#LAYER.layernorm",
        "manual_bp.layers.normalisation.LayerNorm.backward",
        f"{_N}::test_layernorm_matches_torch",
    ),
    Equation(
        "LAYER.dropout",
        "Inverted dropout",
        "y = x ⊙ m/(1 − p),  ∂C/∂x = ∂C/∂y ⊙ m/(1 − p),  m ~ Bernoulli(1 − p)",
        f"{_D}#LAYER.dropout",
        "manual_bp.layers.dropout.Dropout.backward",
        "tests/test_dropout.py::test_dropout_matches_torch",
    ),
    Equation(
        "INIT.schemes",
        "Initialisation schemes and their variances",
        "Var = 2g²/(fan_in + fan_out) (Xavier), g²/fan (Kaiming), 1/fan_in (Nielsen); "
        "U(−a, a) has variance a²/3",
        f"{_D}#INIT.schemes",
        "manual_bp.initializers.initialize",
        "tests/test_initializers.py::test_scheme_moments_match_derivation_and_torch",
    ),
]
