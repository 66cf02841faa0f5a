"""Equations of ``docs/transformer.md``: the Transformer family as compositions of VJPs."""

from manual_bp.equations._base import Equation
from manual_bp.equations.products import product_equations

_D = "docs/transformer.md"
_T = "tests/test_transformer.py"
_L = "manual_bp.layers.transformer"
_S = "manual_bp.layers.transformer_stacks"

EQUATIONS = [
    Equation(
        "TF.layer-chain",
        "A Transformer layer as a chain of residual blocks: its backward is the children's VJPs",
        "x_b = B_b(x_{b−1});  x̄_{b−1} = J_{B_b}ᵀ x̄_b,  with J_{Res(f)}ᵀ ḡ = ḡ + J_fᵀ ḡ "
        "and J_fᵀ the branch's VJPs in reverse order",
        f"{_D}#TF.layer-chain",
        "manual_bp.layers.transformer_chain.Chain",
        f"{_T}::test_the_chain_is_the_composition_of_the_childrens_vjps",
    ),
    Equation(
        "TF.encoder-layer",
        "nn.TransformerEncoderLayer (post- and pre-norm)",
        "post: h = LN₁(x + D₁(SA(x))), y = LN₂(h + FF(h));  pre: h = x + D₁(SA(LN₁(x))), "
        "y = h + FF(LN₂(h));  x̄ from the chain's VJPs",
        f"{_D}#TF.encoder-layer",
        f"{_L}.TransformerEncoderLayer.backward",
        f"{_T}::test_encoder_layer_matches_torch",
    ),
    Equation(
        "TF.decoder-layer",
        "nn.TransformerDecoderLayer: self-, cross-attention and feed-forward blocks",
        "the encoder layer's chain with a block Res(D₂ ∘ CA(·, m)) between;  "
        "m̄ = K̄ + V̄ of the cross-attention (the memory feeds key and value)",
        f"{_D}#TF.decoder-layer",
        f"{_L}.TransformerDecoderLayer.backward",
        f"{_T}::test_decoder_layer_matches_torch",
    ),
    Equation(
        "TF.encoder",
        "nn.TransformerEncoder: num_layers layers and an optional norm, one chain",
        "y = N(L_K ∘ ⋯ ∘ L_1(x));  x̄ = J_{L_1}ᵀ ⋯ J_{L_K}ᵀ J_Nᵀ ȳ",
        f"{_D}#TF.encoder",
        f"{_S}.TransformerEncoder.backward",
        f"{_T}::test_stacks_match_torch",
    ),
    Equation(
        "TF.decoder",
        "nn.TransformerDecoder: the memory feeds every layer",
        "y = N(L_K(⋯ L_1(t, m) ⋯, m));  m̄ = Σ_k m̄_k (each layer's cross-attention)",
        f"{_D}#TF.decoder",
        f"{_S}.TransformerDecoder.backward",
        f"{_T}::test_stacks_match_torch",
    ),
    Equation(
        "TF.transformer",
        "nn.Transformer: the encoder's output is the decoder's memory",
        "m = Enc(s), y = Dec(t, m);  (t̄, m̄) from the decoder, s̄ = J_Encᵀ m̄",
        f"{_D}#TF.transformer",
        "manual_bp.layers.transformer_model.Transformer.backward",
        f"{_T}::test_stacks_match_torch",
    ),
    *product_equations(
        "transformer",
        "Transformer layers and stacks",
        "J_xᵀ M and J_θᵀ M: the chain's blocks' VJPs top down, each block's parameter VJP "
        "at its own cotangent",
        "J_x T and Σ_p J_p T_p carried up the blocks",
        "the R-operator's pass down the blocks with R{dout} = 0 (each block's residual at "
        "its own dout and tangent)",
        f"{_L}._TransformerLayer",
        f"{_T}::test_transformer_products_match_torch_func",
        doc=_D,
    ),
]
