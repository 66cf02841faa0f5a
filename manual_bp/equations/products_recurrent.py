"""Equations of ``docs/products.md``: products of RNN, LSTM, GRU and Embedding on a V axis."""

from manual_bp.equations.products import product_equations

_T = "tests/test_products_recurrent.py"
_BPTT_VJP = (
    "BPTT of V cotangent sequences: δS_t += M_t, δa = cell VJP, δS_{t-1} = δa_hh W_hh + direct; "
    "J_xᵀM = δa_ih W_ih;  ∂W_ih = Σ_t δa_ihᵀ x_t, ∂W_hh = Σ_t δa_hhᵀ h_{t-1}, ∂b = Σ_t δa "
    "(per sample: its own steps)"
)
_BPTT_JVP = (
    "forward mode through time: ȧ_ih = ẋ W_ihᵀ + x Ṫ_W_ihᵀ + Ṫ_b_ih, "
    "ȧ_hh = Ṡ_{t-1} W_hhᵀ + h_{t-1} Ṫ_W_hhᵀ + Ṫ_b_hh, Ṡ_t = cell JVP, Ṡ_0 = 0"
)
_R_BPTT = (
    "R-operator through time at fixed dout: tangents Ṡ_t forward, then R{δa} = cell rvjp, "
    "R{δS_{t-1}} = R{δa_hh} W_hh + δa_hh Ṫ_W_hh + R{direct}; residual_x = R{δa_ih} W_ih + "
    "δa_ih Ṫ_W_ih; residual_W_ih = Σ R{δa_ih}ᵀ x + δa_ihᵀ ẋ, residual_W_hh = Σ R{δa_hh}ᵀ h₋ + "
    "δa_hhᵀ ḣ₋"
)

EQUATIONS = [
    *product_equations(
        "rnn",
        "RNN",
        _BPTT_VJP + ";  δa = δh φ′",
        _BPTT_JVP + ";  ḣ = φ′ ȧ",
        _R_BPTT + ";  R{δa} = R{δh} φ′ + δh φ″ ȧ, tanh″ȧ = −2 h ḣ, relu″ = 0",
        "manual_bp.layers.recurrent.RNN",
        f"{_T}::test_rnn_products_match_torch_func",
    ),
    *product_equations(
        "lstm",
        "LSTM",
        _BPTT_VJP + ";  δc = δc₊ + δh o k′, δa = [δc g i′, δc c₋ f′, δc i g′, δh k o′]",
        _BPTT_JVP + ";  ċ = ḟ c₋ + f ċ₋ + i̇ g + i ġ, ḣ = ȯ k + o k′ ċ",
        _R_BPTT + ";  the gates' σ″ = σ′(1 − 2σ), tanh″ = −2 tanh tanh′ and the gate products",
        "manual_bp.layers.recurrent.LSTM",
        f"{_T}::test_lstm_products_match_torch_func",
    ),
    *product_equations(
        "gru",
        "GRU",
        _BPTT_VJP + ";  δaₙ = δh (1 − z) n′, δa_z = δh (h₋ − n) z′, δa_r = δaₙ hₙ r′",
        _BPTT_JVP + ";  ṅ = n′(i̇ₙ + ṙ hₙ + r ḣₙ), ḣ = (1 − z) ṅ + ż (h₋ − n) + z ḣ₋",
        _R_BPTT + ";  the gates' σ″, tanh″ and the products r hₙ, z h₋, (1 − z) n",
        "manual_bp.layers.recurrent.GRU",
        f"{_T}::test_gru_products_match_torch_func",
    ),
    *product_equations(
        "embedding",
        "Embedding",
        "(J_Wᵀ M)[k] = Σ_{x[n,r] = k} M[n,r] (scatter-add; padding row 0; per sample: its own "
        "positions);  no input products (indices)",
        "J_W T_W = T_W[x] (gather; padding positions 0)",
        "0 (out = W[x] is linear in W)",
        "manual_bp.layers.embedding.Embedding",
        f"{_T}::test_embedding_products_match_torch_func",
        methods=("param_vjp", "param_jvp", "residual"),
    ),
]
