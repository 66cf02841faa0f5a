"""Second-order and per-sample quantities (docs/curvature.md) against torch.func.

Oracles: torch.func.hessian (whole Hessian, its diagonal), jvp(grad) for H v, jacrev Jᵀ H J
for the GGN, vmap(grad) for per-sample gradients; structural identities; statistical
checks of the Monte-Carlo estimators (seeded, with a tolerance from the standard error).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp import Dense, Network, Sequential
from manual_bp.activations import ACTIVATIONS
from manual_bp.costs import COSTS
from manual_bp.curvature import flatten, ggnvp, hessian_matrix, hvp
from manual_bp.curvature.diagonal import (
    diag_ggn,
    diag_ggn_mc,
    diag_hessian,
    diag_hessian_readable,
)
from manual_bp.curvature.eigen import top_eigenvalue
from manual_bp.curvature.kfac import kfac, kflr
from reference.cases import WEIGHT_SCALES, build_case
from reference.checks import CHECKS
from reference.checks_curvature import curvature_comparisons, mc_tolerance, to_sequential
from reference.compare import drop_ambiguous_samples
from reference.curvature_oracle import TorchModel, mc_draw_moments
from tests.strategies import network_specs

SMALL = {"max_depth": 3, "max_width": 5, "max_batch": 5, "weight_scales": WEIGHT_SCALES[:3]}


def _ids(comparisons) -> set[str]:
    return {c.equation for c in comparisons}


def test_activation_second_derivatives_match_torch():
    """σ'' and the second-order VJP, every activation, both sides of and at every kink."""
    ids = {
        "ACT2.identity", "ACT2.sigmoid", "ACT2.tanh", "ACT2.relu", "ACT2.leaky-relu",
        "ACT2.elu", "ACT2.selu", "ACT2.softplus", "ACT2.gelu", "ACT2.silu",
        "ACT2.hardtanh", "ACT2.softmax", "ACT2.log-softmax", "ACT2.softmin",
        "ACT2.celu", "ACT2.hardshrink", "ACT2.hardsigmoid", "ACT2.hardswish", "ACT2.log-sigmoid",
        "ACT2.mish", "ACT2.relu6", "ACT2.softshrink", "ACT2.softsign", "ACT2.tanhshrink",
        "ACT2.threshold",
    }  # fmt: skip
    assert ids == {f"ACT2.{name}" for name in ACTIVATIONS.names()}
    for seed in range(20):
        comparisons = CHECKS["curvature-activation-second"](np.random.default_rng(seed))
        assert _ids(comparisons) == ids
        for comparison in comparisons:
            comparison.check()


def test_loss_hessians_match_torch():
    """Per-sample ∇²ₐC_x and S Sᵀ of every cost (CURV.loss-hessian.*, CURV.loss-factor)."""
    ids = {
        "CURV.loss-hessian.quadratic", "CURV.loss-hessian.cross-entropy",
        "CURV.loss-hessian.log-likelihood", "CURV.loss-hessian.categorical-cross-entropy",
        "CURV.loss-hessian.bce-logits", "CURV.loss-hessian.mae", "CURV.loss-hessian.huber",
        "CURV.loss-hessian.smooth-l1", "CURV.loss-hessian.multi-margin",
        "CURV.loss-hessian.kl-divergence", "CURV.loss-hessian.poisson-nll", "CURV.loss-factor",
    }  # fmt: skip
    assert ids - {"CURV.loss-factor"} == {f"CURV.loss-hessian.{n}" for n in COSTS.names()}
    for seed in range(3):
        comparisons = CHECKS["curvature-loss-hessian"](np.random.default_rng(seed))
        assert _ids(comparisons) == ids
        for comparison in comparisons:
            comparison.check()


@settings(max_examples=25)
@given(spec=network_specs(**SMALL), sequential=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_curvature_matches_torch(spec, sequential, seed):
    """Random networks (every activation and cost, kinks), as Network and as Sequential.

    CURV.hvp, CURV.ggnvp, CURV.output-hessian, CURV.diag-ggn (factor and readable forms,
    whole batch and per sample), CURV.diag-hessian, CURV.grad-norms,
    CURV.sum-grad-squared, CURV.grad-variance.
    """
    rng = np.random.default_rng(seed)
    net, x, y = build_case(spec)
    x, y = drop_ambiguous_samples(net, x, y)
    if x.shape[0] == 0:
        return
    model = to_sequential(net, rng) if sequential else net
    for comparison in curvature_comparisons(model, x, y, rng):
        comparison.check()


def test_kflr_equals_ggn_block_at_batch_one_and_for_deep_linear_networks():
    """CURV.kflr: B ⊗ A is the exact GGN block at n = 1, and for deep linear + quadratic."""
    for seed in range(15):
        for comparison in CHECKS["curvature-kflr"](np.random.default_rng(seed)):
            assert comparison.equation == "CURV.kflr"
            comparison.check()


def test_hessian_columns_are_hessian_vector_products():
    """CURV.hvp: H eᵢ is column i of torch's Hessian; diag H = diag G for linear units."""
    net, x, y = build_case(next_spec("tanh", "log-likelihood"))
    H = TorchModel(net, x, y).hessian()
    np.testing.assert_allclose(hessian_matrix(net, x, y), H, rtol=0, atol=1e-13 * abs(H).max())
    linear = Network([3, 4, 2], "identity", "bce-logits", seed=1)
    xl, yl = np.random.default_rng(0).standard_normal((5, 3)), np.eye(2)[[0, 1, 1, 0, 1]]
    # CURV.diag-hessian: no σ'' anywhere, so the residual vanishes.
    np.testing.assert_allclose(
        flatten(diag_hessian(linear, xl, yl)), flatten(diag_ggn(linear, xl, yl)), rtol=1e-14
    )


