"""Second-order and per-sample quantities by hand: backpropagation with other things carried.

See ``docs/curvature.md``. Convention everywhere: the cost is the mean over the batch,
``C = (1/n) Σₓ Cₓ``; batch quantities (``H``, ``G``, their diagonals, KFAC factors) are
those of ``C`` and include the ``1/n``; per-sample quantities are those of ``Cₓ``
(no ``1/n``), so a batch quantity is the mean of the per-sample ones.
"""

from manual_bp.curvature.chain import as_chain, flatten
from manual_bp.curvature.conventions import (
    to_backpack_batch_grad,
    to_backpack_kron,
    to_backpack_sum_grad_squared,
    to_backpack_variance,
)
from manual_bp.curvature.diagonal import diag_ggn, diag_ggn_mc, diag_hessian
from manual_bp.curvature.dp import dp_gradient, dp_sgd_step
from manual_bp.curvature.eigen import top_eigenvalue
from manual_bp.curvature.fisher import ef_diagonal, ef_matrix, efvp
from manual_bp.curvature.hutchinson import hutchinson_diagonal, hutchinson_trace
from manual_bp.curvature.kfac import ggn_block, kfac, kflr
from manual_bp.curvature.kfac_inverse import ekfac, ekfac_product, kfac_inverse_product
from manual_bp.curvature.kfra import kfra
from manual_bp.curvature.lanczos import density_on_grid, lanczos_eigenvalues, spectral_density
from manual_bp.curvature.per_sample import by_name, per_sample_gradients, per_sample_norms
from manual_bp.curvature.rop import ggn_matrix, ggnvp, gradient, hessian_matrix, hvp
from manual_bp.curvature.sqrt_ggn import sqrt_ggn, sqrt_ggn_mc
from manual_bp.curvature.stats import batch_gradient, grad_norms, grad_variance, sum_grad_squared

__all__ = [
    "as_chain", "batch_gradient", "by_name", "density_on_grid", "diag_ggn", "diag_ggn_mc",
    "diag_hessian", "dp_gradient", "dp_sgd_step", "ef_diagonal", "ef_matrix", "efvp", "ekfac",
    "ekfac_product", "flatten", "ggn_block", "ggn_matrix", "ggnvp", "grad_norms",
    "grad_variance", "gradient", "hessian_matrix", "hutchinson_diagonal", "hutchinson_trace",
    "hvp", "kfac", "kfac_inverse_product", "kflr", "kfra", "lanczos_eigenvalues",
    "per_sample_gradients", "per_sample_norms", "spectral_density", "sqrt_ggn", "sqrt_ggn_mc",
    "sum_grad_squared", "to_backpack_batch_grad", "to_backpack_kron",
    "to_backpack_sum_grad_squared", "to_backpack_variance", "top_eigenvalue",
]  # fmt: skip
