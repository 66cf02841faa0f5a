"""Equations of ``docs/sequences.md``: the cell modules RNNCell, LSTMCell, GRUCell.

Their step and its VJP are the recurrent layers' (``RNN.step``, ``LSTM.step``,
``GRU.step``); what is new is the state interface of a module that is one step
(``CELL.state``) and the products on a V axis at a constant state (``PROD.cell.*``).
"""

from manual_bp.equations._base import Equation
from manual_bp.equations.products import product_equations

_D = "docs/sequences.md"
_T = "tests/test_recurrent_cell_modules.py"

EQUATIONS = [
    Equation(
        "CELL.state",
        "Cell modules: torch's (input, hx) -> h' or (h', c'), and the gradient of hx",
        "h' = cell(x, hx; θ), hx = 0 when None;  (x̄, h̄x, θ̄) = VJP of the step at (h̄', c̄'): "
        "x̄ = δa_ih W_ih, h̄x = δa_hh W_hh + direct (GRU: h̄' ⊙ z), c̄x = ĉ ⊙ f;  "
        "backward: c̄' = 0 (h' is the output)",
        f"{_D}#CELL.state",
        "manual_bp.layers.recurrent_cell_modules.RecurrentCellModule.backward_cell",
        f"{_T}::test_cells_match_torch",
    ),
    *product_equations(
        "cell",
        "RNNCell, LSTMCell, GRUCell",
        "one step at a constant state: δa = cell VJP of M on h' (c̄' = 0);  J_xᵀM = δa_ih W_ih;  "
        "J_W_ihᵀM = δa_ihᵀ x, J_W_hhᵀM = δa_hhᵀ hx, J_bᵀM = Σ_n δa (per sample: one row)",
        "ȧ_ih = ẋ W_ihᵀ + x Ṫ_W_ihᵀ + Ṫ_b_ih, ȧ_hh = hx Ṫ_W_hhᵀ + Ṫ_b_hh;  ḣ' = cell JVP, Ṡ = 0",
        "R{δa} = cell rvjp at R{dout} = 0;  residual_x = R{δa_ih} W_ih + δa_ih Ṫ_W_ih;  "
        "residual_W_ih = R{δa_ih}ᵀ x + δa_ihᵀ ẋ, residual_W_hh = R{δa_hh}ᵀ hx, "
        "residual_b = Σ R{δa}",
        "manual_bp.layers.recurrent_cell_module_products.CellModuleProducts",
        f"{_T}::test_cell_products_match_torch_func",
        doc=_D,
    ),
]
