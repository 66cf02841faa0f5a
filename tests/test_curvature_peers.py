"""What BackPACK, curvlinops and Opacus compute, by hand (docs/curvature.md, "What the peers
have"), against torch.func in float64: per-sample gradients, the empirical Fisher, symmetric
GGN factors, Hutchinson, Lanczos and SLQ, damped inverse Kronecker products, EKFAC, DP-SGD.

The random-case oracle comparisons live in ``reference/checks_curvature_peers.py`` (they
feed ``python -m manual_bp verify``); here they run under hypothesis, together with the
statistical bound of the Hutchinson estimates, the exactness of Lanczos at ``m = P``, the
edges of DP clipping and the one-line refusals. The peers themselves:
``tests/test_curvature_peers_libraries.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp import Dense, Sequential
from manual_bp.curvature import gradient
from manual_bp.curvature.chain import flatten
from manual_bp.curvature.dp import dp_gradient, dp_sgd_step
from manual_bp.curvature.fisher import efvp
from manual_bp.curvature.hutchinson import hutchinson_diagonal, hutchinson_trace
from manual_bp.curvature.kfac import kflr
from manual_bp.curvature.kfac_inverse import ekfac, ekfac_product, kfac_inverse_product
from manual_bp.curvature.lanczos import density_on_grid, lanczos_eigenvalues, spectral_density
from manual_bp.curvature.per_sample import by_name, per_sample_gradients, per_sample_norms
from manual_bp.curvature.sqrt_ggn import sqrt_ggn
from manual_bp.layers.activation import ActivationLayer
from reference.checks import CHECKS
from reference.checks_curvature import random_curvature_case
from reference.checks_curvature_peers import peer_comparisons
from reference.curvature_oracle import TorchModel

PEER_IDS = {
    "CURV.per-sample-grad", "CURV.empirical-fisher", "CURV.sqrt-ggn", "CURV.hutchinson",
    "CURV.lanczos", "CURV.slq", "CURV.kfac-inverse", "CURV.ekfac", "CURV.dp-sgd",
}  # fmt: skip
#: ln(2/δ), δ = 1e-9 per entry, of the Hoeffding bounds below.
LOG_CONFIDENCE = float(np.log(2 / 1e-9))


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_peer_quantities_match_torch(seed):
    """CURV.per-sample-grad, CURV.empirical-fisher, CURV.sqrt-ggn, CURV.sqrt-ggn-mc,
    CURV.kfac-inverse, CURV.ekfac, CURV.dp-sgd (and the same-draw Hutchinson, Lanczos and SLQ
    rows) on a random stack: every activation and cost, saturation, kinks."""
    comparisons = CHECKS["curvature-peers"](np.random.default_rng(seed))
    assert {c.equation for c in comparisons} >= PEER_IDS
    for comparison in comparisons:
        comparison.check()


def test_peer_check_covers_the_monte_carlo_factor():
    """CURV.sqrt-ggn-mc: compared whenever the cost has a predictive distribution (here
    softmax cross-entropy), at torch's gradients of the very targets the seed draws."""
    model, x, y = _mlp(5)
    comparisons = peer_comparisons(model, x, y, np.random.default_rng(5))
    assert "CURV.sqrt-ggn-mc" in {c.equation for c in comparisons}
    for comparison in comparisons:
        comparison.check()


def _case(seed: int, max_batch: int = 5):
    return random_curvature_case(np.random.default_rng(seed), max_batch=max_batch)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), matrix=st.sampled_from(["hessian", "ggn", "ef"]))
def test_hutchinson_within_hoeffding_bound(seed, matrix):
    """CURV.hutchinson: 200 seeded draws within Hoeffding's bound of the exact trace and
    diagonal (a draw deviates by ``Σ_{i≠j} M_ij vᵢvⱼ``, bounded by ``Σ_{i≠j}|M_ij|``).
    Never flaky: δ = 1e-9 per entry, and the seed fixes the draws."""
    model, x, y = _case(seed)
    tm = TorchModel(model, x, y)
    if matrix == "hessian":
        M = tm.hessian()
    elif matrix == "ggn":
        M = tm.ggn()
    else:
        g = tm.per_sample_gradients()
        M = g.T @ g / g.shape[0]
    K = 200
    off = np.abs(M - np.diag(np.diag(M)))
    rounding = 1e-12 * (np.abs(M).sum() + 1.0)
    est, err = hutchinson_trace(model, x, y, matrix=matrix, n_samples=K, rng=seed)
    bound = off.sum() * np.sqrt(2 * LOG_CONFIDENCE / K) + rounding
    assert abs(est - np.trace(M)) <= bound
    exact_se = np.sqrt(2 * (off**2).sum() / K)  # Var[vᵀMv] = 2 Σ_{i≠j} M_ij² (Rademacher)
    assert err <= 3 * exact_se + rounding
    d_est, d_err = hutchinson_diagonal(model, x, y, matrix=matrix, n_samples=K, rng=seed)
    d_bound = off.sum(1) * np.sqrt(2 * LOG_CONFIDENCE / K) + rounding
    assert np.all(np.abs(flatten(d_est) - np.diag(M)) <= d_bound)
    assert np.all(flatten(d_err) <= np.sqrt((off**2).sum(1) / K) * 3 + rounding)


