"""torch-named loss modules: torch's signatures, defaults, input forms and reductions.

The library's own costs (:mod:`manual_bp.costs`, Nielsen's convention: the mini-batch cost
is the mean of per-sample costs) are a separate family; ``docs/conventions.md`` says which
is which. Every class here registers in :data:`LOSSES` under a lower-case name and carries
torch's class name.

Modules, by concept (every name is importable from :mod:`manual_bp.losses`):

* :mod:`~manual_bp.losses.base` — the :class:`Loss` protocol, torch's reduction and the
  registry.
* :mod:`~manual_bp.losses.margins`, :mod:`~manual_bp.losses.embeddings`,
  :mod:`~manual_bp.losses.gaussian` — the pairwise, margin and embedding losses
  (``docs/losses_pairs.md``).
"""

from manual_bp.losses.base import (
    LOSSES,
    REDUCTIONS,
    Loss,
    check_reduction,
    get_loss,
    reduce,
    reduce_vjp,
    register_loss,
)
from manual_bp.losses.embeddings import (
    CosineEmbeddingLoss,
    TripletMarginLoss,
    TripletMarginWithDistanceLoss,
    pairwise_distance,
)
from manual_bp.losses.gaussian import GaussianNLLLoss
from manual_bp.losses.margins import (
    HingeEmbeddingLoss,
    MarginRankingLoss,
    MultiLabelMarginLoss,
    MultiLabelSoftMarginLoss,
    SoftMarginLoss,
)

__all__ = [
    "LOSSES",
    "REDUCTIONS",
    "CosineEmbeddingLoss",
    "GaussianNLLLoss",
    "HingeEmbeddingLoss",
    "Loss",
    "MarginRankingLoss",
    "MultiLabelMarginLoss",
    "MultiLabelSoftMarginLoss",
    "SoftMarginLoss",
    "TripletMarginLoss",
    "TripletMarginWithDistanceLoss",
    "check_reduction",
    "get_loss",
    "pairwise_distance",
    "reduce",
    "reduce_vjp",
    "register_loss",
]
