"""Equations of ``docs/sequences.md`` added with torch's recurrent options (issue 23):
the LSTM's projection and dropout between stacked recurrent layers."""

from manual_bp.equations._base import Equation

_D = "docs/sequences.md"
_F = "tests/test_recurrent_torch_forms.py"

EQUATIONS = [
    Equation(
        "LSTM.proj",
        "LSTM with a projection (torch's proj_size) and its VJP",
        "h_t = (o⊙tanh c_t) W_hrᵀ;  W̄_hr = h̄_tᵀ (o⊙tanh c_t),  the cell's h̄ = h̄_t W_hr",
        f"{_D}#LSTM.proj",
        "manual_bp.layers.recurrent_cells.lstm_step_backward",
        f"{_F}::test_torch_forms_match_torch",
    ),
    Equation(
        "RNN.dropout",
        "Dropout between stacked recurrent layers (torch's dropout=p)",
        "x^(k+1) = out^(k) ⊙ m/(1 − p), m ~ Bernoulli(1 − p);  out̄^(k) = x̄^(k+1) ⊙ m/(1 − p)",
        f"{_D}#RNN.dropout",
        "manual_bp.layers.recurrent_base.RecurrentLayer._drop",
        f"{_F}::test_dropout_between_layers_matches_torch_with_our_masks",
    ),
]
