"""Equations of ``docs/products.md``: products of batch norm, layer norm and dropout.

IDs ``PROD.batchnorm1d.*``, ``PROD.batchnorm2d.*``, ``PROD.layernorm.*`` (one implementation,
:class:`~manual_bp.layers.normalisation_products.NormProducts`, for the three classes),
``PROD.dropout.*`` and ``PROD.dropout2d.*`` (elementwise layers: ``φ′`` only).
"""

from manual_bp.equations.products import product_equations

_T = "tests/test_products_normalisation.py"
_NORM = "manual_bp.layers.normalisation_products.NormProducts"

_VJP = (
    "J_xᵀ M = J_N(γ ⊙ M);  J_γᵀ M = Σ M ⊙ x̂;  J_βᵀ M = Σ M;  "
    "J_N T = s (T − mean_A T − x̂ mean_A(x̂ T)) (batch statistics, symmetric) or s T (running)"
)
_JVP = "J_x T = γ ⊙ J_N T;  J_γ T_γ + J_β T_β = x̂ ⊙ T_γ + T_β"
_RESIDUAL = (
    "residual_x = −s² (m_T h̃ + m_h T̃ + x̂ (mean(h̃ T) − 3 m_T m_h)) [batch statistics] "
    "+ J_N(dout ⊙ T_γ);  residual_γ = Σ dout ⊙ J_N T;  residual_β = 0  (h = γ ⊙ dout)"
)

EQUATIONS = [
    *product_equations(
        "batchnorm1d",
        "BatchNorm1d",
        _VJP,
        _JVP,
        _RESIDUAL,
        _NORM,
        f"{_T}::test_batchnorm1d_products_match_torch_func",
    ),
    *product_equations(
        "batchnorm2d",
        "BatchNorm2d",
        _VJP,
        _JVP,
        _RESIDUAL,
        _NORM,
        f"{_T}::test_batchnorm2d_products_match_torch_func",
    ),
    *product_equations(
        "layernorm",
        "LayerNorm",
        _VJP.replace("(batch statistics, symmetric) or s T (running)", "(symmetric)"),
        _JVP,
        _RESIDUAL.replace(" [batch statistics]", ""),
        _NORM,
        f"{_T}::test_layernorm_products_match_torch_func",
    ),
    *product_equations(
        "dropout",
        "Dropout",
        "J_xᵀ M = φ′ ⊙ M,  φ′ = m/(1 − p) (training), 1 (evaluation)",
        "J_x T = φ′ ⊙ T",
        "0 (φ″ = 0: linear for a fixed mask)",
        "manual_bp.layers.dropout.Dropout",
        f"{_T}::test_dropout_products_match_torch_func",
        methods=("derivative", "derivative", "residual"),
    ),
    *product_equations(
        "dropout2d",
        "Dropout2d",
        "J_xᵀ M = φ′ ⊙ M,  φ′ = m_(n,c)/(1 − p) broadcast over space (training), 1 (evaluation)",
        "J_x T = φ′ ⊙ T",
        "0 (φ″ = 0: linear for a fixed mask)",
        "manual_bp.layers.dropout.Dropout2d",
        f"{_T}::test_dropout2d_products_match_torch_func",
        methods=("derivative", "derivative", "residual"),
    ),
]
