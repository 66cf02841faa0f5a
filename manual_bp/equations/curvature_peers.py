"""Equations of ``docs/curvature.md``'s "What the peers have" part (BackPACK, curvlinops,
Opacus): per-sample gradients, empirical Fisher, symmetric GGN factors, Hutchinson,
Lanczos, stochastic Lanczos quadrature, damped inverse Kronecker products, EKFAC, DP-SGD."""

from manual_bp.equations._base import Equation

_D = "docs/curvature.md"
_T = "tests/test_curvature_peers.py::"
_C = "manual_bp.curvature."

EQUATIONS = [
    Equation(
        "CURV.per-sample-grad",
        "Per-sample gradients, materialised",
        "gₓ = ∇θ Cₓ = param_vjp(cache, δₓ, sum_batch=False), δₓ = ∂Cₓ/∂out by input_vjp",
        f"{_D}#CURV.per-sample-grad",
        _C + "per_sample.per_sample_gradients",
        _T + "test_peer_quantities_match_torch",
    ),
    Equation(
        "CURV.empirical-fisher",
        "Empirical Fisher and its products",
        "F̂ = (1/n) Σₓ gₓ gₓᵀ,  F̂ v = (1/n) Σₓ gₓ ⟨gₓ, v⟩,  diag F̂ = (1/n) Σₓ gₓ²",
        f"{_D}#CURV.empirical-fisher",
        _C + "fisher.efvp",
        _T + "test_peer_quantities_match_torch",
    ),
    Equation(
        "CURV.sqrt-ggn",
        "Symmetric factor of the GGN (exact)",
        "s_{c,x} = Jₓᵀ Sₓ[:, c] / √n,  G = Σ_{c,x} s_{c,x} s_{c,x}ᵀ",
        f"{_D}#CURV.sqrt-ggn",
        _C + "sqrt_ggn.sqrt_ggn",
        _T + "test_peer_quantities_match_torch",
    ),
    Equation(
        "CURV.sqrt-ggn-mc",
        "Symmetric factor of the GGN (Monte-Carlo)",
        "s_{m,x} = √(Σy) Jₓᵀ ∇_f ℓ(fₓ, ŷₘ) / √(nM), ŷ ~ p(y | f);  E[Σ s sᵀ] = G",
        f"{_D}#CURV.sqrt-ggn-mc",
        _C + "sqrt_ggn.sqrt_ggn_mc",
        _T + "test_peer_quantities_match_torch",
    ),
    Equation(
        "CURV.hutchinson",
        "Hutchinson trace and diagonal estimates",
        "tr M ≈ (1/K) Σₖ vₖᵀ M vₖ,  diag M ≈ (1/K) Σₖ vₖ ⊙ M vₖ, v Rademacher; SE = s/√K",
        f"{_D}#CURV.hutchinson",
        _C + "hutchinson.hutchinson_trace",
        _T + "test_hutchinson_within_hoeffding_bound",
    ),
    Equation(
        "CURV.lanczos",
        "Lanczos eigenvalues (full reorthogonalisation)",
        "M Qₘ = Qₘ Tₘ + βₘ qₘ₊₁ eₘᵀ; eig Tₘ (Ritz values) ≈ extreme eig M, exact at m = P",
        f"{_D}#CURV.lanczos",
        _C + "lanczos.lanczos_eigenvalues",
        _T + "test_lanczos_and_slq_are_exact_at_full_dimension",
    ),
    Equation(
        "CURV.slq",
        "Spectral density by stochastic Lanczos quadrature",
        "vᵀ f(M) v / ‖v‖² ≈ Σⱼ U₁ⱼ² f(θⱼ), T = U diag(θ) Uᵀ; φ(t) ≈ (1/K) Σ_v Σⱼ U₁ⱼ² δ(t − θⱼ)",
        f"{_D}#CURV.slq",
        _C + "lanczos.spectral_density",
        _T + "test_lanczos_and_slq_are_exact_at_full_dimension",
    ),
    Equation(
        "CURV.kfac-inverse",
        "Damped inverse Kronecker-factor products",
        "((B + λ_B) ⊗ (A + λ_A))⁻¹ v = vec((B + λ_B)⁻¹ V (A + λ_A)⁻¹); "
        "exact: Q_B[(Q_BᵀVQ_A) ⊘ (baᵀ + λ)]Q_Aᵀ",
        f"{_D}#CURV.kfac-inverse",
        _C + "kfac_inverse.kfac_inverse_product",
        _T + "test_peer_quantities_match_torch",
    ),
    Equation(
        "CURV.ekfac",
        "Eigenvalue-corrected KFAC",
        "G_W̃ ≈ (Q_B ⊗ Q_A) diag(s) (Q_B ⊗ Q_A)ᵀ, s = Σ_{c,x} (Q_Bᵀ S_{c,x} Q_A)²",
        f"{_D}#CURV.ekfac",
        _C + "kfac_inverse.ekfac",
        _T + "test_peer_quantities_match_torch",
    ),
    Equation(
        "CURV.dp-sgd",
        "Differentially private SGD step",
        "g̃ = (Σₓ min(1, C/(‖gₓ‖ + 10⁻⁶)) gₓ + σ C ξ) / B,  θ ← θ − η g̃",
        f"{_D}#CURV.dp-sgd",
        _C + "dp.dp_gradient",
        _T + "test_peer_quantities_match_torch",
    ),
]
