"""Per-sample gradients, materialised, from the layers' per-sample parameter VJPs.

``CURV.per-sample-grad``: the per-sample errors ``δₓ = ∂Cₓ/∂out`` of every layer with
parameters come down the stack by ``input_vjp`` (the walk of
:func:`~manual_bp.curvature.stats.grad_norms`, shared), and each layer's
``param_vjp(cache, δ[None], sum_batch=False)`` gives ``gₓ = ∇θ Cₓ`` for every sample at
once, ``(n, *p)``. No ``1/n``: ``(1/n) Σₓ gₓ`` is the gradient of the mean cost.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp.curvature._checks import as_arrays, entry
from manual_bp.curvature.chain import as_chain
from manual_bp.curvature.stats import errors

__all__ = ["by_name", "per_sample_gradients", "per_sample_norms"]


@entry("x and y")
def per_sample_gradients(model: Any, x: Any, y: Any) -> list[np.ndarray]:
    """``gₓ = ∇θ Cₓ`` for every sample: ``(n, *p)`` per parameter, ``parameter_arrays()``
    order (``CURV.per-sample-grad``); :func:`by_name` keys them by torch's names.

    BackPACK's ``BatchGrad`` (mean reduction) is ``gₓ / n``
    (:func:`~manual_bp.curvature.conventions.to_backpack_batch_grad`); Opacus's
    ``grad_sample`` (``loss_reduction="mean"``) and ``torch.func.vmap(grad)`` of the
    one-sample cost are ``gₓ`` itself.
    """
    chain, found = errors(model, x, y)
    n = found[0][2].shape[0]
    out = chain.slots()
    for link, cache, delta in found:
        for name, g in link.ops.param_vjp(cache, delta[None], sum_batch=False).items():
            out[link.index[name]] = g[0]
    return chain.results(out, n)


def per_sample_norms(gradients: list[np.ndarray]) -> np.ndarray:
    """``‖gₓ‖`` over ALL parameters per sample, ``(n,)``, from :func:`per_sample_gradients`
    (the norm DP-SGD clips; ``CURV.dp-sgd``)."""
    gradients = as_arrays(gradients, "gradients", batch=True)
    squares = [np.square(g.reshape(g.shape[0], -1)).sum(axis=1) for g in gradients]
    return np.sqrt(np.sum(squares, axis=0))


def by_name(model: Any, arrays: list[Any]) -> dict[str, Any]:
    """``{torch parameter name: array}`` for a result in ``parameter_arrays()`` order."""
    as_chain(model)  # the model is named first
    names = [name for name, _ in model.named_parameters()]
    if isinstance(arrays, (list, tuple)) and len(names) != len(arrays):
        raise ValueError(f"arrays has {len(arrays)} entries, the model {len(names)} parameters")
    arrays = as_arrays(arrays, "arrays")
    return dict(zip(names, arrays, strict=True))
