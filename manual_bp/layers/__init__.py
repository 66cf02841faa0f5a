"""Layers with the protocol ``forward(x) -> (out, cache)``, ``backward(dout, cache) -> (dx,
grads)``; see :mod:`manual_bp.layers.base`. One module per family; every module of this
package is imported here so that its layers register themselves in :data:`LAYERS`.
"""

import importlib
import pkgutil

from manual_bp.layers.activation import ActivationLayer
from manual_bp.layers.base import (
    LAYERS,
    BatchCouplingError,
    Cache,
    ElementwiseLayer,
    Layer,
    check_input,
    register_layer,
)
from manual_bp.layers.build import build_layer, get_layer
from manual_bp.layers.containers import (
    Flatten,
    Identity,
    Reshape,
    Residual,
    stack_backward,
    stack_forward,
    stack_output_shape,
)
from manual_bp.layers.dense import Dense, Linear, dense_backward, dense_forward

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

# Every registered layer class is importable from here: from manual_bp.layers import Conv2d.
_EXPORTED = {cls.__name__: cls for cls in LAYERS.classes()}
globals().update(_EXPORTED)

__all__ = [
    "LAYERS",
    "Linear",
    "ActivationLayer",
    "BatchCouplingError",
    "Cache",
    "Dense",
    "ElementwiseLayer",
    "Flatten",
    "Identity",
    "Layer",
    "Reshape",
    "Residual",
    "build_layer",
    "check_input",
    "dense_backward",
    "dense_forward",
    "get_layer",
    "register_layer",
    "stack_backward",
    "stack_forward",
    "stack_output_shape",
    *sorted(
        set(_EXPORTED) - {"ActivationLayer", "Dense", "Flatten", "Identity", "Reshape", "Residual"}
    ),
]
