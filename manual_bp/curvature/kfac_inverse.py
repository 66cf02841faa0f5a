"""Products with damped inverses of Kronecker factors, and EKFAC.

``CURV.kfac-inverse`` (Martens & Grosse 2015, §6; curvlinops' ``KFACInverseLinearOperator``):
for a layer block ``W̃ = [W | b]`` (``m_out × m_in'``, row-major) with factors ``(A, B)``
(:func:`~manual_bp.curvature.kfac.kflr`, ``G_W̃ ≈ B ⊗ A``) and ``(B ⊗ A) vec V =
vec(B V A)`` (both symmetric), three dampings:

- ``"factors"`` (curvlinops' default): ``((B + λ_B I) ⊗ (A + λ_A I))⁻¹ v =
  vec((B + λ_B I)⁻¹ V (A + λ_A I)⁻¹)``, ``λ_A = λ_B = λ``;
- ``"heuristic"`` (π-damping, M&G §6.3): the same with ``λ_A = max(√λ·π, λ_min)``,
  ``λ_B = max(√λ/π, λ_min)``, ``π = √((tr A / dim A)/(tr B / dim B))``;
- ``"exact"``: ``(B ⊗ A + λ I)⁻¹ v`` itself, from ``A = Q_A diag(a) Q_Aᵀ``,
  ``B = Q_B diag(b) Q_Bᵀ``: ``Q_B [(Q_Bᵀ V Q_A) ⊘ (b aᵀ + λ)] Q_Aᵀ``.

``CURV.ekfac`` (George et al. 2018; curvlinops' ``EKFACLinearOperator``): in the KFAC
eigenbasis ``Q_B ⊗ Q_A``, replace the eigenvalues ``b aᵀ`` by the second moments of the
per-sample GGN factor gradients there, ``s = Σ_{c,x} (Q_Bᵀ S_{c,x} Q_A)²`` with
``S_{c,x}`` the ``(m_out × m_in')`` block of :func:`~manual_bp.curvature.sqrt_ggn.sqrt_ggn`
(which carries the ``1/√n``); ``G_W̃ ≈ (Q_B ⊗ Q_A) diag(s) (Q_B ⊗ Q_A)ᵀ``, whose diagonal in
that basis is the exact GGN's (the best diagonal there, in Frobenius norm).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from manual_bp._arguments import check_number
from manual_bp.curvature._checks import as_factors, check_choice, entry
from manual_bp.curvature.chain import as_chain
from manual_bp.curvature.conventions import factor_shapes
from manual_bp.curvature.diagonal import backpropagate_factor
from manual_bp.curvature.kfac import kflr
from manual_bp.curvature.loss import output_factor

__all__ = ["DAMPINGS", "ekfac", "ekfac_product", "kfac_inverse_product"]

DAMPINGS = ("factors", "heuristic", "exact")


def _blocks(model: Any) -> list[dict[str, int]]:
    """Each layer with parameters as ``{"weight": i, "bias": j}`` positions (the order of
    :func:`~manual_bp.curvature.kfac.kflr`'s factors)."""
    return [link.index for link in as_chain(model).links if link.index]


def _block(arrays: list[np.ndarray], index: dict[str, int], lead: int = 0) -> np.ndarray:
    """``W̃ = [W.reshape(C_out, -1) | b]`` from parameter-shaped arrays behind ``lead``
    leading axes (a dense weight or a convolution kernel, flattened as im2col's rows)."""
    W = arrays[index["weight"]]
    parts = [W.reshape(*W.shape[: lead + 1], -1)]
    if "bias" in index:
        parts.append(arrays[index["bias"]][..., None])
    return np.concatenate(parts, axis=-1)


def _scatter(block: np.ndarray, index: dict[str, int], out: list[np.ndarray]) -> None:
    """Write ``W̃``'s pieces back into ``out`` (parameter shapes)."""
    w = out[index["weight"]]
    cols = int(np.prod(w.shape[1:]))
    out[index["weight"]] = block[:, :cols].reshape(w.shape)
    if "bias" in index:
        out[index["bias"]] = block[:, cols]


def _dampings(A: np.ndarray, B: np.ndarray, damping: float, mode: str, minimum: float):
    if mode == "heuristic":
        mean_a, mean_b = np.trace(A) / A.shape[0], np.trace(B) / B.shape[0]
        if mean_a >= 0 and mean_b > 0:  # curvlinops' condition
            pi, root = np.sqrt(mean_a / mean_b), np.sqrt(damping)
            return max(root * pi, minimum), max(root / pi, minimum)
    return damping, damping


@entry("factors, v and damping")
def kfac_inverse_product(
    model: Any,
    factors: list[tuple[np.ndarray, np.ndarray]],
    v: Any,
    damping: float,
    *,
    mode: str = "factors",
    min_damping: float = 1e-8,
) -> list[np.ndarray]:
    """``(B ⊗ A + damping)⁻¹ v`` per layer, as ``mode`` says (``CURV.kfac-inverse``).

    ``factors``: :func:`~manual_bp.curvature.kfac.kflr` or ``kfac`` of ``model``; ``v``: a
    direction (as :func:`~manual_bp.curvature.rop.hvp`'s). Parameters of no layer with
    factors are returned as they came.
    """
    mode = check_choice(mode, "mode", DAMPINGS)
    damping = check_number(damping, "damping", zero=mode == "factors")
    min_damping = check_number(min_damping, "min_damping", zero=True)
    chain = as_chain(model)
    v = chain.check_direction(v)
    blocks = _blocks(model)
    factors = as_factors(factors, factor_shapes(chain))
    out = list(v)
    for index, (A, B) in zip(blocks, factors, strict=True):
        V = _block(v, index)
        if mode == "exact":
            a, QA = np.linalg.eigh(A)
            b, QB = np.linalg.eigh(B)
            X = QB @ ((QB.T @ V @ QA) / (np.outer(b, a) + damping)) @ QA.T
        else:
            lam_a, lam_b = _dampings(A, B, damping, mode, min_damping)
            X = np.linalg.solve(B + lam_b * np.eye(B.shape[0]), V)
            X = np.linalg.solve(A + lam_a * np.eye(A.shape[0]), X.T).T
        _scatter(X, index, out)
    return out


@entry("x and y")
def ekfac(model: Any, x: Any, y: Any) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``[(Q_A, Q_B, s)]`` per layer (``CURV.ekfac``): the KFLR eigenbases and the corrected
    eigenvalues ``s`` ``(m_out, m_in')``.

    The factor columns ``V = Jᵀ S/√n`` come down the walk (``input_vjp``); a layer's
    per-sample block gradients are its per-sample ``param_vjp`` of each column, rotated and
    squared one column at a time. A link with ``one_output`` (dense) has the rank-one
    ``S_{c,x} = V_{c,x} x̃ₓᵀ``, so ``s = Σ_{c,x} (Q_Bᵀ V_{c,x})² (Q_Aᵀ x̃ₓ)²ᵀ`` without them.
    """
    factors = kflr(model, x, y)
    chain = as_chain(model)
    x, y = chain.data(x, y)
    caches, f = chain.forward(x)
    S = output_factor(chain, f, y) / math.sqrt(x.shape[0])  # a weak scalar: keeps float32
    at_output = backpropagate_factor(chain, caches, S, f.shape)
    links = [
        (link, cache, V) for link, cache, V in zip(chain.links, caches, at_output, strict=True)
    ]
    out = []
    for (link, cache, V), (A, B) in zip([w for w in links if w[0].index], factors, strict=True):
        QA, QB = np.linalg.eigh(A)[1], np.linalg.eigh(B)[1]
        if link.shortcut(cache):  # a dense map on (batch, features): rank-one blocks
            inp = cache.input
            xt = (
                np.hstack([inp, np.ones((inp.shape[0], 1), inp.dtype)])
                if "bias" in link.index
                else inp
            )
            s = np.einsum("cni,nj->ij", (V @ QB) ** 2, (xt @ QA) ** 2, optimize=True)
        else:
            s = np.zeros((B.shape[0], A.shape[0]), chain.dtype)
            for c in range(V.shape[0]):
                grads = link.ops.param_vjp(cache, V[c : c + 1], sum_batch=False)
                block = _block([grads[name] for name in _names(link)], _local(link), 2)[0]
                rotated = np.einsum("ij,njk,kl->nil", QB.T, block, QA, optimize=True)
                s += (rotated * rotated).sum(axis=0)
        out.append((QA, QB, s))
    return out


def _names(link) -> list[str]:
    return list(link.index)


def _local(link) -> dict[str, int]:
    """The link's parameter names -> their position in :func:`_names`."""
    return {name: i for i, name in enumerate(link.index)}


@entry("factors, v and damping")
def ekfac_product(
    model: Any,
    factors: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    v: Any,
    damping: float = 0.0,
) -> list[np.ndarray]:
    """``(Q diag(s) Qᵀ + damping)^{±}``: the EKFAC product ``Q diag(s) Qᵀ v`` (``damping``
    = 0) or, with ``damping > 0``, the damped inverse ``Q diag(1/(s + damping)) Qᵀ v``
    (curvlinops' exact damping; ``CURV.ekfac``)."""
    damping = check_number(damping, "damping", zero=True)
    chain = as_chain(model)
    v = chain.check_direction(v)
    factors = as_factors(factors, factor_shapes(chain, eigen=True))
    out = list(v)
    for index, (QA, QB, s) in zip(_blocks(model), factors, strict=True):
        rotated = QB.T @ _block(v, index) @ QA
        scaled = rotated * s if damping == 0 else rotated / (s + damping)
        _scatter(QB @ scaled @ QA.T, index, out)
    return out
