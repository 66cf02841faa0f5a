"""Equations of ``docs/sequences.md`` (recurrent layers, BPTT, embedding, attention)."""

from manual_bp.equations._base import Equation

_D = "docs/sequences.md"
_R = "tests/test_recurrent.py"
_A = "tests/test_attention.py"
_S = "tests/test_sequence_training.py"
_P = "tests/test_padding.py"
_CELLS = "manual_bp.layers.recurrent_cells"

EQUATIONS = [
    Equation(
        "RNN.step",
        "Elman RNN step and its VJP",
        "h_t = φ(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh);  ā = h̄ ⊙ φ',  x̄ = ā W_ih,  h̄_{t-1} = ā W_hh",
        f"{_D}#RNN.step",
        f"{_CELLS}.rnn_step_backward",
        f"{_R}::test_recurrent_matches_torch",
    ),
    Equation(
        "LSTM.step",
        "LSTM step (gates i, f, g, o) and its VJP",
        "c_t = f⊙c + i⊙g, h_t = o⊙tanh c_t;  ĉ = c̄_t + h̄⊙o⊙(1 − tanh² c_t), c̄_{t-1} = ĉ⊙f",
        f"{_D}#LSTM.step",
        f"{_CELLS}.lstm_step_backward",
        f"{_R}::test_recurrent_matches_torch",
    ),
    Equation(
        "GRU.step",
        "GRU step (gates r, z, n; b_hn inside the reset) and its VJP",
        "n = tanh(x W_inᵀ + b_in + r⊙(h W_hnᵀ + b_hn)), h_t = (1 − z)⊙n + z⊙h",
        f"{_D}#GRU.step",
        f"{_CELLS}.gru_step_backward",
        f"{_R}::test_recurrent_matches_torch",
    ),
    Equation(
        "BPTT.sequence",
        "Backpropagation through time",
        "h̄_t = ∂C/∂out_t + carried h̄_t;  (x̄_t, h̄_{t-1}, c̄_{t-1}) = VJP_t;  θ̄ = Σ_t θ̄_t",
        f"{_D}#BPTT.sequence",
        "manual_bp.layers.recurrent.backprop_direction",
        f"{_R}::test_recurrent_matches_torch",
    ),
    Equation(
        "SEQ.ignore_index",
        "Sequence cost with an ignore index (padding)",
        "m_r = 1[y_r ≠ i], n = Σ m_r;  C = (1/n) Σ m_r C_r;  ∂C/∂a_r = (m_r/n) ∇ₐC_r",
        f"{_D}#SEQ.ignore_index",
        "manual_bp.models.targets.output_seed",
        f"{_P}::test_ignore_index_matches_torch",
    ),
    Equation(
        "EMB.lookup",
        "Embedding lookup",
        "out[n,t] = W[x[n,t]];  W̄_k = Σ_{x[n,t]=k} out̄[n,t], padding row 0",
        f"{_D}#EMB.lookup",
        "manual_bp.layers.embedding.embedding_backward",
        f"{_R}::test_embedding_matches_torch",
    ),
    Equation(
        "EMB.renorm",
        "Embedding max_norm renormalisation",
        "W_k ← W_k · max_norm / (‖W_k‖_p + 1e-7) if ‖W_k‖_p > max_norm (looked-up rows, in place)",
        f"{_D}#EMB.renorm",
        "manual_bp.layers.embedding.embedding_renorm",
        "tests/test_embedding_torch_args.py::test_embedding_options_match_torch",
    ),
    Equation(
        "ATT.softmax",
        "Softmax VJP",
        "s̄ = p ⊙ (p̄ − Σ_k p̄_k p_k)",
        f"{_D}#ATT.softmax",
        "manual_bp.layers.attention.softmax_backward",
        f"{_A}::test_sdpa_matches_torch",
    ),
    Equation(
        "ATT.sdpa",
        "Scaled dot-product attention",
        "out = softmax(q kᵀ/√d + M) v;  q̄ = s S̄ k, k̄ = s S̄ᵀ q, v̄ = Pᵀ out̄",
        f"{_D}#ATT.sdpa",
        "manual_bp.layers.attention.sdpa_backward",
        f"{_A}::test_sdpa_matches_torch",
    ),
    Equation(
        "ATT.mha",
        "Multi-head attention (packed in_proj)",
        "out = concat_h sdpa(x_q W_qᵀ + b_q, …) W_oᵀ + b_o",
        f"{_D}#ATT.mha",
        "manual_bp.layers.attention.MultiheadAttention",
        f"{_A}::test_mha_matches_torch",
    ),
    Equation(
        "TBPTT.chunk",
        "Truncated BPTT",
        "h_init^(j) = stop_gradient(h_final^(j-1));  ∇θ C^(j) by BPTT within chunk j",
        f"{_D}#TBPTT.chunk",
        "manual_bp.sequence_training.truncated_bptt",
        f"{_S}::test_truncated_bptt_matches_torch",
    ),
    Equation(
        "CLIP.norm",
        "Gradient-norm clipping",
        "g ← g · min(1, τ / (‖g‖_p + 1e-6)), ‖g‖_p over all gradients",
        f"{_D}#CLIP.norm",
        "manual_bp.sequence_training.clip_grad_norm",
        f"{_S}::test_clip_grad_norm_matches_torch",
    ),
]
