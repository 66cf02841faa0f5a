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

from manual_bp.curvature.chain import as_chain

__all__ = [
    "to_backpack_batch_grad",
    "to_backpack_kron",
    "to_backpack_sum_grad_squared",
    "to_backpack_variance",
]


def to_backpack_batch_grad(gradients: list[np.ndarray]) -> list[np.ndarray]:
    """BackPACK's ``grad_batch`` (mean reduction) from :func:`per_sample_gradients`: ``gₓ/n``."""
    return [g / g.shape[0] for g in gradients]


def to_backpack_sum_grad_squared(sgs: list[np.ndarray], n: int) -> list[np.ndarray]:
    """BackPACK's ``sum_grad_squared`` from :func:`sum_grad_squared` of ``n`` samples:
    ``÷ n²``."""
    return [s / (n * n) for s in sgs]


def to_backpack_variance(variance: list[np.ndarray], n: int) -> list[np.ndarray]:
    """BackPACK's ``variance`` from :func:`grad_variance` of ``n`` samples: ``÷ n²``."""
    return [v / (n * n) for v in variance]


def to_backpack_kron(model: Any, factors: list[tuple[np.ndarray, np.ndarray]]) -> list[list]:
    """BackPACK's ``kflr``/``kfac`` lists, one per parameter in ``parameter_arrays()``
    order, from :func:`~manual_bp.curvature.kfac.kflr`'s ``[(A, B)]``: ``[B, A_x]`` on a
    weight (``A_x``: ``A`` without the folded bias row and column) and ``[B]`` on a bias."""
    chain = as_chain(model)
    links = [link for link in chain.links if link.index]
    if len(links) != len(factors):
        raise ValueError(
            f"factors has {len(factors)} entries, the model {len(links)} layers with parameters"
        )
    out: list[list] = [[] for _ in chain.shapes]
    for link, (A, B) in zip(links, factors, strict=True):
        has_bias = "bias" in link.index
        out[link.index["weight"]] = [B, A[:-1, :-1] if has_bias else A]
        if has_bias:
            out[link.index["bias"]] = [B]
    return out
