"""KFRA: Kronecker factors from the recursively approximated, batch-averaged GGN.

``CURV.kfra`` (Botev, Ritter & Barber 2017, "Practical Gauss-Newton optimisation for deep
learning"; BackPACK 1.7.1's ``KFRA``): instead of backpropagating a factor of every
sample's loss Hessian (KFLR), one batch-averaged matrix ``Ḡ`` comes down the stack, averaged
over the batch at every step::

    Ḡ_f = (1/n) Σₓ ∇²_f ℓₓ                               (the loss, the head folded in)
    Ḡ_x = Wᵀ Ḡ_z W                                        (through z = x Wᵀ + b)
    Ḡ_z = Ḡ_a ⊙ (1/n) Σₓ σ'(zₓ) σ'(zₓ)ᵀ                   (through a = σ(z), elementwise)

and each dense layer gets ``(A, B) = ((1/n) Σₓ x̃ₓ x̃ₓᵀ, Ḡ_z)`` (``A`` as KFLR's, the bias
folded), ``G_W̃ ≈ B ⊗ A``. The residual ``Σ gₖ ∇²σₖ`` is dropped (a GGN). The recursion
exchanges an average of products for the product of averages, so it is exact where the
Jacobians do not depend on the sample: at ``n = 1`` (then ``B`` is KFLR's ``B``), and for
deep linear networks. It is defined for Dense on ``(batch, features)`` and elementwise
activations only (the average ``E[σ' σ'ᵀ]`` needs a diagonal Jacobian; a convolution's
``Ḡ`` would be ``(C·HW)²``): every other layer is refused in one line.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp.curvature._checks import entry
from manual_bp.curvature._kfc import dense_input_factor
from manual_bp.curvature.chain import as_chain
from manual_bp.curvature.loss import output_hessian
from manual_bp.layers.activation import ActivationLayer
from manual_bp.layers.dense import Dense

__all__ = ["kfra"]


def _check(layer: Any) -> None:
    if type(layer) is Dense:
        return
    if isinstance(layer, ActivationLayer) and layer.activation.elementwise:
        return
    raise TypeError(
        f"kfra: defined for chains of Dense layers and elementwise activations only (the "
        f"batch-averaged GGN needs a Jacobian shared or diagonal per sample); {layer!r} is "
        "neither: use kflr or kfac"
    )


@entry("x and y")
def kfra(model: Any, x: Any, y: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(A, B)]`` per dense layer, input first (``CURV.kfra``), as :func:`~.kfac.kflr`'s."""
    chain = as_chain(model)
    for link in chain.links:
        _check(link.layer)
    x, y = chain.data(x, y)
    if x.ndim != 2:
        raise TypeError(f"kfra: defined for (batch, features) inputs, got x of shape {x.shape}")
    caches, f = chain.forward(x)
    n = f.shape[0]
    G = output_hessian(chain, f, y).sum(axis=0) / n  # (1/n) Σₓ ∇²_f ℓₓ
    factors = []
    for link, cache, below in chain.backwards(caches):
        layer = link.layer
        if type(layer) is Dense:
            if link.index:
                factors.append((dense_input_factor(cache.input, "bias" in link.index), G))
            if below:
                G = cache.weight.T @ G @ cache.weight
        elif below:
            d = layer.input_jvp(cache, np.ones((1, n, G.shape[0]), G.dtype))[0]
            G = G * (d.T @ d) / n
    return factors[::-1]
