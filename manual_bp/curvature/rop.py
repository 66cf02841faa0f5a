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

from manual_bp.curvature.chain import ActOp, Chain, as_chain, flatten
from manual_bp.curvature.loss import output_gradient, output_hessian

__all__ = ["ggn_matrix", "ggnvp", "gradient", "hessian_matrix", "hvp"]


def gradient(model: Any, x: Any, y: Any) -> list[np.ndarray]:
    """``∇C`` by the chain's backward pass (the sweep the R-operator differentiates)."""
    chain = as_chain(model)
    x, y = chain.data(x, y)
    inputs, f = chain.forward(x)
    g = output_gradient(chain, f, y) / x.shape[0]
    grads = chain.zeros()
    for op, inp in zip(reversed(chain.ops), reversed(inputs), strict=True):
        if isinstance(op, ActOp):
            g = op.activation.backward(g, inp, op.activation.forward(inp))
        else:
            grads[op.iw] += g.T @ inp
            if op.ib is not None:
                grads[op.ib] += g.sum(axis=0)
            g = g @ op.W
    return grads


def _r_sweep(chain: Chain, x: np.ndarray, y: np.ndarray, v: list, exact: bool) -> list:
    """One forward and one backward R-pass; ``exact=False`` keeps only the GGN terms."""
    n = x.shape[0]
    inputs, f = chain.forward(x)
    # Forward R-pass: R{z} = R{x} Wᵀ + x R{W}ᵀ + R{b};  R{a} = J_σ R{z}.
    r_inputs, r = [], None
    for op, inp in zip(chain.ops, inputs, strict=True):
        r_inputs.append(r)
        if isinstance(op, ActOp):
            r = op.activation.jvp(r, inp, op.activation.forward(inp)) if r is not None else None
        else:
            rz = inp @ v[op.iw].T
            if op.ib is not None:
                rz = rz + v[op.ib]
            r = rz if r is None else rz + r @ op.W.T
    # Seed: g = (1/n) ∇_f ℓ,  R{g} = (1/n) ∇²_f ℓ R{f}.
    g = output_gradient(chain, f, y) / n
    rg = np.einsum("nij,nj->ni", output_hessian(chain, f, y), r) / n
    out = chain.zeros()
    for op, inp, r_in in zip(
        reversed(chain.ops), reversed(inputs), reversed(r_inputs), strict=True
    ):
        if isinstance(op, ActOp):
            act, a = op.activation, op.activation.forward(inp)
            new_rg = act.backward(rg, inp, a)
            if exact and r_in is not None:
                new_rg = new_rg + act.second_vjp(g, r_in, inp, a)  # Σₖ gₖ ∇²σₖ R{z}
            g, rg = act.backward(g, inp, a), new_rg
        else:
            # ∂C/∂W = gᵀ x  ⇒  R{∂C/∂W} = R{g}ᵀ x + gᵀ R{x};   ∂C/∂x = g W  ⇒  R{g W}.
            out[op.iw] += rg.T @ inp
            if exact and r_in is not None:
                out[op.iw] += g.T @ r_in
            if op.ib is not None:
                out[op.ib] += rg.sum(axis=0)
            new_rg = rg @ op.W
            if exact:
                new_rg = new_rg + g @ v[op.iw]
            g, rg = g @ op.W, new_rg
    return out


def hvp(model: Any, x: Any, y: Any, v: Any) -> list[np.ndarray]:
    """Hessian-vector product ``H v = ∇²C v`` (equation ``CURV.hvp``).

    Parameters
    ----------
    model : Network or Sequential of Dense + activation layers
    x : (n, n_in) inputs; y : targets (rows or labels)
    v : list of arrays shaped like ``parameter_arrays()``, or a flat vector

    Returns
    -------
    list of arrays shaped like the parameters.
    """
    chain = as_chain(model)
    v = chain.check_direction(v)
    x, y = chain.data(x, y)
    return _r_sweep(chain, x, y, v, exact=True)


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
    size = sum(int(np.prod(s)) for s in chain.shapes)
    eye = np.eye(size, dtype=chain.dtype)
    return np.stack([flatten(product(model, x, y, e)) for e in eye], axis=1)


def hessian_matrix(model: Any, x: Any, y: Any) -> np.ndarray:
    """The full Hessian, column ``i`` = ``H eᵢ`` (small models only; flat parameter order)."""
    return _matrix(hvp, model, x, y)


def ggn_matrix(model: Any, x: Any, y: Any) -> np.ndarray:
    """The full GGN, column ``i`` = ``G eᵢ`` (small models only; flat parameter order)."""
    return _matrix(ggnvp, model, x, y)
