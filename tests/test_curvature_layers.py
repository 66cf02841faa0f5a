"""Every curvature quantity on every layer family, in the middle of a small random stack,
against ``torch.func`` in float64 (``docs/curvature.md``, "Every layer").

The oracle is :class:`reference.curvature_twins.Twin`: the model's torch twin as a function
of the flat parameter vector, normalisation layers in plain ops (torch's own double
backward through ``F.layer_norm``/train-mode ``F.batch_norm`` is wrong: the plain twin is
checked first-order against torch's module and its Hessian by symmetry and central finite
differences here). Coupled families (batch norm with batch statistics) compute every batch
quantity and refuse every per-sample one in one line.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.curvature import flatten, ggnvp, gradient, hvp
from manual_bp.curvature.diagonal import diag_ggn, diag_ggn_mc, diag_hessian
from manual_bp.curvature.eigen import top_eigenvalue
from manual_bp.curvature.kfac import kflr
from reference.curvature_families import COUPLED, FAMILIES, build
from reference.curvature_twins import Twin

#: Relative bound (to the largest entry of the oracle) of every exact quantity; the worst
#: measured is 8e-15 (docs/curvature.md's table).
REL = 1e-12


def _close(ours: np.ndarray, ref: np.ndarray, what: str) -> float:
    scale = max(float(np.abs(ref).max()), 1e-300)
    err = float(np.abs(np.asarray(ours) - ref).max()) / scale
    assert err <= REL, f"{what}: relative error {err:.2e} > {REL:.0e}"
    return err


def _per_sample(arrays: list[np.ndarray], n: int) -> np.ndarray:
    return np.concatenate([a.reshape(n, -1) for a in arrays], axis=1)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_quantity_equals_torch_func(family):
    """gradient, H v, G v, diag G, diag H (batch and per sample), the top eigenvalue of H
    and G: each against torch.func on the family's twin; H symmetric. CURV.layer-walk
    (every family), CURV.rows (sequence outputs, ignore_index), CURV.diag-hessian-own
    (recurrent and attention layers' own second-order terms)."""
    model, x, y = build(family, 0)
    twin = Twin(model, x, y)
    rng = np.random.default_rng(1)
    v = rng.standard_normal(twin.theta.shape[0])
    H, G = twin.hessian(), twin.ggn()
    assert np.abs(H - H.T).max() <= REL * np.abs(H).max()
    _close(flatten(gradient(model, x, y)), twin.gradient(), "gradient")
    _close(flatten(hvp(model, x, y, v)), H @ v, "hvp")
    _close(flatten(ggnvp(model, x, y, v)), G @ v, "ggnvp")
    _close(flatten(diag_ggn(model, x, y)), np.diag(G), "diag_ggn")
    _close(flatten(diag_hessian(model, x, y)), np.diag(H), "diag_hessian")
    for matrix, M in (("hessian", H), ("ggn", G)):
        lam = np.linalg.eigvalsh(M)
        top = lam[np.argmax(np.abs(lam))]
        found, _ = top_eigenvalue(model, x, y, matrix=matrix, max_iter=2000, tol=1e-14)
        assert abs(found - top) <= 1e-6 * abs(top), (matrix, found, top)
    n = twin.output(twin.theta).shape[0]
    if family in COUPLED:
        for quantity in (diag_ggn, diag_hessian):
            with pytest.raises(ValueError, match=r"per-sample quantities are not defined") as e:
                quantity(model, x, y, per_sample=True)
            assert "\n" not in str(e.value)
        return
    ps = _per_sample(diag_ggn(model, x, y, per_sample=True), n)
    _close(ps, twin.per_sample_ggn_diagonals(), "diag_ggn per sample")
    _close(ps.mean(axis=0), np.diag(G), "per-sample mean")
    ps = _per_sample(diag_hessian(model, x, y, per_sample=True), n)
    _close(ps, twin.per_sample_hessian_diagonals(), "diag_hessian per sample")


@pytest.mark.parametrize("family", ["Conv2d", "LSTM", "Embedding + ignore_index"])
def test_monte_carlo_diagonal_ggn_within_five_standard_errors(family):
    """diag_ggn_mc is unbiased: the mean of 200 seeded draws is within 5 standard errors
    (each entry's own, from the draws) of the exact diagonal (seeded: never flaky)."""
    model, x, y = build(family, 0)
    exact = flatten(diag_ggn(model, x, y))
    draws = np.stack([flatten(diag_ggn_mc(model, x, y, rng=k)) for k in range(200)])
    mean, se = draws.mean(axis=0), draws.std(axis=0, ddof=1) / np.sqrt(len(draws))
    bound = 5 * se + 1e-12 * np.abs(exact).max()
    assert (np.abs(mean - exact) <= bound).all(), np.abs(mean - exact).max()


@pytest.mark.parametrize("family", ["Conv2d", "LSTM", "Embedding + ignore_index"])
def test_monte_carlo_factor_has_m_columns_whose_squares_are_the_mc_diagonal(family):
    """CURV.sqrt-ggn-mc on outputs of one or several rows per sample: ``(M, n, *p)`` per
    parameter (BackPACK's layout: a draw's rows share a column), and ``Σ s²`` over columns
    and samples is ``diag_ggn_mc`` of the same draws."""
    from manual_bp.curvature.sqrt_ggn import sqrt_ggn_mc

    model, x, y = build(family, 1)
    for M in (1, 3):
        factors = sqrt_ggn_mc(model, x, y, rng=7, n_samples=M)
        n = np.shape(x)[0]
        for s, p in zip(factors, model.parameter_arrays(), strict=True):
            assert s.shape == (M, n, *p.shape)
        squares = flatten([(s * s).sum(axis=(0, 1)) for s in factors])
        mc = flatten(diag_ggn_mc(model, x, y, rng=7, n_samples=M))
        np.testing.assert_allclose(squares, mc, rtol=1e-12, atol=1e-14 * np.abs(mc).max())


def test_batch_norm_in_training_couples_the_batch_and_eval_does_not():
    """CURV.coupled-batch: with batch statistics a per-sample share is no per-sample
    quantity: refused in one line naming the layer; the same model in eval mode is
    separable (per sample equals torch). The curvature query does not move the running
    statistics."""
    model, x, y = build("BatchNorm1d (train)", 3)
    before = [b.copy() for _, b in model.named_buffers()]
    diag_ggn(model, x, y)
    for a, b in zip(before, [b for _, b in model.named_buffers()], strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"BatchNorm1d.*batch statistics.*model\.eval\(\)"):
        diag_hessian(model, x, y, per_sample=True)
    model.eval()
    twin = Twin(model, x, y)
    n = x.shape[0]
    _close(
        _per_sample(diag_ggn(model, x, y, per_sample=True), n),
        twin.per_sample_ggn_diagonals(),
        "eval",
    )


@pytest.mark.parametrize(
    "family", ["LayerNorm", "BatchNorm1d (train)", "GroupNorm", "InstanceNorm1d", "RMSNorm"]
)
def test_plain_normalisation_twin_is_torch_first_order_and_its_hessian_is_sound(family):
    """The oracle's plain-op normalisation equals torch's module to first order; its
    Hessian is symmetric and equals central finite differences of torch's gradient."""
    model, x, y = build(family, 2)
    plain, fused = Twin(model, x, y), Twin(model, x, y, plain=False)
    np.testing.assert_allclose(plain.gradient(), fused.gradient(), rtol=0, atol=1e-13)
    H = plain.hessian()
    assert np.abs(H - H.T).max() <= 1e-13 * np.abs(H).max()
    grad = torch.func.grad(plain.loss)
    h = 1e-5
    for i in range(0, H.shape[0], 7):
        e = torch.zeros_like(plain.theta)
        e[i] = h
        column = (grad(plain.theta + e) - grad(plain.theta - e)).numpy() / (2 * h)
        np.testing.assert_allclose(column, H[:, i], rtol=0, atol=1e-7 * max(1, np.abs(H).max()))


def test_torch_layer_norm_double_backward_is_not_symmetric():
    """The finding (docs/curvature.md): torch's ∂²f/∂w∂x of ⟨layer_norm(x; w, b), g⟩ is not
    the transpose of ∂²f/∂x∂w; the plain-op form's Hessian is symmetric. A torch that
    fixes it fails this test: then the plain twin may go."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, dtype=torch.float64, generator=gen)
    w = torch.rand(4, dtype=torch.float64, generator=gen) + 0.5
    b = torch.randn(4, dtype=torch.float64, generator=gen)
    g = torch.randn(3, 4, dtype=torch.float64, generator=gen)

    def fused(w, x):
        return (torch.nn.functional.layer_norm(x, (4,), w, b) * g).sum()

    def plain(w, x):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (((x - mu) / torch.sqrt(var + 1e-5) * w + b) * g).sum()

    def asymmetry(f):
        (_, hwx), (hxw, _) = torch.func.hessian(f, argnums=(0, 1))(w, x)
        return float((hwx - hxw.permute(2, 0, 1)).abs().max())

    assert asymmetry(plain) < 1e-14
    assert asymmetry(fused) > 1e-3


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**16), coupled=st.booleans())
def test_batch_norm_stacks_drawn_by_hypothesis(seed, coupled):
    """BatchNorm1d in the middle of a random stack, training (coupled) or eval mode: H v,
    G v and both diagonals equal torch."""
    model, x, y = build("BatchNorm1d (train)" if coupled else "BatchNorm1d (eval)", seed)
    twin = Twin(model, x, y)
    v = np.random.default_rng(seed).standard_normal(twin.theta.shape[0])
    H, G = twin.hessian(), twin.ggn()
    _close(flatten(hvp(model, x, y, v)), H @ v, "hvp")
    _close(flatten(ggnvp(model, x, y, v)), G @ v, "ggnvp")
    _close(flatten(diag_ggn(model, x, y)), np.diag(G), "diag_ggn")
    _close(flatten(diag_hessian(model, x, y)), np.diag(H), "diag_hessian")


def test_attention_residual_of_one_bias_tangent():
    """PROD.multihead-attention.residual with a tangent of in_proj_bias alone (the others
    missing) equals the same with explicit zero tangents (it failed on the shape)."""
    model, x, _ = build("MultiheadAttention", 4)
    layer = model.layers[2]
    inp = model.layers[1].forward(model.layers[0].forward(x)[0])[0]
    out, cache = layer.forward(inp)
    rng = np.random.default_rng(0)
    dout = rng.standard_normal(out.shape)
    T = {"in_proj_bias": rng.standard_normal((2, *layer.params["in_proj_bias"].shape))}
    full = {k: np.zeros((2, *p.shape)) for k, p in layer.params.items()} | T
    rx, rp = layer.residual(cache, dout, None, T)
    fx, fp = layer.residual(cache, dout, None, full)
    np.testing.assert_allclose(rx, fx, rtol=0, atol=1e-14)
    for name in fp:
        np.testing.assert_allclose(rp.get(name, 0 * fp[name]), fp[name], rtol=0, atol=1e-14)


@pytest.mark.parametrize("family", ["ConvTranspose2d", "LSTM", "BatchNorm1d (train)"])
def test_kronecker_factors_are_refused_outside_dense_chains(family):
    """kflr/kfac: Kronecker factors are defined for Dense chains and convolutions (KFC);
    every other layer is refused in one line."""
    model, x, y = build(family, 0)
    with pytest.raises(TypeError, match=r"Kronecker factors are defined here") as e:
        kflr(model, x, y)
    assert "\n" not in str(e.value)
