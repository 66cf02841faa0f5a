"""Verification checks of curvature on every layer family (``CURV.layer-walk``,
``CURV.rows``, ``CURV.coupled-batch``, ``CURV.diag-hessian-own``): a random small stack with
one family in the middle (:mod:`reference.curvature_families`), torch.func in float64 on
its twin (:mod:`reference.curvature_twins`, plain-op normalisation) as the oracle."""

from __future__ import annotations

import numpy as np

from manual_bp.curvature import flatten, ggnvp, hvp
from manual_bp.curvature.diagonal import diag_ggn, diag_hessian
from reference.checks import register_check
from reference.compare import Comparison
from reference.curvature_families import build
from reference.curvature_twins import Twin

__all__ = ["FAST_FAMILIES", "curvature_layers_check"]

#: Families cheap enough for a check run per case (each ≤ ~0.5 s).
FAST_FAMILIES = (
    "Dense on (N, T, D)",
    "Embedding + ignore_index",
    "BatchNorm1d (train)",
    "BatchNorm1d (eval)",
    "LayerNorm",
    "RMSNorm",
    "Residual",
    "RNN",
)


def _scale(expected: np.ndarray) -> np.ndarray:
    """The largest entry's magnitude for every entry (sums that cancel: a batch norm's
    centred statistics give entries far below the terms they are made of)."""
    return np.full(np.shape(expected), max(float(np.abs(expected).max()), 1e-300))


@register_check("curvature-layers")
def curvature_layers_check(rng: np.random.Generator) -> list[Comparison]:
    """H v, G v, diag G and diag H of a random family stack against torch.func."""
    family = FAST_FAMILIES[int(rng.integers(len(FAST_FAMILIES)))]
    model, x, y = build(family, int(rng.integers(1 << 30)))
    twin = Twin(model, x, y)
    H, G = twin.hessian(), twin.ggn()
    v = rng.standard_normal(H.shape[0])
    hv = H @ v
    walk = "CURV.layer-walk"
    rows_id = "CURV.rows" if family.startswith(("Dense on", "Embedding")) else walk
    own = "CURV.diag-hessian-own" if family == "RNN" else walk
    coupled = "CURV.coupled-batch" if family == "BatchNorm1d (train)" else walk
    return [
        Comparison(walk, f"H v ({family})", flatten(hvp(model, x, y, v)), hv, _scale(hv)),
        Comparison(
            rows_id, f"G v ({family})", flatten(ggnvp(model, x, y, v)), G @ v, _scale(G @ v)
        ),
        Comparison(
            coupled,
            f"diag G ({family})",
            flatten(diag_ggn(model, x, y)),
            np.diag(G),
            _scale(np.diag(G)),
        ),
        Comparison(
            own,
            f"diag H ({family})",
            flatten(diag_hessian(model, x, y)),
            np.diag(H),
            _scale(np.diag(H)),
        ),
    ]
