"""The loss at the network output ``f``: gradient, Hessian, symmetric factor, MC factor.

``ℓ(f, y) = C(head(f), y)`` per row (``CURV.ggn-split`` in :mod:`.chain`). All
quantities here are *per sample* and not divided by the batch size ``n``; the sweeps
multiply by ``1/n`` for the mean cost ``C = (1/n) Σₓ ℓ(fₓ, yₓ)``.

On an output of any rank (``CURV.rows``) the cost acts on rows (the last axis) with
weights ``n·w_r`` (:func:`row_weights`): ``n/R`` on each of the ``R`` counted rows, 0 on a
row ``ignore_index`` drops. On ``(n, m)`` outputs every weight is 1 and nothing changes.
"""

from __future__ import annotations

import numpy as np

from manual_bp._arguments import check_count
from manual_bp.costs.base import PREDICTIVE
from manual_bp.curvature.chain import Chain
from manual_bp.models.targets import counted_rows, rows

__all__ = [
    "factor_columns",
    "output_factor",
    "output_gradient",
    "output_hessian",
    "output_hessian_composed",
    "output_hessian_product",
    "row_weights",
    "sample_targets",
    "sampled_factor",
]


def row_weights(chain: Chain, f: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """``n·w_r`` per row of ``f`` ``(R,)`` (``CURV.rows``), ``n = f.shape[0]``: ``n/R_c`` on
    the ``R_c`` counted rows, 0 on rows ``ignore_index`` drops; None when all are 1."""
    R, n = int(np.prod(f.shape[:-1])), f.shape[0]
    counted = counted_rows(rows(y), chain.ignore_index, "y")  # None: every row counts
    if counted is None:
        return None if n == R else np.full(R, n / R, f.dtype)
    return np.where(counted, n / counted.sum(), 0.0).astype(f.dtype)


def _target_rows(chain: Chain, y: np.ndarray) -> np.ndarray:
    """``y``'s rows, an ignored (all-zero) row given the first class: its weight is 0, and
    the cost's quantities are defined only at targets in its domain."""
    yr = rows(y)
    if chain.ignore_index is None:
        return yr
    dropped = ~yr.any(axis=1)
    if not dropped.any():
        return yr
    yr = yr.copy()
    yr[dropped, 0] = 1
    return yr


def _weighted(w: np.ndarray | None, a: np.ndarray) -> np.ndarray:
    return a if w is None else a * w.reshape(-1, *([1] * (a.ndim - 1)))


def output_gradient(chain: Chain, f: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``n ∂C/∂f`` shaped like ``f`` — ``∇_f ℓ`` per sample on ``(n, m)``: BP1 through the
    head (its shortcut when exact), each row weighted by :func:`row_weights`."""
    fr, yr = rows(f), _target_rows(chain, y)
    g = chain.cost.delta(fr, chain.head.forward(fr), yr, chain.head)
    return _weighted(row_weights(chain, f, y), g).reshape(f.shape)


def _head_jacobian(chain: Chain, f: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``J[x] = ∂ head(f)/∂f`` per sample, ``(n, m, m)``, column by column from the JVP."""
    eye = np.eye(f.shape[1], dtype=f.dtype)
    cols = [chain.head.jvp(np.broadcast_to(e, f.shape), f, a) for e in eye]
    return np.stack(cols, axis=2)


def output_hessian_composed(chain: Chain, f: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Readable ``∇²_f ℓ = Jᵀ (∇²ₐC) J + Σₖ gₖ ∇²σₖ`` (``CURV.output-hessian``), ``(n, m, m)``.

    ``J`` is the head's Jacobian, ``g = ∂C/∂a``; the second term is the head's
    second-order VJP applied to the unit vectors (``ACT2.*``).
    """
    a = chain.head.forward(f)
    J = _head_jacobian(chain, f, a)
    H = np.swapaxes(J, 1, 2) @ chain.cost.hessian(a, y) @ J
    g = chain.cost.grad(a, y)
    eye = np.eye(f.shape[1], dtype=f.dtype)
    residual = [chain.head.second_vjp(g, np.broadcast_to(e, f.shape), f, a) for e in eye]
    return H + np.stack(residual, axis=2)


def output_hessian(chain: Chain, f: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``∇²_f ℓ`` per row, ``(R, m, m)`` (``CURV.output-hessian``), times :func:`row_weights`.

    Identity head: the cost's Hessian (``CURV.loss-hessian.<cost>``). A folded head: the
    closed form on the cost's :class:`~manual_bp.costs.Fold` row, finite even where ``a``
    underflows (the composed form divides by ``a``): softmax + log-likelihood and
    log-softmax + KL give ``(Σy)(diag(p) − ppᵀ)``, sigmoid + cross-entropy ``diag(a(1 − a))``.
    """
    H = chain.cost.output_hessian(rows(f), _target_rows(chain, y), chain.head)
    return _weighted(row_weights(chain, f, y), H)


def output_hessian_product(chain: Chain, f: np.ndarray, y: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``∇²_f ℓ · r`` per row for V tangents ``r`` ``(V, R, m)``, times :func:`row_weights`
    (``CURV.output-hessian``): the cost's :meth:`~manual_bp.costs.Cost.output_hessian_product`
    (closed forms without ``(R, m, m)`` matrices where the Hessian has structure: softmax
    cross-entropy, sigmoid + BCE; the matrices of :func:`output_hessian` otherwise)."""
    product = chain.cost.output_hessian_product(rows(f), _target_rows(chain, y), chain.head, r)
    weights = row_weights(chain, f, y)
    return product if weights is None else product * weights[:, None]


def output_factor(chain: Chain, f: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``S`` with ``S Sᵀ = ∇²_f ℓ`` per row, ``(R, m, c)`` (``CURV.loss-factor``), times
    ``√`` of :func:`row_weights`.

    The cost's (:meth:`~manual_bp.costs.Cost.output_hessian_factor`); softmax-type heads:
    ``S = √(Σy) (diag(√p) − p √pᵀ)`` (Dangel et al. 2020).
    """
    S = chain.cost.output_hessian_factor(rows(f), _target_rows(chain, y), chain.head)
    w = row_weights(chain, f, y)
    return S if w is None else _weighted(np.sqrt(w), S)


def factor_columns(
    chain: Chain, S: np.ndarray, shape: tuple[int, ...], *, sampled: bool = False
) -> np.ndarray:
    """A row factor ``S`` ``(R, m, c)`` of an output of ``shape`` as cotangent columns on
    the V axis, ``Σ_v col_v col_vᵀ = blockdiag_r(S_r S_rᵀ)``.

    ``sampled`` (a Monte-Carlo factor, :func:`sampled_factor`: each row's columns are
    gradients at targets drawn independently per row, of mean zero): on a separable chain a
    sample's rows share its ``c`` columns, ``(c, *shape)`` — ``E[col colᵀ]`` is the same
    block diagonal, the cross terms of two rows having mean zero (BackPACK's columns for a
    sequence output; ``P`` times fewer than one per position, each draw noisier).

    Compact (a separable chain): ``(P·c, *shape)`` with ``P`` rows per sample, column
    ``(p, c)`` holding every sample's ``S[:, :, c]`` at its position ``p`` — on ``(n, m)``
    outputs the ``c`` columns of ``S``; a per-sample split along axis 0 of every layer then
    recovers each sample's share. Whole (a coupled chain): ``(R·c, *shape)``,
    one row at a time, so a column is nonzero in one sample's rows only
    (``CURV.coupled-batch``).
    """
    whole = chain.coupling is not None
    R, m, c = S.shape
    n = shape[0]
    if not whole:
        P = R // n
        if P == 1 or sampled:
            return np.ascontiguousarray(np.transpose(S, (2, 0, 1))).reshape(c, *shape)
        Sp = S.reshape(n, P, m, c)
        cols = np.zeros((P, c, n, P, m), S.dtype)
        for p in range(P):
            cols[p, :, :, p, :] = np.transpose(Sp[:, p], (2, 0, 1))
        return cols.reshape(P * c, *shape)
    cols = np.zeros((R, c, R, m), S.dtype)
    cols[np.arange(R), :, np.arange(R), :] = np.transpose(S, (0, 2, 1))
    return cols.reshape(R * c, *shape)


def sample_targets(chain: Chain, f: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Targets ``ŷ ~ p(y | f)`` from the model's predictive distribution (``CURV.diag-ggn-mc``).

    Defined where ``ℓ`` is the negative log-likelihood of an exponential family with
    natural parameter ``f``, so that ``E_ŷ[∇ℓ ∇ℓᵀ] = ∇²_f ℓ`` (the Fisher equals the GGN):
    the cost's :attr:`~manual_bp.costs.Fold.predictive` for the head — quadratic
    (``N(f, I)``), categorical (softmax), Bernoulli (sigmoid), Poisson (``log_input=True``).
    Raises ``ValueError`` for any other cost and head.
    """
    kind = chain.cost.predictive(chain.head)
    if kind is None:
        raise ValueError(
            f"no predictive distribution whose Fisher equals the GGN for cost "
            f"{chain.cost.name!r} with output {chain.head.name!r}; Monte-Carlo GGN needs a "
            f"cost whose Fold row for that output names one of {sorted(PREDICTIVE)} "
            "(poisson-nll with log_input=True)"
        )
    return PREDICTIVE[kind](f, rng)


def sampled_factor(
    chain: Chain, f: np.ndarray, y: np.ndarray, rng: np.random.Generator, n_samples: int = 1
) -> np.ndarray:
    """Monte-Carlo factor ``S̃ = √(Σy) [∇_f ℓ(f, ŷ₁), …, ∇_f ℓ(f, ŷ_M)] / √M``, ``(n, m, M)``.

    ``E[S̃ S̃ᵀ] = ∇²_f ℓ`` (``CURV.diag-ggn-mc``). The targets ``ŷ`` are drawn from the
    model; the data's ``y`` enter only through their mass ``Σⱼ yⱼ``, which is 1 except for
    KL targets: ``ℓ = (Σy)·NLL(p, y/Σy)``, so ``∇²_f ℓ = (Σy)(diag p − ppᵀ)`` while the
    gradient at a sampled one-hot ``ŷ`` is ``p − ŷ`` (mass 1) with ``E[(p − ŷ)(p − ŷ)ᵀ] =
    diag p − ppᵀ``: each column is scaled by ``√(Σy)`` (without it the estimate is the
    exact value divided by ``Σy``).
    """
    n_samples = check_count(n_samples, "n_samples")
    fr, yr = rows(f), _target_rows(chain, y)
    cols = [output_gradient(chain, fr, sample_targets(chain, fr, rng)) for _ in range(n_samples)]
    S, mass = np.stack(cols, axis=2), chain.cost.target_mass(yr)  # mass: a number or (R, 1)
    w = row_weights(chain, f, y)
    if w is not None:
        mass = mass * w[:, None]
    if np.ndim(mass):
        return S * np.sqrt(mass / n_samples)[:, :, None]
    return S * float(np.sqrt(mass / n_samples))
