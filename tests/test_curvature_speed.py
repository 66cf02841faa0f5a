"""The fast paths of the curvature package equal their materialised definitions
(``docs/curvature.md``, "Speed against the peers"): each shortcut taken for speed is
checked against the plain form it replaces, on every layer family that takes it."""

from __future__ import annotations

import numpy as np
import pytest

from manual_bp.curvature import diag_hessian, flatten
from manual_bp.curvature.dp import CLIP_EPSILON, dp_gradient
from manual_bp.curvature.fisher import ef_matrix, efvp
from manual_bp.curvature.per_sample import per_sample_gradients, per_sample_norms
from reference.curvature_families import COUPLED, FAMILIES, build

SEPARABLE = [f for f in FAMILIES if f not in COUPLED]


@pytest.mark.parametrize("family", SEPARABLE)
@pytest.mark.parametrize("where", ["below", "at", "above"])
def test_dp_gradient_without_materialising_equals_clipped_per_sample_sum(family, where):
    """CURV.dp-sgd: the clipped sum ``Σₓ cₓ gₓ`` as one VJP of the clipped errors and
    the norms from each layer's ``grad_norms`` equal the materialised per-sample
    gradients clipped and summed; ``C`` below every norm, exactly at one, above all."""
    model, x, y = build(family, 3)
    rng = np.random.default_rng(4)
    psg = per_sample_gradients(model, x, y)
    norms = per_sample_norms(psg)
    n = norms.shape[0]
    C = {"below": 0.5 * norms.min(), "at": norms[n // 2], "above": 2 * norms.max()}[where]
    noise = [rng.standard_normal(g.shape[1:]) for g in psg]
    sigma = 0.7
    clip = np.minimum(C / (norms + CLIP_EPSILON), 1.0)
    rows = np.concatenate([g.reshape(n, -1) for g in psg], axis=1)
    expected = (rows * clip[:, None]).sum(axis=0) + sigma * C * flatten(noise)
    expected /= n
    found = flatten(dp_gradient(model, x, y, max_grad_norm=C, noise_multiplier=sigma, noise=noise))
    scale = np.abs(rows).sum(axis=0).max() / n + sigma * C * np.abs(flatten(noise)).max() / n
    assert np.abs(found - expected).max() <= 1e-13 * scale


@pytest.mark.parametrize("family", ["Conv2d", "MaxPool2d", "AdaptiveAvgPool2d", "Embedding"])
def test_diag_hessian_builds_no_residual_matrix_for_a_zero_residual(family, monkeypatch):
    """CURV.diag-hessian: layers whose input residual is zero (bilinear in (x, θ):
    dense, convolution; piecewise linear: pooling) are found so by one probe, never by
    the per-sample (n, m, m) matrix from m unit tangents (9 GB on a small CNN)."""
    from manual_bp.curvature import diagonal

    model, x, y = build(family, 0)
    expected = flatten(diag_hessian(model, x, y))

    def refuse(*args):
        raise AssertionError("the residual matrix was built for a zero residual")

    monkeypatch.setattr(diagonal, "_residual_matrix", refuse)
    np.testing.assert_array_equal(flatten(diag_hessian(model, x, y)), expected)


@pytest.mark.parametrize("family", SEPARABLE)
def test_efvp_on_every_family_equals_the_empirical_fisher_matrix(family):
    """CURV.empirical-fisher: ``F̂ v`` without per-sample gradients equals ``ef_matrix @ v``
    on outputs of any rank (it refused every non-2-D layer output before: an einsum over
    ``(n, m)``)."""
    model, x, y = build(family, 5)
    v = np.random.default_rng(6).standard_normal(sum(p.size for p in model.parameter_arrays()))
    expected = ef_matrix(model, x, y) @ v
    found = flatten(efvp(model, x, y, v))
    assert np.abs(found - expected).max() <= 1e-12 * np.abs(expected).max()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("lead", [(), (1,), (5,), (3, 4), (2, 3, 2)])
def test_dense_param_vjp_norms_equal_the_squared_per_sample_vjp(lead, bias, dtype):
    """CURV.grad-norms: the dense layer's closed form (``‖δ‖²‖x‖²`` on ``(N, n_in)``, the
    Gram form on rows ``(N, R, ·)``, unbatched ``(n_in,)``) equals the squared norms of its
    per-sample ``param_vjp``, with random errors; the walk's ``grad_norms`` takes it."""
    from manual_bp.layers import Dense

    rng = np.random.default_rng(len(lead) + 7 * bias)
    layer = Dense(4, 3, bias=bias, dtype=dtype, seed=1)
    x = rng.standard_normal((*lead, 4)).astype(dtype)
    out, cache = layer.forward(x)
    delta = rng.standard_normal(out.shape).astype(dtype)
    found = layer._param_vjp_norms(cache, delta)
    batched = x.ndim > 1
    grads = layer.param_vjp(cache, delta[None], sum_batch=False)
    assert set(found) == set(grads) == ({"weight", "bias"} if bias else {"weight"})
    for name, g in grads.items():
        g = g[0] if batched else g[0][None]
        expected = (g.reshape(g.shape[0], -1).astype(np.float64) ** 2).sum(axis=1)
        assert found[name].dtype == np.dtype(dtype)
        tol = 1e-13 if dtype == "float64" else 1e-5
        np.testing.assert_allclose(found[name], expected, rtol=tol, atol=tol * expected.max())


@pytest.mark.parametrize("family", ["Embedding + ignore_index", "Dense on (N, T, D)", "LSTM"])
def test_sqrt_ggn_on_sequence_outputs_factors_the_ggn(family):
    """CURV.sqrt-ggn on outputs with several rows per sample (it raised before: the factor
    came down shaped ``(R, m)``, not like the output): one column per row and class,
    ``Σ s sᵀ = G`` (the GGN matrix from ``ggnvp`` columns)."""
    from manual_bp.curvature import ggn_matrix, sqrt_ggn

    model, x, y = build(family, 2)
    factors = sqrt_ggn(model, x, y)
    cols = np.concatenate([a.reshape(a.shape[0] * a.shape[1], -1) for a in factors], axis=1)
    G = ggn_matrix(model, x, y)
    assert np.abs(cols.T @ cols - G).max() <= 1e-13 * np.abs(G).max()


@pytest.mark.parametrize(
    "family", ["categorical-cross-entropy", "categorical + ignore_index", *FAMILIES]
)
def test_output_hessian_product_equals_the_matrices(family):
    """CURV.output-hessian: the softmax cross-entropy's ``p ⊙ r − p(pᵀr)`` (no ``(R, m, m)``
    matrices) and every other cost's matrices give ``∇²_f ℓ · r`` alike, row weights
    (``ignore_index``, several rows per sample) included."""
    from manual_bp import Sequential
    from manual_bp.curvature.chain import as_chain
    from manual_bp.curvature.loss import output_hessian, output_hessian_product
    from manual_bp.layers import Dense

    rng = np.random.default_rng(7)
    if family.startswith("categorical"):
        ignore = -100 if "ignore" in family else None
        model = Sequential([Dense(3, 4)], "categorical-cross-entropy", seed=1,
                           input_shape=(2, 3),
                           **({"ignore_index": ignore} if ignore else {}))  # fmt: skip
        x = rng.standard_normal((5, 2, 3))
        labels = rng.integers(0, 4, (5, 2))
        if ignore:
            labels[0, 1] = labels[3, 0] = ignore
        y = labels
    else:
        model, x, y = build(family, 3)
    chain = as_chain(model)
    x, yt = chain.data(x, y)
    f = chain.forward(x)[1]
    r = rng.standard_normal((3, int(np.prod(f.shape[:-1])), f.shape[-1]))
    want = np.einsum("nij,vnj->vni", output_hessian(chain, f, yt), r)
    np.testing.assert_allclose(output_hessian_product(chain, f, yt, r), want, rtol=0,
                               atol=1e-14 * max(1.0, np.abs(want).max()))  # fmt: skip
    if family.startswith("categorical"):  # the product, never the (R, m, m) matrices
        cost = chain.cost

        def no_matrices(*args, **kwargs):
            raise AssertionError("the softmax cross-entropy's matrices were formed")

        cost.hessian = cost.output_hessian = no_matrices  # this instance only
        np.testing.assert_allclose(output_hessian_product(chain, f, yt, r), want, rtol=0,
                                   atol=1e-14 * max(1.0, np.abs(want).max()))  # fmt: skip