def next_spec(hidden: str, cost: str):
    from reference.cases import NetworkSpec

    out = {"log-likelihood": "softmax", "quadratic": "sigmoid"}.get(cost, "identity")
    return NetworkSpec(sizes=(3, 4, 3), activations=(hidden, out), cost=cost, batch=4, seed=3)


CONVEX = ("quadratic", "categorical-cross-entropy", "bce-logits", "log-likelihood", "mae", "huber")


@settings(max_examples=15)
@given(spec=network_specs(**SMALL, costs=(*CONVEX, "kl-divergence")))
def test_ggn_is_positive_semidefinite_for_convex_costs(spec):
    """CURV.ggnvp: vᵀ G v ≥ 0 for a loss convex in the network output."""
    net, x, y = build_case(spec)
    v = np.random.default_rng(spec.seed).standard_normal(net.n_parameters)
    Gv = flatten(ggnvp(net, x, y, v))
    assert v @ Gv >= -1e-12 * np.abs(v).sum() * max(np.abs(Gv).max(), 1.0)


MC_CASES = [
    ("categorical-cross-entropy", "identity"),
    ("log-likelihood", "softmax"),
    ("cross-entropy", "sigmoid"),
    ("quadratic", "identity"),
    ("bce-logits", "identity"),
    ("kl-divergence", "log-softmax"),
]


@pytest.mark.parametrize(("cost", "output"), MC_CASES)
def test_monte_carlo_estimators_are_unbiased(cost, output):
    """CURV.diag-ggn-mc and CURV.kfac: the mean of K seeded draws lies within a Bernstein bound
    of the expectation, both from the exact moments of one draw (torch, enumerated over the
    predictive distribution), and that expectation is the exact GGN quantity."""
    from reference.cases import NetworkSpec

    spec = NetworkSpec(sizes=(3, 4, 3), activations=("tanh", output), cost=cost, batch=6, seed=7)
    net, x, y = build_case(spec)
    moments = mc_draw_moments(net, x, y)
    exact = flatten(diag_ggn(net, x, y))
    B_exact = flatten([B for _, B in kflr(net, x, y)])
    K = 400
    draws = np.stack([flatten(diag_ggn_mc(net, x, y, rng=k)) for k in range(K)])
    kdraws = np.stack([flatten([B for _, B in kfac(net, x, y, rng=k)]) for k in range(K)])
    for samples, target, key in ((draws, exact, ""), (kdraws, B_exact, "b_")):
        expectation = moments[key + "mean"].sum(0)
        np.testing.assert_allclose(target, expectation, rtol=1e-12, atol=1e-14)
        bound = mc_tolerance(moments[key + "var"], moments[key + "range"], K)
        assert np.all(np.abs(samples.mean(0) - expectation) <= bound)


def test_statistical_check_over_random_cases():
    """The verify check (every MC pair, KL included, saturating scales) on seeded cases."""
    for seed in range(8):
        for comparison in CHECKS["curvature-statistical"](np.random.default_rng(seed)):
            comparison.check()


