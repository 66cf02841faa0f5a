"""Equations of ``docs/gpt.md``: GPT-2's backward as a composition of the layers' VJPs."""

from manual_bp.equations._base import Equation

_D = "docs/gpt.md"
_T = "tests/test_gpt.py"

EQUATIONS = [
    Equation(
        "GPT.block",
        "A pre-norm GPT block's backward: the two residual sums over the children's VJPs",
        "h = x + A(LN₁(x)),  y = h + M(LN₂(h));  h̄ = ȳ + J_LN₂ᵀ J_Mᵀ ȳ,  x̄ = h̄ + J_LN₁ᵀ J_Aᵀ h̄",
        f"{_D}#GPT.block",
        "manual_bp.models.gpt_layers.Block",
        f"{_T}::test_gpt_matches_torch_in_float64",
    ),
    Equation(
        "GPT.tied",
        "The tied token embedding and output projection: one parameter, its gradient the sum",
        "x₀ = W[idx] + P,  z = x_L Wᵀ;  ∂C/∂W = scatter_idx(x̄₀) + z̄ᵀ x_L",
        f"{_D}#GPT.tied",
        "manual_bp.models.gpt.GPT.backprop",
        f"{_T}::test_tied_gradient_is_the_sum_of_both_uses",
    ),
    Equation(
        "GPT.causal",
        "The causal mask in the softmax and its VJP",
        "P = softmax(S + M),  M_ts = −∞ (s > t);  S̄ = P ⊙ (P̄ − rowsum(P̄ ⊙ P)), zero above "
        "the diagonal",
        f"{_D}#GPT.causal",
        "manual_bp.models.gpt_layers.CausalSelfAttention",
        f"{_T}::test_causal_attention_ignores_the_future",
    ),
    Equation(
        "GPT.qkv",
        "The fused q/k/v projection and its split",
        "[Q | K | V] = x W_attnᵀ + b;  W̄_attn = [Q̄ | K̄ | V̄]ᵀ x,  b̄ = Σ [Q̄ | K̄ | V̄],  "
        "x̄ = [Q̄ | K̄ | V̄] W_attn",
        f"{_D}#GPT.qkv",
        "manual_bp.models.gpt_layers.CausalSelfAttention",
        f"{_T}::test_gpt_matches_torch_in_float64",
    ),
    Equation(
        "GPT.lm-ce",
        "The vocabulary projection and cross-entropy fused over one (B·T, V) matrix",
        "C = (1/n) Σ_{r counted} (log Σ_v e^{z_rv} − z_{r,y_r});  z̄_r = (softmax(z_r) − e_{y_r})/n "
        "(0 on ignored rows), written over z",
        f"{_D}#GPT.lm-ce",
        "manual_bp.models.gpt_layers.cross_entropy_fused",
        f"{_T}::test_fused_cross_entropy_matches_torch",
    ),
    Equation(
        "GPT.clip",
        "Global gradient-norm clipping",
        "‖g‖ = (Σ_i ‖g_i‖_p^p)^{1/p};  g_i ← min(1, c/(‖g‖ + 10⁻⁶)) g_i",
        f"{_D}#GPT.clip",
        "manual_bp.training.clip.clip_grad_norm_",
        f"{_T}::test_adamw_steps_with_clipping_and_schedule_match_torch",
    ),
    Equation(
        "GPT.warmup-cosine",
        "Linear warm-up then cosine decay of the learning rate (nanoGPT's get_lr)",
        "ηₜ = η₀(t+1)/(W+1) (t < W);  η_min + ½(1 + cos(π(t−W)/(D−W)))(η₀ − η_min) "
        "(W ≤ t ≤ D);  η_min (t > D)",
        f"{_D}#GPT.warmup-cosine",
        "manual_bp.schedules_warmup.warmup_cosine_lr",
        f"{_T}::test_adamw_steps_with_clipping_and_schedule_match_torch",
    ),
]
