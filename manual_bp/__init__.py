"""manual_bp: backpropagation derived by hand in NumPy, verified against torch autograd.

>>> from manual_bp import Network, Sequential, Dense
>>> net = Network([2, 2, 2], activation="sigmoid", cost="quadratic", seed=0)
>>> model = Sequential([Dense(2, 4), "relu", Dense(4, 2)], cost="quadratic", seed=0)

Layers of every family register themselves in :data:`LAYERS` and are importable from
:mod:`manual_bp.layers`; the most used ones are re-exported here.
"""

from manual_bp._threads import get_num_threads, set_num_threads
from manual_bp.activations import (
    ACTIVATIONS,
    ELU,
    GELU,
    SELU,
    Activation,
    HardTanh,
    Hardtanh,
    Identity,
    LeakyReLU,
    LogSoftmax,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Tanh,
    get_activation,
    register_activation,
)
from manual_bp.costs import (
    COSTS,
    BCEWithLogitsCost,
    CategoricalCrossEntropyCost,
    Cost,
    CrossEntropyCost,
    HuberCost,
    KLDivergenceCost,
    LogLikelihoodCost,
    MAECost,
    MultiMarginCost,
    PoissonNLLCost,
    QuadraticCost,
    SmoothL1Cost,
    get_cost,
    register_cost,
)
from manual_bp.data import Dataset, DatasetError, load_digits, load_mnist
from manual_bp.divergence import DivergenceError
from manual_bp.encoding import one_hot, to_labels
from manual_bp.initializers import INITIALIZERS, SCHEMES, calculate_gain, fans, initialize
from manual_bp.layers import (
    GRU,
    LAYERS,
    LSTM,
    RNN,
    ActivationLayer,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv1d,
    Conv2d,
    ConvTranspose2d,
    Dense,
    Dropout,
    Dropout2d,
    Embedding,
    Flatten,
    GlobalAvgPool2d,
    Layer,
    LayerNorm,
    MaxPool2d,
    MultiheadAttention,
    Reshape,
    Residual,
    get_layer,
)
from manual_bp.layers import (
    Identity as IdentityLayer,
)
from manual_bp.losses import (  # torch's losses (torch's reduction), not the costs' aliases
    BCELoss,
    BCEWithLogitsLoss,
    CosineEmbeddingLoss,
    CrossEntropyLoss,
    CTCLoss,
    GaussianNLLLoss,
    HingeEmbeddingLoss,
    HuberLoss,
    KLDivLoss,
    L1Loss,
    MarginRankingLoss,
    MSELoss,
    MultiLabelMarginLoss,
    MultiLabelSoftMarginLoss,
    MultiMarginLoss,
    NLLLoss,
    PoissonNLLLoss,
    SmoothL1Loss,
    SoftMarginLoss,
    TripletMarginLoss,
    TripletMarginWithDistanceLoss,
)
from manual_bp.models import Gradients, Network, Sequential, StackGradients
from manual_bp.models.parameters import StateDictError
from manual_bp.optimizers import (
    OPTIMIZERS,
    SGD,
    Adagrad,
    Adam,
    AdamW,
    Optimizer,
    RMSprop,
    get_optimizer,
)
from manual_bp.regularizers import L1, L2, REGULARIZERS, Regularizer, get_regularizer
from manual_bp.schedules import (
    SCHEDULES,
    CosineAnnealingLR,
    ExponentialLR,
    Schedule,
    StepLR,
    get_schedule,
)
from manual_bp.serialization import SerializationError, load, load_network, save, save_network
from manual_bp.training import History, nielsen_sgd, train

__version__ = "0.2.0"

# Importing a submodule binds its name here; the implementation modules that the API above
# pulled in are not the API (``from manual_bp._validation import ...`` still works).
_HIDDEN = ("_files", "_registry", "_threads", "_validation", "progress", "serialization_checks")
for _module in _HIDDEN:
    globals().pop(_module, None)
del _module

__all__ = [
    "ACTIVATIONS",
    "COSTS",
    "ELU",
    "GELU",
    "GRU",
    "INITIALIZERS",
    "L1",
    "L2",
    "LAYERS",
    "LSTM",
    "OPTIMIZERS",
    "REGULARIZERS",
    "RNN",
    "SCHEDULES",
    "SCHEMES",
    "SELU",
    "SGD",
    "Activation",
    "ActivationLayer",
    "Adagrad",
    "Adam",
    "AdamW",
    "AvgPool2d",
    "BCELoss",
    "BCEWithLogitsCost",
    "BCEWithLogitsLoss",
    "BatchNorm1d",
    "BatchNorm2d",
    "CTCLoss",
    "CategoricalCrossEntropyCost",
    "Conv1d",
    "Conv2d",
    "ConvTranspose2d",
    "CosineAnnealingLR",
    "CosineEmbeddingLoss",
    "Cost",
    "CrossEntropyCost",
    "CrossEntropyLoss",
    "Dataset",
    "DatasetError",
    "Dense",
    "DivergenceError",
    "Dropout",
    "Dropout2d",
    "Embedding",
    "ExponentialLR",
    "Flatten",
    "GaussianNLLLoss",
    "GlobalAvgPool2d",
    "Gradients",
    "HardTanh",
    "Hardtanh",
    "HingeEmbeddingLoss",
    "History",
    "HuberCost",
    "HuberLoss",
    "Identity",
    "IdentityLayer",
    "KLDivLoss",
    "KLDivergenceCost",
    "L1Loss",
    "Layer",
    "LayerNorm",
    "LeakyReLU",
    "LogLikelihoodCost",
    "LogSoftmax",
    "MAECost",
    "MSELoss",
    "MarginRankingLoss",
    "MaxPool2d",
    "MultiLabelMarginLoss",
    "MultiLabelSoftMarginLoss",
    "MultiMarginCost",
    "MultiMarginLoss",
    "MultiheadAttention",
    "NLLLoss",
    "Network",
    "Optimizer",
    "PoissonNLLCost",
    "PoissonNLLLoss",
    "QuadraticCost",
    "RMSprop",
    "ReLU",
    "Regularizer",
    "Reshape",
    "Residual",
    "Schedule",
    "Sequential",
    "SerializationError",
    "SiLU",
    "Sigmoid",
    "SmoothL1Cost",
    "SmoothL1Loss",
    "SoftMarginLoss",
    "Softmax",
    "Softplus",
    "StackGradients",
    "StateDictError",
    "StepLR",
    "Tanh",
    "TripletMarginLoss",
    "TripletMarginWithDistanceLoss",
    "__version__",
    "calculate_gain",
    "fans",
    "get_activation",
    "get_cost",
    "get_layer",
    "get_num_threads",
    "get_optimizer",
    "get_regularizer",
    "get_schedule",
    "initialize",
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
    "set_num_threads",
    "to_labels",
    "train",
]

# Every registered layer class under its own name, so a class added later is exported
# without an edit here (the layer ``Identity`` is ``IdentityLayer``: ``Identity`` is the
# activation); ``Linear`` is torch's name for ``Dense``.
from manual_bp.layers import _EXPORTED as _LAYER_CLASSES  # noqa: E402
from manual_bp.layers import Linear  # noqa: E402

globals().update({k: v for k, v in _LAYER_CLASSES.items() if k != "Identity"})
__all__ += [*sorted(set(_LAYER_CLASSES) - set(__all__) - {"Identity"}), "Linear"]
