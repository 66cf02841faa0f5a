"""Second-order and per-sample quantities by hand: backpropagation with other things carried.

See ``docs/curvature.md``. Convention everywhere: the cost is the mean over the batch,
``C = (1/n) Σₓ Cₓ``; batch quantities (``H``, ``G``, their diagonals, KFAC factors) are
those of ``C`` and include the ``1/n``; per-sample quantities are those of ``Cₓ``
(no ``1/n``), so a batch quantity is the mean of the per-sample ones.
"""

from manual_bp.curvature.chain import as_chain, flatten
from manual_bp.curvature.rop import ggn_matrix, ggnvp, gradient, hessian_matrix, hvp

__all__ = ["as_chain", "flatten", "ggn_matrix", "ggnvp", "gradient", "hessian_matrix", "hvp"]
