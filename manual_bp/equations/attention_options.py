"""Equations of ``docs/sequences.md`` for ``nn.MultiheadAttention``'s options (issue 23)."""

from manual_bp.equations._base import Equation

_D = "docs/sequences.md"
_T = "tests/test_attention_options.py"
_CORE = "manual_bp.layers.attention_core"

EQUATIONS = [
    Equation(
        "ATT.bias-kv",
        "Extra key/value rows (add_bias_kv) and the zero key (add_zero_attn)",
        "K ← [K; bias_k], V ← [V; bias_v], K_h ← [K_h; 0], V_h ← [V_h; 0];  "
        "bias_k̄ = Σ_n K̄[n, S], the zero key's gradient dropped; masks padded with 0",
        f"{_D}#ATT.bias-kv",
        f"{_CORE}.mha_forward",
        f"{_T}::test_every_option_matches_torch_module",
    ),
    Equation(
        "ATT.dropout",
        "Dropout on the attention weights",
        "P̃ = P ⊙ m, m = keep/(1 − p);  out = P̃ V;  P̄ = (Ō Vᵀ) ⊙ m,  V̄ = P̃ᵀ Ō",
        f"{_D}#ATT.dropout",
        f"{_CORE}.mha_forward",
        f"{_T}::test_dropout_on_weights_is_seeded_and_matches_its_mask",
    ),
]
