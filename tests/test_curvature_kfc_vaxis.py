"""Hutchinson's trace and diagonal (``CURV.hutchinson``) with the K probes on ONE walk's
leading V axis (:mod:`manual_bp.curvature._vaxis`): the same seeded probes and the same
results, to rounding, as K single products (``hvp``/``ggnvp``/``efvp``); the chunks (the
memory bound) change nothing, at every chunk size from 1 to past K."""

from __future__ import annotations

import numpy as np
import pytest

from manual_bp.curvature import _vaxis, flatten, hutchinson_diagonal, hutchinson_trace
from manual_bp.curvature.fisher import ef_matrix
from manual_bp.curvature.hutchinson import PRODUCTS, rademacher
from reference.checks_curvature import random_curvature_case
from reference.curvature_families import COUPLED, build

FAMILIES = ["Conv2d", "Dense on (N, T, D)", "LSTM", "BatchNorm1d (train)", "Embedding"]


def _one_by_one(model, x, y, matrix, K, seed):
    """Today's estimator before the V axis: K draws, one product each."""
    size = sum(p.size for p in model.parameter_arrays())
    generator = np.random.default_rng(seed)
    vs = np.stack([rademacher(generator, size) for _ in range(K)])
    products = np.stack([flatten(PRODUCTS[matrix](model, x, y, v)) for v in vs])
    trace = np.einsum("kp,kp->k", vs, products)
    diagonal = vs * products
    return (trace.mean(), trace.std(ddof=1) / np.sqrt(K)), (
        diagonal.mean(0),
        diagonal.std(0, ddof=1) / np.sqrt(K),
    )


def _close(a, b, what):
    scale = max(float(np.max(np.abs(b))), 1e-300)
    assert np.max(np.abs(np.asarray(a) - b)) <= 1e-13 * scale, what


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("matrix", ["hessian", "ggn"])
def test_v_axis_estimates_equal_one_product_per_probe(family, matrix):
    model, x, y = build(family, 0)
    (t, te), (d, de) = _one_by_one(model, x, y, matrix, 6, 3)
    mean, error = hutchinson_trace(model, x, y, matrix=matrix, n_samples=6, rng=3)
    _close(mean, t, "trace")
    _close(error, te, "trace error")
    mean, error = hutchinson_diagonal(model, x, y, matrix=matrix, n_samples=6, rng=3)
    _close(flatten(mean), d, "diagonal")
    _close(flatten(error), de, "diagonal error")


@pytest.mark.parametrize("seed", range(3))
def test_v_axis_empirical_fisher_equals_efvp_on_mlps(seed):
    """matrix="ef" on (batch, features) models: the same as efvp probe by probe."""
    model, x, y = random_curvature_case(np.random.default_rng(seed))
    (t, _), (d, _) = _one_by_one(model, x, y, "ef", 5, seed)
    _close(hutchinson_trace(model, x, y, matrix="ef", n_samples=5, rng=seed)[0], t, "trace")
    diagonal = hutchinson_diagonal(model, x, y, matrix="ef", n_samples=5, rng=seed)[0]
    _close(flatten(diagonal), d, "diagonal")


@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in COUPLED])
def test_v_axis_empirical_fisher_on_every_rank(family):
    """F̂ V on the V axis against the materialised F̂ = (1/n) Σ gₓgₓᵀ (per-sample gradients
    of any layer): outputs of any rank, where efvp's single product takes 2-D errors only."""
    model, x, y = build(family, 0)
    F = ef_matrix(model, x, y)
    V = np.random.default_rng(2).standard_normal((3, F.shape[0]))
    from manual_bp.curvature.chain import as_chain

    chain = as_chain(model)
    _close(_vaxis.products(model, chain, x, y, V, "ef"), V @ F, "F̂ V")


@pytest.mark.parametrize("entries", [1, 2, 5, 6, 7, 1 << 23])
def test_chunks_change_nothing(entries, monkeypatch):
    """CHUNK_ENTRIES from one direction per chunk to all K in one."""
    model, x, y = build("Conv1d", 0)
    expected = hutchinson_diagonal(model, x, y, matrix="hessian", n_samples=6, rng=1)
    size = sum(p.size for p in model.parameter_arrays())
    monkeypatch.setattr(_vaxis, "CHUNK_ENTRIES", entries * max(size, x.size * 8))
    found = hutchinson_diagonal(model, x, y, matrix="hessian", n_samples=6, rng=1)
    for a, b in zip(found, expected, strict=True):
        _close(flatten(a), flatten(b), "chunked")