def test_curvature_rejects_targets_outside_the_cost_domain():
    """Every quantity validates targets once (the exact diag GGN never calls the gradient)."""
    net = Network([3, 4, 3], ["tanh", "log-softmax"], "kl-divergence", seed=0)
    x, y = np.zeros((2, 3)), np.full((2, 3), 0.5)  # rows sum to 1.5: not a distribution
    for quantity in (diag_ggn, diag_ggn_mc, diag_hessian, kflr):
        with pytest.raises(ValueError, match="not a probability distribution"):
            quantity(net, x, y)


@settings(max_examples=10)
@given(spec=network_specs(max_depth=4, max_width=12, max_batch=8), seed=st.integers(0, 2**31 - 1))
def test_factored_diag_hessian_equals_the_readable_form(spec, seed):
    """CURV.diag-hessian: the factored form (signed residual factors, batched GEMMs) against
    the readable propagation of full per-sample matrices, on networks too wide for torch's
    Hessian; whole batch and per sample. Scale: |diag G| + |diag H| + the rounding floor."""
    net, x, y = build_case(spec)
    model = to_sequential(net, np.random.default_rng(seed)) if seed % 2 else net
    floor = TorchModel(model, x, y).floor()
    for per_sample in (False, True):
        fast = diag_hessian(model, x, y, per_sample=per_sample)
        slow = diag_hessian_readable(model, x, y, per_sample=per_sample)
        ggn = diag_ggn(model, x, y, per_sample=per_sample)
        for a, b, g in zip(fast, slow, ggn, strict=True):
            scale = np.abs(g) + np.abs(b) + floor
            assert np.all(np.abs(a - b) <= 64 * np.finfo(float).eps * scale)


def test_monte_carlo_needs_a_predictive_distribution():
    net = Network([2, 3, 2], "tanh", "mae", seed=0)
    with pytest.raises(ValueError, match="predictive distribution"):
        diag_ggn_mc(net, np.zeros((2, 2)), np.zeros((2, 2)), rng=0)


def test_top_eigenvalue_matches_torch():
    """CURV.top-eigenvalue: power iteration on H v gives the largest-magnitude eigenvalue."""
    net, x, y = build_case(next_spec("tanh", "log-likelihood"))
    eigenvalues = np.linalg.eigvalsh(TorchModel(net, x, y).hessian())
    expected = eigenvalues[np.argmax(np.abs(eigenvalues))]
    lam, _ = top_eigenvalue(net, x, y, max_iter=2000, tol=1e-13)
    assert abs(lam - expected) <= 1e-8 * abs(expected)


def test_bad_input_is_rejected():
    net = Network([2, 3, 2], "tanh", "quadratic", seed=0)
    x, y = np.zeros((2, 2)), np.zeros((2, 2))
    with pytest.raises(ValueError, match="direction has 3 entries"):
        hvp(net, x, y, np.zeros(3))
    with pytest.raises(ValueError, match="direction array 0 has shape"):
        hvp(net, x, y, [np.zeros((2, 2))] + [np.zeros(s.shape) for s in net.parameter_arrays()[1:]])
    from manual_bp.layers import Dropout

    with pytest.raises(TypeError, match=r"layer 1 \(Dropout.*training mode.*supported: Dense"):
        hvp(Sequential([Dense(2, 2), Dropout(0.5)], "quadratic"), x, y, np.zeros(6))
    with pytest.raises(ValueError, match="n_samples must be >= 1"):
        diag_ggn_mc(Network([2, 2], "identity", "quadratic", seed=0), x, y, n_samples=0)


