"""The product oracle of a residual block: its branch through each child's product oracle.

``reference.stack``'s torch forward of :class:`~manual_bp.layers.Residual` recurses through
:func:`~reference.stack.torch_layer_forward`, torch's own modules, which is right for first
derivatives. Second derivatives need each child's plain-op twin where it has one (torch
2.13's fused ``layer_norm``/``batch_norm`` double backward is wrong in the mixed block), so
the product oracle of a residual block is this twin: the same sum ``x + f(x)`` with every
child dispatched as :mod:`reference.products` dispatches a layer. A test checks that it
equals the first-order oracle (forward and first derivatives).
"""

from __future__ import annotations

from typing import Any

import torch

from manual_bp.layers import Layer, Residual
from reference.products import PLAIN_TWINS, register_plain_twin
from reference.stack import torch_layer_forward

__all__ = ["product_oracle_forward"]


def product_oracle_forward(
    layer: Layer, params: dict, buffers: dict, x: torch.Tensor, cache: Any
) -> torch.Tensor:
    """``layer``'s torch forward as the product oracle runs it: its plain twin if any."""
    for cls in type(layer).__mro__:
        if cls in PLAIN_TWINS:
            return PLAIN_TWINS[cls](layer, params, buffers, x, cache)
    return torch_layer_forward(layer, params, buffers, x, cache)


def _sub(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


@register_plain_twin(Residual)
def _residual_twin(layer, params, buffers, x, cache):
    h = x
    for i, (child, child_cache) in enumerate(zip(layer.layers, cache.branch, strict=True)):
        h = product_oracle_forward(
            child, _sub(params, f"{i}."), _sub(buffers, f"{i}."), h, child_cache
        )
    return x + h
