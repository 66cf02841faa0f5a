"""Training any model: the epoch loop (:mod:`.loop`) and the fused step (:mod:`.fused`).

``train(model, x, y, ...)`` and Nielsen's ``nielsen_sgd(net, training_data, ...)`` train any
:class:`~manual_bp.models.sequential.Sequential` (a Nielsen ``Network`` included) in place,
by default through the fused step (:class:`~manual_bp.training.fused.FusedTrainer`: each
layer's fast form and one update over the flat parameter buffer), or, with ``fast=False``,
through the readable step (``model.loss_and_gradients``).
"""

from manual_bp.divergence import DivergenceError
from manual_bp.training.fused import FusedTrainer
from manual_bp.training.loop import History, iterate_minibatches, nielsen_sgd, train

__all__ = [
    "DivergenceError",
    "FusedTrainer",
    "History",
    "iterate_minibatches",
    "nielsen_sgd",
    "train",
]
