"""The model: :class:`Sequential` (a stack of layers and a cost) and Nielsen's named form of
it, :class:`Network`. One parameter order (torch's state-dict order), one serializer, one
training path, for every model (``docs/stack.md``).
"""

from manual_bp.models.gpt import GPT, GPTConfig
from manual_bp.models.network import Gradients, Network
from manual_bp.models.sequential import MODELS, Sequential, StackGradients, model_from_config

__all__ = [
    "GPT",
    "MODELS",
    "GPTConfig",
    "Gradients",
    "Network",
    "Sequential",
    "StackGradients",
    "model_from_config",
]
