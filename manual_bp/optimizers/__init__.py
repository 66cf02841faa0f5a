"""Update rules ``θ ← θ − η·(...)`` applied in place to lists of parameter arrays."""

from manual_bp.optimizers.base import OPTIMIZERS, Optimizer, get_optimizer
from manual_bp.optimizers.sgd import SGD

__all__ = ["OPTIMIZERS", "SGD", "Optimizer", "get_optimizer"]
