"""manual_bp: backpropagation derived by hand in NumPy, verified against torch autograd.

>>> from manual_bp import Network, Sequential, Dense
>>> net = Network([2, 2, 2], activation="sigmoid", cost="quadratic", seed=0)
>>> model = Sequential([Dense(2, 4), "relu", Dense(4, 2)], cost="quadratic", seed=0)

Layers of every family register themselves in :data:`LAYERS` and are importable from
:mod:`manual_bp.layers`; the most used ones are re-exported here.
"""

from manual_bp.activations import (
    ACTIVATIONS,
    Activation,
    Identity,
    ReLU,
    Sigmoid,
    Tanh,
    get_activation,
    register_activation,
)
from manual_bp.costs import COSTS, Cost, CrossEntropyCost, QuadraticCost, get_cost, register_cost
from manual_bp.data import Dataset, DatasetError, load_digits, load_mnist
from manual_bp.encoding import one_hot, to_labels
from manual_bp.layers import (
    LAYERS,
    ActivationLayer,
    Dense,
    Flatten,
    Layer,
    Reshape,
    Residual,
    get_layer,
)
from manual_bp.layers import (
    Identity as IdentityLayer,
)
from manual_bp.network import Gradients, Network
from manual_bp.optimizers import SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop, get_optimizer
from manual_bp.regularizers import L1, L2, Regularizer, get_regularizer
from manual_bp.schedules import (
    SCHEDULES,
    CosineAnnealingLR,
    ExponentialLR,
    Schedule,
    StepLR,
    get_schedule,
)
from manual_bp.sequential import Sequential, StackGradients
from manual_bp.serialization import SerializationError, load, load_network, save, save_network
from manual_bp.training import History, nielsen_sgd, train

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "COSTS",
    "L1",
    "L2",
    "LAYERS",
    "SCHEDULES",
    "SGD",
    "Activation",
    "ActivationLayer",
    "Adagrad",
    "Adam",
    "AdamW",
    "CosineAnnealingLR",
    "Cost",
    "CrossEntropyCost",
    "Dataset",
    "DatasetError",
    "Dense",
    "ExponentialLR",
    "Flatten",
    "Gradients",
    "History",
    "Identity",
    "IdentityLayer",
    "Layer",
    "Network",
    "Optimizer",
    "QuadraticCost",
    "RMSprop",
    "ReLU",
    "Regularizer",
    "Reshape",
    "Residual",
    "Schedule",
    "Sequential",
    "SerializationError",
    "Sigmoid",
    "StackGradients",
    "StepLR",
    "Tanh",
    "__version__",
    "get_activation",
    "get_cost",
    "get_layer",
    "get_optimizer",
    "get_regularizer",
    "get_schedule",
    "load",
    "load_digits",
    "load_mnist",
    "load_network",
    "nielsen_sgd",
    "one_hot",
    "register_activation",
    "register_cost",
    "save",
    "save_network",
    "to_labels",
    "train",
]
