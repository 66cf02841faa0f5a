"""Equations of ``docs/transformer.md``: the decoder's cross-attention products."""

from manual_bp.equations._base import Equation

EQUATIONS = [
    Equation(
        "TF.cross-products",
        "Cross-attention's products as self-attention products over [x; m] with a block mask",
        "CA(x, m) = SA_A([x; m])_{1:Lq};  [x̄; m̄] = J_zᵀ [M; 0],  m̄ = K̄ W_k + V̄ W_v;  "
        "the decoder's m̄ = Σ_k m̄_k over its layers",
        "docs/transformer.md#TF.cross-products",
        "manual_bp.layers.transformer_cross.CrossAttend",
        "tests/test_products_transformer_decoder.py::test_memory_products_match_torch_func",
    ),
]
