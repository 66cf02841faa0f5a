"""Equations of ``docs/products.md``: multi-head self-attention's products on the V axis."""

from manual_bp.equations.products import product_equations

_T = "tests/test_products_attention.py"

EQUATIONS = product_equations(
    "multihead-attention",
    "Multi-head self-attention",
    "∂u = [s ∂S k, s ∂Sᵀ q, Pᵀ ∂O] with ∂S = P ⊙ (∂P − ⟨∂P, P⟩), ∂P = ∂O vᵀ, ∂O = M W_o;  "
    "J_xᵀ M = ∂u W_in;  J_W_inᵀ M = Σ_rows ∂uᵀ x;  J_W_oᵀ M = Σ_rows Mᵀ Z (per sample: its rows)",
    "du = T W_inᵀ + x T_W_inᵀ + T_b_in;  dS = s(dq kᵀ + q dkᵀ);  dP = P ⊙ (dS − ⟨P, dS⟩);  "
    "dO = dP v + P dv;  dout = dZ W_oᵀ + Z T_W_oᵀ + T_b_o",
    "R-operator of the chain: at each bilinear step (x,W_in), (q,k), (P,v), (Z,W_o) its two "
    "mixed terms; at the softmax Σ_k ∂P_k ∇²P_k dS (ACT2.softmax)",
    "manual_bp.layers.attention.MultiheadAttention",
    f"{_T}::test_mha_products_match_torch_func",
)
