"""Equations of ``docs/stack.md`` (the layer-stack model)."""

from manual_bp.equations._base import Equation

_D = "docs/stack.md"
_T = "tests/test_stack.py"

EQUATIONS = [
    Equation(
        "STACK.chain",
        "Backpropagation through a stack of layers",
        "g^{k−1}, ∂C/∂θᵏ = VJPᵏ(gᵏ);  gᴷ = (1/n) ∇ₐC_x,  ∂C/∂x = g⁰",
        f"{_D}#STACK.chain",
        "manual_bp.layers.containers.stack_backward",
        f"{_T}::test_stack_chain_random_stacks_match_torch",
    ),
    Equation(
        "LAYER.residual",
        "Residual block y = x + f(x)",
        "∂C/∂x = ∂C/∂y + J_fᵀ ∂C/∂y",
        f"{_D}#LAYER.residual",
        "manual_bp.layers.containers.Residual",
        f"{_T}::test_residual_block_matches_torch",
    ),
]
