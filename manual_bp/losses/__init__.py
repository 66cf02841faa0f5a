"""torch-named loss modules: torch's signatures, defaults, input forms and reductions.

The library's own costs (:mod:`manual_bp.costs`, Nielsen's convention: the mini-batch cost
is the mean of per-sample costs) are a separate family; ``docs/conventions.md`` says which
is which. Every class here registers in :data:`LOSSES` under a lower-case name and carries
torch's class name.

Modules, by concept (every name is importable from :mod:`manual_bp.losses`):

* :mod:`~manual_bp.losses.base` — the :class:`Loss` protocol, torch's reduction and the
  registry;
* :mod:`~manual_bp.losses.regression` — ``MSELoss``, ``L1Loss``, ``HuberLoss``,
  ``SmoothL1Loss``; :mod:`~manual_bp.losses.binary` — ``BCELoss``, ``BCEWithLogitsLoss``;
  :mod:`~manual_bp.losses.distribution` — ``KLDivLoss``, ``PoissonNLLLoss`` (element-wise
  losses on :mod:`~manual_bp.losses._elementwise`);
* :mod:`~manual_bp.losses.classification` — ``NLLLoss`` and ``CrossEntropyLoss`` (class
  weights, ``ignore_index``, label smoothing, probability targets, K-dimensional inputs);
  :mod:`~manual_bp.losses.multi_margin` — ``MultiMarginLoss``;
  :mod:`~manual_bp.losses.linear_classification` — ``LinearCrossEntropyLoss`` (a linear
  projection, then cross-entropy: the one loss with a parameter);
* :mod:`~manual_bp.losses.margins`, :mod:`~manual_bp.losses.embeddings`,
  :mod:`~manual_bp.losses.gaussian` — the pairwise, margin and embedding losses
  (``docs/losses_pairs.md``);
* :mod:`~manual_bp.losses.ctc` — connectionist temporal classification (``CTCLoss``).
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
from manual_bp.losses.binary import BCELoss, BCEWithLogitsLoss
from manual_bp.losses.classification import CrossEntropyLoss, NLLLoss
from manual_bp.losses.ctc import CTCLoss
from manual_bp.losses.distribution import KLDivLoss, PoissonNLLLoss
from manual_bp.losses.embeddings import (
    CosineEmbeddingLoss,
    TripletMarginLoss,
    TripletMarginWithDistanceLoss,
    pairwise_distance,
)
from manual_bp.losses.gaussian import GaussianNLLLoss
from manual_bp.losses.linear_classification import (
    LinearCrossEntropyLoss,
    LinearCrossEntropyOptions,
)
from manual_bp.losses.margins import (
    HingeEmbeddingLoss,
    MarginRankingLoss,
    MultiLabelMarginLoss,
    MultiLabelSoftMarginLoss,
    SoftMarginLoss,
)
from manual_bp.losses.multi_margin import MultiMarginLoss
from manual_bp.losses.regression import HuberLoss, L1Loss, MSELoss, SmoothL1Loss

__all__ = [
    "LOSSES",
    "REDUCTIONS",
    "BCELoss",
    "BCEWithLogitsLoss",
    "CTCLoss",
    "CosineEmbeddingLoss",
    "CrossEntropyLoss",
    "GaussianNLLLoss",
    "HingeEmbeddingLoss",
    "HuberLoss",
    "KLDivLoss",
    "L1Loss",
    "LinearCrossEntropyLoss",
    "LinearCrossEntropyOptions",
    "Loss",
    "MSELoss",
    "MarginRankingLoss",
    "MultiLabelMarginLoss",
    "MultiLabelSoftMarginLoss",
    "MultiMarginLoss",
    "NLLLoss",
    "PoissonNLLLoss",
    "SmoothL1Loss",
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
