"""Conversions between manual_bp's conventions and BackPACK's (``docs/curvature.md``,
"Conventions against BackPACK, curvlinops and Opacus").

manual_bp's per-sample quantities are those of ``Cₓ``; BackPACK's (mean reduction) are
those of ``Cₓ/n``, the sample's share of the mean cost. Hence BackPACK's ``BatchGrad`` is
``gₓ/n``, its ``SumGradSquared`` ``Σₓ (gₓ/n)² = (1/n²) Σₓ gₓ²`` and its ``Variance``
``(1/n) Σₓ (gₓ/n)² − (ḡ/n)² = Var[g]/n²``. KFLR/KFAC here are one ``(A, B)`` per layer with
parameters, the input factor first and the bias folded into ``A`` (``G_W̃ ≈ B ⊗ A``);
BackPACK stores ``[B, A]`` on the weight (``A`` without the bias row) and ``[B]`` on the
bias. curvlinops' EF, GGN and Hessian operators and Opacus's ``grad_sample``
(``loss_reduction="mean"``) use the same scaling as manual_bp: no conversion.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp._arguments import check_count
from manual_bp.curvature._checks import as_arrays, as_factors
from manual_bp.curvature.chain import Chain, as_chain

__all__ = [
    "to_backpack_batch_grad",
    "to_backpack_kron",
    "to_backpack_sum_grad_squared",
    "to_backpack_variance",
]


def to_backpack_batch_grad(gradients: list[np.ndarray]) -> list[np.ndarray]:
    """BackPACK's ``grad_batch`` (mean reduction) from :func:`per_sample_gradients`: ``gₓ/n``."""
    gradients = as_arrays(gradients, "gradients", batch=True)
    return [g / g.shape[0] for g in gradients]


def to_backpack_sum_grad_squared(sgs: list[np.ndarray], n: int) -> list[np.ndarray]:
    """BackPACK's ``sum_grad_squared`` from :func:`sum_grad_squared` of ``n`` samples:
    ``÷ n²``."""
    sgs, n = as_arrays(sgs, "sgs"), check_count(n, "n")
    return [s / (n * n) for s in sgs]


def to_backpack_variance(variance: list[np.ndarray], n: int) -> list[np.ndarray]:
    """BackPACK's ``variance`` from :func:`grad_variance` of ``n`` samples: ``÷ n²``."""
    variance, n = as_arrays(variance, "variance"), check_count(n, "n")
    return [v / (n * n) for v in variance]


def to_backpack_kron(model: Any, factors: list[tuple[np.ndarray, np.ndarray]]) -> list[list]:
    """BackPACK's ``kflr``/``kfac`` lists, one per parameter in ``parameter_arrays()``
    order, from :func:`~manual_bp.curvature.kfac.kflr`'s ``[(A, B)]``: ``[B, A_x]`` on a
    weight (``A_x``: ``A`` without the folded bias row and column) and ``[B]`` on a bias."""
    chain = as_chain(model)
    links = [link for link in chain.links if link.index]
    factors = as_factors(factors, factor_shapes(chain))
    out: list[list] = [[] for _ in chain.shapes]
    for link, (A, B) in zip(links, factors, strict=True):
        has_bias = "bias" in link.index
        out[link.index["weight"]] = [B, A[:-1, :-1] if has_bias else A]
        if has_bias:
            out[link.index["bias"]] = [B]
    return out


def factor_shapes(chain: Chain, eigen: bool = False) -> list[list[tuple[int, ...]]]:
    """The shapes of :func:`~manual_bp.curvature.kfac.kflr`'s ``(A, B)`` per layer with
    parameters, ``A`` ``(m_in', m_in')`` (``m_in' = m_in + 1`` with a bias), ``B``
    ``(m_out, m_out)``; ``eigen``: of :func:`~manual_bp.curvature.kfac_inverse.ekfac`'s
    ``(Q_A, Q_B, s)``, ``s`` ``(m_out, m_in')``."""
    shapes = []
    for link in chain.links:
        if link.index:
            weight = chain.shapes[link.index["weight"]]
            m_out = int(weight[0])
            m_in = int(np.prod(weight[1:])) + ("bias" in link.index)
            pair = [(m_in, m_in), (m_out, m_out)]
            shapes.append([*pair, (m_out, m_in)] if eigen else pair)
    return shapes
