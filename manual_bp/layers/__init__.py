"""Layers with the CS231n-style protocol ``forward(x) -> (out, cache)`` and
``backward(dout, cache) -> (dx, param_grads)``; see :class:`~manual_bp.layers.base.Layer`."""

from manual_bp.layers.activation import ActivationLayer
from manual_bp.layers.base import Layer
from manual_bp.layers.dense import Dense, dense_backward, dense_forward

__all__ = ["ActivationLayer", "Dense", "Layer", "dense_backward", "dense_forward"]
