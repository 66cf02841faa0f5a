"""Equations of ``docs/products.md``: the layer products on a leading axis of V vectors.

Each layer class names three IDs (``Layer.product_equations``): ``PROD.<layer>.vjp`` (input
and parameter VJPs, summed over the batch and per sample), ``PROD.<layer>.jvp`` (input and
parameter JVPs) and ``PROD.<layer>.residual`` (the second-order residual). The families'
entries live in ``products_<family>.py`` beside this module.
"""

from manual_bp.equations._base import Equation

_D = "docs/products.md"
_T = "tests/test_layer_products.py"


def product_equations(
    layer: str,
    title: str,
    vjp: str,
    jvp: str,
    residual: str,
    code: str,
    test: str,
    doc: str = _D,
    methods: tuple[str, str, str] = ("input_vjp", "input_jvp", "residual"),
) -> list[Equation]:
    """The three entries of one layer class (shared by every family's module).

    ``code`` is the class's dotted path; ``methods`` the methods whose source names the
    vjp, jvp and residual IDs (a layer whose input holds indices names them elsewhere).
    """
    return [
        Equation(
            f"PROD.{layer}.vjp",
            f"{title}: input and parameter VJPs on the V axis (summed and per sample)",
            vjp,
            f"{doc}#PROD.{layer}.vjp",
            f"{code}.{methods[0]}",
            test,
        ),
        Equation(
            f"PROD.{layer}.jvp",
            f"{title}: input and parameter JVPs on the V axis",
            jvp,
            f"{doc}#PROD.{layer}.jvp",
            f"{code}.{methods[1]}",
            test,
        ),
        Equation(
            f"PROD.{layer}.residual",
            f"{title}: second-order residual",
            residual,
            f"{doc}#PROD.{layer}.residual",
            f"{code}.{methods[2]}",
            test,
        ),
    ]


EQUATIONS = [
    Equation(
        "PROD.elementwise",
        "Elementwise layer: every product from φ′ and φ″",
        "J_xᵀ M = J_x M = φ′(x) ⊙ M;  residual_x = dout ⊙ φ″(x) ⊙ T",
        f"{_D}#PROD.elementwise",
        "manual_bp.layers.base.ElementwiseLayer",
        f"{_T}::test_elementwise_layer_products_from_derivatives",
    ),
    *product_equations(
        "dense",
        "Dense",
        "J_xᵀM = M W;  J_Wᵀ M = Σ_rows M xᵀ (per sample: its own rows);  J_bᵀ M = Σ_rows M",
        "J_x T = T Wᵀ;  J_W T_W + J_b T_b = x T_Wᵀ + T_b",
        "residual_x = dout T_W;  residual_W = Σ_rows dout T_xᵀ;  residual_b = 0",
        "manual_bp.layers.dense.Dense",
        f"{_T}::test_dense_products_match_torch_func",
    ),
    *product_equations(
        "activation",
        "Activation layer",
        "J_σᵀ M = M ⊙ σ′(z) (elementwise);  softmax: a ⊙ (M − ⟨M, a⟩)",
        "J_σ T = σ′(z) ⊙ T (elementwise);  softmax: a ⊙ (T − ⟨a, T⟩)",
        "Σₖ doutₖ ∇²σₖ T = dout ⊙ σ″(z) ⊙ T (elementwise);  coupled: ACT2.*",
        "manual_bp.layers.activation.ActivationLayer",
        f"{_T}::test_activation_products_match_torch_func",
    ),
]
