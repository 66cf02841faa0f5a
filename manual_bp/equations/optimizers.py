"""Equations of ``docs/optimizers.md``: update rules, regularisers, schedules."""

from manual_bp.equations._base import Equation

_D = "docs/optimizers.md"
_T = "tests/test_optimizers.py"


def _eq(id: str, name: str, statement: str, code: str, test: str) -> Equation:
    return Equation(id, name, statement, f"{_D}#{id}", code, f"{_T}::{test}")


EQUATIONS = [
    _eq(
        "OPT.sgd-momentum",
        "SGD with momentum (torch convention)",
        "b₁ = g, bₜ = μ bₜ₋₁ + (1 − τ) g,  θ ← θ − η bₜ",
        "manual_bp.optimizers.sgd.SGD.step",
        "test_sgd_momentum_trajectory",
    ),
    _eq(
        "OPT.sgd-nesterov",
        "SGD with Nesterov momentum",
        "θ ← θ − η (g + μ bₜ)",
        "manual_bp.optimizers.sgd.SGD.step",
        "test_sgd_nesterov_trajectory",
    ),
    _eq(
        "OPT.weight-decay",
        "Coupled L2 weight decay inside an optimizer",
        "g ← ∂C/∂θ + wd·θ (every array passed, biases included)",
        "manual_bp.optimizers.base.Optimizer._decayed",
        "test_weight_decay_trajectory",
    ),
    _eq(
        "OPT.adagrad",
        "Adagrad",
        "Sₜ = Sₜ₋₁ + g²,  θ ← θ − η/(1 + (t−1)·lr_decay) · g / (√Sₜ + ε)",
        "manual_bp.optimizers.adagrad.Adagrad.step",
        "test_adagrad_trajectory",
    ),
    _eq(
        "OPT.rmsprop",
        "RMSprop",
        "vₜ = α vₜ₋₁ + (1 − α) g²,  θ ← θ − η g / (√vₜ + ε)",
        "manual_bp.optimizers.rmsprop.RMSprop.step",
        "test_rmsprop_trajectory",
    ),
    _eq(
        "OPT.rmsprop-centered",
        "Centred RMSprop",
        "ḡₜ = α ḡₜ₋₁ + (1 − α) g,  θ ← θ − η g / (√(vₜ − ḡₜ²) + ε)",
        "manual_bp.optimizers.rmsprop.RMSprop.step",
        "test_rmsprop_centered_trajectory",
    ),
    _eq(
        "OPT.adam",
        "Adam (ε after the bias-corrected root)",
        "θ ← θ − η/(1 − β₁ᵗ) · mₜ / (√vₜ/√(1 − β₂ᵗ) + ε)",
        "manual_bp.optimizers.adam.Adam.step",
        "test_adam_trajectory",
    ),
    _eq(
        "OPT.amsgrad",
        "AMSGrad",
        "v̂ₜ = max(v̂ₜ₋₁, vₜ) in Adam's denominator",
        "manual_bp.optimizers.adam.Adam.step",
        "test_amsgrad_trajectory",
    ),
    _eq(
        "OPT.adamw",
        "AdamW (decoupled weight decay)",
        "θ ← (1 − η·wd) θ, then the Adam step",
        "manual_bp.optimizers.adam.Adam.step",
        "test_adamw_trajectory",
    ),
    _eq(
        "REG.l1",
        "L1 regularisation",
        "C = C₀ + (λ/N) Σ|w|,  ∂C/∂w = ∂C₀/∂w + (λ/N) sgn w",
        "manual_bp.regularizers.L1",
        "test_l1_regulariser",
    ),
    _eq(
        "SCHED.step",
        "Step decay",
        "ηₜ = η₀ γ^⌊t / step_size⌋",
        "manual_bp.schedules.StepLR",
        "test_step_schedule",
    ),
    _eq(
        "SCHED.exponential",
        "Exponential decay",
        "ηₜ = η₀ γᵗ",
        "manual_bp.schedules.ExponentialLR",
        "test_exponential_schedule",
    ),
    _eq(
        "SCHED.cosine",
        "Cosine annealing",
        "ηₜ = η_min + (η₀ − η_min)(1 + cos(π t / T))/2",
        "manual_bp.schedules.CosineAnnealingLR",
        "test_cosine_schedule",
    ),
]
