"""Update rules ``θ ← θ − η·(...)`` applied in place to lists of parameter arrays.

Each rule equals its ``torch.optim`` namesake step for step (``docs/optimizers.md``).
"""

from manual_bp.optimizers.adagrad import Adagrad
from manual_bp.optimizers.adam import Adam, AdamW
from manual_bp.optimizers.base import OPTIMIZERS, Optimizer, get_optimizer
from manual_bp.optimizers.rmsprop import RMSprop
from manual_bp.optimizers.sgd import SGD

__all__ = ["OPTIMIZERS", "SGD", "Adagrad", "Adam", "AdamW", "Optimizer", "RMSprop", "get_optimizer"]