def test_identity_layers_are_skipped_and_other_layers_named():
    """Identity, Flatten and Dropout (p = 0, or eval mode) are out = x on 2-D inputs, so the
    curvature of a stack with them is that of the stack without them (torch's H, G); a
    random layer (dropout in training) and a layer without products raise one TypeError
    naming it (every other layer is walked: tests/test_curvature_layers.py)."""
    from manual_bp.layers import ActivationLayer, Dropout, Flatten, Identity

    rng = np.random.default_rng(3)
    layers = [Flatten(), Dense(3, 4), ActivationLayer("tanh"), Dropout(0.3), Identity()]
    model = Sequential([*layers, Dense(4, 2), Dropout(0.0)], "quadratic", seed=1).eval()
    x, y = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    v = rng.standard_normal(sum(p.size for p in model.parameter_arrays()))
    tm = TorchModel(model, x, y)
    H = tm.hessian()
    np.testing.assert_allclose(flatten(hvp(model, x, y, v)), H @ v, atol=1e-13 * np.abs(H).max())
    np.testing.assert_allclose(
        flatten(diag_hessian(model, x, y)), np.diag(H), atol=1e-13 * np.abs(H).max()
    )
    model.train()
    with pytest.raises(TypeError, match=r"layer 3 \(Dropout.*training mode"):
        diag_ggn(model, x, y)
    from manual_bp.layers.base import Layer

    class NoProducts(Layer):  # a layer without V-axis products: nothing to walk
        def forward(self, x):
            return x, None

    bare = Sequential([Dense(3, 3), NoProducts(), Dense(3, 2)], "quadratic", seed=0)
    with pytest.raises(TypeError, match=r"layer 1 \(.*NoProducts.*no V-axis products"):
        diag_ggn(bare, x, y)


def test_squares_by_the_squared_input_equal_squares_of_per_sample_vjps():
    """A Dense link squares parameter VJPs by its own product at the squared input
    (``Link.one_output``); the general route squares every column's per-sample
    ``param_vjp``. Both give the same diagonal GGN/Hessian (whole batch and per sample)
    and gradient statistics, so a layer without the shortcut is served exactly."""
    from manual_bp.curvature import chain as chain_module
    from manual_bp.curvature.stats import grad_norms, sum_grad_squared

    rng = np.random.default_rng(5)
    net = Network([3, 4, 4, 3], "tanh", "log-likelihood", output_activation="softmax", seed=2)
    x, y = rng.standard_normal((6, 3)), rng.integers(0, 3, 6)
    quantities = {
        "diag_ggn": lambda: diag_ggn(net, x, y),
        "diag_ggn per sample": lambda: diag_ggn(net, x, y, per_sample=True),
        "diag_hessian": lambda: diag_hessian(net, x, y),
        "diag_hessian per sample": lambda: diag_hessian(net, x, y, per_sample=True),
        "grad_norms": lambda: grad_norms(net, x, y),
        "sum_grad_squared": lambda: sum_grad_squared(net, x, y),
    }
    fast = {name: q() for name, q in quantities.items()}
    original = chain_module._supported
    try:
        chain_module._supported = lambda layer: (original(layer)[0], False)
        assert not any(link.one_output for link in chain_module.as_chain(net).links)
        general = {name: q() for name, q in quantities.items()}
    finally:
        chain_module._supported = original
    for name in quantities:
        for a, b in zip(fast[name], general[name], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15, err_msg=name)


def test_the_costs_fold_rows_decide_the_head():
    """The head taken into the loss is the cost's Fold row (``head``), and its output
    Hessian, factor and product are the row's closed forms: S Sᵀ = H and the product
    ``H r`` without matrices, all at the pre-activation (targets of mass ≠ 1 for KL)."""
    from manual_bp.curvature import as_chain
    from manual_bp.curvature.loss import output_factor, output_hessian, output_hessian_product

    rng = np.random.default_rng(6)
    z = rng.standard_normal((4, 3))
    for cost, output in [
        ("log-likelihood", "softmax"),
        ("cross-entropy", "sigmoid"),
        ("kl-divergence", "log-softmax"),
        ("quadratic", "identity"),
    ]:
        net = Network([2, 3], "identity", cost, output_activation=output, seed=0)
        chain = as_chain(net)
        assert chain.head.name == output
        y = rng.random((4, 3))
        y /= y.sum(axis=1, keepdims=True) / (
            rng.random((4, 1)) + 0.5 if output == "log-softmax" else 1
        )
        H, S = output_hessian(chain, z, y), output_factor(chain, z, y)
        np.testing.assert_allclose(S @ np.swapaxes(S, 1, 2), H, atol=1e-15)
        r = rng.standard_normal((5, 4, 3))
        np.testing.assert_allclose(
            output_hessian_product(chain, z, y, r), np.einsum("nij,vnj->vni", H, r), atol=1e-15
        )
    net = Network([2, 3], "identity", "quadratic", output_activation="sigmoid", seed=0)
    assert as_chain(net).head.name == "identity"  # quadratic + sigmoid does not fold
