"""Equations of ``docs/curvature.md`` "Every layer": curvature as walks of the layer protocol."""

from manual_bp.equations._base import Equation

_D = "docs/curvature.md"
_T = "tests/test_curvature_layers.py::"

EQUATIONS = [
    Equation(
        "CURV.layer-walk",
        "Curvature as a walk of every layer's V-axis products",
        "R{z_k} = J_x R{z_(k-1)} + J_θ v_k; R{δ_(k-1)} = J_xᵀ R{δ_k} + res_x; "
        "(Hv)_k = J_θᵀ R{δ_k} + res_θ",
        f"{_D}#CURV.layer-walk",
        "manual_bp.curvature.chain.as_chain",
        _T + "test_every_quantity_equals_torch_func",
    ),
    Equation(
        "CURV.rows",
        "Row weights of an output of any rank (sequences, ignore_index)",
        "C = Σ_r w_r ℓ(f_r, y_r), w_r = 1[r counted]/R_c; C_x = n Σ_(r∈x) w_r ℓ_r",
        f"{_D}#CURV.rows",
        "manual_bp.curvature.loss.row_weights",
        _T + "test_every_quantity_equals_torch_func",
    ),
    Equation(
        "CURV.coupled-batch",
        "Factor columns one output row at a time for a coupled batch",
        "G = Σ_r Σ_c (Jᵀ e_r s_rc)(Jᵀ e_r s_rc)ᵀ; diag G = Σ_(r,c) (J_θᵀ e_r s_rc)²",
        f"{_D}#CURV.coupled-batch",
        "manual_bp.curvature.loss.factor_columns",
        _T + "test_batch_norm_in_training_couples_the_batch_and_eval_does_not",
    ),
    Equation(
        "CURV.diag-hessian-own",
        "A layer's own second-order term on its parameters' diagonal",
        "∂²C/∂θᵢ² = [J_θᵀ H_z J_θ]ᵢᵢ + Σ_o g_o ∂²z_o/∂θᵢ²",
        f"{_D}#CURV.diag-hessian-own",
        "manual_bp.curvature.diagonal.diag_hessian",
        _T + "test_every_quantity_equals_torch_func",
    ),
]
