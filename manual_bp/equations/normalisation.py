"""Equations of ``docs/layers.md``: group, instance, RMS and local response normalisation,
and the products of BatchNorm3d, GroupNorm, InstanceNorm*d, RMSNorm and LocalResponseNorm
(derived in ``docs/layers.md`` next to the layers)."""

from manual_bp.equations._base import Equation
from manual_bp.equations.products import product_equations

_D = "docs/layers.md"
_G = "tests/test_normalisation_group.py"
_R = "tests/test_normalisation_rms_lrn.py"
_P = "tests/test_products_normalisation_more.py"
_NORM = "manual_bp.layers.normalisation_products.NormProducts"

EQUATIONS = [
    Equation(
        "LAYER.groupnorm",
        "Group norm: batch norm's VJP on the regrouped (N, G, (C/G)·L) view",
        "∂C/∂x = s (ḡ − mean ḡ − x̂ mean(ḡ x̂)) per (sample, group), ḡ = γ_c ∂C/∂y;  "
        "∂C/∂γ = Σ_(N, L) ∂C/∂y x̂,  ∂C/∂β = Σ_(N, L) ∂C/∂y",
        f"{_D}#LAYER.groupnorm",
        "manual_bp.layers.normalisation_group.GroupNorm.backward",
        f"{_G}::test_groupnorm_matches_torch",
    ),
    Equation(
        "LAYER.instancenorm",
        "Instance norm: batch norm's VJP per (sample, channel) over the spatial axes",
        "∂C/∂x = s (ḡ − mean_S ḡ − x̂ mean_S(ḡ x̂)), ḡ = γ_c ∂C/∂y (running statistics: s ḡ)",
        f"{_D}#LAYER.instancenorm",
        "manual_bp.layers.normalisation_group._InstanceNorm.backward",
        f"{_G}::test_instancenorm_matches_torch",
    ),
    Equation(
        "LAYER.instancenorm.running",
        "Instance norm running statistics",
        "r ← (1 − m) r + m mean_N(stat_(n,c)), unbiased per-instance variance; "
        "momentum=None is m = 0 (torch's instance_norm); num_batches_tracked not counted",
        f"{_D}#LAYER.instancenorm.running",
        "manual_bp.layers.normalisation_group._InstanceNorm._update_running",
        f"{_G}::test_instancenorm_running_statistics_match_torch_module",
    ),
    Equation(
        "LAYER.rmsnorm",
        "RMS norm: layer norm without the mean path",
        "s = (mean x² + ε)^(−½), x̂ = s x;  ∂C/∂x = s (ḡ − x̂ mean(ḡ x̂)), ḡ = γ ∂C/∂y;  "
        "∂C/∂γ = Σ_lead ∂C/∂y x̂",
        f"{_D}#LAYER.rmsnorm",
        "manual_bp.layers.normalisation_rms.rms_backward",
        f"{_R}::test_rmsnorm_matches_torch",
    ),
    Equation(
        "LAYER.lrn",
        "Local response norm: the VJP through the windowed channel sum",
        "b = k + (α/n) S(x²), y = x b^(−β);  "
        "∂C/∂x = g b^(−β) − (2αβ/n) x Sᵀ(g x b^(−β−1)),  Sᵀ = S with the reaches swapped",
        f"{_D}#LAYER.lrn",
        "manual_bp.layers.normalisation_lrn.LocalResponseNorm.backward",
        f"{_R}::test_lrn_matches_torch",
    ),
]

_VJP = (
    "J_xᵀ M = J_N(γ ⊙ M);  J_γᵀ M = Σ M ⊙ x̂;  J_βᵀ M = Σ M;  J_N T = s (T − mean_A T − "
    "x̂ mean_A(x̂ T)) on the layer's groups (batch statistics, symmetric) or s T (running)"
)
_JVP = "J_x T = γ ⊙ J_N T;  J_γ T_γ + J_β T_β = x̂ ⊙ T_γ + T_β"
_RESIDUAL = (
    "residual_x = −s² (m_T h̃ + m_h T̃ + x̂ (mean(h̃ T) − 3 m_T m_h)) [batch statistics] "
    "+ J_N(dout ⊙ T_γ);  residual_γ = Σ dout ⊙ J_N T;  residual_β = 0  (h = γ ⊙ dout)"
)
_NO_MEAN = "; RMS norm: no mean path (h̃ = h, T̃ = T, no β)"

for _layer, _title, _extra in (
    ("batchnorm3d", "BatchNorm3d", ""),
    ("groupnorm", "GroupNorm", " — groups of the (N, G, M) view"),
    ("instancenorm", "InstanceNorm1d/2d/3d", " — groups per (sample, channel)"),
    ("rmsnorm", "RMSNorm", _NO_MEAN),
):
    EQUATIONS += product_equations(
        _layer,
        _title,
        _VJP + _extra,
        _JVP,
        _RESIDUAL + _extra,
        _NORM,
        f"{_P}::test_{_layer}_products_match_torch_func",
        doc=_D,
    )

EQUATIONS += product_equations(
    "localresponsenorm",
    "LocalResponseNorm",
    "J_xᵀ M = b^(−β) M − 2aβ x Sᵀ(M x b^(−β−1)),  a = α/size",
    "J_x T = b^(−β) T − 2aβ x b^(−β−1) S(x T)",
    "−β q h db − 2aβ T Sᵀ(h x q) − 2aβ x Sᵀ(h T q − (β+1) h x q db/b),  "
    "q = b^(−β−1), db = 2a S(x T), h = dout",
    "manual_bp.layers.normalisation_lrn.LocalResponseNorm",
    f"{_P}::test_localresponsenorm_products_match_torch_func",
    doc=_D,
)
