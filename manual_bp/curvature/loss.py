"""The loss at the network output ``f``: gradient, Hessian, symmetric factor, MC factor.

``ℓ(f, y) = C(head(f), y)`` per sample (``CURV.ggn-split`` in :mod:`.chain`). All
quantities here are *per sample* and not divided by the batch size ``n``; the sweeps
multiply by ``1/n`` for the mean cost ``C = (1/n) Σₓ ℓ(fₓ, yₓ)``.
"""

from __future__ import annotations

import numpy as np

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
    """``∇²_f ℓ`` per sample, ``(n, m, m)`` (``CURV.output-hessian``).

    Identity head: the cost's Hessian (``CURV.loss-hessian.<cost>``). Matching heads
    use the closed forms, finite even where ``a`` underflows (the composed form divides
    by ``a``): softmax + log-likelihood and log-softmax + KL give
    ``(Σy)(diag(p) − ppᵀ)``, sigmoid + cross-entropy ``diag(a(1 − a))``.
    """
    head = chain.head.name
    if head == "identity":
        return chain.cost.hessian(f, y)
    if head == "sigmoid":
        s = chain.head.forward(f)
        return _diag(s * (1.0 - s))
    p = np.exp(f - f.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    mass = _target_mass(chain, f, y)[:, :, None]
    return mass * (_diag(p) - p[:, :, None] * p[:, None, :])


def output_factor(chain: Chain, f: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``S`` with ``S Sᵀ = ∇²_f ℓ`` per sample, ``(n, m, c)`` (``CURV.loss-factor``).

    Softmax-type heads: ``S = √(Σy) (diag(√p) − p √pᵀ)`` (Dangel et al. 2020).
    """
    head = chain.head.name
    if head == "identity":
        return chain.cost.hessian_factor(f, y)
    if head == "sigmoid":
        s = chain.head.forward(f)
        return _diag(np.sqrt(s * (1.0 - s)))
    p = np.exp(f - f.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    r = np.sqrt(p)
    mass = np.sqrt(_target_mass(chain, f, y))[:, :, None]
    return mass * (_diag(r) - p[:, :, None] * r[:, None, :])


#: (cost, head) -> predictive distribution of the targets given the output f.
_PREDICTIVE = {
    ("quadratic", "identity"): "normal",
    ("categorical-cross-entropy", "identity"): "categorical",
    ("bce-logits", "identity"): "bernoulli",
    ("poisson-nll", "identity"): "poisson",
    ("log-likelihood", "softmax"): "categorical",
    ("cross-entropy", "sigmoid"): "bernoulli",
    ("kl-divergence", "log-softmax"): "categorical",
}


def sample_targets(chain: Chain, f: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Targets ``ŷ ~ p(y | f)`` from the model's predictive distribution (``CURV.diag-ggn-mc``).

    Defined where ``ℓ`` is the negative log-likelihood of an exponential family with
    natural parameter ``f``, so that ``E_ŷ[∇ℓ ∇ℓᵀ] = ∇²_f ℓ`` (the Fisher equals the GGN):
    quadratic (``N(f, I)``), categorical (softmax), Bernoulli (sigmoid), Poisson
    (``log_input=True``). Raises ``ValueError`` for any other cost and head.
    """
    kind = _PREDICTIVE.get((chain.cost.name, chain.head.name))
    if kind == "poisson" and not chain.cost.log_input:
        kind = None
    if kind is None:
        raise ValueError(
            f"no predictive distribution whose Fisher equals the GGN for cost "
            f"{chain.cost.name!r} with output {chain.head.name!r}; Monte-Carlo GGN needs one of "
            f"{sorted(_PREDICTIVE)} (poisson-nll with log_input=True)"
        )
    if kind == "normal":
        return f + rng.standard_normal(f.shape)
    if kind == "bernoulli":
        from manual_bp.activations import _sigmoid

        return (rng.random(f.shape) < _sigmoid(f)).astype(f.dtype)
    if kind == "poisson":
        return rng.poisson(np.exp(f)).astype(f.dtype)
    p = np.exp(f - f.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    u = rng.random((f.shape[0], 1))
    labels = np.minimum((np.cumsum(p, axis=1) < u).sum(axis=1), f.shape[1] - 1)
    return np.eye(f.shape[1], dtype=f.dtype)[labels]


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
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)):
        raise TypeError(f"n_samples must be an integer, got {n_samples!r}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    cols = [output_gradient(chain, f, sample_targets(chain, f, rng)) for _ in range(n_samples)]
    scale = np.sqrt(_target_mass(chain, f, y) / n_samples)  # (n, 1)
    return np.stack(cols, axis=2) * scale[:, :, None]


def _target_mass(chain: Chain, f: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``Σⱼ yⱼ`` per sample ``(n, 1)``: 1 for class targets, any mass for KL targets."""
    if chain.cost.name == "kl-divergence":
        return y.sum(axis=1, keepdims=True)
    return np.ones((f.shape[0], 1), dtype=f.dtype)


def _diag(d: np.ndarray) -> np.ndarray:
    out = np.zeros((*d.shape, d.shape[-1]), dtype=d.dtype)
    i = np.arange(d.shape[-1])
    out[:, i, i] = d
    return out
