"""Equations of ``docs/ctc.md``."""

from manual_bp.equations._base import Equation

_D = "docs/ctc.md"
_C = "manual_bp.losses.ctc.CTCLoss"
_T = "tests/test_ctc.py"

EQUATIONS = [
    Equation(
        "LOSS.ctc",
        "CTC loss by the forward recursion (Graves et al. 2006)",
        "α_t(s) = (α_{t−1}(s) + α_{t−1}(s−1) + [l′_s ≠ b, l′_s ≠ l′_{s−2}] α_{t−1}(s−2))"
        " y_t(l′_s); −ln p(l|x) = −ln(α_{T−1}(L−1) + α_{T−1}(L−2))",
        f"{_D}#LOSS.ctc",
        f"{_C}.forward",
        f"{_T}::test_ctc_loss_matches_torch",
    ),
    Equation(
        "LOSS.ctc.grad",
        "Gradient of the CTC loss (torch's form, through the log-softmax)",
        "∂(−ln p)/∂u_t(c) = y_t(c) − (1/p) Σ_{s: l′_s = c} α_t(s) β_t(s) / y_t(c)",
        f"{_D}#LOSS.ctc.grad",
        f"{_C}.backward",
        f"{_T}::test_ctc_gradient_matches_torch",
    ),
]
