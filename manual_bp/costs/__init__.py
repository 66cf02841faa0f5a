"""Cost functions: per-sample cost ``C_x``, its gradient ``∇ₐC_x`` and BP1.

Conventions (``docs/conventions.md``): ``a`` and ``y`` are ``(batch, n_out)``;
:meth:`Cost.per_sample` returns the vector of per-sample costs ``C_x``;
the cost of a mini-batch is their mean, :meth:`Cost.value`.
:meth:`Cost.grad` returns the per-sample gradient ``∂C_x/∂a`` (not divided by
the batch size), so that ``δᴸ_x`` in :meth:`Cost.delta` is Nielsen's
per-sample output error.

BP1 in general form is ``δᴸ = σ'ᵀ ∇ₐC`` (a VJP through the output activation);
some cost/activation pairs have a cheaper exact *shortcut*, e.g. sigmoid +
cross-entropy gives ``δᴸ = a − y``. A cost lists its shortcuts in
``shortcuts`` keyed by activation name; :meth:`Cost.delta` uses one when it
applies and the general path otherwise.

Modules, by concept (every name is importable from :mod:`manual_bp.costs`):

* :mod:`~manual_bp.costs.base` — the :class:`Cost` protocol (value, gradient, BP1 with its
  shortcuts, domains, the value from the logits) and the registry;
* :mod:`~manual_bp.costs.regression` — quadratic, absolute error, Huber, smooth L1;
* :mod:`~manual_bp.costs.classification` — cross-entropy (probabilities and logits),
  log-likelihood, categorical cross-entropy, multi-class hinge;
* :mod:`~manual_bp.costs.distribution` — KL divergence, Poisson NLL.
"""

from manual_bp.costs.base import (
    COSTS,
    Cost,
    Shortcut,
    get_cost,
    register_cost,
)
from manual_bp.costs.classification import (
    BCEWithLogitsCost,
    CategoricalCrossEntropyCost,
    CrossEntropyCost,
    LogLikelihoodCost,
    MultiMarginCost,
    class_targets,
)
from manual_bp.costs.distribution import KLDivergenceCost, PoissonNLLCost
from manual_bp.costs.regression import HuberCost, MAECost, QuadraticCost, SmoothL1Cost

# The torch-named losses (MSELoss, CrossEntropyLoss, …) are torch's modules in
# manual_bp.losses (torch's reductions and options), not aliases of these costs
# (docs/conventions.md, "Two loss families").

__all__ = [
    "COSTS",
    "BCEWithLogitsCost",
    "CategoricalCrossEntropyCost",
    "Cost",
    "CrossEntropyCost",
    "HuberCost",
    "KLDivergenceCost",
    "LogLikelihoodCost",
    "MAECost",
    "MultiMarginCost",
    "PoissonNLLCost",
    "QuadraticCost",
    "Shortcut",
    "SmoothL1Cost",
    "class_targets",
    "get_cost",
    "register_cost",
]