def test_hutchinson_is_exact_on_a_diagonal_matrix():
    """Both sides of the estimator's edge: a model whose GGN is diagonal (one weight per
    output, quadratic cost, identity) has zero variance — every draw is exact."""
    model = Sequential([Dense(1, 1)], "quadratic")
    x, y = np.array([[0.5], [2.0]]), np.array([[1.0], [-1.0]])
    G = TorchModel(model, x, y).ggn()
    assert np.count_nonzero(G - np.diag(np.diag(G))) > 0  # weight and bias couple …
    est, err = hutchinson_trace(model, x, y, matrix="ggn", n_samples=50, rng=1)
    assert err > 0 and abs(est - np.trace(G)) < 10 * err  # … so the estimate varies
    single = Sequential([Dense(1, 1, bias=False)], "quadratic")
    est, err = hutchinson_trace(single, x, y, matrix="ggn", n_samples=2, rng=1)
    assert err == 0.0 and est == pytest.approx(np.trace(TorchModel(single, x, y).ggn()))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_lanczos_and_slq_are_exact_at_full_dimension(seed):
    """CURV.lanczos: at ``n_iter = P`` the Ritz values are eigenvalues of torch's H, the
    Ritz vectors satisfy ``H u = λ u``. CURV.slq: weights sum to 1 per vector; at ``m = P``
    the quadrature reproduces ``vᵀHᵖv/P`` (also checked in the verify check)."""
    model, x, y = _case(seed)
    H = TorchModel(model, x, y).hessian()
    P, norm = H.shape[0], float(np.abs(H).sum()) + 1e-300
    lam, V = lanczos_eigenvalues(model, x, y, 1, n_iter=P, rng=seed)
    eig = np.linalg.eigvalsh(H)
    assert abs(abs(lam[0]) - np.abs(eig).max()) <= 1e-10 * norm
    assert np.abs(H @ V[0] - lam[0] * V[0]).max() <= 1e-8 * norm
    nodes, weights = spectral_density(model, x, y, n_iter=P, n_vectors=3, rng=seed)
    assert np.allclose(weights.sum(axis=1), 1 / 3)
    assert np.all(np.abs(nodes) <= np.abs(eig).max() + 1e-10 * norm)
    grid = np.linspace(eig.min() - 10, eig.max() + 10, 4001)
    density = density_on_grid(nodes, weights, grid, sigma=0.5)
    assert np.trapezoid(density, grid) == pytest.approx(1.0, abs=1e-6)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_per_sample_gradients_average_to_the_gradient(seed):
    """CURV.per-sample-grad: ``(1/n) Σₓ gₓ = ∇C`` and ``by_name`` keys them by torch's names
    in ``parameter_arrays()`` order."""
    model, x, y = _case(seed)
    psg = per_sample_gradients(model, x, y)
    for g, mean in zip(psg, gradient(model, x, y), strict=True):
        np.testing.assert_allclose(g.mean(axis=0), mean, rtol=1e-12, atol=1e-13)
    named = by_name(model, psg)
    assert list(named) == [name for name, _ in model.named_parameters()]


def _mlp(seed: int, n: int = 6):
    rng = np.random.default_rng(seed)
    model = Sequential(
        [Dense(4, 5), ActivationLayer("tanh"), Dense(5, 3)], "categorical-cross-entropy"
    )
    model.load_state_dict(
        {k: rng.standard_normal(np.shape(v)) for k, v in model.state_dict().items()}
    )
    return model, rng.standard_normal((n, 4)), rng.integers(0, 3, n)


