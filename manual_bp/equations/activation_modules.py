"""Equations of ``docs/activations.md``, "Activation modules": softmin, and the activation
modules of torch that are layers here (GLU, PReLU, RReLU) with their products (issue 26)."""

from manual_bp.equations._base import Equation
from manual_bp.equations.products import product_equations

_D = "docs/activations.md"
_T = "tests/test_activation_modules.py"
_L = "manual_bp.layers"

EQUATIONS = [
    Equation(
        "ACT.softmin",
        "Softmin (full VJP)",
        "aⱼ = e^{−zⱼ}/Σₖe^{−zₖ};  ∂C/∂z = −a ⊙ (g − ⟨g, a⟩)",
        f"{_D}#ACT.softmin",
        "manual_bp.activations.normalising.Softmin",
        f"{_T}::test_softmin_matches_torch",
    ),
    Equation(
        "ACT2.softmin",
        "Second derivative of softmin",
        "Σₖ gₖ∇²aₖ dz = g ⊙ w − a⟨g, w⟩ − ⟨g, a⟩ w, w = a ⊙ (dz − ⟨a, dz⟩)",
        f"{_D}#ACT2.softmin",
        "manual_bp.activations.normalising.Softmin.second_vjp",
        f"{_T}::test_softmin_second_vjp_matches_torch",
    ),
    Equation(
        "LAYER.glu",
        "Gated linear unit a ⊙ σ(b) of the two halves along dim",
        "out = a ⊙ s, s = σ(b);  ∂C/∂a = g ⊙ s,  ∂C/∂b = g ⊙ a ⊙ s(1 − s)",
        f"{_D}#LAYER.glu",
        f"{_L}.activation_modules.GLU",
        f"{_T}::test_glu_matches_torch",
    ),
    *product_equations(
        "glu",
        "GLU",
        "J_xᵀ M = [M ⊙ s, M ⊙ a ⊙ s′] along dim",
        "J_x T = s ⊙ T_a + a ⊙ s′ ⊙ T_b",
        "a-part dout ⊙ s′ ⊙ T_b;  b-part dout ⊙ (s′ ⊙ T_a + a ⊙ s″ ⊙ T_b)",
        f"{_L}.activation_modules.GLU",
        f"{_T}::test_layer_products_match_torch_func",
        doc=_D,
    ),
    Equation(
        "LAYER.prelu",
        "PReLU: a learnt negative slope, per channel or shared",
        "out = x ⊙ (1[x > 0] + w_c 1[x ≤ 0]);  ∂C/∂x = g ⊙ slope;  "
        "∂C/∂w_c = Σ_(all axes but 1) g ⊙ x ⊙ 1[x ≤ 0]",
        f"{_D}#LAYER.prelu",
        f"{_L}.rectifiers.PReLU",
        f"{_T}::test_prelu_matches_torch",
    ),
    *product_equations(
        "prelu",
        "PReLU",
        "J_xᵀ M = M ⊙ slope;  J_wᵀ M = Σ M ⊙ x ⊙ 1[x ≤ 0] (per sample: positions only)",
        "J_x T = slope ⊙ T;  J_w T_w = x ⊙ 1[x ≤ 0] ⊙ T_w",
        "x-part dout ⊙ 1[x ≤ 0] ⊙ T_w;  w-part Σ dout ⊙ 1[x ≤ 0] ⊙ T",
        f"{_L}.rectifiers.PReLU",
        f"{_T}::test_layer_products_match_torch_func",
        doc=_D,
    ),
    Equation(
        "LAYER.rrelu",
        "RReLU: a random negative slope in training, the mean slope in evaluation",
        "out = r ⊙ x, r ~ U(l, u) where x ≤ 0 (training), r = (l + u)/2 (evaluation), "
        "1 where x > 0;  ∂C/∂x = g ⊙ r",
        f"{_D}#LAYER.rrelu",
        f"{_L}.rectifiers.RReLU",
        f"{_T}::test_rrelu_matches_torch",
    ),
    *product_equations(
        "rrelu",
        "RReLU",
        "J_xᵀ M = M ⊙ r",
        "J_x T = r ⊙ T",
        "0 (linear for fixed slopes)",
        f"{_L}.rectifiers.RReLU",
        f"{_T}::test_layer_products_match_torch_func",
        doc=_D,
        methods=("derivative", "derivative", "derivative"),
    ),
]
