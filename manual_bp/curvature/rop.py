"""Hessian- and GGN-vector products by Pearlmutter's R-operator.

For a direction ``v`` over all parameters, ``R{·} = d/dr (·)(θ + r v)|₀``. Applying
``R`` to every line of the forward and backward passes (Pearlmutter 1994) gives ``H v``
at about twice the cost of one gradient; dropping the terms that differentiate the
Jacobians themselves leaves the generalised Gauss-Newton product ``G v = Jᵀ H_ℓ J v``
(Schraudolph 2002). Equations ``CURV.hvp`` and ``CURV.ggnvp`` (``docs/curvature.md``).

The cost is the mean ``C = (1/n) Σₓ ℓ(fₓ, yₓ)``, so ``H = ∇²C`` and ``G`` include ``1/n``.
Directions and results are lists of arrays in ``model.parameter_arrays()`` order (a flat
vector is accepted as a direction).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp.curvature._checks import entry
from manual_bp.curvature.chain import Chain, as_chain, flatten
from manual_bp.curvature.fast_gradient import fused_gradient
from manual_bp.curvature.loss import output_gradient, output_hessian_product

__all__ = ["ggn_matrix", "ggnvp", "gradient", "hessian_matrix", "hvp", "walk_gradient"]


@entry("x and y")
def gradient(model: Any, x: Any, y: Any) -> list[np.ndarray]:
    """``∇C`` of the model's mean cost, in ``parameter_arrays()`` order.

    Validated as every quantity (:func:`~manual_bp.curvature.chain.as_chain`,
    ``Chain.data``), then computed by the fused training step's sweep through the layers'
    fast forms (:func:`~manual_bp.curvature.fast_gradient.fused_gradient`), which equals
    :func:`walk_gradient` to rounding (``tests/test_curvature_fast_gradient.py``).
    """
    chain = as_chain(model)
    x, y = chain.data(x, y)
    return fused_gradient(chain.prepare, x, y)


@entry("x and y")
def walk_gradient(model: Any, x: Any, y: Any) -> list[np.ndarray]:
    """``∇C`` by the chain's backward pass (the sweep the R-operator differentiates).

    Each layer's own ``backward`` (one sweep for both gradients: a recurrent layer's
    ``param_vjp`` and ``input_vjp`` would each run the time loop) and at the lowest link
    ``parameter_gradients`` (nothing below needs ``∂C/∂x``: a dense layer skips ``dz W``,
    a convolution its col2im); equal to the V-axis ``param_vjp``/``input_vjp`` on ``V = 1``.
    The reference :func:`gradient`'s fast route is checked against.
    """
    chain = as_chain(model)
    x, y = chain.data(x, y)
    caches, f = chain.forward(x)
    dout = output_gradient(chain, f, y) / f.shape[0]
    grads = chain.slots()
    for link, cache, below in chain.backwards(caches):
        if below:
            dout, found = link.layer.backward(dout, cache)
        elif link.index:
            found = link.layer.parameter_gradients(dout, cache)
        else:
            break
        for name, g in found.items():
            grads[link.index[name]] = g
    return chain.results(grads)  # a parameter no gradient reached (none in a chain): zero


def _r_sweep(chain: Chain, x: np.ndarray, y: np.ndarray, v: list, exact: bool) -> list:
    """One forward and one backward R-pass; ``exact=False`` keeps only the GGN terms.

    Forward: ``R{out} = J_x R{in} + J_θ v_θ`` (``input_jvp`` + ``param_jvp``). Backward:
    ``R{∂in} = J_xᵀ R{∂out} + residual_x``, ``R{∂θ} = J_θᵀ R{∂out} + residual_θ``, the
    residual being the layer's second-order term (``residual``; dropped for the GGN).
    All on ``V = 1``.
    """
    caches, f = chain.forward(x)
    n = f.shape[0]
    r_inputs, r = [], None  # R{·} of each link's input, (1, n, ·); None: zero
    for link, cache in zip(chain.links, caches, strict=True):
        r_inputs.append(r)
        tangents = link.tangents(v)
        rz = None if r is None else link.ops.input_jvp(cache, r)
        if tangents is not None:
            pz = link.ops.param_jvp(cache, tangents)
            rz = pz if rz is None else rz + pz
        r = rz
    # Seed: g = (1/n) ∇_f ℓ,  R{g} = (1/n) ∇²_f ℓ R{f}.
    g = output_gradient(chain, f, y) / n
    shape, r = r.shape, r.reshape(r.shape[0], -1, f.shape[-1])  # rows (CURV.rows)
    rg = output_hessian_product(chain, f, y, r) / n
    rg = rg.reshape(shape)
    out = chain.slots()
    for link, cache, r_in, below in chain.backwards(caches, r_inputs):
        layer, tangents = link.ops, link.tangents(v)
        link.add(out, layer.param_vjp(cache, rg))
        res_x = None  # none where the layer's Hessian is zero (ReLU, pooling): not computed
        if exact and not link.layer.hessian_is_zero and (r_in is not None or tangents is not None):
            res_x, res_p = layer.residual(cache, g, r_in, tangents)
            link.add(out, res_p)
        if below and exact:  # R{g} and g down together: one input_vjp on V = 2
            both = layer.input_vjp(cache, np.concatenate([rg, g[None]]))
            rg, g = both[:1] + (0.0 if res_x is None else res_x), both[1]
        elif below:  # the GGN never needs g below the output
            rg = layer.input_vjp(cache, rg)
    return chain.results(out)


@entry("x, y and v")
def hvp(model: Any, x: Any, y: Any, v: Any) -> list[np.ndarray]:
    """Hessian-vector product ``H v = ∇²C v`` (equation ``CURV.hvp``).

    Parameters
    ----------
    model : Network or Sequential of layers with V-axis products (:data:`.SUPPORTED_LAYERS`)
    x : (n, *in) inputs (indices for an embedding first); y : targets (output-shaped or
        labels, one per position of a sequence output)
    v : list of arrays shaped like ``parameter_arrays()``, or a flat vector
        Floating point and finite; anything else (None, complex, integer, NaN, a wrong
        count or shape) raises one ``TypeError``/``ValueError`` naming ``v`` before any work.

    Returns
    -------
    list of arrays shaped like the parameters.
    """
    chain = as_chain(model)
    v = chain.check_direction(v)
    x, y = chain.data(x, y)
    return _r_sweep(chain, x, y, v, exact=True)


@entry("x, y and v")
def ggnvp(model: Any, x: Any, y: Any, v: Any) -> list[np.ndarray]:
    """GGN-vector product ``G v = (1/n) Σₓ Jₓᵀ ∇²_f ℓ Jₓ v`` (equation ``CURV.ggnvp``).

    The R-operator without the ``σ''`` and ``g R{W}`` terms: the forward pass gives
    ``J v``, the backward pass is a plain VJP of ``(1/n) ∇²_f ℓ J v``.
    """
    chain = as_chain(model)
    v = chain.check_direction(v)
    x, y = chain.data(x, y)
    return _r_sweep(chain, x, y, v, exact=False)


def _matrix(product, model: Any, x: Any, y: Any) -> np.ndarray:
    chain = as_chain(model)
    chain.data(x, y)  # refused before the first column, not after
    size = sum(int(np.prod(s)) for s in chain.shapes)
    eye = np.eye(size, dtype=chain.dtype)
    return np.stack([flatten(product(model, x, y, e)) for e in eye], axis=1)


@entry("x and y")
def hessian_matrix(model: Any, x: Any, y: Any) -> np.ndarray:
    """The full Hessian, column ``i`` = ``H eᵢ`` (small models only; flat parameter order)."""
    return _matrix(hvp, model, x, y)


@entry("x and y")
def ggn_matrix(model: Any, x: Any, y: Any) -> np.ndarray:
    """The full GGN, column ``i`` = ``G eᵢ`` (small models only; flat parameter order)."""
    return _matrix(ggnvp, model, x, y)
