"""The loss at the network output ``f``: gradient, Hessian, symmetric factor, MC factor.

``ℓ(f, y) = C(head(f), y)`` per sample (``CURV.ggn-split`` in :mod:`.chain`). All
quantities here are *per sample* and not divided by the batch size ``n``; the sweeps
multiply by ``1/n`` for the mean cost ``C = (1/n) Σₓ ℓ(fₓ, yₓ)``.
"""

from __future__ import annotations

import numpy as np

from manual_bp._arguments import check_count
from manual_bp.costs.base import PREDICTIVE
from manual_bp.curvature.chain import Chain

__all__ = [
    "output_factor",
    "output_gradient",
    "output_hessian",
    "output_hessian_composed",
    "sample_targets",
    "sampled_factor",
]


def output_gradient(chain: Chain, f: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``∇_f ℓ`` per sample, ``(n, m)``: BP1 through the head (its shortcut when exact)."""
    a = chain.head.forward(f)
    return chain.cost.delta(f, a, y, chain.head)


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
    """``∇²_f ℓ`` per sample, ``(n, m, m)`` (``CURV.output-hessian``): the cost's.

    Identity head: the cost's Hessian (``CURV.loss-hessian.<cost>``). A folded head: the
    closed form on the cost's :class:`~manual_bp.costs.Fold` row, finite even where ``a``
    underflows (the composed form divides by ``a``): softmax + log-likelihood and
    log-softmax + KL give ``(Σy)(diag(p) − ppᵀ)``, sigmoid + cross-entropy ``diag(a(1 − a))``.
    """
    return chain.cost.output_hessian(f, y, chain.head)


def output_factor(chain: Chain, f: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``S`` with ``S Sᵀ = ∇²_f ℓ`` per sample, ``(n, m, c)`` (``CURV.loss-factor``).

    The cost's (:meth:`~manual_bp.costs.Cost.output_hessian_factor`); softmax-type heads:
    ``S = √(Σy) (diag(√p) − p √pᵀ)`` (Dangel et al. 2020).
    """
    return chain.cost.output_hessian_factor(f, y, chain.head)


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
    cols = [output_gradient(chain, f, sample_targets(chain, f, rng)) for _ in range(n_samples)]
    S, mass = np.stack(cols, axis=2), chain.cost.target_mass(y)  # mass: a number or (n, 1)
    if np.ndim(mass):
        return S * np.sqrt(mass / n_samples)[:, :, None]
    return S * float(np.sqrt(mass / n_samples))