def test_dp_clipping_both_sides_of_and_at_the_bound():
    """CURV.dp-sgd: C above every norm: no clipping, g̃ = ∇C (σ = 0); C below every norm:
    each clipped gradient has norm C/(1 + 10⁻⁶/‖gₓ‖) < C; C exactly a sample's norm: that
    sample is scaled by C/(C + 10⁻⁶) (Opacus's guard), not left alone."""
    model, x, y = _mlp(0)
    psg = per_sample_gradients(model, x, y)
    norms = per_sample_norms(psg)
    n = x.shape[0]
    zero = [np.zeros_like(p) for p in model.parameter_arrays()]
    free = dp_gradient(
        model, x, y, max_grad_norm=10 * norms.max(), noise_multiplier=0.0, noise=zero
    )
    np.testing.assert_allclose(
        flatten(free), flatten(gradient(model, x, y)), rtol=1e-12, atol=1e-15
    )
    C = 0.5 * norms.min()
    clipped = flatten(dp_gradient(model, x, y, max_grad_norm=C, noise_multiplier=0.0, noise=zero))
    rows = np.concatenate([g.reshape(n, -1) for g in psg], 1)
    expected = (rows * (C / (norms + 1e-6))[:, None]).sum(0) / n
    np.testing.assert_allclose(clipped, expected, rtol=1e-12)
    assert np.linalg.norm(clipped) <= C
    at = norms[2]
    exact = flatten(dp_gradient(model, x, y, max_grad_norm=at, noise_multiplier=0.0, noise=zero))
    factor = np.minimum(at / (norms + 1e-6), 1.0)
    assert factor[2] < 1.0
    np.testing.assert_allclose(exact, (rows * factor[:, None]).sum(0) / n, rtol=1e-12)


def test_dp_step_updates_in_place_and_draws_seeded_noise():
    model, x, y = _mlp(1)
    before = [p.copy() for p in model.parameter_arrays()]
    g = dp_sgd_step(model, x, y, lr=0.1, max_grad_norm=1.0, noise_multiplier=1.0, rng=3)
    for p, b, gi in zip(model.parameter_arrays(), before, g, strict=True):
        np.testing.assert_array_equal(p, b - 0.1 * gi)
    model2, _, _ = _mlp(1)
    g2 = dp_gradient(model2, x, y, max_grad_norm=1.0, noise_multiplier=1.0, rng=3)
    for a, b in zip(g, g2, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda m, x, y: hutchinson_trace(m, x, y, n_samples=1), ValueError, "n_samples"),
        (lambda m, x, y: hutchinson_trace(m, x, y, matrix="fisher"), ValueError, "matrix"),
        (lambda m, x, y: lanczos_eigenvalues(m, x, y, 10**6), ValueError, "k = "),
        (lambda m, x, y: lanczos_eigenvalues(m, x, y, 0), ValueError, "k"),
        (lambda m, x, y: spectral_density(m, x, y, n_vectors=0), ValueError, "n_vectors"),
        (
            lambda m, x, y: kfac_inverse_product(m, kflr(m, x, y), [0.0] * 3, 1.0),
            ValueError,
            "v: direction",
        ),
        (
            lambda m, x, y: kfac_inverse_product(m, kflr(m, x, y), np.zeros(43), 1.0, mode="pi"),
            ValueError,
            "mode",
        ),
        (
            lambda m, x, y: kfac_inverse_product(m, kflr(m, x, y), np.zeros(43), 0.0, mode="exact"),
            ValueError,
            "damping",
        ),
        (
            lambda m, x, y: kfac_inverse_product(m, kflr(m, x, y)[:1], np.zeros(43), 1.0),
            ValueError,
            "factors",
        ),
        (
            lambda m, x, y: dp_gradient(m, x, y, max_grad_norm=0.0, noise_multiplier=1.0),
            ValueError,
            "max_grad_norm",
        ),
        (
            lambda m, x, y: dp_gradient(
                m, x, y, max_grad_norm=1.0, noise_multiplier=1.0, noise=np.zeros(3)
            ),
            ValueError,
            "noise",
        ),
        (
            lambda m, x, y: dp_gradient(m, x, y, max_grad_norm=1.0, noise_multiplier=-1.0),
            ValueError,
            "noise_multiplier",
        ),
        (lambda m, x, y: by_name(m, [1, 2]), ValueError, "arrays"),
    ],
)
def test_bad_arguments_are_refused_in_one_line(call, error, match):
    model, x, y = _mlp(2)
    with pytest.raises(error, match=match) as info:
        call(model, x, y)
    assert "\n" not in str(info.value)


def test_float32_models_keep_float32():
    """A float32 model's results stay float32 (a float64 scalar would widen the factor
    columns, which the layers refuse)."""
    layers = [Dense(4, 5, dtype=np.float32), ActivationLayer("tanh"), Dense(5, 3, dtype=np.float32)]
    model = Sequential(layers, "categorical-cross-entropy", dtype=np.float32)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((6, 4)).astype(np.float32), rng.integers(0, 3, 6)
    v = rng.standard_normal(43).astype(np.float32)
    results = [
        per_sample_gradients(model, x, y),
        sqrt_ggn(model, x, y),
        efvp(model, x, y, v),
        ekfac_product(model, ekfac(model, x, y), v),
        dp_gradient(model, x, y, max_grad_norm=1.0, noise_multiplier=1.0, rng=0),
    ]
    for result in results:
        assert all(r.dtype == np.float32 for r in result)
